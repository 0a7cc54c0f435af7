use serde_json::{json, Value};

use super::*;
use crate::bag::msgs::*;
use crate::bag::{encode, StoredDefinition};

/// CDR by hand, for types moe_vla has no serde type of: XCDR1 alignment from the end of the
/// 4-byte header, in either byte order.
struct Cdr {
    bytes: Vec<u8>,
    big_endian: bool,
}

impl Cdr {
    fn new(big_endian: bool) -> Self {
        Self { bytes: vec![0, u8::from(!big_endian), 0, 0], big_endian }
    }

    fn put<const N: usize>(&mut self, little_endian: [u8; N]) -> &mut Self {
        while !(self.bytes.len() - 4).is_multiple_of(N) {
            self.bytes.push(0xAA); // padding: any value
        }
        let mut b = little_endian;
        if self.big_endian {
            b.reverse();
        }
        self.bytes.extend_from_slice(&b);
        self
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.put(v.to_le_bytes())
    }

    fn i16(&mut self, v: i16) -> &mut Self {
        self.put(v.to_le_bytes())
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.put(v.to_le_bytes())
    }

    fn i32(&mut self, v: i32) -> &mut Self {
        self.put(v.to_le_bytes())
    }

    fn f64(&mut self, v: f64) -> &mut Self {
        self.put(v.to_le_bytes())
    }

    fn string(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32 + 1);
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self
    }
}

fn parse(type_name: &str, text: &str) -> Definition {
    Definition::parse(type_name, text).unwrap_or_else(|e| panic!("{e}"))
}

/// What `bag echo` printed for moe_vla's own types before the dynamic decoder: serde's JSON of
/// the typed message, its `data` bytes as length and CRC32.
fn typed_json<M: RosMessage>(msg: &M) -> Value {
    let mut v = serde_json::to_value(msg).unwrap();
    if let Some(bytes) = v.get("data").and_then(Value::as_array) {
        let bytes: Vec<u8> = bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect();
        v["data"] = json!({ "len": bytes.len(), "crc32": crc32fast::hash(&bytes) });
    }
    v
}

fn dynamic_json<M: RosMessage>(msg: &M) -> Value {
    decode(&parse(M::TYPE, &M::definition()), &encode(msg).unwrap()).unwrap()
}

fn header(frame: &str) -> Header {
    Header { stamp: Time { sec: 1_700_000_000, nanosec: 999_999_999 }, frame_id: frame.into() }
}

#[test]
fn own_types_decode_as_the_typed_path_printed_them() {
    let decision = VlaDecision {
        header: header("base_link"),
        instruction: "go to the red ball ü".into(),
        bins: vec![0, 255, 17],
        q_values: vec![0.1, -0.25, f32::MAX],
        values: vec![0.0, -0.81, 3.1],
        dimension_names: vec!["terminate".into(), "".into(), "y_vel".into()],
        terminate: true,
        latency_ms: 1.5,
        inference_ms: 1.0,
        expert_load: vec![0.125; 8],
        model_id: "tiny".into(),
    };
    assert_eq!(dynamic_json(&decision), typed_json(&decision));
    // Constants, comments and a fixed array after a uint8.
    let gait = GaitCommand { header: header("x"), gait: 3, phase_offsets: [0.5, 0.25, 0.0], pitch: -0.1, ..Default::default() };
    assert_eq!(dynamic_json(&gait), typed_json(&gait));
    let outcome = EpisodeOutcome { header: header(""), seed: u64::MAX, steps: 7, success: true, ..Default::default() };
    assert_eq!(dynamic_json(&outcome), typed_json(&outcome));
    let twist = TwistStamped {
        header: header("odom"),
        twist: Twist { linear: Vector3 { x: 0.5, y: -1e-9, z: 0.0 }, angular: Vector3 { x: 0.0, y: 0.0, z: 1e300 } },
    };
    assert_eq!(dynamic_json(&twist), typed_json(&twist));
    assert_eq!(dynamic_json(&StringMsg { data: "stop".into() }), json!({ "data": "stop" }));
    let image = |len: usize| Image {
        header: header("cam"),
        height: 1,
        width: len as u32 / 3,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: len as u32,
        data: (0..len).map(|i| (i * 7) as u8).collect(),
    };
    let big = image(COMPACT_BYTES_OVER + 1);
    assert_eq!(dynamic_json(&big), typed_json(&big));
    assert_eq!(dynamic_json(&big)["data"], json!({ "len": 65, "crc32": crc32fast::hash(&big.data) }));
    // Short byte arrays stay numbers.
    let small = image(6);
    assert_eq!(dynamic_json(&small)["data"], json!([0, 7, 14, 21, 28, 35]));
    let jpeg = CompressedImage { header: header("cam"), format: "jpeg".into(), data: vec![0xff; 1000] };
    assert_eq!(dynamic_json(&jpeg), typed_json(&jpeg));
}

