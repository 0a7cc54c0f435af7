use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::action::{ActionSpace, GaitFields, GaitPreset, PlanarTwist};
use crate::bag::episode::{read_episodes, Topics};
use crate::bag::msgs::{EpisodeOutcome, RosMessage, VlaDecision};
use crate::bag::{decode, BagReader};
use crate::model::config::quadruped_action_space;
use crate::topics;

fn space() -> ActionSpace {
    ActionSpace::new(&quadruped_action_space()).unwrap()
}

fn gait(body_height: f32) -> GaitFields {
    GaitFields {
        body_height,
        step_frequency: 3.0,
        phase_offsets: GaitPreset::Trot.offsets(),
        footswing_height: 0.12,
        pitch: 0.0,
        stance_width: 0.3,
    }
}

fn forward(speed: f32, body_height: f32) -> WorldCommand {
    WorldCommand::Move { twist: PlanarTwist { x_vel: speed, ..Default::default() }, gait: gait(body_height) }
}

fn scenario(family: TaskFamily, scene: Scene, start: (f32, f32, f32), goal: Goal) -> Scenario {
    Scenario {
        family,
        instruction: "test".into(),
        held_out: false,
        scene,
        start: Pose { x: start.0, y: start.1, yaw: start.2, height: 0.0 },
        goal,
    }
}

fn object(shape: Shape, color: Color, x: f32, y: f32) -> Object {
    Object { shape, color, x, y }
}

/// Steps the world with `command` until it ends (or `limit` steps).
fn drive(world: &mut World, command: WorldCommand, limit: u32) -> Option<Outcome> {
    (0..limit).find_map(|_| world.step(&command))
}

fn crawl_scene() -> (Scene, Goal) {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.add_cross_wall(4.0, 4.0, 1.2);
    let h = 0.5 * WALL_THICKNESS;
    scene.bars.push(Bar { footprint: Footprint::rect(4.0 - h, 3.4, 4.0 + h, 4.6), bottom: BAR_BOTTOM, top: BAR_TOP });
    (scene, Goal::Pass { wall_x: 4.0, gap_y: 4.0 })
}

#[test]
fn driving_straight_at_an_object_reaches_it() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(object(Shape::Ball, Color::Red, 4.0, 4.0));
    let mut world = World::new(scenario(TaskFamily::GoTo, scene, (1.0, 4.0, 0.0), Goal::Reach { object: 0 }));
    let out = drive(&mut world, forward(0.8, 0.0), 100).expect("ends");
    assert_eq!(out.reason, Reason::Reached);
    assert!(out.success && !out.terminated);
    // Reached 0.6 m from the surface: centre near x = 4 - 0.2 - 0.6.
    assert!((world.pose().x - 3.2).abs() < 0.1, "{:?}", world.pose());
}

#[test]
fn driving_into_a_wall_is_a_collision() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(object(Shape::Ball, Color::Red, 8.0, 4.0));
    let mut world = World::new(scenario(TaskFamily::GoTo, scene, (1.5, 4.0, std::f32::consts::PI), Goal::Reach { object: 0 }));
    let out = drive(&mut world, forward(0.8, 0.0), 100).expect("ends");
    assert_eq!(out.reason, Reason::Collision);
    assert!(!out.success);
    assert!(world.pose().x < ROBOT_RADIUS + 0.05);
}

#[test]
fn the_bar_needs_a_lowered_body() {
    let (scene, goal) = crawl_scene();
    let mut high = World::new(scenario(TaskFamily::Crawl, scene.clone(), (2.0, 4.0, 0.0), goal));
    let out = drive(&mut high, forward(0.8, 0.0), 100).expect("ends");
    assert_eq!(out.reason, Reason::Collision);
    let mut low = World::new(scenario(TaskFamily::Crawl, scene, (2.0, 4.0, 0.0), goal));
    let out = drive(&mut low, forward(0.8, -0.2), 100).expect("ends");
    assert_eq!(out.reason, Reason::Passed);
    assert!(out.success);
    assert!((low.pose().height + 0.2).abs() < 1e-4);
    // The body can crouch only so far.
    assert!(BODY_OFFSET_RANGE.0 >= -0.25);
}

