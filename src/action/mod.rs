//! The discretised action space: bins <-> physical values, validity masks, gait presets, and
//! the typed command a decision becomes.

use crate::model::ActionSpaceConfig;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ActionError {
    #[error("invalid action space: {0}")]
    Invalid(String),
    #[error("expected {expected} bins, got {got}")]
    WrongLength { expected: usize, got: usize },
    #[error("bin {bin} of dimension {dim} is outside 0..{bins}")]
    BinOutOfRange { dim: usize, bin: u32, bins: usize },
}

/// Name of the episode-termination flag dimension; only its extreme bins are valid.
pub const TERMINATE: &str = "terminate";

/// Every dimension name an action space may use besides `TERMINATE`, each the name of one
/// command field.
pub const FIELD_NAMES: [&str; 11] = [
    "x_vel",
    "y_vel",
    "yaw_vel",
    "body_height",
    "step_frequency",
    "gait_phase",
    "gait_offset",
    "gait_bound",
    "footswing_height",
    "pitch",
    "stance_width",
];

/// The command field a dimension name stands for: the one map between names and fields, used to
/// decode bins into a command and to encode a command into bins.
fn field<'a>(name: &str, twist: &'a mut PlanarTwist, gait: &'a mut GaitFields) -> Option<&'a mut f32> {
    Some(match name {
        "x_vel" => &mut twist.x_vel,
        "y_vel" => &mut twist.y_vel,
        "yaw_vel" => &mut twist.yaw_vel,
        "body_height" => &mut gait.body_height,
        "step_frequency" => &mut gait.step_frequency,
        "gait_phase" => &mut gait.phase_offsets[0],
        "gait_offset" => &mut gait.phase_offsets[1],
        "gait_bound" => &mut gait.phase_offsets[2],
        "footswing_height" => &mut gait.footswing_height,
        "pitch" => &mut gait.pitch,
        "stance_width" => &mut gait.stance_width,
        _ => return None,
    })
}

/// Gaits of the walk-these-ways controller as phase offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaitPreset {
    Pronk,
    Trot,
    Bound,
    Pace,
}

impl GaitPreset {
    pub const ALL: [GaitPreset; 4] = [Self::Pronk, Self::Trot, Self::Bound, Self::Pace];

    pub fn offsets(self) -> [f32; 3] {
        match self {
            Self::Pronk => [0.0, 0.0, 0.0],
            Self::Trot => [0.5, 0.0, 0.0],
            Self::Bound => [0.0, 0.5, 0.0],
            Self::Pace => [0.0, 0.0, 0.5],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pronk => "pronk",
            Self::Trot => "trot",
            Self::Bound => "bound",
            Self::Pace => "pace",
        }
    }

    /// The preset closest to `offsets` (phase distance wraps around 1).
    pub fn nearest(offsets: [f32; 3]) -> Self {
        let dist = |p: GaitPreset| -> f32 {
            p.offsets()
                .iter()
                .zip(offsets)
                .map(|(a, b)| {
                    let d = (a - b).rem_euclid(1.0);
                    d.min(1.0 - d).powi(2)
                })
                .sum()
        };
        Self::ALL.into_iter().min_by(|a, b| dist(*a).total_cmp(&dist(*b))).expect("four presets")
    }
}

/// Planar velocity command.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PlanarTwist {
    /// m/s forward.
    pub x_vel: f32,
    /// m/s left.
    pub y_vel: f32,
    /// rad/s counter-clockwise.
    pub yaw_vel: f32,
}

/// The gait half of the locomotion command.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GaitFields {
    /// m, offset from nominal height.
    pub body_height: f32,
    /// Hz.
    pub step_frequency: f32,
    pub phase_offsets: [f32; 3],
    /// m.
    pub footswing_height: f32,
    /// rad.
    pub pitch: f32,
    /// m.
    pub stance_width: f32,
}

