//! The history window: which frames an observation holds, shared by training's batches, the
//! policy and the decoders' step states.

use std::collections::VecDeque;

/// The last `capacity` items, oldest first. Until it is full, the window repeats the oldest item
/// so an observation always has `capacity` frames.
#[derive(Debug, Clone)]
pub struct HistoryRing<T> {
    capacity: usize,
    items: VecDeque<T>,
}

impl<T: Clone> HistoryRing<T> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, items: VecDeque::with_capacity(capacity) }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The items held, oldest first (at most `capacity`, no repeats).
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Exactly `capacity` items, oldest first; empty if nothing was pushed.
    pub fn window(&self) -> Vec<T> {
        if self.items.is_empty() {
            return Vec::new();
        }
        history_window(0, self.items.len() - 1, self.capacity).map(|i| self.items[i].clone()).collect()
    }

    /// The window `push(newest)` would give, without keeping `newest`.
    pub fn window_with(&self, newest: T) -> Vec<T> {
        let kept: Vec<&T> = self.items.iter().skip((self.items.len() + 1).saturating_sub(self.capacity)).collect();
        history_window(0, kept.len(), self.capacity)
            .map(|i| kept.get(i).map_or_else(|| newest.clone(), |&item| item.clone()))
            .collect()
    }
}

/// Whether a control step's new frame stays in the history window for later steps. The policy
/// keeps one frame per frame period; the frames in between are decided on and then dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRetention {
    Keep,
    ThisStepOnly,
}

/// The `history` observation indices of the window that ends at `newest`, oldest first. Where
/// the window reaches back before `first` (the first observation of the episode or instruction),
/// `first` repeats. Training's batches and the policy's history ring both come from this.
pub fn history_window(first: usize, newest: usize, history: usize) -> impl Iterator<Item = usize> {
    (0..history).rev().map(move |back| newest.saturating_sub(back).max(first))
}
