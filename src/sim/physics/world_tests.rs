//! The task world played by the Go2: the scene in MuJoCo where the kinematic world has it, bars
//! hit by contact and passed by crouching, the scripted expert succeeding, determinism, the head
//! camera. Each test simulates a few to twenty seconds.

use mujoco_rs::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::action::{ActionSpace, GaitFields, PlanarTwist};
use crate::control::NEUTRAL_GAIT;
use crate::model::config::quadruped_action_space;
use crate::sim::{
    run_episode, sample_task, Bar, CleanExpert, Color, Footprint, Goal, Object, Outcome, Pose, Reason, Scenario, Scene, Shape,
    TaskFamily, TaskWorld, WorldCommand, WorldKind, ARENA, BAR_BOTTOM, BAR_TOP, WALL_HEIGHT, WALL_THICKNESS,
};

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

fn forward(speed: f32, body_height: f32) -> WorldCommand {
    WorldCommand::Move {
        twist: PlanarTwist { x_vel: speed, ..Default::default() },
        gait: GaitFields { body_height, ..NEUTRAL_GAIT },
    }
}

/// A crawl scene: a wall at x 3.5 with a 1.3 m gap at y 4, a bar across the gap.
fn crawl_scene() -> (Scene, Goal) {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.add_cross_wall(3.5, 4.0, 1.3);
    let h = 0.5 * WALL_THICKNESS;
    scene.bars.push(Bar { footprint: Footprint::rect(3.5 - h, 3.35, 3.5 + h, 4.65), bottom: BAR_BOTTOM, top: BAR_TOP });
    (scene, Goal::Pass { wall_x: 3.5, gap_y: 4.0 })
}

/// The scene's geoms in the compiled model: centre and half-sizes of each box, cylinder, sphere
/// and cone against the footprints and heights of the `Scene`.
#[test]
fn the_scene_in_mujoco_is_the_kinematic_worlds() {
    let mut scene = crawl_scene().0;
    for (i, shape) in Shape::ALL.into_iter().enumerate() {
        scene.objects.push(Object { shape, color: Color::ALL[i], x: 6.0 + 0.9 * i as f32, y: 2.0 + 0.7 * i as f32 });
    }
    scene.obstacles.push(crate::sim::Obstacle { footprint: Footprint::Circle { x: 5.0, y: 6.0, r: 0.3 }, height: 0.25 });
    scene.obstacles.push(crate::sim::Obstacle { footprint: Footprint::rect(7.0, 6.2, 7.6, 6.6), height: 1.0 });
    let mjcf = scene_mjcf(&scene);
    let mut go2 = Go2::with_scene_assets(&mjcf.assets, &mjcf.worldbody).unwrap();
    go2.data_mut().forward();
    let model = go2.model();
    let geoms = SceneGeom::all(&scene);
    assert_eq!(geoms.len(), 6 + 2 + 1 + 4, "{geoms:?}");
    let close = |a: f64, b: f32, what: &str| assert!((a - f64::from(b)).abs() < 1e-4, "{what}: {a} vs {b}");
    for geom in geoms {
        let name = geom.name();
        let id = model.name_to_id(MjtObjBase::mjOBJ_GEOM, &name).unwrap();
        let (pos, size) = (go2.data().geom_xpos()[id], model.geom_size()[id]);
        let kind = model.geom_type()[id];
        // (footprint, bottom, top) the geom must occupy.
        let (footprint, bottom, top) = match geom {
            SceneGeom::Wall(i) => (scene.walls[i], 0.0, WALL_HEIGHT),
            SceneGeom::Obstacle(i) => (scene.obstacles[i].footprint, 0.0, scene.obstacles[i].height),
            SceneGeom::Bar(i) => (scene.bars[i].footprint, scene.bars[i].bottom, scene.bars[i].top),
            SceneGeom::Object(i) => (scene.objects[i].footprint(), 0.0, scene.objects[i].shape.height()),
        };
        let (cx, cy) = footprint.center();
        close(pos[0], cx, &format!("{name} x"));
        close(pos[1], cy, &format!("{name} y"));
        match (kind, footprint) {
            (MjtGeomBase::mjGEOM_BOX, Footprint::Rect { x0, y0, x1, y1 }) => {
                close(size[0], 0.5 * (x1 - x0), &format!("{name} half x"));
                close(size[1], 0.5 * (y1 - y0), &format!("{name} half y"));
                close(pos[2] - size[2], bottom, &format!("{name} bottom"));
                close(pos[2] + size[2], top, &format!("{name} top"));
            }
            (MjtGeomBase::mjGEOM_CYLINDER, Footprint::Circle { r, .. }) => {
                close(size[0], r, &format!("{name} radius"));
                close(pos[2] - size[1], bottom, &format!("{name} bottom"));
                close(pos[2] + size[1], top, &format!("{name} top"));
            }
            (MjtGeomBase::mjGEOM_SPHERE, Footprint::Circle { r, .. }) => {
                close(size[0], r, &format!("{name} radius"));
                close(pos[2] - size[0], bottom, &format!("{name} bottom"));
                close(pos[2] + size[0], top, &format!("{name} top"));
            }
            (MjtGeomBase::mjGEOM_MESH, Footprint::Circle { r, .. }) => {
                // The cone: its bounding box in the geom's frame (MuJoCo centres a mesh on its
                // centroid), upright.
                let aabb = model.geom_aabb()[id];
                let xmat = go2.data().geom_xmat()[id];
                assert!(xmat[8] > 0.9999, "{name} is not upright: {xmat:?}");
                assert!((aabb[3] - f64::from(r)).abs() < 0.01 && (aabb[4] - f64::from(r)).abs() < 0.01, "{name} {aabb:?}");
                close(pos[2] + aabb[2] - aabb[5], bottom, &format!("{name} bottom"));
                close(pos[2] + aabb[2] + aabb[5], top, &format!("{name} top"));
                close(pos[0] + aabb[0], cx, &format!("{name} x"));
            }
            other => panic!("{name}: unexpected geom {other:?}"),
        }
    }
}

