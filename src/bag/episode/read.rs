//! Reading episodes back: bag discovery, and a bag's messages cut into episodes of one step per
//! frame period (the camera frames the policy's history would admit, by stamp: every frame of a
//! bag recorded at the period, every sixth of a 30 fps one at 0.2 s), each step's action the
//! command that followed its frame.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Topics;
use crate::action::{ActionSpace, PlanarTwist};
use crate::bag::msgs::{EpisodeOutcome, GaitCommand, StringMsg, Twist, TwistStamped, VlaDecision};
use crate::bag::{camera_frame, decode, BagError, BagReader, RawMessage, ReadReport, Storage, METADATA_FILE};
use crate::policy::{frame_stamp_s, history, preprocess};

/// Every bag under `dir`: folders with a metadata.yaml, and .mcap or .db3 files outside such folders.
pub fn find_bags(dir: &Path) -> Result<Vec<PathBuf>, BagError> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d.join(METADATA_FILE).is_file() {
            found.push(d);
            continue;
        }
        let entries = std::fs::read_dir(&d).map_err(io(&d))?;
        for entry in entries {
            let path = entry.map_err(io(&d))?.path();
            let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if Storage::of_file(&path).is_some() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BagError + '_ {
    move |source| BagError::Io { path: path.to_path_buf(), source }
}

/// A bag's messages reduced to what training needs, frames already resized.
enum BagEvent {
    /// RGB bytes and when the frame was taken, s (its header stamp, else its log time).
    Frame(Vec<u8>, f64),
    Instruction(String),
    Twist([f32; 3]),
    Gait(GaitCommand),
    /// Bins, and the dimension names they are for (empty when the recorder gave none).
    Decision(Vec<u32>, Vec<String>),
    Outcome(EpisodeOutcome),
}

/// The bag's relevant messages in log-time order, frames resized. Undecodable messages are
/// skipped; a damaged bag gives what could be read.
fn read_events(bag: &Path, image_size: usize, topics: &Topics) -> Result<Vec<BagEvent>, BagError> {
    let size = image_size as u32;
    let (events, _) = events_in_log_order(bag, |m| {
        if m.topic == topics.image {
            camera_frame(m.type_name, m.data).and_then(Result::ok).and_then(|(frame, stamp)| {
                let rgb = preprocess::resize_frame(&frame.as_frame(), size).ok()?;
                // As the node stamps a frame: the camera's stamp, else when it was received.
                let stamp_s = frame_stamp_s(Duration::from_nanos(stamp.nanos()), m.log_time as f64 * 1e-9);
                Some(BagEvent::Frame(rgb.into_raw(), stamp_s))
            })
        } else if m.topic == topics.instruction {
            decode::<StringMsg>(m.data).ok().map(|s| BagEvent::Instruction(s.data))
        } else if m.topic == topics.cmd_vel {
            planar_twist(m.type_name, m.data).map(BagEvent::Twist)
        } else if m.topic == topics.gait {
            decode::<GaitCommand>(m.data).ok().map(BagEvent::Gait)
        } else if m.topic == topics.decision {
            decode::<VlaDecision>(m.data).ok().map(|d| BagEvent::Decision(d.bins, d.dimension_names))
        } else if m.topic == topics.outcome {
            decode::<EpisodeOutcome>(m.data).ok().map(BagEvent::Outcome)
        } else {
            None
        }
    })?;
    Ok(events.into_iter().map(|(_, e)| e).collect())
}

/// The events `classify` makes of a bag's messages, with their log times, in log-time order (ties
/// in the order read), and the read report.
pub(super) fn events_in_log_order<E>(
    bag: &Path,
    mut classify: impl FnMut(&RawMessage<'_>) -> Option<E>,
) -> Result<(Vec<(u64, E)>, ReadReport), BagError> {
    let mut events: Vec<(u64, usize, E)> = Vec::new();
    let report = BagReader::open(bag)?.for_each(|m| {
        if let Some(event) = classify(m) {
            let order = events.len();
            events.push((m.log_time, order, event));
        }
    })?;
    events.sort_by_key(|(t, order, _)| (*t, *order));
    Ok((events.into_iter().map(|(t, _, e)| (t, e)).collect(), report))
}

/// A `cmd_vel` message, `Twist` or `TwistStamped`, as [x, y, yaw] velocities.
pub(super) fn planar_twist(type_name: &str, data: &[u8]) -> Option<[f32; 3]> {
    let twist = match type_name {
        "geometry_msgs/msg/TwistStamped" => decode::<TwistStamped>(data).ok().map(|t| t.twist),
        _ => decode::<Twist>(data).ok(),
    };
    twist.map(|t| [t.linear.x as f32, t.linear.y as f32, t.angular.z as f32])
}

/// The neutral gait used before any gait command was recorded.
fn default_gait() -> GaitCommand {
    GaitCommand {
        gait: 1,
        phase_offsets: [0.5, 0.0, 0.0],
        body_height: 0.0,
        step_frequency: 3.0,
        footswing_height: 0.08,
        pitch: 0.0,
        stance_width: 0.3,
        ..Default::default()
    }
}

/// One episode read from a bag, one step per frame period.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeSteps {
    pub instruction: String,
    pub family: String,
    pub success: bool,
    /// Ended by the terminate action: the last step's terminate bin is set.
    pub terminated: bool,
    /// Why it ended, as the episode outcome says ("timeout", "collision", ...).
    pub reason: String,
    /// Per step, its frame: RGB bytes, image size x image size.
    pub frames: Vec<Vec<u8>>,
    /// Per step, the bin of every action dimension.
    pub bins: Vec<Vec<u32>>,
    /// The camera frames the steps were resampled from.
    pub frames_read: usize,
}

