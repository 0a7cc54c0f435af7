//! Decision latency over a sliding window, for diagnostics and summaries.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct LatencyStats {
    window: VecDeque<f32>,
    capacity: usize,
    count: u64,
}

impl LatencyStats {
    /// Keeps the last `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { window: VecDeque::with_capacity(capacity), capacity, count: 0 }
    }

    pub fn record(&mut self, ms: f32) {
        if !ms.is_finite() {
            return;
        }
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(ms);
        self.count += 1;
    }

    /// Samples recorded since the start, not only those in the window.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0..=1) of the window, nearest rank; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f32> {
        if self.window.is_empty() {
            return None;
        }
        let mut sorted: Vec<f32> = self.window.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        Some(nearest_rank(&sorted, q))
    }
}

/// The `q`-quantile (0..=1) of ascending `sorted` by the nearest-rank rule: the smallest value
/// with at least a `q` share of the samples at or below it. Every latency figure uses this rule.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> T {
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