#[test]
fn body_height_maps_onto_the_crouch() {
    assert_eq!(go2_height(0.0), 0.0);
    assert_eq!(go2_height(0.05), 0.0, "raising is not honoured");
    assert!((go2_height(-0.25) + 0.1125).abs() < 1e-6);
    assert!((go2_height(-1.0) + 0.1125).abs() < 1e-6);
    // The scripted experts' crouch.
    assert!((go2_height(crate::sim::expert::CROUCH_HEIGHT) + 0.09).abs() < 1e-6);
    // The bar's threshold: the kinematic body top (0.42 m + offset) meets the 0.30 m bar at
    // -0.12 m; the Go2's top (0.355 m standing) at about -0.055 m of crouch.
    assert!((go2_height(-0.12) + 0.054).abs() < 1e-6);
}

/// Drives `command` every step until the episode ends (or `limit` steps).
fn drive(world: &mut PhysicsWorld, command: WorldCommand, limit: u32) -> Option<Outcome> {
    (0..limit).find_map(|_| world.step(&command))
}

#[test]
fn a_crouch_passes_under_a_bar_the_standing_robot_hits() {
    let (scene, goal) = crawl_scene();
    let crawl = scenario(TaskFamily::Crawl, scene, (1.5, 4.0, 0.0), goal);
    let mut standing = PhysicsWorld::new(crawl.clone()).unwrap();
    let out = drive(&mut standing, forward(0.4, 0.0), 60).expect("ended");
    let at = standing.pose();
    eprintln!("standing: {out:?} at x {:.2}, y {:.2}, trunk z {:.3}", at.x, at.y, standing.go2().position()[2]);
    assert_eq!(out.reason, Reason::Collision);
    assert_eq!(standing.collision().map(|(_, scene)| scene).as_deref(), Some("bar0"));
    // Hit the bar with the head: short of the wall, in the middle of the gap.
    assert!(at.x > 2.9 && at.x < 3.5, "{at:?}");
    assert!((at.y - 4.0).abs() < 0.3, "{at:?}");

    let mut crouched = PhysicsWorld::new(crawl).unwrap();
    let out = drive(&mut crouched, forward(0.4, -0.2), 60).expect("ended");
    let at = crouched.pose();
    eprintln!("crouched: {out:?} at x {:.2}, trunk z {:.3}", at.x, crouched.go2().position()[2]);
    assert_eq!(out.reason, Reason::Passed);
    assert!((at.height + 0.2).abs() < 1e-3, "{at:?}");
}