#[test]
fn the_doorway_is_the_only_way_through() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.add_cross_wall(4.0, 4.0, 1.0);
    let goal = Goal::Pass { wall_x: 4.0, gap_y: 4.0 };
    let mut through = World::new(scenario(TaskFamily::GoThrough, scene.clone(), (2.0, 4.0, 0.0), goal));
    assert_eq!(drive(&mut through, forward(0.8, 0.0), 100).map(|o| o.reason), Some(Reason::Passed));
    let mut beside = World::new(scenario(TaskFamily::GoThrough, scene, (2.0, 5.0, 0.0), goal));
    assert_eq!(drive(&mut beside, forward(0.8, 0.0), 100).map(|o| o.reason), Some(Reason::Collision));
}

#[test]
fn reaching_another_object_is_wrong_object() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(object(Shape::Ball, Color::Red, 4.0, 6.5));
    scene.objects.push(object(Shape::Cube, Color::Blue, 4.0, 4.0));
    let mut world = World::new(scenario(TaskFamily::Distinguish, scene, (1.0, 4.0, 0.0), Goal::Reach { object: 0 }));
    let out = drive(&mut world, forward(0.8, 0.0), 100).expect("ends");
    assert_eq!(out.reason, Reason::WrongObject);
    assert!(!out.success);
}

#[test]
fn terminate_fails_a_reach_task_and_succeeds_a_stop_task() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(object(Shape::Ball, Color::Red, 4.0, 4.0));
    let mut go = World::new(scenario(TaskFamily::GoTo, scene.clone(), (1.0, 4.0, 0.0), Goal::Reach { object: 0 }));
    go.step(&forward(0.5, 0.0));
    let out = go.step(&WorldCommand::Terminate).expect("terminate ends the episode");
    assert_eq!((out.reason, out.success, out.terminated, out.steps), (Reason::TerminatedEarly, false, true, 2));
    // After the end nothing moves.
    let pose = go.pose();
    assert_eq!(go.step(&forward(0.5, 0.0)), Some(out));
    assert_eq!(go.pose(), pose);

    let mut stop = World::new(scenario(TaskFamily::Stop, scene, (1.0, 4.0, 0.0), Goal::Stay));
    let out = stop.step(&WorldCommand::Terminate).expect("ends");
    assert_eq!((out.reason, out.success, out.terminated), (Reason::Terminated, true, true));
}

#[test]
fn the_stop_family_fails_when_moving_and_succeeds_when_standing() {
    let scene = Scene::arena(ARENA.0, ARENA.1);
    let mut moving = World::new(scenario(TaskFamily::Stop, scene.clone(), (3.0, 4.0, 0.0), Goal::Stay));
    let out = drive(&mut moving, forward(0.6, 0.0), 100).expect("ends");
    assert_eq!(out.reason, Reason::Moved);
    assert!(out.steps <= 3);
    let mut standing = World::new(scenario(TaskFamily::Stop, scene, (3.0, 4.0, 0.0), Goal::Stay));
    let out = drive(&mut standing, WorldCommand::Stand, 100).expect("ends");
    assert_eq!((out.reason, out.success, out.steps), (Reason::Stayed, true, TaskFamily::Stop.max_steps()));
}

#[test]
fn standing_still_in_a_reach_task_times_out() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(object(Shape::Cone, Color::Green, 4.0, 4.0));
    let mut world = World::new(scenario(TaskFamily::GoTo, scene, (1.0, 4.0, 0.0), Goal::Reach { object: 0 }));
    let out = drive(&mut world, WorldCommand::Stand, 1000).expect("ends");
    assert_eq!((out.reason, out.steps), (Reason::Timeout, TaskFamily::GoTo.max_steps()));
}

