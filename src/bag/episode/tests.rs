use super::*;
use crate::action::{ActionSpace, GaitFields, PlanarTwist};
use crate::bag::msgs::{EpisodeOutcome, GaitCommand, Image, RosMessage, StringMsg, Twist, Vector3, VlaDecision};
use crate::bag::{BagReader, BagWriter, TopicQos};
use crate::model::config::quadruped_action_space;
use crate::policy::Decision;
use crate::topics;

const SIZE: u32 = 8;
const PERIOD_NS: u64 = 200_000_000;

fn pixels(step: u32) -> Vec<u8> {
    (0..SIZE * SIZE * 3).map(|i| (i * 7 + step * 31) as u8).collect()
}

fn gait(step: u32) -> GaitFields {
    GaitFields {
        body_height: -0.02 * step as f32,
        step_frequency: 2.5 + 0.25 * step as f32,
        phase_offsets: [0.5, 0.0, 0.0],
        footswing_height: 0.08,
        pitch: 0.0,
        stance_width: 0.3,
    }
}

fn twist(step: u32) -> PlanarTwist {
    PlanarTwist { x_vel: 0.1 * step as f32, y_vel: -0.05, yaw_vel: 0.2 }
}

/// The decision of `step`: the command `twist(step)` / `gait(step)` as bins.
fn decision(space: &ActionSpace, step: u32) -> Decision {
    let bins = space.encode_command(false, twist(step), gait(step));
    Decision {
        command: space.command(&bins).unwrap(),
        q: vec![step as f32; bins.len()],
        bins,
        expert_load: Vec::new(),
        timing: Default::default(),
    }
}

#[test]
fn an_episode_reads_back_as_written() {
    let space = ActionSpace::new(&quadruped_action_space()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("episode");
    let timing = EpisodeTiming { epoch_ns: 1_700_000_000_000_000_000, period_ns: PERIOD_NS };
    let mut writer = EpisodeWriter::create(&path, timing, "go to the red ball", SIZE, space.names()).unwrap();
    let steps = 5u32;
    let decisions: Vec<Decision> = (0..steps).map(|i| decision(&space, i)).collect();
    let gaits: Vec<GaitFields> = (0..steps).map(gait).collect();
    for i in 0..steps {
        // Step 3 has no decision: its action is read from cmd_vel and the gait command; the last
        // has none either and carries the terminate.
        let decided = (i != 3 && i != steps - 1).then(|| &decisions[i as usize]);
        let pixels = pixels(i);
        writer
            .step(&EpisodeStep { index: i, pixels: &pixels, decision: decided, twist: twist(i), gait: &gaits[i as usize] })
            .unwrap();
    }
    let end = EpisodeEnd {
        family: "go_to".into(),
        success: true,
        reason: "terminated_at_goal".into(),
        terminated: true,
        steps,
        seed: 42,
        held_out: false,
        time_s: 1.0,
    };
    assert_eq!(writer.finish(end).unwrap(), path);

    // The topics, types, counts and stamps of the table in the module's documentation.
    let info = BagReader::open(&path).unwrap().info().unwrap();
    let topics: Vec<(&str, &str, u64)> = info.topics.iter().map(|t| (t.name.as_str(), t.type_name.as_str(), t.count)).collect();
    assert_eq!(
        topics,
        [
            ("/camera/image_raw", Image::TYPE, 5),
            ("/cmd_vel", Twist::TYPE, 5),
            ("/gait_command", GaitCommand::TYPE, 5),
            ("/instruction", StringMsg::TYPE, 1),
            ("/moe_vla/episode", EpisodeOutcome::TYPE, 1),
            ("/moe_vla_node/decision", VlaDecision::TYPE, 3),
        ]
    );
    assert_eq!(info.start, Some(timing.epoch_ns));
    // The outcome 1 s after the first frame, after the last command (0.8 s + 1 ms).
    assert_eq!(info.end, Some(timing.epoch_ns + FRAME_OFFSET_NS + 1_000_000_000));
    let mut frame_stamps = Vec::new();
    BagReader::open(&path)
        .unwrap()
        .for_each(|m| {
            if m.topic == "/camera/image_raw" {
                frame_stamps.push(m.log_time);
            }
        })
        .unwrap();
    assert_eq!(frame_stamps, (0..steps).map(|i| timing.frame_ns(i)).collect::<Vec<_>>());
    assert_eq!(timing.action_ns(2), timing.frame_ns(2) + ACTION_DELAY_NS);

    let read = read_episodes(&path, &Topics::default(), SIZE as usize, PERIOD_NS as f64 / 1e9, &space).unwrap();
    let bins: Vec<Vec<u32>> = (0..steps)
        .map(|i| match i {
            3 => space.encode_command(false, twist(3), gait(3)),
            4 => space.encode_command(true, twist(4), gait(4)),
            _ => decisions[i as usize].bins.clone(),
        })
        .collect();
    let expected = EpisodeSteps {
        instruction: "go to the red ball".into(),
        family: "go_to".into(),
        success: true,
        terminated: true,
        reason: "terminated_at_goal".into(),
        frames: (0..steps).map(pixels).collect(),
        bins,
        frames_read: steps as usize,
    };
    assert_eq!(read, [expected]);
}

#[test]
fn bags_are_found_by_metadata_or_storage_file_and_hidden_folders_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["a/bag", "b", ".cache/bag"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("a/bag/metadata.yaml"), "").unwrap();
    std::fs::write(root.join("a/bag/bag_0.mcap"), "").unwrap();
    std::fs::write(root.join("b/one.db3"), "").unwrap();
    std::fs::write(root.join("b/notes.txt"), "").unwrap();
    std::fs::write(root.join(".cache/bag/metadata.yaml"), "").unwrap();
    assert_eq!(find_bags(root).unwrap(), [root.join("a/bag"), root.join("b/one.db3")]);
}

