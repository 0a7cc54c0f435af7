//! Which frames join the history: one per frame period, by stamp. A model learns from steps one
//! period apart (`VlaConfig::frame_period_s`); a camera faster than that would otherwise fill the
//! history window with frames a fraction of that apart, so the window would cover a fraction of
//! the time it covered in training. Every frame is still decided on; only the frames that are due
//! are kept for later decisions.

/// Share of the period a frame may come before its due time and still count as due, for camera
/// jitter. It is also held below half the camera's own frame interval (the last one seen), so of
/// the frames around a due time the nearest is taken, not the one before it.
const EARLY_SHARE: f64 = 0.25;

/// What the history does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Due: the frame joins the history.
    Admitted,
    /// Not due yet: decided on, not kept.
    Passed,
    /// Its stamp went backwards (a looping bag, a reset clock): the history restarts with it.
    Restarted,
}

impl Admission {
    /// Whether the frame is kept for later decisions.
    pub fn keeps_frame(self) -> bool {
        self != Self::Passed
    }
}

/// A grid of due times one period apart. A frame at or just before the next due time is admitted
/// and the grid moves on by one period from that due time, not from the frame's stamp, so a camera
/// whose interval does not divide the period (7 fps against 0.2 s) still averages one frame per
/// period without drifting. A frame that comes a period or more late (a gap) restarts the grid at
/// itself.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySchedule {
    period_s: f64,
    /// The stamp of the last frame seen, admitted or not.
    last_stamp_s: Option<f64>,
    next_due_s: f64,
}

impl HistorySchedule {
    /// `period_s` must be positive and finite (a validated `VlaConfig` guarantees it).
    pub fn new(period_s: f64) -> Self {
        Self { period_s, last_stamp_s: None, next_due_s: f64::NEG_INFINITY }
    }

    /// The next frame is admitted whatever its stamp, and the grid starts at it.
    pub fn restart(&mut self) {
        self.last_stamp_s = None;
        self.next_due_s = f64::NEG_INFINITY;
    }

    /// Whether the frame stamped `stamp_s` (seconds, finite) joins the history.
    pub fn admit(&mut self, stamp_s: f64) -> Admission {
        let Some(last_s) = self.last_stamp_s.replace(stamp_s) else {
            self.next_due_s = stamp_s + self.period_s;
            return Admission::Admitted;
        };
        if stamp_s < last_s {
            self.next_due_s = stamp_s + self.period_s;
            return Admission::Restarted;
        }
        let early_s = (EARLY_SHARE * self.period_s).min(0.5 * (stamp_s - last_s));
        if stamp_s < self.next_due_s - early_s {
            return Admission::Passed;
        }
        self.next_due_s += self.period_s;
        if stamp_s >= self.next_due_s - early_s {
            // Due for the following slot too: at least a period went by without a frame.
            self.next_due_s = stamp_s + self.period_s;
        }
        Admission::Admitted
    }
}