#[test]
fn gait_and_step_frequency_bound_the_speed() {
    let mut slow = gait(0.0);
    slow.step_frequency = 2.0;
    slow.phase_offsets = GaitPreset::Pronk.offsets();
    assert!((speed_limit(&slow) - 0.6 * 2.0 * 0.35).abs() < 1e-6);
    assert!((speed_limit(&gait(0.0)) - 1.05).abs() < 1e-6);
    let scene = Scene::arena(ARENA.0, ARENA.1);
    let mut world = World::new(scenario(TaskFamily::GoThrough, scene, (1.0, 4.0, 0.0), Goal::Pass { wall_x: 9.0, gap_y: 4.0 }));
    let command = WorldCommand::Move { twist: PlanarTwist { x_vel: 3.0, ..Default::default() }, gait: slow };
    world.step(&command);
    assert!((world.pose().x - 1.0 - 0.42 * CONTROL_PERIOD_S).abs() < 1e-4, "{:?}", world.pose());
    // A turn at the yaw limit.
    let turn = WorldCommand::Move { twist: PlanarTwist { yaw_vel: 5.0, ..Default::default() }, gait: gait(0.0) };
    let yaw = world.pose().yaw;
    world.step(&turn);
    assert!((world.pose().yaw - yaw - 1.05 * CONTROL_PERIOD_S).abs() < 1e-4);
}

fn red_share(pixels: &[u8], size: usize, cols: std::ops::Range<usize>) -> f32 {
    let mut red = 0;
    for row in 0..size {
        for col in cols.clone() {
            let p = &pixels[(row * size + col) * 3..][..3];
            red += usize::from(p[0] > 120 && p[1] < 80 && p[2] < 80);
        }
    }
    red as f32 / (size * cols.len()) as f32
}

#[test]
fn a_red_object_ahead_is_red_in_the_middle_of_the_image() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(object(Shape::Cylinder, Color::Red, 3.0, 4.0));
    let pose = Pose { x: 1.5, y: 4.0, yaw: 0.0, height: 0.0 };
    let size = 64;
    let pixels = render(&scene, &pose, size as u32, size as u32);
    assert_eq!(pixels.len(), size * size * 3);
    assert!(red_share(&pixels, size, 28..36) > 0.1, "centre");
    assert_eq!(red_share(&pixels, size, 0..12), 0.0, "left edge");
    // Turned away, it leaves the view.
    let away = render(&scene, &Pose { yaw: std::f32::consts::PI, ..pose }, size as u32, size as u32);
    assert_eq!(red_share(&away, size, 0..size), 0.0);
    // To the left of the heading, it appears on the left.
    let left = render(&scene, &Pose { yaw: -0.5, ..pose }, size as u32, size as u32);
    assert!(red_share(&left, size, 0..28) > red_share(&left, size, 36..64));
}

#[test]
fn every_shape_renders_and_lowering_the_body_changes_the_image() {
    let (mut scene, _) = crawl_scene();
    for (i, shape) in Shape::ALL.into_iter().enumerate() {
        scene.objects.push(object(shape, Color::ALL[i], 6.0, 2.0 + 1.2 * i as f32));
    }
    let pose = Pose { x: 2.5, y: 4.0, yaw: 0.0, height: 0.0 };
    let high = render(&scene, &pose, 48, 32);
    let low = render(&scene, &Pose { height: -0.2, ..pose }, 48, 32);
    assert_eq!(high.len(), 48 * 32 * 3);
    assert_ne!(high, low);
    // Zero-sized images are empty, not a panic.
    assert!(render(&scene, &pose, 0, 10).is_empty());
}