const SEPARATOR: &str = "================================================================================";

/// A third-party type with every shape of field, its dependency by short name.
fn custom_definition() -> String {
    format!(
        "# A comment line\n\
         uint8 MODE_A=1  # a constant\n\
         string GREETING=\"hi # not a comment\"\n\
         string<=10 name\n\
         uint8 flag\n\
         float64 after_flag  # aligned to 8 after one byte\n\
         int32[<=5] small\n\
         float64[3] xyz\n\
         string[] tags\n\
         Part[] parts\n\
         Part[2] pair\n\
         int16 x 5   # a default value\n\
         bool ok\n\
         {SEPARATOR}\n\
         MSG: test_msgs/Part\n\
         string<=8[] names\n\
         int8 level\n\
         uint8[] raw\n"
    )
}

fn custom_bytes(big_endian: bool) -> Vec<u8> {
    let mut c = Cdr::new(big_endian);
    c.string("joint").u8(7).f64(-2.5);
    c.u32(2).i32(-1).i32(i32::MAX);
    c.f64(1.0).f64(2.0).f64(3.0);
    c.u32(3).string("a").string("").string("ccc");
    // parts: two Parts
    c.u32(2);
    c.u32(1).string("n0").u8(0xFE).u32(3).u8(1).u8(2).u8(3);
    c.u32(0).u8(4).u32(0);
    // pair: fixed, no length
    c.u32(0).u8(1).u32(0);
    c.u32(2).string("p").string("q").u8(2).u32(1).u8(9);
    c.i16(-300).u8(1);
    c.bytes
}

fn custom_json() -> Value {
    json!({
        "name": "joint", "flag": 7, "after_flag": -2.5, "small": [-1, i32::MAX], "xyz": [1.0, 2.0, 3.0],
        "tags": ["a", "", "ccc"],
        "parts": [{"names": ["n0"], "level": -2, "raw": [1, 2, 3]}, {"names": [], "level": 4, "raw": []}],
        "pair": [{"names": [], "level": 1, "raw": []}, {"names": ["p", "q"], "level": 2, "raw": [9]}],
        "x": -300, "ok": true,
    })
}

#[test]
fn third_party_types_decode_in_both_byte_orders() {
    let definition = parse("test_msgs/msg/Custom", &custom_definition());
    assert_eq!(decode(&definition, &custom_bytes(false)).unwrap(), custom_json());
    assert_eq!(decode(&definition, &custom_bytes(true)).unwrap(), custom_json());
    // `pkg/Type` names the root as well as `pkg/msg/Type`.
    assert_eq!(decode(&parse("test_msgs/Custom", &custom_definition()), &custom_bytes(false)).unwrap(), custom_json());
}

