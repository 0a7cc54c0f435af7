//! Who decides in an episode: the `Driver` trait and what it sees, the network policy as a
//! driver, and the uniformly random driver.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::action::ActionSpace;
use crate::policy::{Decision, Decoding, Frame, PixelEncoding, Policy, PolicyError, RawFrame, Timing};

use super::worlds::TaskWorld;

/// What a driver sees at a control step. Policies use the frame and the instruction only;
/// scripted experts may read the world's privileged state.
pub struct Observation<'a> {
    /// rgb8, `width` x `height`, row-major.
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub instruction: &'a str,
    pub world: &'a dyn TaskWorld,
    /// Seconds since the episode started.
    pub time_s: f64,
}

impl Observation<'_> {
    pub fn frame(&self) -> Frame<'_> {
        Frame::Raw(RawFrame::packed(self.width, self.height, PixelEncoding::Rgb8, self.pixels))
    }
}

/// Anything that turns observations into decisions: a scripted expert, a random policy, a network.
pub trait Driver {
    /// A short name for reports ("expert", "random", "model").
    fn name(&self) -> &str;

    /// Who decides, as a recorded decision's `model_id` says: the name unless the driver has an
    /// identity of its own (a model's).
    fn id(&self) -> &str {
        self.name()
    }

    /// A new episode starts; `seed` is the episode's, for drivers with randomness.
    fn reset(&mut self, _seed: u64) {}

    fn decide(&mut self, obs: &Observation<'_>) -> Result<Decision, PolicyError>;
}

impl Driver for Policy {
    fn name(&self) -> &str {
        "model"
    }

    fn id(&self) -> &str {
        self.model_id()
    }

    fn reset(&mut self, _seed: u64) {
        Policy::reset(self);
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Result<Decision, PolicyError> {
        Policy::decide(self, &obs.frame(), obs.instruction, obs.time_s, Decoding::Cached)
    }
}

/// A uniformly random valid bin per dimension at every step (terminate takes bin 0 or the top
/// bin, as under the network's masks).
pub struct RandomDriver {
    space: ActionSpace,
    rng: StdRng,
}

impl RandomDriver {
    pub fn new(space: ActionSpace, seed: u64) -> Self {
        Self { space, rng: StdRng::seed_from_u64(seed) }
    }
}

impl Driver for RandomDriver {
    fn name(&self) -> &str {
        "random"
    }

    fn reset(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    fn decide(&mut self, _obs: &Observation<'_>) -> Result<Decision, PolicyError> {
        output(&self.space, random_bins(&self.space, &mut self.rng))
    }
}

/// A uniformly random valid bin per dimension (the terminate flag only takes its extremes).
pub fn random_bins(space: &ActionSpace, rng: &mut StdRng) -> Vec<u32> {
    space
        .valid_masks()
        .iter()
        .map(|mask| {
            let valid: Vec<u32> = (0..mask.len() as u32).filter(|&b| mask[b as usize]).collect();
            valid.get(rng.random_range(0..valid.len().max(1))).copied().unwrap_or(0)
        })
        .collect()
}

/// A decision built from bins, quantised exactly as the network's.
pub fn output(space: &ActionSpace, bins: Vec<u32>) -> Result<Decision, PolicyError> {
    let command = space.command(&bins)?;
    Ok(Decision { command, q: Vec::new(), expert_load: Vec::new(), timing: Timing::default(), bins })
}