#[test]
fn sampled_scenarios_are_valid_and_instructions_split_seen_and_held_out() {
    let seen: BTreeSet<String> = all_instructions(false).into_iter().collect();
    let held: BTreeSet<String> = all_instructions(true).into_iter().collect();
    assert!(seen.is_disjoint(&held));
    for family in TaskFamily::ALL {
        assert_eq!(family.name().parse::<TaskFamily>().unwrap(), family);
        for seed in 0..40 {
            let held_out = seed % 2 == 1;
            let mut rng = StdRng::seed_from_u64(seed);
            let s = sample_task(family, held_out, &mut rng).unwrap();
            assert!(if held_out { held.contains(&s.instruction) } else { seen.contains(&s.instruction) }, "{}", s.instruction);
            let p = s.start;
            assert!(!s.scene.collision(p.x, p.y, p.body_top(), None), "{family} {seed}");
            let ahead = |x: f32, y: f32| {
                let d = (x - p.x).hypot(y - p.y);
                let bearing = wrap_angle((y - p.y).atan2(x - p.x) - p.yaw);
                (d, bearing.abs())
            };
            match s.goal {
                Goal::Reach { object } => {
                    let o = s.scene.objects[object];
                    let (d, angle) = ahead(o.x, o.y);
                    assert!((2.0..=5.0).contains(&d) && angle < FOV_DEG.to_radians() / 2.0, "{family} {seed}: {d} {angle}");
                    assert!(s.instruction.contains(&o.name()));
                    if family == TaskFamily::Distinguish {
                        assert!(s.scene.objects.len() >= 3);
                        for other in &s.scene.objects[1..] {
                            assert!((other.shape == o.shape) != (other.color == o.color), "{family} {seed}");
                        }
                    }
                }
                Goal::Pass { wall_x, gap_y } => {
                    let (d, angle) = ahead(wall_x, gap_y);
                    assert!((2.0..=5.0).contains(&d) && angle < 0.8, "{family} {seed}: {d} {angle}");
                    assert_eq!(s.scene.bars.len(), usize::from(family == TaskFamily::Crawl));
                }
                Goal::Stay => assert_eq!(family, TaskFamily::Stop),
            }
        }
    }
    assert!("walk_to".parse::<TaskFamily>().is_err());
}

/// Plays a seeded collection episode without writing it: (outcome, checksum of the frames).
fn play(family: TaskFamily, seed: u64, size: u32, clean: bool) -> (Outcome, u32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let scenario = sample_task(family, false, &mut rng).unwrap();
    let mut expert = if clean {
        Expert::new(&scenario, space(), ExpertQuality::clean(), seed)
    } else {
        Expert::sampled(&scenario, space(), DataDesign::Original, DetourSide::Away, &mut rng)
    };
    let mut hash = crc32fast::Hasher::new();
    let outcome = run_episode(WorldKind::Kinematic, scenario, &mut expert, size, &mut |step| {
        hash.update(step.pixels);
        Ok(())
    })
    .unwrap();
    (outcome, hash.finalize())
}

#[test]
fn episodes_are_deterministic_for_a_seed() {
    for family in TaskFamily::ALL {
        let a = play(family, 7, 32, false);
        assert_eq!(a, play(family, 7, 32, false), "{family}");
        assert_ne!(a.1, play(family, 8, 32, false).1, "{family}");
    }
}

#[test]
fn a_left_detour_passes_on_the_left_where_there_is_room_and_the_clean_expert_still_succeeds() {
    let (mut left, mut successes) = (0, 0);
    for i in 0..30 {
        let seed = episode_seed(5, i);
        let mut rng = StdRng::seed_from_u64(seed);
        let scenario = sample_task(TaskFamily::GoAvoid, false, &mut rng).unwrap();
        let target = &scenario.scene.objects[0];
        let (start, goal) = ((scenario.start.x, scenario.start.y), (target.x, target.y));
        let detour = |detour| {
            let expert = Expert::new(&scenario, space(), ExpertQuality { detour, ..ExpertQuality::clean() }, seed);
            let (x, y) = expert.waypoints()[0];
            // > 0: left of the line start-goal.
            (goal.0 - start.0) * (y - start.1) - (goal.1 - start.1) * (x - start.0)
        };
        let away = detour(DetourSide::Away);
        let obstacle = scenario.scene.obstacles[0].footprint.center();
        let offset = (goal.0 - start.0) * (obstacle.1 - start.1) - (goal.1 - start.1) * (obstacle.0 - start.0);
        assert!(away * offset < 0.0, "episode {i}: the away route passes on the obstacle's side");
        left += usize::from(detour(DetourSide::Left) > 0.0);

        let quality = ExpertQuality { detour: DetourSide::Left, ..ExpertQuality::clean() };
        let mut expert = Expert::new(&scenario, space(), quality, seed);
        successes += usize::from(run_episode(WorldKind::Kinematic, scenario, &mut expert, 8, &mut |_| Ok(())).unwrap().success);
    }
    assert!(left >= 25, "{left} of 30 left");
    assert!(successes >= 28, "{successes} of 30 successful");
}

