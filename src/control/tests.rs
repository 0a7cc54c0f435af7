use std::time::Duration;

use super::*;
use crate::action::ActionCommand;
use crate::policy::{Decide, FrameError, FrameJob, InferenceWorker, Timing};

const PERIOD: f64 = 0.1;

fn decision(x: f32, y: f32, yaw: f32, terminate: bool) -> Result<Decision, PolicyError> {
    let command = ActionCommand {
        terminate,
        twist: PlanarTwist { x_vel: x, y_vel: y, yaw_vel: yaw },
        gait: GaitFields { step_frequency: 3.0, stance_width: 0.3, ..GaitFields::default() },
        values: vec![terminate as u8 as f32, x, y, yaw],
    };
    Ok(Decision { command, bins: vec![0; 4], q: vec![0.5; 4], expert_load: vec![], timing: Timing::default() })
}

/// The instruction in force: what decisions made for it carry.
fn current(c: &Controller) -> Arc<str> {
    c.instruction().cloned().expect("an instruction")
}

/// A controller following `go` with a fresh frame at t = 0.
fn following() -> Controller {
    let mut c = Controller::new(ControlConfig::default()).unwrap();
    c.set_instruction(Some("go".into()));
    c.frame_received(0.0, Duration::ZERO);
    c
}

#[test]
fn stands_still_until_it_has_an_instruction_a_frame_and_a_decision() {
    let mut c = Controller::new(ControlConfig::default()).unwrap();
    assert_eq!(c.tick(0.0).stop, Some(StopReason::NoInstruction));
    c.set_instruction(Some("go".into()));
    assert_eq!(c.tick(0.1).stop, Some(StopReason::NoFrame));
    c.frame_received(0.1, Duration::ZERO);
    let out = c.tick(0.2);
    assert_eq!(out.stop, Some(StopReason::Waiting));
    assert_eq!(out.twist, PlanarTwist::default());
    assert_eq!(out.gait, NEUTRAL_GAIT);
    assert_eq!(c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0), Applied::Followed);
    let out = c.tick(0.3);
    assert_eq!(out.stop, None);
    assert!(out.twist.x_vel > 0.0);
    assert_eq!(out.gait.step_frequency, 3.0);
}

#[test]
fn speeds_up_at_the_acceleration_limit_and_never_past_the_velocity_limit() {
    let mut c = following();
    let cfg = *c.config();
    let mut last = PlanarTwist::default();
    for i in 1..=30 {
        let t = i as f64 * PERIOD;
        c.frame_received(t, Duration::ZERO);
        c.apply(&current(&c), &decision(3.0, -2.0, 0.4, false), t);
        let out = c.tick(t);
        assert_eq!(out.stop, None);
        let step = |a: f32, b: f32| (a - b).abs();
        assert!(step(out.twist.x_vel, last.x_vel) <= cfg.x_vel.max_accel * PERIOD as f32 + 1e-6);
        assert!(step(out.twist.y_vel, last.y_vel) <= cfg.y_vel.max_accel * PERIOD as f32 + 1e-6);
        assert!(out.twist.x_vel <= cfg.x_vel.max && out.twist.y_vel >= cfg.y_vel.min);
        last = out.twist;
    }
    assert_eq!(last.x_vel, cfg.x_vel.max);
    assert_eq!(last.y_vel, cfg.y_vel.min);
    assert!((last.yaw_vel - 0.4).abs() < 1e-6);
}

#[test]
fn a_stale_frame_stops_at_once_and_fresh_frames_resume() {
    let mut c = following();
    c.apply(&current(&c), &decision(0.8, 0.0, 0.0, false), 0.0);
    for i in 1..=5 {
        c.tick(i as f64 * PERIOD);
    }
    let timeout = c.config().image_timeout_s;
    let out = c.tick(timeout + 0.05);
    assert!(matches!(out.stop, Some(StopReason::StaleFrame { .. })), "{:?}", out.stop);
    assert_eq!(out.twist, PlanarTwist::default());
    c.frame_received(1.0, Duration::ZERO);
    c.apply(&current(&c), &decision(0.8, 0.0, 0.0, false), 1.0);
    let out = c.tick(1.0);
    assert_eq!(out.stop, None);
    // Resumes from standstill, at the acceleration limit.
    assert!(out.twist.x_vel > 0.0 && out.twist.x_vel <= c.config().x_vel.max_accel * 2.0 * PERIOD as f32);
}

#[test]
fn terminate_holds_a_stop_until_a_new_instruction() {
    let mut c = following();
    assert_eq!(c.apply(&current(&c), &decision(0.5, 0.0, 0.0, true), 0.0), Applied::Terminated);
    assert_eq!(c.tick(0.1).stop, Some(StopReason::Terminated));
    assert_eq!(c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0), Applied::Stale);
    assert_eq!(c.tick(0.2).stop, Some(StopReason::Terminated));
    c.set_instruction(Some("go".into()));
    assert_eq!(c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0), Applied::Followed);
    assert_eq!(c.tick(0.3).stop, None);
}