#[test]
fn nested_types_resolve_by_full_short_and_header_names() {
    // As rosbag2 writes sensor_msgs/JointState: `Header` alone is std_msgs', dependencies under
    // `MSG:` with or without `/msg/`, unused ones tolerated.
    let text = format!(
        "Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n\
         {SEPARATOR}\nMSG: std_msgs/msg/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n\
         {SEPARATOR}\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n\
         {SEPARATOR}\nMSG: unused_msgs/Unparsable\nthis is not a field line at all [\n"
    );
    let definition = parse("sensor_msgs/msg/JointState", &text);
    let mut c = Cdr::new(false);
    c.i32(12).u32(34).string("base");
    c.u32(2).string("hip").string("knee");
    c.u32(2).f64(0.5).f64(-0.5).u32(0).u32(1).f64(9.0);
    let want = json!({
        "header": {"stamp": {"sec": 12, "nanosec": 34}, "frame_id": "base"},
        "name": ["hip", "knee"], "position": [0.5, -0.5], "velocity": [], "effort": [9.0],
    });
    assert_eq!(decode(&definition, &c.bytes).unwrap(), want);
}

#[test]
fn a_message_without_fields_takes_one_byte() {
    let definition = parse("std_msgs/msg/Empty", "# nothing\n");
    assert_eq!(decode(&definition, &[0, 1, 0, 0, 0]).unwrap(), json!({}));
    assert!(decode(&definition, &[0, 1, 0, 0]).is_err());
}

#[test]
fn bad_definitions_are_errors() {
    let cycle = format!("B b\n{SEPARATOR}\nMSG: p/B\nC[] c\n{SEPARATOR}\nMSG: p/C\np/A a\n");
    assert_eq!(
        Definition::parse("p/msg/A", &cycle),
        Err(DefinitionError::Cycle("p/msg/A -> p/msg/B -> p/msg/C -> p/msg/A".into()))
    );
    assert_eq!(
        Definition::parse("p/msg/A", "int32 x\nother_pkg/Thing thing\n"),
        Err(DefinitionError::Missing {
            type_name: "p/msg/A".into(),
            field: "thing".into(),
            missing: "other_pkg/msg/Thing".into()
        })
    );
    assert!(matches!(Definition::parse("p/msg/A", "wstring w\n"), Err(DefinitionError::WideString { .. })));
    for bad in ["int32[abc] x\n", "int32[3 x\n", "float64\n", "int32 ?\n"] {
        assert!(matches!(Definition::parse("p/msg/A", bad), Err(DefinitionError::Line { .. })), "{bad}");
    }
}

#[test]
fn damaged_bytes_are_errors_not_panics_or_huge_allocations() {
    let definition = parse("test_msgs/msg/Custom", &custom_definition());
    let bytes = custom_bytes(false);
    for cut in 0..bytes.len() {
        assert!(decode(&definition, &bytes[..cut]).is_err(), "cut at {cut}");
    }
    let error = |cut: usize| decode(&definition, &bytes[..bytes.len() - cut]).unwrap_err().to_string();
    assert_eq!(error(3), "x: the message ends at byte 166 of its body, 2 bytes short");
    assert_eq!(error(20), "pair[1].names: 2 elements claimed with only 5 bytes left");
    // 4 G strings claimed in a short message.
    let mut c = Cdr::new(false);
    c.string("joint").u8(7).f64(-2.5).u32(0).f64(1.0).f64(2.0).f64(3.0).u32(u32::MAX);
    let error = decode(&definition, &c.bytes).unwrap_err();
    assert_eq!(error, DecodeError::Field { field: "tags".into(), problem: Problem::TooLong { count: u32::MAX.into(), left: 0 } });
    // A fixed array larger than any message.
    let huge = parse("p/msg/Huge", "uint64[4000000000000] big\n");
    assert!(matches!(decode(&huge, &[0, 1, 0, 0, 1, 2, 3]), Err(DecodeError::Field { problem: Problem::TooLong { .. }, .. })));
    let text = parse("std_msgs/msg/String", "string data\n");
    assert_eq!(decode(&text, &[0, 9, 0, 0, 1, 0, 0, 0, 0]), Err(DecodeError::Representation(9)));
    assert_eq!(decode(&text, &[0, 1]), Err(DecodeError::NoHeader));
    let not_utf8 = [0u8, 1, 0, 0, 3, 0, 0, 0, 0xff, 0xfe, 0];
    assert_eq!(decode(&text, &not_utf8), Err(DecodeError::Field { field: "data".into(), problem: Problem::NotUtf8 }));
}