#[test]
fn experts_give_mixed_outcomes_and_clean_experts_mostly_succeed() {
    for family in TaskFamily::ALL {
        let outcomes: Vec<Outcome> = (0..12).map(|i| play(family, episode_seed(3, i), 8, false).0).collect();
        let successes = outcomes.iter().filter(|o| o.success).count();
        assert!(successes > 0 && successes < outcomes.len(), "{family}: {outcomes:?}");
        let clean: Vec<Outcome> = (0..10).map(|i| play(family, episode_seed(4, i), 8, true).0).collect();
        let ok = clean.iter().filter(|o| o.success).count();
        assert!(ok >= 8, "{family}: clean expert succeeded {ok}/10: {clean:?}");
    }
}

#[test]
fn the_random_driver_only_takes_valid_bins() {
    let space = space();
    let mut driver = RandomDriver::new(space.clone(), 1);
    let mut rng = StdRng::seed_from_u64(1);
    let scenario = sample_task(TaskFamily::GoTo, false, &mut rng).unwrap();
    let world = World::new(scenario);
    let pixels = vec![0u8; 8 * 8 * 3];
    let obs = Observation { pixels: &pixels, width: 8, height: 8, instruction: "go", world: &world, time_s: 0.0 };
    let masks = space.valid_masks();
    for _ in 0..50 {
        let out = driver.decide(&obs).unwrap();
        assert!(out.bins.iter().zip(&masks).all(|(&b, m)| m[b as usize]));
    }
}

/// The world steps, `collect` stamps its frames and `train` records models' frame period at one
/// period, the presets' (and legacy configs') `DEFAULT_FRAME_PERIOD_S`.
#[test]
fn one_control_period_for_the_world_its_bags_and_its_models() {
    use crate::model::config::DEFAULT_FRAME_PERIOD_S;
    assert_eq!(CONTROL_PERIOD_NS as f64 / 1e9, DEFAULT_FRAME_PERIOD_S);
    assert_eq!(CONTROL_PERIOD_S, DEFAULT_FRAME_PERIOD_S as f32);
    assert_eq!(1.0 / CONTROL_RATE_HZ, DEFAULT_FRAME_PERIOD_S);
    assert_eq!(sim_control_config().period_s(), DEFAULT_FRAME_PERIOD_S);
}

#[test]
fn collect_writes_bags_the_reader_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CollectOptions {
        out: dir.path().join("episodes"),
        episodes: 6,
        seed: 11,
        image_size: 16,
        families: TaskFamily::ALL.to_vec(),
        design: DataDesign::Original,
        detour: DetourSide::Away,
        world: WorldKind::Kinematic,
        threads: 2,
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let report = collect(&opts, &|s| seen.lock().unwrap().push(s.index)).unwrap();
    assert_eq!(report.episodes, 6);
    assert_eq!(report.per_family.len(), 6);
    assert_eq!(seen.lock().unwrap().len(), 6);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(opts.out.join("collect.json")).unwrap()).unwrap();
    assert_eq!(json["episodes"], 6);
    for (index, family) in TaskFamily::ALL.into_iter().enumerate() {
        let bag = BagReader::open(&opts.out.join(format!("episode_{index:06}"))).unwrap();
        let mut topics: Vec<(String, u64)> = Vec::new();
        let mut outcome = None;
        bag.for_each(|m| {
            topics.push((m.topic.to_owned(), m.log_time));
            if m.type_name == EpisodeOutcome::TYPE {
                outcome = Some(decode::<EpisodeOutcome>(m.data).unwrap());
            }
        })
        .unwrap();
        let outcome = outcome.expect("an outcome");
        assert_eq!(outcome.family, family.name());
        assert_eq!(outcome.seed, episode_seed(11, index as u64));
        let count = |t: &str| topics.iter().filter(|(n, _)| n == t).count() as u32;
        assert_eq!(count(topics::INSTRUCTION.absolute), 1);
        assert_eq!(count(topics::EPISODE_OUTCOME), 1);
        assert_eq!(count(topics::CAMERA.absolute), outcome.steps);
        assert_eq!(count(topics::CMD_VEL.absolute), outcome.steps);
        assert!(count(topics::GAIT_COMMAND.absolute) <= outcome.steps);
        // Instruction first, each command 1 ms after its frame, the outcome last.
        let mut sorted = topics.clone();
        sorted.sort_by_key(|(_, t)| *t);
        assert_eq!(sorted[0].0, topics::INSTRUCTION.absolute);
        assert_eq!(sorted.last().unwrap().0, topics::EPISODE_OUTCOME);
        let frames: Vec<u64> = sorted.iter().filter(|(n, _)| n == topics::CAMERA.absolute).map(|(_, t)| *t).collect();
        let twists: Vec<u64> = sorted.iter().filter(|(n, _)| n == topics::CMD_VEL.absolute).map(|(_, t)| *t).collect();
        assert!(frames.iter().zip(&twists).all(|(f, t)| *t == f + 1_000_000));
        assert!(frames.windows(2).all(|f| f[1] - f[0] == CONTROL_PERIOD_NS), "one frame per control period");
        assert!(frames[0] >= EPOCH_NS + index as u64 * EPISODE_SPACING_NS);
        let info = bag.info().unwrap();
        assert!(info.report.damage.is_empty());
        assert!(info.topics.iter().any(|t| t.name == topics::CAMERA.absolute && t.type_name == "sensor_msgs/msg/Image"));
    }
    // Collecting into the same folder again refuses to overwrite.
    assert!(collect(&opts, &|_| ()).is_err());
}