#[test]
fn disabling_stops_and_enabling_waits_for_a_new_decision() {
    let mut c = following();
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0);
    assert!(c.tick(0.1).twist.x_vel > 0.0);
    c.set_enabled(false);
    let out = c.tick(0.2);
    assert_eq!((out.stop, out.twist), (Some(StopReason::Disabled), PlanarTwist::default()));
    c.set_enabled(true);
    assert_eq!(c.tick(0.3).stop, Some(StopReason::Waiting));
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0);
    assert_eq!(c.tick(0.4).stop, None);
}

#[test]
fn failed_or_non_finite_decisions_stop_until_a_good_one() {
    let mut c = following();
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0);
    c.tick(0.1);
    let bad = Err(PolicyError::Image(FrameError::UnknownFormat));
    assert_eq!(c.apply(&current(&c), &bad, 0.0), Applied::Failed);
    let out = c.tick(0.2);
    assert!(matches!(out.stop, Some(StopReason::DecisionFailed(_))));
    assert_eq!(out.twist, PlanarTwist::default());
    assert_eq!(c.apply(&current(&c), &decision(f32::NAN, 0.0, 0.0, false), 0.0), Applied::Failed);
    assert!(matches!(c.tick(0.3).stop, Some(StopReason::DecisionFailed(_))));
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0);
    assert_eq!(c.tick(0.4).stop, None);
}

#[test]
fn decisions_for_an_old_instruction_are_ignored() {
    let mut c = following();
    let go = current(&c);
    c.set_instruction(Some("stop".into()));
    assert_eq!(c.apply(&go, &decision(0.5, 0.0, 0.0, false), 0.0), Applied::Stale);
    assert_eq!(c.tick(0.1).stop, Some(StopReason::Waiting));
    // The same text given again is a new instruction: a decision made for the earlier copy (on
    // the earlier history) is stale too.
    let first_stop = current(&c);
    c.set_instruction(Some("stop".into()));
    assert_eq!(c.apply(&first_stop, &decision(0.5, 0.0, 0.0, true), 0.1), Applied::Stale);
    assert_eq!(c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.1), Applied::Followed);
}

/// Ticks every control period from `from` (seconds on both clocks, ROS time from `ros(t)`) with no
/// frame, until the controller stops; returns the stop and the steady time (None: moving until `until`).
fn first_stop_without_frames(c: &mut Controller, from: f64, until: f64, ros: impl Fn(f64) -> f64) -> Option<(StopReason, f64)> {
    let mut t = from;
    while t <= until {
        if let Some(stop) = c.tick(Now { ros: ros(t), steady: t }).stop {
            return Some((stop, t));
        }
        t += PERIOD;
    }
    None
}

#[test]
fn a_backward_clock_jump_with_the_camera_lost_stops_and_never_moves_again() {
    let mut c = following();
    c.frame_received(100.0, Duration::ZERO);
    c.apply(&current(&c), &decision(1.0, 0.0, 0.0, false), 100.0);
    assert_eq!(c.tick(100.0).stop, None);
    // ROS time jumps 100 s back (a looping bag, a simulator reset); the camera is gone from here.
    let out = c.tick(Now { ros: 0.1, steady: 100.1 });
    assert_eq!(out.stop, Some(StopReason::ClockJumpedBack { by_s: 99.9 }));
    assert_eq!(out.twist, PlanarTwist::default());
    for i in 2..1000 {
        let t = 100.0 + i as f64 * PERIOD;
        let out = c.tick(Now { ros: t - 100.0, steady: t });
        assert_eq!(out.twist, PlanarTwist::default(), "moved at tick {i}: {:?}", out.stop);
        assert!(out.stop.is_some());
    }
    // A decision on a frame from before the jump is stale; a frame on the new timeline and a
    // decision on it resume.
    assert_eq!(c.apply(&current(&c), &decision(1.0, 0.0, 0.0, false), 100.0), Applied::Stale);
    c.frame_received(Now { ros: 100.0, steady: 200.0 }, Duration::ZERO);
    assert_eq!(c.apply(&current(&c), &decision(1.0, 0.0, 0.0, false), 100.0), Applied::Followed);
    let out = c.tick(Now { ros: 100.0, steady: 200.0 });
    assert_eq!(out.stop, None);
    // From standstill, at the acceleration limit over one nominal period at most.
    assert!(out.twist.x_vel > 0.0 && out.twist.x_vel <= c.config().x_vel.max_accel * 2.0 * PERIOD as f32 + 1e-6);
}

