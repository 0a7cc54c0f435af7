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
    let yaml = std::fs::read_to_string(path.join("metadata.yaml")).unwrap();
    assert!(yaml.contains("relative_file_paths:\n    - run_0.mcap") && yaml.contains("message_count: 6"));

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
