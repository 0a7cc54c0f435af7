use super::msgs::*;
use super::*;

fn decision() -> VlaDecision {
    VlaDecision {
        header: Header { stamp: Time { sec: 5, nanosec: 7 }, frame_id: "base_link".into() },
        instruction: "go to the red ball".into(),
        bins: vec![0, 255, 17],
        q_values: vec![0.5, 0.25, 1.0],
        values: vec![0.0, -0.81, 3.1],
        dimension_names: vec!["terminate".into(), "x_vel".into(), "y_vel".into()],
        terminate: true,
        latency_ms: 1.5,
        inference_ms: 1.0,
        expert_load: vec![0.125; 8],
        model_id: "tiny".into(),
    }
}

#[test]
fn messages_round_trip_through_cdr() {
    let d = decision();
    assert_eq!(decode::<VlaDecision>(&encode(&d).unwrap()).unwrap(), d);
    let img = Image {
        header: Header { stamp: Time { sec: 1, nanosec: 2 }, frame_id: "cam".into() },
        height: 2,
        width: 3,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 9,
        data: (0..18).collect(),
    };
    let bytes = encode(&img).unwrap();
    assert_eq!(&bytes[..4], &[0, 1, 0, 0]);
    assert_eq!(decode::<Image>(&bytes).unwrap(), img);
    let gait = GaitCommand { gait: 1, phase_offsets: [0.5, 0.0, 0.0], step_frequency: 3.0, ..Default::default() };
    assert_eq!(decode::<GaitCommand>(&encode(&gait).unwrap()).unwrap(), gait);
}