#[test]
fn a_frozen_ros_clock_with_the_camera_lost_stops_on_the_steady_clock() {
    let mut c = following();
    c.apply(&current(&c), &decision(1.0, 0.0, 0.0, false), 0.0);
    assert_eq!(c.tick(0.0).stop, None);
    let timeout = c.config().image_timeout_s;
    let (stop, at) = first_stop_without_frames(&mut c, PERIOD, 60.0, |_| 0.0).expect("stops");
    assert!(matches!(stop, StopReason::StaleFrame { .. }), "{stop:?}");
    assert!(at <= timeout + PERIOD + 1e-9, "stopped at steady {at}");
    for i in 1..100 {
        assert_eq!(c.tick(Now { ros: 0.0, steady: at + i as f64 * PERIOD }).twist, PlanarTwist::default());
    }
}

#[test]
fn a_frozen_ros_clock_with_inference_hung_stops_on_the_steady_clock() {
    let mut c = following();
    // Frames keep arriving (unstamped) while ROS time stands still; the decisions stop at 0.3 s.
    for i in 0..=3 {
        let t = i as f64 * PERIOD;
        c.frame_received(Now { ros: 0.0, steady: t }, Duration::ZERO);
        c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0);
        assert_eq!(c.tick(Now { ros: 0.0, steady: t }).stop, None);
    }
    let age = c.config().max_decision_age_s;
    let mut t = 0.4;
    let stop = loop {
        c.frame_received(Now { ros: 0.0, steady: t }, Duration::ZERO);
        if let Some(stop) = c.tick(Now { ros: 0.0, steady: t }).stop {
            break stop;
        }
        assert!(t < 30.0, "never stopped");
        t += PERIOD;
    };
    assert!(matches!(stop, StopReason::StaleDecision { .. }), "{stop:?}");
    assert!(t <= 0.3 + age + PERIOD + 1e-9, "stopped at steady {t}");
}

#[test]
fn frames_stamped_far_from_now_are_not_fresh() {
    let mut c = following();
    let cfg = *c.config();
    let stamp = |t: f64| Duration::from_secs_f64(1000.0 + t);
    let ros = |t: f64| 1000.0 + t;
    c.frame_received(ros(0.0), stamp(0.0));
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), ros(0.0));
    assert_eq!(c.tick(ros(0.0)).stop, None);
    // From t = 0.1 the stream arrives 2 s late: each frame is new, none is fresh.
    let mut t = 0.1;
    let stop = loop {
        let lag_s = ros(t) - stamp(t - 2.0).as_secs_f64();
        assert!((lag_s - 2.0).abs() < 1e-6);
        assert_eq!(c.frame_received(ros(t), stamp(t - 2.0)), FrameCheck::Late { lag_s });
        if let Some(stop) = c.tick(ros(t)).stop {
            break stop;
        }
        assert!(t < 10.0, "never stopped");
        t += PERIOD;
    };
    assert!(matches!(stop, StopReason::LateFrames { .. }), "{stop:?}");
    assert!(t <= cfg.image_timeout_s + PERIOD + 1e-9, "stopped at {t}");
    // Ahead of now by as much is not fresh either; within the bound is.
    assert!(matches!(c.frame_received(ros(t), stamp(t + 2.0)), FrameCheck::Late { .. }));
    assert_eq!(c.frame_received(ros(t), stamp(t - 0.1)), FrameCheck::Fresh);
    // 0 switches the check off.
    let mut off = Controller::new(ControlConfig { max_frame_latency_s: 0.0, ..cfg }).unwrap();
    assert_eq!(off.frame_received(ros(0.0), stamp(-5.0)), FrameCheck::Fresh);
}

#[test]
fn the_estop_stops_at_once_holds_and_its_release_does_not_rearm() {
    let mut c = following();
    for i in 0..5 {
        let t = i as f64 * PERIOD;
        c.frame_received(t, Duration::ZERO);
        c.apply(&current(&c), &decision(0.8, 0.0, 0.0, false), t);
        c.tick(t);
    }
    c.set_estop(true);
    let out = c.tick(0.5);
    assert_eq!((out.stop, out.twist), (Some(StopReason::EStop), PlanarTwist::default()));
    assert!(!c.set_enabled(true), "enabling is refused while the e-stop is engaged");
    for i in 6..20 {
        let t = i as f64 * PERIOD;
        c.frame_received(t, Duration::ZERO);
        assert_eq!(c.apply(&current(&c), &decision(0.8, 0.0, 0.0, false), t), Applied::Followed);
        assert_eq!(c.tick(t).twist, PlanarTwist::default());
    }
    c.set_estop(false);
    c.frame_received(2.0, Duration::ZERO);
    c.apply(&current(&c), &decision(0.8, 0.0, 0.0, false), 2.0);
    let out = c.tick(2.0);
    assert_eq!((out.stop, out.twist), (Some(StopReason::Disabled), PlanarTwist::default()));
    assert!(c.set_enabled(true));
    assert_eq!(c.tick(2.1).stop, Some(StopReason::Waiting), "arming waits for a new decision");
}

