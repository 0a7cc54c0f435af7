//! One message heard twice: the node subscribes to its instruction topic with two QoS profiles
//! (so that both latching and default publishers reach it), and a latching publisher's message
//! arrives through both. The second copy is dropped; a text deliberately re-sent through one
//! subscription still counts again.

use std::time::{Duration, Instant};

/// Copies of one message arrive within this of each other.
const COPY_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct CopyFilter {
    /// Messages heard through one subscription only, so far: (subscription, bytes, when).
    unpaired: Vec<(usize, Vec<u8>, Instant)>,
}

impl CopyFilter {
    /// True for the first copy of a message heard through `subscription` at `now`, false for its
    /// copy through another subscription.
    pub fn first_copy(&mut self, subscription: usize, message: &[u8], now: Instant) -> bool {
        self.unpaired.retain(|(_, _, t)| now.saturating_duration_since(*t) < COPY_WINDOW);
        if let Some(i) = self.unpaired.iter().position(|(s, m, _)| *s != subscription && m == message) {
            self.unpaired.remove(i);
            return false;
        }
        self.unpaired.push((subscription, message.to_vec(), now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_through_the_other_subscription_counts_once_and_a_resend_counts_again() {
        let mut f = CopyFilter::default();
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        // A latching publisher: both subscriptions, either order.
        assert!(f.first_copy(0, b"go", t));
        assert!(!f.first_copy(1, b"go", ms(2)));
        assert!(f.first_copy(1, b"go", ms(10)));
        assert!(!f.first_copy(0, b"go", ms(11)));
        // A default publisher re-sending the same text: one subscription, every message counts.
        assert!(f.first_copy(1, b"stop", ms(20)));
        assert!(f.first_copy(1, b"stop", ms(30)));
        // Different texts never pair.
        assert!(f.first_copy(0, b"left", ms(40)));
        assert!(f.first_copy(1, b"right", ms(41)));
        // Late-joining history through the latched subscription alone: nothing to pair, and an
        // equal message much later through the other one is new.
        assert!(f.first_copy(0, b"sit", ms(50)));
        assert!(f.first_copy(1, b"sit", ms(50) + COPY_WINDOW));
    }
}