#[test]
fn damaged_messages_are_errors_not_panics_or_huge_allocations() {
    let bytes = encode(&decision()).unwrap();
    for cut in 0..bytes.len() {
        assert!(decode::<VlaDecision>(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // A sequence claiming 4 G elements in a 12-byte message.
    let huge = [0u8, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    assert!(decode::<StringMsg>(&huge).is_err());
    assert!(decode::<Image>(&[0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert_eq!(decode::<StringMsg>(&[0, 9, 0, 0, 0, 0]), Err(CdrError::Representation(9)));
    let bad_utf8 = [0u8, 1, 0, 0, 3, 0, 0, 0, 0xff, 0xfe, 0];
    assert!(decode::<StringMsg>(&bad_utf8).is_err());
}

#[test]
fn definitions_carry_every_dependency() {
    let def = TwistStamped::definition();
    assert!(def.starts_with("std_msgs/Header header\nTwist twist\n"));
    for dep in ["MSG: std_msgs/Header", "MSG: builtin_interfaces/Time", "MSG: geometry_msgs/Twist", "MSG: geometry_msgs/Vector3"]
    {
        assert!(
            def.contains(&format!("================================================================================\n{dep}\n")),
            "{dep}"
        );
    }
    assert!(GaitCommand::definition().contains("uint8 TROT=1"));
}

#[test]
fn written_bags_read_back_in_order_with_types_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let mut w = BagWriter::create(&path).unwrap();
    w.add_topic::<StringMsg>("/instruction", TopicQos::Latched).unwrap();
    w.add_topic::<Twist>("/cmd_vel", TopicQos::Reliable).unwrap();
    assert!(w.add_topic::<Image>("/cmd_vel", TopicQos::Reliable).is_err());
    w.write("/instruction", 10, &StringMsg { data: "stop".into() }).unwrap();
    for i in 0..5u64 {
        let t = Twist { linear: Vector3 { x: i as f64, ..Default::default() }, ..Default::default() };
        w.write("/cmd_vel", 20 + i, &t).unwrap();
    }
    assert!(w.write("/undeclared", 30, &StringMsg::default()).is_err());
    assert!(w.write("/cmd_vel", 30, &StringMsg::default()).is_err());
    w.finish().unwrap();
    assert!(BagWriter::create(&path).is_err(), "an existing bag is never overwritten");
    let metadata = BagMetadata::read(&path).unwrap();
    assert_eq!((metadata.relative_file_paths.as_slice(), metadata.message_count), (&["run_0.mcap".to_owned()][..], 6));

    let reader = BagReader::open(&path).unwrap();
    let mut seen = Vec::new();
    let report = reader
        .for_each(|m| {
            let value = match m.type_name {
                "geometry_msgs/msg/Twist" => decode::<Twist>(m.data).unwrap().linear.x.to_string(),
                "std_msgs/msg/String" => decode::<StringMsg>(m.data).unwrap().data,
                other => panic!("unexpected type {other}"),
            };
            seen.push((m.topic.to_owned(), m.log_time, value));
        })
        .unwrap();
    assert_eq!(report, ReadReport { messages: 6, damage: vec![] });
    assert_eq!(seen[0], ("/instruction".into(), 10, "stop".into()));
    assert_eq!(seen[5], ("/cmd_vel".into(), 24, "4".into()));
    let info = reader.info().unwrap();
    assert_eq!((info.start, info.end), (Some(10), Some(24)));
    assert_eq!(
        info.topics.iter().map(|t| (t.name.as_str(), t.count)).collect::<Vec<_>>(),
        [("/cmd_vel", 5), ("/instruction", 1)]
    );
    assert!(matches!(BagReader::open(&dir.path().join("missing")), Err(BagError::Io { .. })));
}

/// What `metadata.yaml` held for the bag of `written_bags_read_back_in_order_with_types_and_times`
/// when it was written with `format!`: the serde type must keep exactly these values.
const HAND_WRITTEN_METADATA: &str = r#"rosbag2_bagfile_information:
  version: 5
  storage_identifier: mcap
  duration:
    nanoseconds: 14
  starting_time:
    nanoseconds_since_epoch: 10
  message_count: 6
  topics_with_message_count:
    - topic_metadata:
        name: /cmd_vel
        type: geometry_msgs/msg/Twist
        serialization_format: cdr
        offered_qos_profiles: "- history: 1\n  depth: 10\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 2147483647\n    nsec: 4294967295\n  lifespan:\n    sec: 2147483647\n    nsec: 4294967295\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 2147483647\n    nsec: 4294967295\n  avoid_ros_namespace_conventions: false"
      message_count: 5
    - topic_metadata:
        name: /instruction
        type: std_msgs/msg/String
        serialization_format: cdr
        offered_qos_profiles: "- history: 1\n  depth: 1\n  reliability: 1\n  durability: 1\n  deadline:\n    sec: 2147483647\n    nsec: 4294967295\n  lifespan:\n    sec: 2147483647\n    nsec: 4294967295\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 2147483647\n    nsec: 4294967295\n  avoid_ros_namespace_conventions: false"
      message_count: 1
  compression_format: ""
  compression_mode: ""
  relative_file_paths:
    - run_0.mcap
  files:
    - path: run_0.mcap
      starting_time:
        nanoseconds_since_epoch: 10
      duration:
        nanoseconds: 14
      message_count: 6
"#;

#[test]
fn metadata_holds_the_same_yaml_tree_as_the_hand_written_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let mut w = BagWriter::create(&path).unwrap();
    w.add_topic::<StringMsg>("/instruction", TopicQos::Latched).unwrap();
    w.add_topic::<Twist>("/cmd_vel", TopicQos::Reliable).unwrap();
    w.write("/instruction", 10, &StringMsg { data: "stop".into() }).unwrap();
    for i in 0..5u64 {
        w.write("/cmd_vel", 20 + i, &Twist::default()).unwrap();
    }
    w.finish().unwrap();
    let written = std::fs::read_to_string(path.join(METADATA_FILE)).unwrap();
    let tree = |text: &str| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap();
    assert_eq!(tree(&written), tree(HAND_WRITTEN_METADATA), "{written}");
    let metadata = BagMetadata::read(&path).unwrap();
    assert_eq!(metadata, BagMetadata::from_yaml(HAND_WRITTEN_METADATA).unwrap());
    assert_eq!(metadata.relative_file_paths, ["run_0.mcap"]);
}

#[test]
fn metadata_of_other_rosbag2_versions_reads() {
    // Version 9 (Jazzy, rosbags): QoS profiles as a list, type hashes, custom data, distro,
    // and a field this reader does not know.
    let v9 = r#"rosbag2_bagfile_information:
  version: 9
  storage_identifier: mcap
  duration:
    nanoseconds: 300
  starting_time:
    nanoseconds_since_epoch: 1700000000000000000
  message_count: 2
  topics_with_message_count:
    - topic_metadata:
        name: /chatter
        type: std_msgs/msg/String
        serialization_format: cdr
        offered_qos_profiles:
          - history: keep_last
            depth: 7
            reliability: reliable
        type_description_hash: RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18
      message_count: 2
  compression_format: ""
  compression_mode: ""
  relative_file_paths:
    - a_0.mcap
    - a_1.mcap
  files:
    - path: a_0.mcap
      starting_time:
        nanoseconds_since_epoch: 1700000000000000000
      duration:
        nanoseconds: 300
      message_count: 2
  custom_data: ~
  ros_distro: jazzy
  some_future_field: 1
"#;
    let m = BagMetadata::from_yaml(v9).unwrap();
    assert_eq!((m.version, m.ros_distro.as_deref(), m.custom_data), (9, Some("jazzy"), None));
    assert_eq!(m.relative_file_paths, ["a_0.mcap", "a_1.mcap"]);
    let topic = &m.topics_with_message_count[0].topic_metadata;
    assert!(topic.offered_qos_profiles.is_sequence() && topic.type_description_hash.is_some());
    // Version 4 has neither per-file information nor later fields.
    let v4 = "rosbag2_bagfile_information:\n  version: 4\n  storage_identifier: sqlite3\n  relative_file_paths:\n    - b_0.db3\n";
    let m = BagMetadata::from_yaml(v4).unwrap();
    assert_eq!((m.version, m.relative_file_paths.as_slice(), m.files.len()), (4, &["b_0.db3".to_owned()][..], 0));
}

/// A rosbag2 sqlite3 file as Humble writes it (no `message_definitions`), or as Jazzy does
/// (with it). Messages are inserted out of timestamp order.
fn write_db3(path: &std::path::Path, with_definitions: bool) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
           serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
         CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
           data BLOB NOT NULL);
         CREATE INDEX timestamp_idx ON messages (timestamp ASC);
         INSERT INTO topics VALUES (1, '/instruction', 'std_msgs/msg/String', 'cdr', ''),
                                   (2, '/battery', 'std_msgs/msg/Int32', 'cdr', '');",
    )
    .unwrap();
    if with_definitions {
        db.execute_batch(
            "CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL, encoding TEXT NOT NULL,
               encoded_message_definition TEXT NOT NULL, type_description_hash TEXT NOT NULL);
             INSERT INTO message_definitions (topic_type, encoding, encoded_message_definition, type_description_hash)
               VALUES ('std_msgs/msg/Int32', 'ros2msg', 'int32 data', ''), ('std_msgs/msg/String', 'unknown', '', '');",
        )
        .unwrap();
    }
    let string = |s: &str| encode(&StringMsg { data: s.into() }).unwrap();
    let int32 = vec![0u8, 1, 0, 0, 87, 0, 0, 0];
    for (topic, time, data) in
        [(1, 30, string("late")), (2, 10, int32.clone()), (1, 20, string("early")), (2, 20, int32), (9, 5, vec![])]
    {
        db.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES (?1, ?2, ?3)", rusqlite::params![topic, time, data])
            .unwrap();
    }
}

/// (topic, log time, definition text) of every message.
fn read_all(reader: &BagReader) -> (Vec<(String, u64, Option<String>)>, ReadReport) {
    let mut seen = Vec::new();
    let report = reader.for_each(|m| seen.push((m.topic.to_owned(), m.log_time, m.definition.map(|d| d.text.clone())))).unwrap();
    (seen, report)
}

#[test]
fn sqlite3_bags_read_in_timestamp_order_with_their_definitions() {
    let dir = tempfile::tempdir().unwrap();
    // Humble: a metadata.yaml naming sqlite3, no definitions in the file.
    let humble = dir.path().join("humble");
    std::fs::create_dir(&humble).unwrap();
    write_db3(&humble.join("humble_0.db3"), false);
    let metadata =
        "rosbag2_bagfile_information:\n  version: 5\n  storage_identifier: sqlite3\n  relative_file_paths:\n    - humble_0.db3\n";
    std::fs::write(humble.join(METADATA_FILE), metadata).unwrap();
    let reader = BagReader::open(&humble).unwrap();
    assert_eq!(reader.storage(), Storage::Sqlite3);
    let (seen, report) = read_all(&reader);
    let times: Vec<(&str, u64)> = seen.iter().map(|(t, time, _)| (t.as_str(), *time)).collect();
    assert_eq!(times, [("/battery", 10), ("/instruction", 20), ("/battery", 20), ("/instruction", 30)]);
    assert!(seen.iter().all(|(_, _, d)| d.is_none()));
    assert_eq!(report.messages, 4);
    assert_eq!(report.damage.len(), 1, "the message of topic id 9");
    assert!(report.damage[0].contains("skipped 1 messages whose topic id is not in the topics table"));
    let info = reader.info().unwrap();
    assert_eq!((info.storage, info.start, info.end), (Storage::Sqlite3, Some(10), Some(30)));
    assert_eq!(
        info.topics.iter().map(|t| (t.type_name.as_str(), t.count)).collect::<Vec<_>>(),
        [("std_msgs/msg/Int32", 2), ("std_msgs/msg/String", 2)]
    );
    let mut decoder = dynamic::MessageDecoder::default();
    let mut decoded = Vec::new();
    reader.for_each(|m| decoded.push(decoder.decode(m).map_err(|e| e.is_unsupported()))).unwrap();
    assert_eq!(decoded[1], Ok(serde_json::json!({ "data": "early" })), "moe_vla's own definition of String");
    assert_eq!(decoded[0], Err(true), "Int32: no definition to decode it by");

    // Jazzy: definitions in the file; a bare .db3 and a folder without metadata read by extension.
    let jazzy = dir.path().join("jazzy_0.db3");
    write_db3(&jazzy, true);
    let (seen, _) = read_all(&BagReader::open(&jazzy).unwrap());
    assert_eq!(seen[0], ("/battery".into(), 10, Some("int32 data".into())));
    assert_eq!(seen[1].2, None, "an empty definition is none");
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(&jazzy, folder.join("a.db3")).unwrap();
    let reader = BagReader::open(&folder).unwrap();
    assert_eq!((reader.storage(), read_all(&reader).1.messages), (Storage::Sqlite3, 4));
    // Metadata naming the storage but no files: that storage's files, not the others.
    std::fs::write(folder.join("stray.mcap"), b"").unwrap();
    assert_eq!(BagReader::open(&folder).unwrap().files(), [folder.join("stray.mcap")]);
    std::fs::write(folder.join(METADATA_FILE), "rosbag2_bagfile_information:\n  storage_identifier: sqlite3\n").unwrap();
    assert_eq!(BagReader::open(&folder).unwrap().files(), [folder.join("a.db3")]);
}

#[test]
fn damaged_sqlite3_files_are_reported_and_unknown_storage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db3");
    std::fs::write(&garbage, b"this is not a bag".repeat(300)).unwrap();
    let (seen, report) = read_all(&BagReader::open(&garbage).unwrap());
    assert!(seen.is_empty() && report.messages == 0);
    assert!(report.damage[0].contains("not a rosbag2 sqlite3 file"), "{:?}", report.damage);
    // An SQLite file that is not a bag.
    let other = dir.path().join("other.db3");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t(x);").unwrap();
    assert!(read_all(&BagReader::open(&other).unwrap()).1.damage[0].contains("no such table: topics"));

    let bag = dir.path().join("rosbag1");
    std::fs::create_dir(&bag).unwrap();
    std::fs::write(bag.join("x.mcap"), b"").unwrap();
    std::fs::write(bag.join(METADATA_FILE), "rosbag2_bagfile_information:\n  version: 9\n  storage_identifier: rosbag_v1\n")
        .unwrap();
    let error = BagReader::open(&bag).err().expect("unknown storage");
    assert!(matches!(&error, BagError::UnknownStorage { id, .. } if id == "rosbag_v1"));
    assert!(error.to_string().contains("storage `rosbag_v1` is not supported (moe_vla reads mcap and sqlite3)"), "{error}");
}