#[test]
fn the_deadman_stops_unless_a_heartbeat_is_recent() {
    let mut c = Controller::new(ControlConfig { deadman_timeout_s: 0.3, ..ControlConfig::default() }).unwrap();
    c.set_instruction(Some("go".into()));
    let go = |c: &mut Controller, t: f64| {
        c.frame_received(t, Duration::ZERO);
        c.apply(&current(c), &decision(0.5, 0.0, 0.0, false), t);
        c.tick(t)
    };
    assert_eq!(go(&mut c, 0.0).stop, Some(StopReason::Deadman), "no heartbeat yet");
    c.heartbeat(0.05, true);
    assert_eq!(go(&mut c, 0.1).stop, None);
    assert_eq!(go(&mut c, 0.3).stop, None);
    let out = go(&mut c, 0.4);
    assert_eq!((out.stop, out.twist), (Some(StopReason::Deadman), PlanarTwist::default()), "heartbeat 0.35 s old");
    c.heartbeat(0.45, true);
    assert_eq!(go(&mut c, 0.5).stop, None);
    c.heartbeat(0.55, false);
    assert_eq!(go(&mut c, 0.6).stop, Some(StopReason::Deadman), "released");
}

#[test]
fn rejects_unsafe_settings() {
    let base = ControlConfig::default();
    let bad = [
        ControlConfig { control_rate_hz: 0.0, ..base },
        ControlConfig { control_rate_hz: 0.001, ..base },
        ControlConfig { control_rate_hz: 1e9, ..base },
        ControlConfig { image_timeout_s: f64::NAN, ..base },
        ControlConfig { image_timeout_s: 1e9, ..base },
        ControlConfig { max_decision_age_s: 3600.0, ..base },
        ControlConfig { x_vel: AxisLimit { min: 0.2, max: 1.0, max_accel: 1.0 }, ..base },
        ControlConfig { y_vel: AxisLimit { min: -1.0, max: f32::INFINITY, max_accel: 1.0 }, ..base },
        ControlConfig { yaw_vel: AxisLimit::symmetric(1.0, 0.0), ..base },
    ];
    for cfg in bad {
        assert!(Controller::new(cfg).is_err(), "{cfg:?}");
    }
    assert!(Controller::new(base).is_ok());
}

#[test]
fn latency_quantiles_use_the_window() {
    let mut s = LatencyStats::new(4);
    assert_eq!(s.quantile(0.5), None);
    for ms in [100.0, 1.0, 2.0, 3.0, 4.0, f32::NAN] {
        s.record(ms);
    }
    assert_eq!(s.count(), 5);
    assert_eq!(s.quantile(0.5), Some(2.0));
    assert_eq!(s.quantile(0.99), Some(4.0));
    assert_eq!(s.quantile(0.0), Some(1.0));
}

#[test]
fn two_ticks_at_the_same_instant_change_nothing() {
    let mut c = following();
    c.apply(&current(&c), &decision(1.0, 0.0, 0.0, false), 0.0);
    let first = c.tick(0.1).twist;
    assert_eq!(c.tick(0.1).twist, first);
}

/// A decision with the given gait.
fn decision_with_gait(gait: GaitFields) -> Result<Decision, PolicyError> {
    let mut d = decision(0.5, 0.0, 0.0, false);
    d.as_mut().unwrap().command.gait = gait;
    d
}

/// Ticks from `from` in control periods, a fresh frame each time, until the controller stops;
/// returns the stop and its time (None if it kept moving up to `until`).
fn first_stop(c: &mut Controller, from: f64, until: f64, stamp: impl Fn(f64) -> Duration) -> Option<(StopReason, f64)> {
    let period = c.config().period_s();
    let mut t = from;
    while t <= until {
        c.frame_received(t, stamp(t));
        if let Some(stop) = c.tick(t).stop {
            return Some((stop, t));
        }
        t += period;
    }
    None
}

#[test]
fn an_old_decision_stops_within_its_age_limit_and_one_period_though_frames_keep_coming() {
    let mut c = following();
    let cfg = *c.config();
    // Inference answers for the frames up to t = 0.5, then hangs; the camera goes on.
    for i in 0..=5 {
        let t = i as f64 * PERIOD;
        c.frame_received(t, Duration::ZERO);
        c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), t);
        assert_eq!(c.tick(t).stop, None);
    }
    let (stop, at) = first_stop(&mut c, 0.6, 5.0, |_| Duration::ZERO).expect("stops");
    assert!(matches!(stop, StopReason::StaleDecision { .. }), "{stop:?}");
    assert!(at <= 0.5 + cfg.max_decision_age_s + cfg.period_s() + 1e-9, "stopped at {at}");
    assert_eq!(c.tick(at + PERIOD).twist, PlanarTwist::default());
    // A new decision on a fresh frame resumes.
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), at + PERIOD);
    assert_eq!(c.tick(at + PERIOD).stop, None);
}