fn raw<'a>(type_name: &'a str, data: &'a [u8], definition: Option<&'a StoredDefinition>) -> RawMessage<'a> {
    RawMessage { topic: "/t", type_name, encoding: "cdr", log_time: 0, data, definition }
}

#[test]
fn the_decoder_uses_the_bags_definition_else_moe_vlas_own() {
    let mut decoder = MessageDecoder::default();
    let twist = Twist { linear: Vector3 { x: 1.0, y: 2.0, z: 3.0 }, ..Default::default() };
    let bytes = encode(&twist).unwrap();
    // No definition in the bag (sqlite3 before Jazzy): moe_vla's own.
    assert_eq!(decoder.decode(&raw(Twist::TYPE, &bytes, None)).unwrap(), typed_json(&twist));
    // The bag's own definition wins, and a changed one is parsed anew.
    let renamed = StoredDefinition { encoding: "ros2msg".into(), text: "float64 a\nfloat64 b\n".into() };
    assert_eq!(decoder.decode(&raw(Twist::TYPE, &bytes, Some(&renamed))).unwrap(), json!({ "a": 1.0, "b": 2.0 }));
    let int32 = [0, 1, 0, 0, 87, 0, 0, 0];
    let missing = decoder.decode(&raw("std_msgs/msg/Int32", &int32, None)).unwrap_err();
    assert!(missing.is_unsupported() && missing == MessageError::NoDefinition);
    let idl = StoredDefinition { encoding: "ros2idl".into(), text: "module std_msgs {};".into() };
    let unreadable = decoder.decode(&raw("std_msgs/msg/Int32", &int32, Some(&idl))).unwrap_err();
    assert_eq!(unreadable, MessageError::DefinitionEncoding("ros2idl".into()));
    // An IDL definition of a type moe_vla knows falls back to its own.
    assert_eq!(decoder.decode(&raw(Twist::TYPE, &bytes, Some(&idl))).unwrap(), typed_json(&twist));
    let json_encoded = RawMessage { encoding: "json", ..raw(Twist::TYPE, &bytes, None) };
    assert!(decoder.decode(&json_encoded).unwrap_err().is_unsupported());
    // A broken definition is an error, not a skip.
    let broken = StoredDefinition { encoding: "ros2msg".into(), text: "Missing m\n".into() };
    let error = decoder.decode(&raw("p/msg/A", &int32, Some(&broken))).unwrap_err();
    assert!(!error.is_unsupported() && error.to_string().contains("p/msg/Missing"), "{error}");
}

/// A service-event message as rosbag2 records it, its definition stored as the service's own text
/// (here std_srvs/Trigger's: an empty request): decoded as the event rosidl generates.
#[test]
fn service_events_decode_from_the_services_text() {
    let text = "---\nbool success\nstring message\n";
    let event = service_event_definition("std_srvs/srv/Trigger_Event", text).expect("an event");
    let definition = parse("std_srvs/srv/Trigger_Event", &event);
    let mut cdr = Cdr::new(false);
    cdr.u8(2); // info.event_type: response sent
    cdr.i32(1_700_000_000).u32(5); // info.stamp
    for b in 0..16u8 {
        cdr.u8(b); // info.client_gid
    }
    cdr.put(7i64.to_le_bytes()); // info.sequence_number
    cdr.u32(0); // no request
    cdr.u32(1).u8(1).string("done"); // one response
    let value = decode(&definition, &cdr.bytes).unwrap();
    assert_eq!(value["info"]["event_type"], json!(2));
    assert_eq!(value["info"]["sequence_number"], json!(7));
    assert_eq!(value["request"], json!([]));
    assert_eq!(value["response"], json!([{"success": true, "message": "done"}]));
    assert!(service_event_definition("std_msgs/msg/String", "string data").is_none());
}