#[test]
fn evaluation_covers_every_family_seen_and_held_out() {
    let mut driver = RandomDriver::new(space(), 0);
    let opts = EvalOptions {
        episodes: 12,
        seed: 5,
        image_size: 8,
        templates: None,
        world: WorldKind::Kinematic,
        families: TaskFamily::ALL.to_vec(),
        record: None,
    };
    let mut n = 0;
    let report = evaluate(&mut driver, &opts, &mut |_| n += 1).unwrap();
    assert_eq!((n, report.episodes, report.policy.as_str()), (12, 12, "random"));
    assert_eq!(report.per_family.len(), 6);
    assert_eq!(report.per_family_seen.len(), 6);
    assert_eq!(report.per_family_held_out.len(), 6);
    assert_eq!(report.outcomes.values().sum::<u64>(), 12);
    assert!((0.0..=1.0).contains(&report.success_rate));
    let again = evaluate(&mut RandomDriver::new(space(), 0), &opts, &mut |_| ()).unwrap();
    assert_eq!(report, again);
    // Three drivers side by side play the same episodes to the same report, whatever order the
    // episodes finish in.
    let seen = std::sync::Mutex::new(Vec::new());
    let mut drivers: Vec<RandomDriver> = (0..3).map(|_| RandomDriver::new(space(), 0)).collect();
    let side_by_side = evaluate_side_by_side(&mut drivers, &opts, &|s| seen.lock().unwrap().push(s.index)).unwrap();
    assert_eq!(side_by_side, report);
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
    assert!(evaluate_side_by_side::<RandomDriver>(&mut [], &opts, &|_| ()).is_err());
    assert!(evaluate(&mut driver, &EvalOptions { episodes: 0, ..opts }, &mut |_| ()).is_err());
}