#[test]
fn frames_repeating_an_old_stamp_stop_within_the_image_timeout_and_one_period() {
    // Stamps on another clock than the controller's: the latency check is off here (it has its own test).
    let cfg = ControlConfig { max_frame_latency_s: 0.0, ..ControlConfig::default() };
    let mut c = Controller::new(cfg).unwrap();
    c.set_instruction(Some("go".into()));
    c.frame_received(0.0, Duration::ZERO);
    let stamp = |t: f64| Duration::from_secs_f64(100.0 + t);
    for i in 0..=3 {
        let t = i as f64 * PERIOD;
        c.frame_received(t, stamp(t));
        c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), t);
        assert_eq!(c.tick(t).stop, None);
    }
    // From t = 0.3 the driver re-sends its last frame, and the (hung-up) pipeline keeps deciding on it.
    let frozen = stamp(0.3);
    let period = cfg.period_s();
    let mut t = 0.4;
    let stopped_at = loop {
        c.frame_received(t, frozen);
        c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), t);
        let out = c.tick(t);
        if let Some(stop) = out.stop {
            assert!(matches!(stop, StopReason::FrozenStamps { .. }), "{stop:?}");
            assert_eq!(out.twist, PlanarTwist::default());
            break t;
        }
        assert!(t < 5.0, "never stopped");
        t += period;
    };
    assert!(stopped_at <= 0.3 + cfg.image_timeout_s + period + 1e-9, "stopped at {stopped_at}");
    // Unstamped frames always count, and so does the check's switch.
    let mut c = Controller::new(ControlConfig { require_new_stamps: false, ..cfg }).unwrap();
    c.set_instruction(Some("go".into()));
    assert_eq!(first_stop(&mut c, 0.0, 0.0, |_| frozen), Some((StopReason::Waiting, 0.0)));
    for i in 1..=20 {
        let t = i as f64 * PERIOD;
        c.frame_received(t, frozen);
        c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), t);
        assert_eq!(c.tick(t).stop, None);
    }
}

#[test]
fn a_dead_inference_thread_stops_for_good() {
    let mut c = following();
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.0);
    assert_eq!(c.tick(0.1).stop, None);
    c.inference_died();
    let out = c.tick(0.2);
    assert_eq!((out.stop, out.twist), (Some(StopReason::InferenceDied), PlanarTwist::default()));
    c.set_instruction(Some("go".into()));
    c.apply(&current(&c), &decision(0.5, 0.0, 0.0, false), 0.3);
    assert_eq!(c.tick(0.3).stop, Some(StopReason::InferenceDied));
}

#[test]
fn no_gait_field_ever_leaves_its_limits_or_changes_faster_than_its_rate() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut c = following();
    let cfg = *c.config();
    let limits = cfg.gait;
    let mut last = NEUTRAL_GAIT;
    let mut t = 0.0;
    for step in 0..3000 {
        // Wild decisions (far outside any sane range, sometimes not finite), stops, odd tick spacing.
        let mut wild = || match rng.random_range(0..20) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            _ => rng.random_range(-10.0f32..10.0),
        };
        let gait = GaitFields {
            body_height: wild(),
            step_frequency: wild(),
            phase_offsets: [wild(), wild(), wild()],
            footswing_height: wild(),
            pitch: wild(),
            stance_width: wild(),
        };
        t += rng.random_range(0.0..0.3);
        if step % 7 != 0 {
            c.frame_received(t, Duration::ZERO);
        }
        if step % 11 == 0 {
            c.set_enabled(!c.enabled());
        }
        c.apply(&current(&c), &decision_with_gait(gait), t);
        let dt = (2.0 * cfg.period_s()) as f32; // the longest step a tick takes
        let out = c.tick(t);
        let g = out.gait;
        assert!(limits.contains(&g), "step {step}: {g:?}");
        let rate_ok = |a: f32, b: f32, limit: GaitLimit| (a - b).abs() <= limit.max_rate * dt + 1e-5;
        assert!(rate_ok(g.body_height, last.body_height, limits.body_height));
        assert!(rate_ok(g.step_frequency, last.step_frequency, limits.step_frequency));
        assert!((0..3).all(|i| rate_ok(g.phase_offsets[i], last.phase_offsets[i], limits.phase_offset)));
        assert!(rate_ok(g.footswing_height, last.footswing_height, limits.footswing_height));
        assert!(rate_ok(g.pitch, last.pitch, limits.pitch));
        assert!(rate_ok(g.stance_width, last.stance_width, limits.stance_width));
        last = g;
    }
}