/// Indices of the frames stamped `stamps_s` (in recording order) that one step per `period_s`
/// keeps: the frames the policy's history would admit from the same stream. A stamp that goes
/// backwards is kept, as it starts a new history.
pub fn resample(stamps_s: &[f64], period_s: f64) -> Vec<usize> {
    let mut schedule = HistorySchedule::new(period_s);
    (0..stamps_s.len()).filter(|&i| schedule.admit(stamps_s[i]).keeps_frame()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: f64 = 0.2;

    fn admitted(stamps: impl IntoIterator<Item = f64>) -> Vec<f64> {
        let mut schedule = HistorySchedule::new(PERIOD);
        stamps.into_iter().filter(|&t| schedule.admit(t) == Admission::Admitted).collect()
    }

    /// Frame `k` of a `fps` camera that started at `start`.
    fn stream(fps: f64, frames: usize, start: f64) -> impl Iterator<Item = f64> {
        (0..frames).map(move |k| start + k as f64 / fps)
    }

    #[test]
    fn a_30_fps_camera_gives_every_sixth_frame() {
        let frames: Vec<f64> = stream(30.0, 91, 1_700_000_000.0).collect();
        let mut schedule = HistorySchedule::new(PERIOD);
        let kept: Vec<usize> = (0..frames.len()).filter(|&k| schedule.admit(frames[k]) == Admission::Admitted).collect();
        assert_eq!(kept, (0..=90).step_by(6).collect::<Vec<_>>());
    }

    #[test]
    fn the_period_rate_and_slower_admit_every_frame() {
        for fps in [5.0, 4.0, 2.5, 1.0] {
            assert_eq!(admitted(stream(fps, 40, 12.5)).len(), 40, "{fps} fps");
        }
    }

    #[test]
    fn jitter_of_a_few_milliseconds_changes_nothing() {
        // +-4 ms around the 30 fps stamps (a third of the camera interval is 11 ms).
        let jitter = [0.004, -0.003, 0.0, -0.004, 0.002, 0.003, -0.001];
        let stamps: Vec<f64> = stream(30.0, 121, 3.0).enumerate().map(|(k, t)| t + jitter[k % jitter.len()]).collect();
        let mut schedule = HistorySchedule::new(PERIOD);
        let kept: Vec<usize> = (0..stamps.len()).filter(|&k| schedule.admit(stamps[k]) == Admission::Admitted).collect();
        assert_eq!(kept, (0..=120).step_by(6).collect::<Vec<_>>());
        // A 5 fps camera whose frames come up to 20 ms early or late keeps every frame.
        let late_or_early = [0.02, -0.02, 0.01, -0.015];
        let stamps = stream(5.0, 50, 0.0).enumerate().map(|(k, t)| t + late_or_early[k % 4]);
        assert_eq!(admitted(stamps).len(), 50);
    }

    #[test]
    fn a_7_fps_camera_averages_one_frame_per_period_without_drift() {
        // 70 s at 7 fps: a grid that restarted at each admitted frame would keep every second
        // frame (246, one per 0.286 s); the grid keeps 351 = 70 s / 0.2 s + the first.
        let kept = admitted(stream(7.0, 491, 0.0));
        assert_eq!(kept.len(), 351);
        for (k, pair) in kept.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(gap > 0.1 && gap < 0.29, "admission {k}: {gap} s after the previous");
        }
        // Each admitted frame lies within a camera interval of its due time, the grid's.
        for (k, t) in kept.iter().enumerate() {
            let due = k as f64 * PERIOD;
            assert!((t - due).abs() < 1.0 / 7.0, "admission {k} at {t}, due {due}");
        }
    }

    #[test]
    fn a_stamp_going_backwards_restarts_the_history() {
        let mut schedule = HistorySchedule::new(PERIOD);
        for t in [10.0, 10.1, 10.2, 10.3] {
            schedule.admit(t);
        }
        assert_eq!(schedule.admit(2.0), Admission::Restarted);
        // The grid starts again at the restarting frame.
        assert_eq!(schedule.admit(2.1), Admission::Passed);
        assert_eq!(schedule.admit(2.2), Admission::Admitted);
        assert!(Admission::Restarted.keeps_frame() && !Admission::Passed.keeps_frame());
    }

    #[test]
    fn a_gap_restarts_the_grid_at_the_next_frame() {
        let mut schedule = HistorySchedule::new(PERIOD);
        for t in [0.0, 0.1, 0.2] {
            schedule.admit(t);
        }
        // Nothing for 0.67 s, then 10 fps again: the grid runs from 0.87, not from 0.2.
        let after: Vec<Admission> = [0.87, 0.97, 1.07, 1.17, 1.27].into_iter().map(|t| schedule.admit(t)).collect();
        use Admission::{Admitted, Passed};
        assert_eq!(after, [Admitted, Passed, Admitted, Passed, Admitted]);
    }

    #[test]
    fn a_repeated_stamp_is_not_admitted_twice() {
        let mut schedule = HistorySchedule::new(PERIOD);
        assert_eq!(schedule.admit(4.0), Admission::Admitted);
        assert_eq!(schedule.admit(4.0), Admission::Passed);
        schedule.restart();
        assert_eq!(schedule.admit(4.05), Admission::Admitted, "a restarted schedule admits its next frame");
    }

    #[test]
    fn resampling_keeps_the_frames_the_history_admits() {
        let stamps: Vec<f64> = stream(30.0, 13, 0.0).chain([0.1, 0.25]).collect();
        // Every sixth frame, then the frame that went backwards, not the next one 0.2 s after it.
        assert_eq!(resample(&stamps, PERIOD), vec![0, 6, 12, 13]);
    }
}