#[test]
fn a_digest_tells_speeds_turning_and_crouching_from_the_commands() {
    let space = ActionSpace::new(&quadruped_action_space()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("episode");
    let timing = EpisodeTiming { epoch_ns: 1_700_000_000_000_000_000, period_ns: PERIOD_NS };
    let mut writer =
        EpisodeWriter::create(&path, timing, "crawl under the bar", SIZE, space.names()).unwrap().driven_by("a model");
    // Standing, crouched for steps 1-2, up at 3, down again at 4.
    let heights = [0.0, -0.2, -0.2, 0.0, -0.15];
    let forward = [0.4, 0.9, 0.5, 0.2, 0.0];
    let yaw = [0.5, -0.5, 0.0, 0.0, 1.0];
    let decided = decision(&space, 0);
    for i in 0..5u32 {
        let k = i as usize;
        let gait = GaitFields { body_height: heights[k], ..gait(0) };
        let twist = PlanarTwist { x_vel: forward[k], y_vel: 0.0, yaw_vel: yaw[k] };
        let pixels = pixels(i);
        writer.step(&EpisodeStep { index: i, pixels: &pixels, decision: Some(&decided), twist, gait: &gait }).unwrap();
    }
    let end = EpisodeEnd {
        family: "crawl".into(),
        success: false,
        reason: "collision".into(),
        terminated: false,
        steps: 5,
        seed: 3,
        held_out: true,
        time_s: 1.0,
    };
    writer.finish(end).unwrap();

    let digest = digest_episodes(&path, &Topics::default()).unwrap();
    assert!(!digest.unfinished && digest.damage.is_empty());
    assert_eq!(digest.episodes.len(), 1);
    let d = &digest.episodes[0];
    assert_eq!(
        (d.instruction.as_str(), d.family.as_str(), d.held_out, d.success, d.reason.as_str()),
        ("crawl under the bar", "crawl", true, false, "collision")
    );
    assert_eq!((d.steps, d.commands, d.driver.as_str()), (5, 5, "a model"));
    let near = |v: Option<f32>, expected: f32| v.is_some_and(|v| (v - expected).abs() < 1e-6);
    assert!(near(d.mean_forward, 0.4), "{:?}", d.mean_forward);
    assert!(near(d.max_forward, 0.9), "{:?}", d.max_forward);
    assert!(near(d.mean_abs_yaw, 0.4), "{:?}", d.mean_abs_yaw);
    // Step 1's commands, after the instruction: its frame offset, a period, the action delay.
    let crouch_s = (FRAME_OFFSET_NS + PERIOD_NS + ACTION_DELAY_NS) as f64 * 1e-9;
    assert!(d.first_crouch_s.is_some_and(|s| (s - crouch_s).abs() < 1e-9), "{:?}", d.first_crouch_s);
    assert_eq!(d.stand_ups, 1);
}

#[test]
fn a_digest_skips_stale_outcomes_and_reports_an_unfinished_episode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recorded");
    let mut bag = BagWriter::create(&path).unwrap();
    bag.add_topic::<StringMsg>(topics::INSTRUCTION.absolute, TopicQos::Latched).unwrap();
    bag.add_topic::<Twist>(topics::CMD_VEL.absolute, TopicQos::Reliable).unwrap();
    bag.add_topic::<EpisodeOutcome>(topics::EPISODE_OUTCOME, TopicQos::Latched).unwrap();
    let t0 = 1_700_000_000_000_000_000u64;
    let outcome = |instruction: &str, reason: &str| EpisodeOutcome {
        instruction: instruction.into(),
        family: "go_to".into(),
        reason: reason.into(),
        ..Default::default()
    };
    let go = |x: f64| Twist { linear: Vector3 { x, ..Default::default() }, ..Default::default() };
    // A late recorder: an old latched outcome with nothing before it, then the latched
    // instruction and another old outcome for an earlier instruction.
    bag.write(topics::EPISODE_OUTCOME, t0, &outcome("go to the box", "old")).unwrap();
    bag.write(topics::INSTRUCTION.absolute, t0, &StringMsg { data: "go to the red ball".into() }).unwrap();
    bag.write(topics::EPISODE_OUTCOME, t0 + 1, &outcome("go to the box", "older")).unwrap();
    // The episode itself: backing up, then its outcome.
    bag.write(topics::CMD_VEL.absolute, t0 + 100, &go(-0.3)).unwrap();
    bag.write(topics::CMD_VEL.absolute, t0 + 200, &go(-0.1)).unwrap();
    bag.write(topics::EPISODE_OUTCOME, t0 + 300, &outcome("go to the red ball", "timeout")).unwrap();
    // An episode cut off by the end of the recording.
    bag.write(topics::INSTRUCTION.absolute, t0 + 400, &StringMsg { data: "stop".into() }).unwrap();
    bag.write(topics::CMD_VEL.absolute, t0 + 500, &go(0.0)).unwrap();
    bag.finish().unwrap();

    let digest = digest_episodes(&path, &Topics::default()).unwrap();
    let reasons: Vec<&str> = digest.episodes.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["timeout"]);
    let d = &digest.episodes[0];
    assert_eq!((d.instruction.as_str(), d.commands), ("go to the red ball", 2));
    let near = |v: Option<f32>, expected: f32| v.is_some_and(|v| (v - expected).abs() < 1e-6);
    assert!(near(d.mean_forward, -0.2) && near(d.max_forward, -0.1), "{:?} {:?}", d.mean_forward, d.max_forward);
    assert_eq!((d.mean_abs_yaw, d.first_crouch_s, d.stand_ups), (Some(0.0), None, 0));
    assert!(digest.unfinished);
}