#[test]
fn the_gait_eases_to_the_decisions_and_back_to_neutral_on_a_stop() {
    let mut c = following();
    let crouch = GaitFields { body_height: -0.2, pitch: 0.1, ..NEUTRAL_GAIT };
    let rate = c.config().gait.body_height.max_rate as f64;
    let mut t = 0.0;
    while c.tick(t).gait.body_height > -0.2 {
        t += PERIOD;
        c.frame_received(t, Duration::ZERO);
        c.apply(&current(&c), &decision_with_gait(crouch), t);
        assert!(t < 5.0);
    }
    // 0.2 m at the rate limit, in whole periods.
    assert!((t - (0.2 / rate / PERIOD).ceil() * PERIOD).abs() < 1e-6 + PERIOD, "reached at {t}");
    assert!((c.tick(t).gait.pitch - 0.1).abs() < 1e-6);
    c.set_enabled(false);
    let mut stopped = c.tick(t + PERIOD);
    assert_eq!(stopped.twist, PlanarTwist::default());
    assert!(stopped.gait.body_height > -0.2 && stopped.gait.body_height < 0.0);
    for i in 2..20 {
        stopped = c.tick(t + i as f64 * PERIOD);
    }
    assert_eq!(stopped.gait, NEUTRAL_GAIT);
}

#[test]
fn rejects_unsafe_gait_limits() {
    let base = ControlConfig::default();
    let with = |f: fn(&mut GaitLimits)| {
        let mut cfg = base;
        f(&mut cfg.gait);
        cfg
    };
    let bad = [
        with(|g| g.body_height.min = f32::NAN),
        with(|g| g.pitch = GaitLimit { min: 0.3, max: -0.3, max_rate: 1.0 }),
        with(|g| g.stance_width.max_rate = 0.0),
        // The neutral gait (body_height 0) must be reachable.
        with(|g| g.body_height.max = -0.1),
        ControlConfig { max_decision_age_s: -1.0, ..base },
        ControlConfig { max_frame_latency_s: -0.1, ..base },
        ControlConfig { max_frame_latency_s: f64::NAN, ..base },
        ControlConfig { deadman_timeout_s: 11.0, ..base },
        ControlConfig { idle_settle_s: -1.0, ..base },
    ];
    for cfg in bad {
        assert!(Controller::new(cfg).is_err(), "{cfg:?}");
    }
}

#[test]
fn control_params_map_each_name_to_its_limit() {
    let custom = ControlParams {
        max_pitch: 0.1,
        max_linear_y: 0.2,
        min_body_height: -0.1,
        max_phase_offset_rate: 5.0,
        require_new_stamps: false,
        ..ControlParams::default()
    };
    let cfg = custom.to_config();
    assert_eq!((cfg.gait.pitch.max, cfg.gait.pitch.min), (0.1, -0.3));
    assert_eq!((cfg.y_vel.min, cfg.y_vel.max), (-0.2, 0.2));
    assert_eq!(cfg.gait.body_height.min, -0.1);
    assert_eq!(cfg.gait.phase_offset, GaitLimit { min: 0.0, max: 1.0, max_rate: 5.0 });
    assert!(!cfg.require_new_stamps);
    assert!(Controller::new(cfg).is_ok());
}

/// An inference stand-in: answers `answers` frames, then hangs until released or panics.
struct Faulty {
    answers: usize,
    fault: Fault,
}

enum Fault {
    Hang(std::sync::mpsc::Receiver<()>),
    Panic,
}

impl Decide for Faulty {
    fn reset(&mut self) {}

    fn decide(&mut self, _: &crate::policy::Frame<'_>, _: &str, _: f64) -> Result<Decision, PolicyError> {
        if self.answers == 0 {
            match &self.fault {
                // Bounded, so that a failing test cannot hang the worker's join forever.
                Fault::Hang(release) => {
                    let _ = release.recv_timeout(Duration::from_secs(60));
                }
                Fault::Panic => panic!("injected inference fault"),
            }
        }
        self.answers = self.answers.saturating_sub(1);
        decision(0.5, 0.0, 0.0, false)
    }
}

