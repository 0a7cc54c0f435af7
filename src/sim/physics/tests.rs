//! The Go2 walking in MuJoCo: velocity tracking, standing, crouching. Each test simulates a few
//! seconds (about 30 simulated seconds per CPU second in a debug build).

use super::*;

/// Mean body velocity (vx, vy, wz) over `measure_s` after `settle_s` under `command`, and whether
/// it fell; with the distance travelled while measuring.
fn walk(command: Go2Command, settle_s: f64, measure_s: f64) -> (Go2, [f64; 3], [f64; 3]) {
    let mut go2 = Go2::new().unwrap();
    let ticks = |s: f64| (s / TICK_S).round() as usize;
    for _ in 0..ticks(settle_s) {
        go2.tick(command).unwrap();
    }
    let start = go2.position();
    let mut sum = [0.0; 3];
    let n = ticks(measure_s);
    for _ in 0..n {
        go2.tick(command).unwrap();
        assert!(!go2.fallen(), "fell at {:.2} s under {command:?}", go2.time());
        let v = go2.body_velocity();
        for i in 0..3 {
            sum[i] += v[i] / n as f64;
        }
    }
    let end = go2.position();
    (go2, sum, [end[0] - start[0], end[1] - start[1], end[2] - start[2]])
}

#[test]
fn tracks_forward_velocity() {
    let started = std::time::Instant::now();
    let (go2, v, moved) = walk(Go2Command { velocity: [0.5, 0.0, 0.0], height_offset: 0.0, pitch: 0.0 }, 2.0, 4.0);
    let cpu = started.elapsed().as_secs_f64();
    eprintln!(
        "vx 0.5: mean (vx, vy, wz) = ({:.3}, {:.3}, {:.3}), moved {:.2} m; {:.0} physics steps/s, {:.1} simulated s per s",
        v[0],
        v[1],
        v[2],
        moved[0],
        go2.time() / PHYSICS_STEP_S / cpu,
        go2.time() / cpu
    );
    assert!((v[0] - 0.5).abs() < 0.1, "vx {}", v[0]);
    assert!(v[1].abs() < 0.1 && v[2].abs() < 0.1, "drift {v:?}");
    // It went forward in the world too (it started facing +x).
    assert!((moved[0] - 2.0).abs() < 0.4, "moved {moved:?}");
    assert!(go2.position()[2] > 0.25);
}

#[test]
fn tracks_yaw_rate() {
    let (go2, v, _) = walk(Go2Command { velocity: [0.0, 0.0, 0.5], height_offset: 0.0, pitch: 0.0 }, 2.0, 4.0);
    eprintln!("wz 0.5: mean (vx, vy, wz) = ({:.3}, {:.3}, {:.3})", v[0], v[1], v[2]);
    assert!((v[2] - 0.5).abs() < 0.1, "wz {}", v[2]);
    assert!(v[0].abs() < 0.1 && v[1].abs() < 0.1, "drift {v:?}");
    // It turned: about 3 rad in 6 s less the ramp-up.
    assert!(go2.heading().abs() > 0.4, "heading {}", go2.heading());
}

#[test]
fn stop_stands_still() {
    let (go2, v, moved) = walk(Go2Command::default(), 2.0, 3.0);
    let speed = (v[0] * v[0] + v[1] * v[1]).sqrt();
    eprintln!("stop: mean (vx, vy, wz) = ({:.4}, {:.4}, {:.4}), moved {:.3} m", v[0], v[1], v[2], moved[0].hypot(moved[1]));
    assert!(speed < 0.05 && v[2].abs() < 0.05, "{v:?}");
    assert!(moved[0].hypot(moved[1]) < 0.15, "{moved:?}");
    assert!(go2.position()[2] > 0.25, "height {}", go2.position()[2]);
}

#[test]
fn stopping_after_walking_comes_to_rest() {
    let mut go2 = Go2::new().unwrap();
    for _ in 0..100 {
        go2.tick(Go2Command { velocity: [0.6, 0.0, 0.3], height_offset: 0.0, pitch: 0.0 }).unwrap();
    }
    assert!(go2.body_velocity()[0] > 0.3, "{:?}", go2.body_velocity());
    for _ in 0..150 {
        go2.tick(Go2Command::default()).unwrap();
        assert!(!go2.fallen());
    }
    let v = go2.body_velocity();
    assert!(v[0].hypot(v[1]) < 0.1 && v[2].abs() < 0.1, "{v:?}");
}

#[test]
fn crouch_lowers_the_body_while_walking() {
    let standing = walk(Go2Command { velocity: [0.3, 0.0, 0.0], height_offset: 0.0, pitch: 0.0 }, 2.0, 1.0).0.position()[2];
    let (go2, v, _) = walk(Go2Command { velocity: [0.2, 0.0, 0.0], height_offset: -0.1, pitch: 0.0 }, 2.0, 2.0);
    let crouched = go2.position()[2];
    eprintln!("crouch -0.10 at vx 0.2: body {standing:.3} -> {crouched:.3} m, vx {:.3}", v[0]);
    assert!((go2.height_offset() + 0.1).abs() < 1e-9);
    assert!(standing - crouched > 0.07 && standing - crouched < 0.13, "{standing} -> {crouched}");
    assert!((v[0] - 0.2).abs() < 0.07, "vx {}", v[0]);
}

