use super::*;
use crate::action::ActionCommand;
use crate::policy::{FrameError, Timing};

const PERIOD: f64 = 0.1;

fn decision(x: f32, y: f32, yaw: f32, terminate: bool) -> Result<PolicyOutput, PolicyError> {
    let command = ActionCommand {
        terminate,
        twist: PlanarTwist { x_vel: x, y_vel: y, yaw_vel: yaw },
        gait: GaitFields { step_frequency: 3.0, stance_width: 0.3, ..GaitFields::default() },
        values: vec![terminate as u8 as f32, x, y, yaw],
    };
    Ok(PolicyOutput { command, bins: vec![0; 4], q: vec![0.5; 4], expert_load: vec![], timing: Timing::default() })
}

/// A controller following `go` with a fresh frame at t = 0.
fn following() -> Controller {
    let mut c = Controller::new(ControlConfig::default()).unwrap();
    c.set_instruction(Some("go".into()));
    c.frame_received(0.0);
    c
}

#[test]
fn stands_still_until_it_has_an_instruction_a_frame_and_a_decision() {
    let mut c = Controller::new(ControlConfig::default()).unwrap();
    assert_eq!(c.tick(0.0).stop, Some(StopReason::NoInstruction));
    c.set_instruction(Some("go".into()));
    assert_eq!(c.tick(0.1).stop, Some(StopReason::NoFrame));
    c.frame_received(0.1);
    let out = c.tick(0.2);
    assert_eq!(out.stop, Some(StopReason::Waiting));
    assert_eq!(out.twist, PlanarTwist::default());
    assert_eq!(out.gait, None);
    assert_eq!(c.apply("go", &decision(0.5, 0.0, 0.0, false)), Applied::Followed);
    let out = c.tick(0.3);
    assert_eq!(out.stop, None);
    assert!(out.twist.x_vel > 0.0);
    assert_eq!(out.gait.unwrap().step_frequency, 3.0);
}

#[test]
fn speeds_up_at_the_acceleration_limit_and_never_past_the_velocity_limit() {
    let mut c = following();
    c.apply("go", &decision(3.0, -2.0, 0.4, false));
    let cfg = *c.config();
    let mut last = PlanarTwist::default();
    for i in 1..=30 {
        let t = i as f64 * PERIOD;
        c.frame_received(t);
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
    c.apply("go", &decision(0.8, 0.0, 0.0, false));
    for i in 1..=5 {
        c.tick(i as f64 * PERIOD);
    }
    let timeout = c.config().image_timeout_s;
    let out = c.tick(timeout + 0.05);
    assert!(matches!(out.stop, Some(StopReason::StaleFrame { .. })), "{:?}", out.stop);
    assert_eq!(out.twist, PlanarTwist::default());
    c.frame_received(1.0);
    let out = c.tick(1.0);
    assert_eq!(out.stop, None);
    // Resumes from standstill, at the acceleration limit.
    assert!(out.twist.x_vel > 0.0 && out.twist.x_vel <= c.config().x_vel.max_accel * 2.0 * PERIOD as f32);
}

#[test]
fn terminate_holds_a_stop_until_a_new_instruction() {
    let mut c = following();
    assert_eq!(c.apply("go", &decision(0.5, 0.0, 0.0, true)), Applied::Terminated);
    assert_eq!(c.tick(0.1).stop, Some(StopReason::Terminated));
    assert_eq!(c.apply("go", &decision(0.5, 0.0, 0.0, false)), Applied::Stale);
    assert_eq!(c.tick(0.2).stop, Some(StopReason::Terminated));
    c.set_instruction(Some("go".into()));
    assert_eq!(c.apply("go", &decision(0.5, 0.0, 0.0, false)), Applied::Followed);
    assert_eq!(c.tick(0.3).stop, None);
}

#[test]
fn disabling_stops_and_enabling_waits_for_a_new_decision() {
    let mut c = following();
    c.apply("go", &decision(0.5, 0.0, 0.0, false));
    assert!(c.tick(0.1).twist.x_vel > 0.0);
    c.set_enabled(false);
    let out = c.tick(0.2);
    assert_eq!((out.stop, out.twist), (Some(StopReason::Disabled), PlanarTwist::default()));
    c.set_enabled(true);
    assert_eq!(c.tick(0.3).stop, Some(StopReason::Waiting));
    c.apply("go", &decision(0.5, 0.0, 0.0, false));
    assert_eq!(c.tick(0.4).stop, None);
}

#[test]
fn failed_or_non_finite_decisions_stop_until_a_good_one() {
    let mut c = following();
    c.apply("go", &decision(0.5, 0.0, 0.0, false));
    c.tick(0.1);
    let bad = Err(PolicyError::Image(FrameError::UnknownFormat));
    assert_eq!(c.apply("go", &bad), Applied::Failed);
    let out = c.tick(0.2);
    assert!(matches!(out.stop, Some(StopReason::DecisionFailed(_))));
    assert_eq!(out.twist, PlanarTwist::default());
    assert_eq!(c.apply("go", &decision(f32::NAN, 0.0, 0.0, false)), Applied::Failed);
    assert!(matches!(c.tick(0.3).stop, Some(StopReason::DecisionFailed(_))));
    c.apply("go", &decision(0.5, 0.0, 0.0, false));
    assert_eq!(c.tick(0.4).stop, None);
}

#[test]
fn decisions_for_an_old_instruction_are_ignored() {
    let mut c = following();
    c.set_instruction(Some("stop".into()));
    assert_eq!(c.apply("go", &decision(0.5, 0.0, 0.0, false)), Applied::Stale);
    assert_eq!(c.tick(0.1).stop, Some(StopReason::Waiting));
}

#[test]
fn a_clock_that_jumps_back_gets_one_period() {
    let mut c = following();
    c.apply("go", &decision(1.0, 0.0, 0.0, false));
    c.frame_received(5.0);
    let first = c.tick(5.0).twist.x_vel;
    c.frame_received(0.1); // older than the newest: the watchdog keeps the newest
    let out = c.tick(4.0);
    assert!((out.twist.x_vel - first).abs() <= c.config().x_vel.max_accel * PERIOD as f32 + 1e-6);
}

#[test]
fn rejects_unsafe_settings() {
    let base = ControlConfig::default();
    let bad = [
        ControlConfig { control_rate_hz: 0.0, ..base },
        ControlConfig { image_timeout_s: f64::NAN, ..base },
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
    c.apply("go", &decision(1.0, 0.0, 0.0, false));
    let first = c.tick(0.1).twist;
    assert_eq!(c.tick(0.1).twist, first);
}