#[test]
fn an_evaluation_of_some_families_plays_the_full_evaluations_scenes_of_those_families() {
    let all = EvalOptions {
        episodes: 24,
        seed: 5,
        image_size: 8,
        templates: None,
        world: WorldKind::Kinematic,
        families: TaskFamily::ALL.to_vec(),
        record: None,
    };
    let some = EvalOptions { families: vec![TaskFamily::Crawl, TaskFamily::GoThrough], ..all.clone() };
    let full = evaluate(&mut RandomDriver::new(space(), 0), &all, &mut |_| ()).unwrap();
    let part = evaluate(&mut RandomDriver::new(space(), 0), &some, &mut |_| ()).unwrap();
    assert_eq!(part.episodes, 8);
    assert_eq!(part.per_family.keys().collect::<Vec<_>>(), ["crawl", "go_through"]);
    // Each scene's driver is reset with its own seed, so skipping scenes changes none of the rest.
    let kept: Vec<_> = full.per_episode.iter().filter(|e| e.family == "crawl" || e.family == "go_through").collect();
    assert_eq!(part.per_episode.iter().collect::<Vec<_>>(), kept);
    let none = EvalOptions { episodes: 3, ..some.clone() };
    assert!(evaluate(&mut RandomDriver::new(space(), 0), &none, &mut |_| ()).is_err());

    // Recorded, the same episodes play out alike, each a bag named by its scene's index that holds
    // its verdict, split and driver.
    let dir = tempfile::tempdir().unwrap();
    let recorded = EvalOptions { record: Some(dir.path().to_owned()), ..some };
    assert_eq!(evaluate(&mut RandomDriver::new(space(), 0), &recorded, &mut |_| ()).unwrap(), part);
    let mut bags: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    bags.sort();
    let played: Vec<String> = recorded.played().iter().map(|i| format!("episode_{i:06}")).collect();
    assert_eq!(bags, played);
    for (name, result) in played.iter().zip(&part.per_episode) {
        let (mut outcome, mut drivers) = (None, BTreeSet::new());
        BagReader::open(&dir.path().join(name))
            .unwrap()
            .for_each(|m| {
                if m.type_name == EpisodeOutcome::TYPE {
                    outcome = Some(decode::<EpisodeOutcome>(m.data).unwrap());
                } else if m.type_name == VlaDecision::TYPE {
                    drivers.insert(decode::<VlaDecision>(m.data).unwrap().model_id);
                }
            })
            .unwrap();
        let outcome = outcome.expect("an outcome");
        assert_eq!((outcome.family.as_str(), outcome.held_out), (result.family.as_str(), result.held_out));
        assert_eq!((outcome.success, outcome.reason.as_str()), (result.success, result.reason.as_str()));
        assert_eq!(drivers, BTreeSet::from(["random".to_owned()]));
    }
    // Training reads each recording as one episode of its steps.
    for (name, result) in played.iter().zip(&part.per_episode) {
        let read = read_episodes(&dir.path().join(name), &Topics::default(), 8, 0.2, &space()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].success, read[0].reason.as_str()), (result.success, result.reason.as_str()));
        assert_eq!(read[0].frames.len(), read[0].bins.len());
    }
    // Recording into a folder that holds any of the episodes refuses before playing one: the
    // full evaluation's first episode (a go_to scene, not recorded above) is not written.
    let err =
        evaluate(&mut RandomDriver::new(space(), 0), &EvalOptions { record: Some(dir.path().to_owned()), ..all }, &mut |_| ())
            .unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");
    assert!(!dir.path().join("episode_000000").exists());
}