/// A decoded action. Dimensions the action space lacks stay zero.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionCommand {
    pub terminate: bool,
    pub twist: PlanarTwist,
    pub gait: GaitFields,
    /// Every dimension's physical value, in action-space order.
    pub values: Vec<f32>,
}

impl ActionCommand {
    pub fn gait_preset(&self) -> GaitPreset {
        GaitPreset::nearest(self.gait.phase_offsets)
    }

    pub fn is_finite(&self) -> bool {
        self.values.iter().all(|v| v.is_finite())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpace {
    names: Vec<String>,
    bins: usize,
    low: Vec<f32>,
    high: Vec<f32>,
    /// Per dimension, whether the training data supports each bin (None: all do).
    supported: Option<Vec<Vec<bool>>>,
}

impl ActionSpace {
    pub fn new(cfg: &ActionSpaceConfig) -> Result<Self, ActionError> {
        let n = cfg.names.len();
        if n == 0 || cfg.bins < 2 || cfg.bins > u32::MAX as usize {
            return Err(ActionError::Invalid("needs at least one dimension and two bins".into()));
        }
        if cfg.low.len() != n || cfg.high.len() != n {
            return Err(ActionError::Invalid(format!("{n} names, {} lows, {} highs", cfg.low.len(), cfg.high.len())));
        }
        for (i, (lo, hi)) in cfg.low.iter().zip(&cfg.high).enumerate() {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(ActionError::Invalid(format!("{} has range [{lo}, {hi}]", cfg.names[i])));
            }
        }
        if let Some(name) = cfg.names.iter().find(|n| *n != TERMINATE && !FIELD_NAMES.contains(&n.as_str())) {
            return Err(ActionError::Invalid(format!(
                "unknown dimension \"{name}\" (known: {TERMINATE}, {})",
                FIELD_NAMES.join(", ")
            )));
        }
        let supported = match &cfg.supported {
            None => None,
            Some(ranges) => {
                if ranges.len() != n {
                    return Err(ActionError::Invalid(format!("{} supported-bin lists for {n} dimensions", ranges.len())));
                }
                let masks = (0..n)
                    .map(|dim| {
                        cfg.supported_mask(dim)
                            .map_err(|[lo, hi]| ActionError::Invalid(format!("{}: supported range [{lo}, {hi}]", cfg.names[dim])))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(masks)
            }
        };
        let space = Self { names: cfg.names.clone(), bins: cfg.bins, low: cfg.low.clone(), high: cfg.high.clone(), supported };
        if let Some(dim) = (0..n).find(|&d| !space.valid_bins(d).contains(&true)) {
            return Err(ActionError::Invalid(format!("{} has no valid supported bin", cfg.names[dim])));
        }
        Ok(space)
    }

    pub fn dims(&self) -> usize {
        self.names.len()
    }

    pub fn bins(&self) -> usize {
        self.bins
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn range(&self, dim: usize) -> (f32, f32) {
        (self.low[dim], self.high[dim])
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Width of one bin of `dim` in physical units.
    pub fn bin_width(&self, dim: usize) -> f32 {
        (self.high[dim] - self.low[dim]) / (self.bins - 1) as f32
    }

    /// GeRM's decode: `bin / (bins - 1) * (high - low) + low`, clamped because f32 rounding can
    /// land the top bin just past `high`.
    pub fn decode(&self, dim: usize, bin: u32) -> f32 {
        let top = (self.bins - 1) as f32;
        let (lo, hi) = (self.low[dim], self.high[dim]);
        ((bin as f32).min(top) / top * (hi - lo) + lo).clamp(lo, hi)
    }

    /// The nearest bin to `value`, clamped into range (NaN maps to bin 0). GeRM floors here; we
    /// round so that `decode(encode(v))` is within half a bin of `v`.
    pub fn encode(&self, dim: usize, value: f32) -> u32 {
        let top = (self.bins - 1) as f32;
        let x = ((value - self.low[dim]) / (self.high[dim] - self.low[dim]) * top).round();
        if x.is_nan() {
            0
        } else {
            x.clamp(0.0, top) as u32
        }
    }

    /// Which bins of `dim` a decision may take: those the training data supports (all, for a
    /// space without support ranges), and for the terminate flag only its two extremes.
    pub fn valid_bins(&self, dim: usize) -> Vec<bool> {
        let mut valid = self.structurally_valid(dim);
        if let Some(supported) = &self.supported {
            valid.iter_mut().zip(&supported[dim]).for_each(|(v, s)| *v &= s);
        }
        valid
    }

    /// Bins of `dim` that make sense at all, whatever the data: every bin, except for the
    /// terminate flag, whose only meaningful bins are its two extremes.
    pub fn structurally_valid(&self, dim: usize) -> Vec<bool> {
        if self.names[dim] == TERMINATE {
            (0..self.bins).map(|b| b == 0 || b == self.bins - 1).collect()
        } else {
            vec![true; self.bins]
        }
    }

    pub fn valid_masks(&self) -> Vec<Vec<bool>> {
        (0..self.dims()).map(|d| self.valid_bins(d)).collect()
    }

    pub fn check_bins(&self, bins: &[u32]) -> Result<(), ActionError> {
        if bins.len() != self.dims() {
            return Err(ActionError::WrongLength { expected: self.dims(), got: bins.len() });
        }
        match bins.iter().enumerate().find(|(_, &b)| b as usize >= self.bins) {
            Some((dim, &bin)) => Err(ActionError::BinOutOfRange { dim, bin, bins: self.bins }),
            None => Ok(()),
        }
    }

    /// The typed command for one bin per dimension.
    pub fn command(&self, bins: &[u32]) -> Result<ActionCommand, ActionError> {
        self.check_bins(bins)?;
        let values: Vec<f32> = bins.iter().enumerate().map(|(d, &b)| self.decode(d, b)).collect();
        let mut command = ActionCommand { values, ..ActionCommand::default() };
        for (name, &value) in self.names.iter().zip(&command.values) {
            match field(name, &mut command.twist, &mut command.gait) {
                Some(slot) => *slot = value,
                None => command.terminate = value >= 0.5,
            }
        }
        Ok(command)
    }

    /// The bins of a command given as its fields: each dimension takes the nearest bin to its
    /// field's value (terminate: 1 or 0). Fields the space has no dimension for are dropped.
    pub fn encode_command(&self, terminate: bool, twist: PlanarTwist, gait: GaitFields) -> Vec<u32> {
        let (mut twist, mut gait) = (twist, gait);
        (0..self.dims())
            .map(|d| {
                let value = field(&self.names[d], &mut twist, &mut gait).map_or(f32::from(u8::from(terminate)), |v| *v);
                self.encode(d, value)
            })
            .collect()
    }
}

/// The bins a dataset supports, as inclusive ranges per dimension (the form `config.json` keeps):
/// every bin taken by at least `min_share` of the steps (and at least once). A dimension where no
/// bin reaches the share keeps its most frequent bin.
pub fn supported_ranges(steps: &[Vec<u32>], bins: usize, min_share: f64) -> Vec<Vec<[u32; 2]>> {
    let dims = steps.first().map_or(0, Vec::len);
    let threshold = ((min_share * steps.len() as f64).ceil() as usize).max(1);
    (0..dims)
        .map(|d| {
            let mut counts = vec![0usize; bins];
            for step in steps {
                counts[(step[d] as usize).min(bins - 1)] += 1;
            }
            let mut keep: Vec<bool> = counts.iter().map(|&c| c >= threshold).collect();
            if !keep.contains(&true) {
                let best = (0..bins).max_by_key(|&b| (counts[b], std::cmp::Reverse(b))).unwrap_or(0);
                keep[best] = true;
            }
            bin_ranges(&keep)
        })
        .collect()
}

/// Inclusive runs of `true` in `mask`.
fn bin_ranges(mask: &[bool]) -> Vec<[u32; 2]> {
    let mut ranges: Vec<[u32; 2]> = Vec::new();
    for (b, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        match ranges.last_mut() {
            Some(last) if last[1] + 1 == b as u32 => last[1] = b as u32,
            _ => ranges.push([b as u32, b as u32]),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::quadruped_action_space;

    fn space() -> ActionSpace {
        ActionSpace::new(&quadruped_action_space()).unwrap()
    }

    #[test]
    fn a_command_encodes_to_the_bins_that_decode_back_to_it() {
        let space = space();
        let twist = PlanarTwist { x_vel: 0.7, y_vel: -0.2, yaw_vel: 0.4 };
        let gait = GaitFields {
            body_height: -0.1,
            step_frequency: 3.5,
            phase_offsets: [0.0, 0.5, 0.0],
            footswing_height: 0.1,
            pitch: 0.05,
            stance_width: 0.25,
        };
        let bins = space.encode_command(false, twist, gait);
        let back = space.command(&bins).unwrap();
        assert!(!back.terminate);
        let decoded = [back.twist.x_vel, back.twist.y_vel, back.twist.yaw_vel, back.gait.body_height, back.gait.step_frequency];
        let wanted = [0.7, -0.2, 0.4, -0.1, 3.5];
        for (i, (got, want)) in decoded.iter().zip(wanted).enumerate() {
            let dim = space.index_of(FIELD_NAMES[i]).unwrap();
            assert!((got - want).abs() <= space.bin_width(dim) / 2.0 + 1e-6, "{}: {got} vs {want}", FIELD_NAMES[i]);
        }
        assert_eq!(back.gait_preset(), GaitPreset::Bound);
        assert!(space.command(&space.encode_command(true, twist, gait)).unwrap().terminate);
        // Every name maps to a field: a renamed dimension is refused, not silently zero.
        let mut cfg = quadruped_action_space();
        cfg.names[1] = "x_velocity".into();
        assert!(matches!(ActionSpace::new(&cfg), Err(ActionError::Invalid(m)) if m.contains("x_velocity")));
    }

    #[test]
    fn supported_bins_come_from_the_data_and_round_trip_through_config_json() {
        // 1000 steps of 12 dimensions: x_vel takes bins 40..=49 evenly, plus bin 200 once (a
        // random action); every other dimension sits on one bin, terminate on 0 except 10 steps.
        let steps: Vec<Vec<u32>> = (0..1000u32)
            .map(|i| {
                let mut bins = vec![7u32; 12];
                bins[0] = if i % 100 == 0 { 255 } else { 0 };
                bins[1] = if i == 500 { 200 } else { 40 + i % 10 };
                bins
            })
            .collect();
        let ranges = supported_ranges(&steps, 256, 0.005);
        assert_eq!(ranges[0], vec![[0, 0], [255, 255]]);
        assert_eq!(ranges[1], vec![[40, 49]], "a bin taken once is below the share");
        assert!(ranges[2..].iter().all(|r| r == &vec![[7, 7]]));
        // A share nothing reaches keeps the most frequent bin (41: step 500 took 200, not 40).
        assert_eq!(supported_ranges(&steps, 256, 0.5)[1], vec![[41, 41]]);

        let mut cfg = quadruped_action_space();
        cfg.supported = Some(ranges);
        let json = serde_json::to_string(&cfg).unwrap();
        let back: ActionSpaceConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let space = ActionSpace::new(&back).unwrap();
        let masks = space.valid_masks();
        assert_eq!(masks[1].iter().filter(|&&v| v).count(), 10);
        assert!(masks[1][40] && masks[1][49] && !masks[1][39] && !masks[1][200]);
        assert_eq!(masks[0].iter().filter(|&&v| v).count(), 2);
        assert!(space.structurally_valid(1).iter().all(|&v| v), "structural validity ignores the data");
        // A config without support ranges keeps every bin, and reads as before.
        let plain: ActionSpaceConfig = serde_json::from_str(&serde_json::to_string(&quadruped_action_space()).unwrap()).unwrap();
        assert!(plain.supported.is_none());
        assert!(ActionSpace::new(&plain).unwrap().valid_bins(1).iter().all(|&v| v));
        // Ranges past the bin count, or a terminate flag left without a valid bin, are rejected.
        let mut bad = quadruped_action_space();
        bad.supported = Some(vec![vec![[0, 300]]; 12]);
        assert!(ActionSpace::new(&bad).is_err());
        bad.supported = Some(vec![vec![[100, 120]]; 12]);
        assert!(ActionSpace::new(&bad).is_err());
    }

    #[test]
    fn round_trip_is_within_half_a_bin() {
        let s = space();
        for d in 0..s.dims() {
            let (lo, hi) = s.range(d);
            for i in 0..=1000 {
                let v = lo + (hi - lo) * i as f32 / 1000.0;
                let back = s.decode(d, s.encode(d, v));
                assert!((back - v).abs() <= 0.5 * s.bin_width(d) + 1e-5, "dim {d}: {v} -> {back} (bin width {})", s.bin_width(d));
            }
        }
    }

    #[test]
    fn decode_follows_germ_rule_at_the_ends() {
        let s = space();
        let x = s.index_of("x_vel").unwrap();
        assert_eq!(s.decode(x, 0), -0.81);
        // 255 / 255 * 3.91 - 0.81 rounds to just above 3.10 in f32; the command must stay in range.
        assert_eq!(s.decode(x, 255), 3.10);
        for d in 0..s.dims() {
            let (lo, hi) = s.range(d);
            assert!((0..256).all(|b| (lo..=hi).contains(&s.decode(d, b))), "dimension {d}");
        }
        assert!((s.decode(x, 128) - (128.0 / 255.0 * 3.91 - 0.81)).abs() < 1e-5);
    }

    #[test]
    fn values_outside_the_range_clamp() {
        let s = space();
        let x = s.index_of("x_vel").unwrap();
        assert_eq!(s.encode(x, -100.0), 0);
        assert_eq!(s.encode(x, 100.0), 255);
        assert_eq!(s.encode(x, f32::INFINITY), 255);
        assert_eq!(s.encode(x, f32::NEG_INFINITY), 0);
        assert_eq!(s.encode(x, f32::NAN), 0);
    }

    #[test]
    fn terminate_only_allows_its_extremes() {
        let s = space();
        let mask = s.valid_bins(0);
        assert!(mask[0] && mask[255]);
        assert_eq!(mask.iter().filter(|v| **v).count(), 2);
        assert!(s.valid_bins(1).iter().all(|v| *v));
    }

    #[test]
    fn command_maps_names_to_fields() {
        let s = space();
        let mut bins = vec![0u32; 12];
        bins[0] = 255;
        bins[s.index_of("gait_phase").unwrap()] = 128;
        let cmd = s.command(&bins).unwrap();
        assert!(cmd.terminate);
        assert_eq!(cmd.twist.x_vel, -0.81);
        assert_eq!(cmd.gait.step_frequency, 2.0);
        assert_eq!(cmd.gait_preset(), GaitPreset::Trot);
        assert!(s.command(&bins[..3]).is_err());
        bins[4] = 256;
        assert_eq!(s.command(&bins), Err(ActionError::BinOutOfRange { dim: 4, bin: 256, bins: 256 }));
    }

    #[test]
    fn gait_presets_are_recognised_with_wraparound() {
        for p in GaitPreset::ALL {
            assert_eq!(GaitPreset::nearest(p.offsets()), p);
        }
        assert_eq!(GaitPreset::nearest([0.98, 0.02, 0.0]), GaitPreset::Pronk);
    }

    #[test]
    fn invalid_spaces_are_rejected() {
        let mut cfg = quadruped_action_space();
        cfg.low[2] = cfg.high[2];
        assert!(ActionSpace::new(&cfg).is_err());
        let mut cfg = quadruped_action_space();
        cfg.high.pop();
        assert!(ActionSpace::new(&cfg).is_err());
    }
}