/// The episodes in `bag`, one step per `frame_period_s`, frames resized to `image_size` square
/// and actions in `space`'s bins. Undecodable messages are skipped; a damaged bag gives what
/// could be read.
pub fn read_episodes(
    bag: &Path,
    topics: &Topics,
    image_size: usize,
    frame_period_s: f64,
    space: &ActionSpace,
) -> Result<Vec<EpisodeSteps>, BagError> {
    Ok(split_episodes(read_events(bag, image_size, topics)?, frame_period_s, space))
}

/// Cuts the event stream into episodes: an instruction starts one, an outcome ends it. Each
/// frame's action is the first decision after it when the bag records decisions of this action
/// space; otherwise the first twist after it (a stop when none came before the next frame) with
/// the newest gait command. The frames are then resampled to one step per `frame_period_s`.
fn split_episodes(events: Vec<BagEvent>, frame_period_s: f64, space: &ActionSpace) -> Vec<EpisodeSteps> {
    let mut episodes = Vec::new();
    let mut instruction: Option<String> = None;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut stamps: Vec<f64> = Vec::new();
    let mut twists: Vec<Option<[f32; 3]>> = Vec::new();
    let mut gaits: Vec<GaitCommand> = Vec::new();
    let mut decisions: Vec<Option<Vec<u32>>> = Vec::new();
    let mut gait = default_gait();
    for event in events {
        match event {
            BagEvent::Instruction(text) => {
                instruction = Some(text);
                frames.clear();
                stamps.clear();
                twists.clear();
                gaits.clear();
                decisions.clear();
            }
            BagEvent::Frame(rgb, stamp_s) => {
                frames.push(rgb);
                stamps.push(stamp_s);
                twists.push(None);
                gaits.push(gait.clone());
                decisions.push(None);
            }
            BagEvent::Decision(bins, names) => {
                // Only decisions of this action space: another model's bins mean other things.
                let same_space = names.is_empty() || names == space.names();
                let fits = same_space && space.check_bins(&bins).is_ok();
                if let Some(slot) = decisions.last_mut().filter(|s| s.is_none() && fits) {
                    *slot = Some(bins);
                }
            }
            BagEvent::Twist(t) => {
                if let Some(slot) = twists.last_mut().filter(|s| s.is_none()) {
                    *slot = Some(t);
                }
            }
            BagEvent::Gait(g) => {
                gait = g;
                if let Some(last) = gaits.last_mut() {
                    *last = gait.clone();
                }
            }
            BagEvent::Outcome(outcome) => {
                let text = instruction.clone().filter(|s| !s.is_empty()).unwrap_or(outcome.instruction.clone());
                if !frames.is_empty() && !text.is_empty() {
                    let n = frames.len();
                    let bins: Vec<Vec<u32>> = (0..n)
                        .map(|i| match decisions[i].take() {
                            Some(decided) => decided,
                            None => {
                                let terminate = outcome.terminated && i + 1 == n;
                                let [x_vel, y_vel, yaw_vel] = twists[i].unwrap_or([0.0; 3]);
                                space.encode_command(terminate, PlanarTwist { x_vel, y_vel, yaw_vel }, gaits[i].fields())
                            }
                        })
                        .collect();
                    let steps = history::resample(&stamps, frame_period_s);
                    let mut step_bins: Vec<Vec<u32>> = steps.iter().map(|&i| bins[i].clone()).collect();
                    if outcome.terminated {
                        // The terminate ended the last step, even where its frame was not one kept.
                        if let (Some(last), Some(terminate)) = (step_bins.last_mut(), bins.last()) {
                            last.clone_from(terminate);
                        }
                    }
                    let step_frames: Vec<Vec<u8>> = steps.iter().map(|&i| std::mem::take(&mut frames[i])).collect();
                    episodes.push(EpisodeSteps {
                        instruction: text,
                        family: outcome.family.clone(),
                        success: outcome.success,
                        terminated: outcome.terminated,
                        reason: outcome.reason.clone(),
                        frames: step_frames,
                        bins: step_bins,
                        frames_read: n,
                    });
                }
                frames.clear();
                stamps.clear();
                twists.clear();
                gaits.clear();
                decisions.clear();
            }
        }
    }
    episodes
}