/// Drives a real `InferenceWorker` around `decider` the way the node does (frames to the session
/// and the worker, decisions to the session, a dead worker reported, a tick per frame) on a logical
/// clock of one frame per control period. Frames up to `answered` get their decision before the
/// tick; later ones get none. Returns (time of the last applied decision's frame, first stop, its
/// time).
fn drive_worker(decider: Faulty, answered: usize, release: Option<std::sync::mpsc::Sender<()>>) -> (f64, StopReason, f64) {
    let dies = matches!(decider.fault, Fault::Panic);
    let (decisions, decided) = std::sync::mpsc::channel();
    let worker = InferenceWorker::spawn(decider, move |d| {
        let _ = decisions.send(d);
    })
    .unwrap();
    let mut session = Session::new(ControlConfig::default(), 10).unwrap();
    let period = session.config().period_s();
    let instruction: Arc<str> = "go".into();
    session.instruct(instruction.clone());
    let mut last_applied = f64::NAN;
    for i in 0..100 {
        let t = i as f64 * period;
        let frame = Arc::new(crate::policy::OwnedFrame::raw(2, 2, 6, "rgb8", vec![0; 12]).unwrap());
        session.frame_received(t, Duration::ZERO);
        let job = FrameJob {
            frame,
            instruction: instruction.clone(),
            source_stamp: Duration::ZERO,
            received_at: t,
            asked: std::time::Instant::now(),
        };
        worker.submit(job);
        let wait = if i < answered { Duration::from_secs(30) } else { Duration::from_millis(20) };
        if let Ok(d) = decided.recv_timeout(wait) {
            assert!(i < answered, "frame {i} was decided after the fault");
            let (applied, _) = session.decided(&d.instruction, &d.result, d.frame_time, d.latency_ms, t);
            assert_eq!(applied, Applied::Followed);
            last_applied = d.frame_time;
        }
        if dies && i == answered {
            // A panicking thread takes a moment to unwind; the node's next tick sees it gone.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while worker.is_alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if !worker.is_alive() {
            session.inference_died();
        }
        if let Some(stop) = session.tick(t).output.stop {
            assert!(i >= answered, "stopped at frame {i} before the fault: {stop:?}");
            // Let a hung thread go, so that the worker can be joined.
            drop(release);
            return (last_applied, stop, t);
        }
    }
    drop(release);
    panic!("never stopped");
}

#[test]
fn a_hung_inference_thread_stops_the_robot_within_the_decision_age_limit_and_one_period() {
    let (release, hang) = std::sync::mpsc::channel();
    let (last, stop, at) = drive_worker(Faulty { answers: 5, fault: Fault::Hang(hang) }, 5, Some(release));
    let cfg = ControlConfig::default();
    assert!(matches!(stop, StopReason::StaleDecision { .. }), "{stop:?}");
    assert!(at <= last + cfg.max_decision_age_s + cfg.period_s() + 1e-9, "last decision on {last}, stopped at {at}");
}

#[test]
fn a_panicking_inference_thread_stops_the_robot_at_the_next_tick() {
    let (_, stop, at) = drive_worker(Faulty { answers: 3, fault: Fault::Panic }, 3, None);
    let cfg = ControlConfig::default();
    assert_eq!(stop, StopReason::InferenceDied);
    assert!(at <= 3.0 * cfg.period_s() + 1e-9, "stopped at {at}");
}

#[test]
fn a_session_counts_each_stop_once_per_change_and_every_command() {
    let mut s = Session::new(ControlConfig::default(), 10).unwrap();
    let first = s.tick(0.0);
    assert!(first.stop_changed && first.output.stop == Some(StopReason::NoInstruction));
    assert!(!s.tick(0.1).stop_changed, "the same stop again is no change");
    s.instruct("go".into());
    s.frame_received(0.2, Duration::ZERO);
    let go = s.instruction().cloned().unwrap();
    let (applied, tick) = s.decided(&go, &decision(0.5, 0.0, 0.0, false), 0.2, 3.0, 0.2);
    assert_eq!(applied, Applied::Followed);
    let tick = tick.expect("a followed decision goes out at once");
    assert!(tick.stop_changed && tick.output.stop.is_none());
    // A decision for an instruction no longer in force sends nothing and counts as stale.
    let (applied, tick) = s.decided(&Arc::from("old"), &decision(0.5, 0.0, 0.0, false), 0.2, 3.0, 0.25);
    assert_eq!((applied, tick), (Applied::Stale, None));
    s.reject_instruction();
    assert_eq!(s.tick(0.3).output.stop, Some(StopReason::NoInstruction));
    let c = s.counters();
    // Commands sent: the followed decision and the first tick of the new idle stop; the two ticks
    // before the first instruction were idle from the start, so silent.
    assert_eq!((c.instructions, c.bad_instructions, c.frames, c.decisions, c.stale_decisions, c.commands), (2, 1, 1, 2, 1, 2));
    assert_eq!(c.stops.get("no_instruction").map(|(n, _)| *n), Some(2));
    assert_eq!(s.latency().count(), 2);
}