#[test]
fn the_body_pitches_as_commanded_standing_and_walking() {
    let standing = |pitch| walk(Go2Command { velocity: [0.0; 3], height_offset: 0.0, pitch }, 2.0, 0.5).0.body_pitch();
    let (level, down, up) = (standing(0.0), standing(0.175), standing(-0.175));
    eprintln!("pitch standing: 0 -> {level:.3}, +0.175 -> {down:.3}, -0.175 -> {up:.3} rad");
    assert!(level.abs() < 0.03, "{level}");
    assert!(down > level + 0.06 && up < level - 0.06, "{down} {up}");
    // Walking nose down: it keeps its feet and its speed.
    let (go2, v, _) = walk(Go2Command { velocity: [0.4, 0.0, 0.0], height_offset: 0.0, pitch: 0.175 }, 2.0, 2.0);
    eprintln!("pitch +0.175 at vx 0.4: body pitch {:.3} rad, vx {:.3}", go2.body_pitch(), v[0]);
    assert!(go2.body_pitch() > 0.03, "{}", go2.body_pitch());
    assert!((v[0] - 0.4).abs() < 0.1, "vx {}", v[0]);
}

#[test]
fn crouched_speed_is_capped() {
    let (_, v, _) = walk(Go2Command { velocity: [1.0, 0.0, 0.0], height_offset: -0.1, pitch: 0.0 }, 2.0, 2.0);
    assert!(v[0] < go2::CROUCHED_MAX_VELOCITY[0] + 0.1, "vx {}", v[0]);
}

#[test]
fn a_missing_part_names_the_setup_command() {
    // A scene referring to an unknown mesh is MuJoCo's error; a missing parts folder is ours.
    let err = part("go2/no-such-file.xml").unwrap_err().to_string();
    assert!(err.contains(SETUP_COMMAND), "{err}");
    let err = Go2::with_scene("<geom type=\"mesh\" mesh=\"no_such_mesh\"/>").err().unwrap().to_string();
    assert!(err.starts_with("MuJoCo"), "{err}");
}

#[test]
fn head_camera_sees_a_red_box_ahead() {
    // A red box 1.5 m ahead of the robot, at the camera's height.
    let scene = "<geom name=\"box\" type=\"box\" pos=\"1.8 0 0.35\" size=\"0.3 0.3 0.3\" rgba=\"0.9 0.1 0.1 1\"/>";
    let mut go2 = Go2::with_scene(scene).unwrap();
    let mut camera = HeadCamera::new(&go2, 64, 64).unwrap();
    let started = std::time::Instant::now();
    let frames = 20;
    let mut image = Vec::new();
    for _ in 0..frames {
        go2.tick(Go2Command::default()).unwrap();
        image = camera.render(&mut go2).unwrap();
    }
    let fps = frames as f64 / started.elapsed().as_secs_f64();
    assert_eq!(image.len(), 64 * 64 * 3);
    let pixel = |x: usize, y: usize| &image[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
    eprintln!(
        "head camera 64x64: {fps:.0} frames/s (with a policy tick each); centre {:?}, bottom {:?}",
        pixel(32, 32),
        pixel(32, 63)
    );
    // Not blank: the frame holds different colours.
    let distinct: std::collections::HashSet<&[u8]> = image.chunks(3).collect();
    assert!(distinct.len() > 4, "{} distinct colours", distinct.len());
    // The box is red in the centre.
    let c = pixel(32, 32);
    assert!(c[0] > 100 && c[0] > 2 * c[1] && c[0] > 2 * c[2], "centre {c:?}");
    // Below the horizon: the grey floor.
    let b = pixel(32, 63);
    let spread = b.iter().max().unwrap() - b.iter().min().unwrap();
    assert!(b[0] > 40 && spread < 40, "bottom {b:?}");
}

#[test]
fn the_robot_is_hidden_from_its_head_camera() {
    // Every geom of the robot is in a group the head camera leaves out; the floor is not.
    let go2 = Go2::new().unwrap();
    let model = go2.model();
    let base = model.name_to_id(mujoco_rs::prelude::MjtObjBase::mjOBJ_BODY, "base").unwrap();
    let (mut robot, mut shown) = (0, 0);
    for g in 0..model.ffi().ngeom as usize {
        let body = model.geom_bodyid()[g] as usize;
        let group = model.geom_group()[g] as usize;
        if model.body_rootid()[body] as usize == base {
            robot += 1;
            assert!(camera::ROBOT_GROUPS.contains(&group), "robot geom {g} in group {group}");
        } else {
            shown += usize::from(!camera::ROBOT_GROUPS.contains(&group));
        }
    }
    assert!(robot > 40 && shown >= 1, "{robot} robot geoms, {shown} shown");
}