#[test]
fn eval_templates_replace_only_the_instruction() {
    let templates = Templates::from_json(include_str!("../../config/novel_templates.json")).unwrap();
    assert_eq!(templates.families.len(), TaskFamily::ALL.len());
    for index in 0..600 {
        let (plain, plain_seed) = eval_scenario(7, index, None).unwrap();
        let (novel, novel_seed) = eval_scenario(7, index, Some(&templates)).unwrap();
        assert_eq!(plain_seed, novel_seed, "episode {index}: the driver's seed changed");
        assert_eq!(
            (plain.family, plain.held_out, &plain.scene, plain.start, plain.goal),
            (novel.family, novel.held_out, &novel.scene, novel.start, novel.goal),
            "episode {index}: the scene changed"
        );
        let from_file = templates.families[&novel.family].iter().any(|t| {
            let (before, after) = t.split_once("{o}").unwrap_or((t, ""));
            novel.instruction.starts_with(before) && novel.instruction.ends_with(after)
        });
        assert!(from_file, "episode {index}: {:?} is not from the file", novel.instruction);
        if let Goal::Reach { object } = novel.goal {
            assert!(novel.instruction.contains(&novel.scene.objects[object].name()), "{}", novel.instruction);
        }
    }
    // A file naming some families leaves the others' built-in instructions.
    let some = Templates::from_json(r#"{"stop": ["freeze"]}"#).unwrap();
    for index in 0..12 {
        let (plain, _) = eval_scenario(7, index, None).unwrap();
        let (novel, _) = eval_scenario(7, index, Some(&some)).unwrap();
        let expected = if plain.family == TaskFamily::Stop { "freeze".to_string() } else { plain.instruction.clone() };
        assert_eq!(novel.instruction, expected);
    }
}

#[test]
fn templates_files_are_checked() {
    let error = |json: &str| Templates::from_json(json).unwrap_err().to_string();
    assert!(error(r#"{"fly": ["fly to the {o}"]}"#).contains("unknown task family 'fly'"));
    assert!(error(r#"{"go_to": ["go there"]}"#).contains("lacks {o}"));
    assert!(error(r#"{"crawl": ["crawl to the {o}"]}"#).contains("has no target object"));
    assert!(error(r#"{"stop": []}"#).contains("no templates"));
    assert!(error(r#"{"stop": ["  "]}"#).contains("empty template"));
    assert!(error(r#"["stop"]"#).contains("JSON object"));
}

/// Success rate and mean steps of the noiseless expert of `style` over 120 evaluation scenes
/// (20 per family).
fn style_score(style: StyleKind) -> (f64, f64, EvalReport) {
    let opts = EvalOptions {
        episodes: 120,
        seed: 3,
        image_size: 8,
        templates: None,
        world: WorldKind::Kinematic,
        families: TaskFamily::ALL.to_vec(),
        record: None,
    };
    let report = evaluate(&mut CleanExpert::styled(space(), style), &opts, &mut |_| ()).unwrap();
    (report.success_rate, report.mean_steps, report)
}

#[test]
fn the_mixed_designs_styles_are_what_they_claim() {
    let (clean, clean_steps, _) = style_score(StyleKind::Clean);
    let (shortcut, shortcut_steps, shortcuts) = style_score(StyleKind::Shortcut);
    let (hesitant, hesitant_steps, _) = style_score(StyleKind::Hesitant);
    let (late, _, lates) = style_score(StyleKind::LateFailure);
    assert!(clean >= 0.97, "clean {clean}");
    // Shortcuts: faster, and risky where there is something to risk (about half collide there).
    assert!(shortcut_steps < 0.85 * clean_steps, "shortcut {shortcut_steps} steps, clean {clean_steps}");
    for family in ["go_avoid", "go_through", "crawl", "distinguish"] {
        let rate = shortcuts.per_family[family];
        assert!((0.25..=0.8).contains(&rate), "{family}: shortcut success {rate}");
    }
    assert!(shortcut < clean - 0.15, "shortcut {shortcut}");
    // Hesitant runs succeed, slowly.
    assert!(hesitant >= 0.9 && hesitant_steps > 2.0 * clean_steps, "hesitant {hesitant}, {hesitant_steps} steps");
    // Late failures mostly fail, and by a mistake, not by never starting.
    assert!(late <= 0.4, "late failure {late}");
    assert!(lates.outcomes.get("collision").copied().unwrap_or(0) >= 20, "{:?}", lates.outcomes);
}

#[test]
fn the_mixed_design_collects_every_style_and_the_original_design_has_no_styles() {
    let out = tempfile::tempdir().unwrap();
    let opts = |design, dir: &str| CollectOptions {
        episodes: 60,
        out: out.path().join(dir),
        seed: 4,
        image_size: 8,
        families: TaskFamily::ALL.to_vec(),
        design,
        detour: DetourSide::Away,
        world: WorldKind::Kinematic,
        threads: 2,
    };
    let mixed = collect(&opts(DataDesign::Mixed, "mixed"), &|_| ()).unwrap();
    for kind in ["clean", "shortcut", "hesitant", "late_failure", "failure_mode"] {
        assert!(mixed.per_expert.get(kind).is_some_and(|c| c.episodes > 0), "{kind}: {:?}", mixed.per_expert.keys());
    }
    let original = collect(&opts(DataDesign::Original, "original"), &|_| ()).unwrap();
    assert_eq!(original.per_expert.keys().collect::<Vec<_>>(), ["clean", "failure_mode"]);
}