#[test]
fn new_limits_apply_at_the_next_tick_and_invalid_ones_change_nothing() {
    let mut c = following();
    c.apply(&current(&c), &decision(0.8, 0.0, 0.0, false), 0.0);
    for i in 0..20 {
        let t = i as f64 * PERIOD;
        c.frame_received(t, Duration::ZERO);
        c.apply(&current(&c), &decision(0.8, 0.0, 0.0, false), t);
        c.tick(t);
    }
    c.frame_received(2.0, Duration::ZERO);
    assert!((c.tick(2.0).twist.x_vel - 0.8).abs() < 1e-6);
    let mut slower = *c.config();
    slower.x_vel.max = 0.3;
    c.set_config(slower).unwrap();
    c.frame_received(2.1, Duration::ZERO);
    assert_eq!(c.tick(2.1).twist.x_vel, 0.3, "clamped at once, not ramped");
    let mut broken = slower;
    broken.x_vel.max = -1.0;
    assert!(c.set_config(broken).is_err());
    assert_eq!(c.config().x_vel.max, 0.3);
    c.frame_received(2.2, Duration::ZERO);
    assert_eq!(c.tick(2.2).twist.x_vel, 0.3);
}

#[test]
fn a_session_goes_quiet_after_an_idle_stop_and_speaks_again_when_armed() {
    let mut s = Session::new(ControlConfig::default(), 10).unwrap();
    let settle = s.config().idle_settle_s;
    // Idle from the start: nothing to retract, so nothing goes out.
    assert!(!s.tick(0.0).publish);
    s.instruct("go".into());
    s.frame_received(0.1, Duration::ZERO);
    let waiting = s.tick(0.1);
    assert!(waiting.publish && waiting.output.stop == Some(StopReason::Waiting), "{waiting:?}");
    let go = s.instruction().cloned().unwrap();
    let (_, tick) = s.decided(&go, &decision(0.5, 0.0, 0.0, false), 0.1, 3.0, 0.1);
    assert!(tick.unwrap().publish);
    // Disabled: zeros for the settle time, then silence; a change to another idle stop (the
    // instruction withdrawn) does not restart the settle time.
    s.set_enabled(false);
    let mut t = 0.2;
    let mut sent = Vec::new();
    while t < 3.0 {
        if t > 0.6 && t < 0.7 {
            s.clear_instruction();
        }
        s.frame_received(t, Duration::ZERO);
        let tick = s.tick(t);
        assert_eq!(tick.output.twist, PlanarTwist::default());
        if tick.publish {
            sent.push(t);
        }
        t += PERIOD;
    }
    assert!(!sent.is_empty() && sent.iter().all(|&at| at - 0.2 <= settle + 1e-9), "{sent:?}");
    assert!(sent.last().unwrap() + PERIOD > 0.2 + settle - 1e-9, "zeros for the whole settle time: {sent:?}");
    // A stop that is not idle (the camera lost while following) keeps the zeros coming.
    assert!(s.set_enabled(true));
    s.instruct("go".into());
    for i in 0..40 {
        assert!(s.tick(3.0 + i as f64 * PERIOD).publish);
    }
    assert!(s.stop().is_some_and(|r| r.is_camera()));
}

#[test]
fn the_parameter_table_defines_each_parameter_once_and_maps_it_to_its_field() {
    let names: Vec<&str> = ControlParams::SPECS.iter().map(|p| p.name).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    for spec in ControlParams::SPECS {
        assert!(!spec.description.is_empty() && !spec.description.contains('\n'), "{}", spec.name);
        let mut p = ControlParams::default();
        let changed = match (spec.get)(&p) {
            ParamValue::Float(v) => ParamValue::Float(v + 0.25),
            ParamValue::Bool(v) => ParamValue::Bool(!v),
        };
        (spec.set)(&mut p, changed).unwrap();
        assert_eq!((spec.get)(&p), changed, "{}", spec.name);
        assert_ne!(p, ControlParams::default(), "{} sets no field", spec.name);
        let wrong = match changed {
            ParamValue::Float(_) => ParamValue::Bool(true),
            ParamValue::Bool(_) => ParamValue::Float(1.0),
        };
        assert!((spec.set)(&mut p, wrong).is_err(), "{}", spec.name);
    }
    // serde reads the same names (replay's --params-file).
    let from_yaml: ControlParams = serde_yaml_ng::from_str("idle_settle_s: 2.0\nmax_frame_latency_s: 0.0\n").unwrap();
    assert_eq!((from_yaml.idle_settle_s, from_yaml.max_frame_latency_s), (2.0, 0.0));
    let cfg = from_yaml.to_config();
    assert_eq!((cfg.idle_settle_s, cfg.max_frame_latency_s, cfg.deadman_timeout_s), (2.0, 0.0, 0.0));
}