#[test]
fn terminate_and_non_finite_commands_follow_the_kinematic_rules() {
    let (scene, goal) = crawl_scene();
    let mut world = PhysicsWorld::new(scenario(TaskFamily::Crawl, scene.clone(), (1.5, 4.0, 0.0), goal)).unwrap();
    // NaN velocities are zero, a NaN height keeps the last: the robot stands where it is.
    let nan = WorldCommand::Move {
        twist: PlanarTwist { x_vel: f32::NAN, y_vel: f32::INFINITY, yaw_vel: f32::NAN },
        gait: GaitFields { body_height: f32::NAN, ..NEUTRAL_GAIT },
    };
    assert_eq!(drive(&mut world, nan, 5), None);
    let p = world.pose();
    assert!((p.x - 1.5).hypot(p.y - 4.0) < 0.05 && p.height == 0.0, "{p:?}");
    let out = world.step(&WorldCommand::Terminate).unwrap();
    assert_eq!((out.reason, out.success, out.terminated, out.steps), (Reason::TerminatedEarly, false, true, 6));
    assert_eq!(world.step(&forward(0.5, 0.0)), Some(out), "the world no longer moves");

    let mut stop = PhysicsWorld::new(scenario(TaskFamily::Stop, scene, (1.5, 4.0, 0.0), Goal::Stay)).unwrap();
    let out = drive(&mut stop, WorldCommand::Stand, 100).unwrap();
    assert_eq!((out.reason, out.steps), (Reason::Stayed, TaskFamily::Stop.max_steps()));
}

fn space() -> ActionSpace {
    ActionSpace::new(&quadruped_action_space()).unwrap()
}

/// The clean expert's outcome in the physics world, and a digest of every frame it saw.
fn expert_episode(scenario: Scenario) -> (Outcome, u64) {
    use std::hash::{Hash, Hasher};
    let mut expert = CleanExpert::new(space());
    crate::sim::Driver::reset(&mut expert, 1);
    let mut frames = std::collections::hash_map::DefaultHasher::new();
    let outcome = run_episode(WorldKind::Physics, scenario, &mut expert, 16, &mut |step| {
        step.pixels.hash(&mut frames);
        Ok(())
    })
    .unwrap();
    (outcome, frames.finish())
}

#[test]
fn the_clean_expert_reaches_the_object() {
    let scenario = sample_task(TaskFamily::GoTo, false, &mut StdRng::seed_from_u64(3)).unwrap();
    let (out, _) = expert_episode(scenario.clone());
    eprintln!("go_to {:?} from {:?}: {out:?}", scenario.scene.objects[0], scenario.start);
    assert_eq!(out.reason, Reason::Reached, "{out:?}");
}

#[test]
fn the_clean_expert_crawls_under_the_bar() {
    let scenario = sample_task(TaskFamily::Crawl, false, &mut StdRng::seed_from_u64(3)).unwrap();
    let (out, _) = expert_episode(scenario.clone());
    eprintln!("crawl {:?} from {:?}: {out:?}", scenario.goal, scenario.start);
    assert_eq!(out.reason, Reason::Passed, "{out:?}");
}

#[test]
fn the_same_scenario_plays_the_same() {
    let scenario = sample_task(TaskFamily::GoAvoid, false, &mut StdRng::seed_from_u64(5)).unwrap();
    let first = expert_episode(scenario.clone());
    let second = expert_episode(scenario);
    eprintln!("go_avoid: {:?}", first.0);
    assert!(first.0.steps > 5, "{:?}", first.0);
    assert_eq!(first, second);
}

#[test]
fn the_head_camera_sees_a_red_object_ahead() {
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(Object { shape: Shape::Cube, color: Color::Red, x: 2.8, y: 4.0 });
    let mut world = PhysicsWorld::new(scenario(TaskFamily::GoTo, scene, (1.5, 4.0, 0.0), Goal::Reach { object: 0 })).unwrap();
    world.step(&WorldCommand::Stand);
    let mut image = Vec::new();
    world.render(64, &mut image).unwrap();
    assert_eq!(image.len(), 64 * 64 * 3);
    let reddish = |x: usize, y: usize| {
        let p = &image[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
        p[0] > 100 && u16::from(p[0]) > 2 * u16::from(p[1]) && u16::from(p[0]) > 2 * u16::from(p[2])
    };
    let centre = (24..40).flat_map(|y| (24..40).map(move |x| (x, y))).filter(|&(x, y)| reddish(x, y)).count();
    let corners = [(2, 2), (61, 2), (2, 61), (61, 61)].iter().filter(|&&(x, y)| reddish(x, y)).count();
    eprintln!("{centre} of 256 centre pixels reddish");
    assert!(centre > 100, "{centre} reddish pixels in the centre");
    assert_eq!(corners, 0);
    // Another size makes another camera.
    world.render(32, &mut image).unwrap();
    assert_eq!(image.len(), 32 * 32 * 3);
}
