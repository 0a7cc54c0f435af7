//! Episodes from rosbag2 bags: one step per frame period (the camera frames the policy's history
//! would admit, by stamp: every frame of a bag recorded at the period, every sixth of a 30 fps
//! one at 0.2 s), its action the command that followed its frame, its reward from the episode's
//! outcome; the discount then applies per period, as the model's history spaces its frames.
//! Frames are decoded once, resized to the model's input size and kept in a memory-mapped cache
//! file, so a dataset larger than memory still trains.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{Device, Tensor};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::action::{ActionSpace, PlanarTwist};
use crate::bag::msgs::{EpisodeOutcome, GaitCommand, StringMsg, Twist, TwistStamped, VlaDecision};
use crate::bag::{camera_frame, decode, BagReader, Storage, METADATA_FILE};
use crate::model::{history_window, EncodedObservation, ObservationBatch, PreprocessConfig, TextEncoding, TextInput, VlaModel};
use crate::policy::{frame_stamp_s, history, preprocess, InstructionText};
use crate::topics;

/// Topic names of the bags a dataset is read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topics {
    pub image: String,
    pub instruction: String,
    pub cmd_vel: String,
    pub gait: String,
    pub outcome: String,
    /// The policy's own decisions (`moe_vla_msgs/msg/VlaDecision`): where a bag has them, they are the
    /// actions learned, since they are what a policy is asked for; the commands on `cmd_vel` and
    /// `gait` have been through the controller's clamps and acceleration limits.
    pub decision: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            image: topics::CAMERA.absolute.into(),
            instruction: topics::INSTRUCTION.absolute.into(),
            cmd_vel: topics::CMD_VEL.absolute.into(),
            gait: topics::GAIT_COMMAND.absolute.into(),
            outcome: topics::EPISODE_OUTCOME.into(),
            decision: topics::DECISION.absolute.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Bag { path: PathBuf, reason: String },
    #[error("no episodes found under {0} (bags need {1}, an instruction and an episode outcome)")]
    Empty(PathBuf, String),
    #[error("frame cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}

/// One episode: a run of consecutive steps in the frame cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub bag: PathBuf,
    pub instruction: String,
    pub family: String,
    pub success: bool,
    /// Ended by the terminate action: the last step's terminate bin is set.
    pub terminated: bool,
    /// Index of the first step (frame) in the dataset.
    pub first: usize,
    pub len: usize,
}

/// What the cache index records besides the frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheIndex {
    /// Bag files with sizes: the cache is rebuilt when they change.
    sources: Vec<(PathBuf, u64)>,
    image_size: usize,
    frame_period_s: f64,
    topics: Topics,
    episodes: Vec<Episode>,
    /// Camera frames in the episodes, before resampling to one per period.
    frames: usize,
    /// Per step, the bin of every action dimension.
    bins: Vec<Vec<u32>>,
    skipped: Vec<String>,
}

/// A loaded dataset: episode table, action bins and memory-mapped frames.
pub struct Dataset {
    pub episodes: Vec<Episode>,
    /// Per step, one bin per action dimension.
    pub bins: Vec<Vec<u32>>,
    /// Bags that yielded no episode, with the reason.
    pub skipped: Vec<String>,
    /// Camera frames in the episodes; more than the steps where a camera ran faster than the period.
    pub frames_read: usize,
    /// Seconds between consecutive steps of an episode.
    pub frame_period_s: f64,
    episode_of: Vec<u32>,
    frames: memmap2::Mmap,
    image_size: usize,
}

/// Every bag under `dir`: folders with a metadata.yaml, and .mcap or .db3 files outside such folders.
pub fn find_bags(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
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

impl Dataset {
    /// Loads every episode under `dir`, one step per `frame_period_s`, using (or building) the
    /// frame cache in `cache_dir`.
    pub fn load(
        dir: &Path,
        cache_dir: &Path,
        image_size: usize,
        frame_period_s: f64,
        space: &ActionSpace,
        topics: &Topics,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, DataError> {
        let bags = find_bags(dir)?;
        let sources: Vec<(PathBuf, u64)> = bags
            .iter()
            .map(|b| BagReader::open(b).map(|r| (b.clone(), r.size())))
            .collect::<Result<_, _>>()
            .map_err(|e| DataError::Bag { path: dir.to_path_buf(), reason: e.to_string() })?;
        std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
        let index_path = cache_dir.join(format!("index-{image_size}.json"));
        let frames_path = cache_dir.join(format!("frames-{image_size}.u8"));
        let cached: Option<CacheIndex> =
            std::fs::read(&index_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).filter(|c: &CacheIndex| {
                c.sources == sources && c.image_size == image_size && c.frame_period_s == frame_period_s && &c.topics == topics
            });
        let index = match cached {
            Some(index) => index,
            None => {
                let index = build_cache(&sources, &frames_path, image_size, frame_period_s, space, topics, &mut progress)?;
                // Written aside and renamed, so runs sharing a cache never read a half-written one.
                let json = serde_json::to_vec(&index).expect("plain data serialises");
                let tmp = index_path.with_extension(format!("partial-{}", std::process::id()));
                std::fs::write(&tmp, json).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &index_path).map_err(io(&index_path))?;
                index
            }
        };
        if index.episodes.is_empty() {
            return Err(DataError::Empty(dir.to_path_buf(), topics.image.clone()));
        }
        let file = File::open(&frames_path).map_err(io(&frames_path))?;
        // SAFETY: read-only map of a cache file only this program writes; a concurrent rewrite
        // yields wrong pixels, not undefined behaviour in code that only copies bytes out.
        let frames = unsafe { memmap2::Mmap::map(&file) }.map_err(io(&frames_path))?;
        let frame_bytes = image_size * image_size * 3;
        if frames.len() != index.bins.len() * frame_bytes {
            return Err(DataError::Cache {
                path: frames_path,
                reason: format!("holds {} bytes, expected {} frames", frames.len(), index.bins.len()),
            });
        }
        let mut episode_of = vec![0u32; index.bins.len()];
        for (e, ep) in index.episodes.iter().enumerate() {
            episode_of[ep.first..ep.first + ep.len].fill(e as u32);
        }
        Ok(Self {
            episodes: index.episodes,
            bins: index.bins,
            skipped: index.skipped,
            frames_read: index.frames,
            frame_period_s,
            episode_of,
            frames,
            image_size,
        })
    }

    pub fn steps(&self) -> usize {
        self.bins.len()
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Keeps only successful episodes' steps eligible for sampling (behaviour cloning on
    /// demonstrations). Returns the eligible step indices.
    pub fn step_indices(&self, successes_only: bool) -> Vec<usize> {
        self.episodes.iter().filter(|e| e.success || !successes_only).flat_map(|e| e.first..e.first + e.len).collect()
    }

    /// The RGB bytes ([S, S, 3]) of step `i`'s frame.
    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.image_size * self.image_size * 3;
        &self.frames[i * n..(i + 1) * n]
    }

    pub fn episode_of(&self, step: usize) -> &Episode {
        &self.episodes[self.episode_of[step] as usize]
    }

    /// Frame indices of the observation at `step`, oldest first; the episode's first frame
    /// repeats where the history reaches before it (as the policy's history ring does).
    pub fn history(&self, step: usize, history: usize) -> Vec<usize> {
        history_window(self.episode_of(step).first, step, history).collect()
    }

    /// Draws `batch` steps uniformly from `eligible`.
    pub fn sample_steps(eligible: &[usize], batch: usize, rng: &mut impl Rng) -> Vec<usize> {
        (0..batch).map(|_| eligible[rng.random_range(0..eligible.len())]).collect()
    }
}

fn build_cache(
    sources: &[(PathBuf, u64)],
    frames_path: &Path,
    image_size: usize,
    frame_period_s: f64,
    space: &ActionSpace,
    topics: &Topics,
    progress: &mut impl FnMut(usize, usize),
) -> Result<CacheIndex, DataError> {
    // Per process, so concurrent runs building the same cache do not write into one file.
    let tmp = frames_path.with_extension(format!("partial-{}", std::process::id()));
    let mut out = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
    let mut index = CacheIndex {
        sources: sources.to_vec(),
        image_size,
        frame_period_s,
        topics: topics.clone(),
        episodes: Vec::new(),
        frames: 0,
        bins: Vec::new(),
        skipped: Vec::new(),
    };
    for (n, (bag, _)) in sources.iter().enumerate() {
        progress(n, sources.len());
        let events = match read_events(bag, image_size, topics) {
            Ok(events) => events,
            Err(reason) => {
                index.skipped.push(format!("{}: {reason}", bag.display()));
                continue;
            }
        };
        let before = index.episodes.len();
        for (episode, frames, bins, frames_read) in split_episodes(bag, events, frame_period_s, space) {
            index.frames += frames_read;
            let first = index.bins.len();
            for frame in &frames {
                out.write_all(frame).map_err(io(&tmp))?;
            }
            index.bins.extend(bins);
            index.episodes.push(Episode { first, len: frames.len(), ..episode });
        }
        if index.episodes.len() == before {
            index.skipped.push(format!("{}: no complete episode (frames, instruction and outcome)", bag.display()));
        }
    }
    progress(sources.len(), sources.len());
    out.flush().map_err(io(&tmp))?;
    drop(out);
    std::fs::rename(&tmp, frames_path).map_err(io(frames_path))?;
    Ok(index)
}

/// The bag's relevant messages in log-time order, frames resized. Undecodable messages are
/// skipped; a damaged bag gives what could be read.
fn read_events(bag: &Path, image_size: usize, topics: &Topics) -> Result<Vec<BagEvent>, String> {
    let reader = BagReader::open(bag).map_err(|e| e.to_string())?;
    let mut events: Vec<(u64, usize, BagEvent)> = Vec::new();
    let size = image_size as u32;
    reader
        .for_each(|m| {
            let event = if m.topic == topics.image {
                camera_frame(m.type_name, m.data).and_then(Result::ok).and_then(|(frame, stamp)| {
                    let rgb = preprocess::resize_frame(&frame.as_frame(), size).ok()?;
                    // As the node stamps a frame: the camera's stamp, else when it was received.
                    let stamp_s = frame_stamp_s(Duration::from_nanos(stamp.nanos()), m.log_time as f64 * 1e-9);
                    Some(BagEvent::Frame(rgb.into_raw(), stamp_s))
                })
            } else if m.topic == topics.instruction {
                decode::<StringMsg>(m.data).ok().map(|s| BagEvent::Instruction(s.data))
            } else if m.topic == topics.cmd_vel {
                let twist = match m.type_name {
                    "geometry_msgs/msg/TwistStamped" => decode::<TwistStamped>(m.data).ok().map(|t| t.twist),
                    _ => decode::<Twist>(m.data).ok(),
                };
                twist.map(|t| BagEvent::Twist([t.linear.x as f32, t.linear.y as f32, t.angular.z as f32]))
            } else if m.topic == topics.gait {
                decode::<GaitCommand>(m.data).ok().map(BagEvent::Gait)
            } else if m.topic == topics.decision {
                decode::<VlaDecision>(m.data).ok().map(|d| BagEvent::Decision(d.bins, d.dimension_names))
            } else if m.topic == topics.outcome {
                decode::<EpisodeOutcome>(m.data).ok().map(BagEvent::Outcome)
            } else {
                None
            };
            if let Some(event) = event {
                let order = events.len();
                events.push((m.log_time, order, event));
            }
        })
        .map_err(|e| e.to_string())?;
    events.sort_by_key(|(t, order, _)| (*t, *order));
    Ok(events.into_iter().map(|(_, _, e)| e).collect())
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

/// One episode cut from a bag: its entry, each step's frame and bins, and the camera frames it
/// was resampled from.
type EpisodeSteps = (Episode, Vec<Vec<u8>>, Vec<Vec<u32>>, usize);

/// Cuts the event stream into episodes: an instruction starts one, an outcome ends it. Each
/// frame's action is the first decision after it when the bag records decisions of this action
/// space; otherwise the first twist after it (a stop when none came before the next frame) with
/// the newest gait command. The frames are then resampled to one step per `frame_period_s`.
fn split_episodes(bag: &Path, events: Vec<BagEvent>, frame_period_s: f64, space: &ActionSpace) -> Vec<EpisodeSteps> {
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
                    let episode = Episode {
                        bag: bag.to_path_buf(),
                        instruction: text,
                        family: outcome.family.clone(),
                        success: outcome.success,
                        terminated: outcome.terminated,
                        first: 0,
                        len: steps.len(),
                    };
                    episodes.push((episode, step_frames, step_bins, n));
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

/// Builds the network's batches: normalised frames and padded instruction ids (or sentence-encoder
/// output), or, once the encoders are frozen, their cached output.
pub struct Batcher<'a> {
    pub data: &'a Dataset,
    pub history: usize,
    pub preprocess: PreprocessConfig,
    /// Token ids of each episode's instruction (those that reach the decoder).
    pub ids: Vec<Vec<u32>>,
    /// With a frozen sentence encoder: each episode's instruction through it, computed once per
    /// distinct instruction.
    embedded: Option<Vec<Embedded>>,
    pub device: Device,
    encoded: Option<EncodedSteps>,
}

/// An instruction through the frozen sentence encoder: token states [L, E] (L = the length of its
/// ids) and the sentence embedding [E].
type Embedded = (Tensor, Tensor);

/// Episodes encoded between two progress reports when the encoders freeze.
const ENCODE_CHUNK: usize = 32;

/// The frozen encoders' output for every step of a dataset.
struct EncodedSteps {
    /// [steps, tokens_per_frame, D]: each frame's vision tokens under its episode's instruction.
    frames: Tensor,
    /// Per episode, its instruction's tokens [L, D].
    text: Vec<Tensor>,
}

/// A batch's observations: pixels and ids for the encoders, or what the frozen encoders made of
/// them.
pub enum Observations {
    Pixels(ObservationBatch),
    Encoded(EncodedObservation),
}

impl Observations {
    /// The decoder's input, running `model`'s encoders where the batch holds pixels.
    pub fn encode(&self, model: &VlaModel) -> candle_core::Result<EncodedObservation> {
        match self {
            Self::Pixels(obs) => model.encode(obs),
            Self::Encoded(enc) => Ok(enc.clone()),
        }
    }

    /// Rows `start..start + len` of the batch.
    pub fn rows(&self, start: usize, len: usize) -> candle_core::Result<Self> {
        Ok(match self {
            Self::Pixels(obs) => Self::Pixels(obs.rows(start, len)?),
            Self::Encoded(enc) => Self::Encoded(enc.rows(start, len)?),
        })
    }
}

/// One training batch.
pub struct Batch {
    pub obs: Observations,
    /// The observation at t + n (the episode's last step where it ends before).
    pub next: Observations,
    /// [B, dims] u32.
    pub bins: Tensor,
    /// [B] f32: the discounted reward within the n steps (`gamma^(T - t) * success` when the
    /// episode ends within them).
    pub return_n: Tensor,
    /// [B] f32: `gamma^n` where s_{t+n} exists, else 0.
    pub discount: Tensor,
    /// [B] f32: `gamma^(T - t) * success`, the Monte-Carlo return.
    pub mc_return: Tensor,
}

impl Batch {
    /// Its number of rows.
    pub fn batch_size(&self) -> candle_core::Result<usize> {
        self.bins.dim(0)
    }

    /// Rows `start..start + len` of the batch.
    pub fn rows(&self, start: usize, len: usize) -> candle_core::Result<Self> {
        Ok(Self {
            obs: self.obs.rows(start, len)?,
            next: self.next.rows(start, len)?,
            bins: self.bins.narrow(0, start, len)?,
            return_n: self.return_n.narrow(0, start, len)?,
            discount: self.discount.narrow(0, start, len)?,
            mc_return: self.mc_return.narrow(0, start, len)?,
        })
    }

    /// The batch cut into `n` runs of consecutive rows as even as can be (fewer when it has fewer
    /// rows than `n`).
    pub fn shards(&self, n: usize) -> candle_core::Result<Vec<Self>> {
        let rows = self.batch_size()?;
        let n = n.clamp(1, rows.max(1));
        let mut start = 0;
        (0..n)
            .map(|i| {
                let len = rows / n + usize::from(i < rows % n);
                let shard = self.rows(start, len);
                start += len;
                shard
            })
            .collect()
    }
}

/// Time-step bookkeeping of an n-step target for step `step` of an episode ending at `last`:
/// (index of s_{t+n}, return within the n steps, bootstrap discount, Monte-Carlo return).
pub fn n_step(step: usize, last: usize, success: bool, gamma: f64, n: usize) -> (usize, f32, f32, f32) {
    let n = n.max(1);
    let mc = if success { gamma.powi((last - step) as i32) } else { 0.0 };
    if step + n > last {
        (last, mc as f32, 0.0, mc as f32)
    } else {
        (step + n, 0.0, gamma.powi(n as i32) as f32, mc as f32)
    }
}

impl<'a> Batcher<'a> {
    /// A sentence encoder in `text` runs here, once per distinct instruction of the data.
    pub fn new(
        data: &'a Dataset,
        text: &InstructionText,
        history: usize,
        preprocess: PreprocessConfig,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut ids = Vec::with_capacity(data.episodes.len());
        let mut embedded = Vec::with_capacity(data.episodes.len());
        let mut seen: HashMap<&str, (Vec<u32>, Option<Embedded>)> = HashMap::new();
        for episode in &data.episodes {
            if !seen.contains_key(episode.instruction.as_str()) {
                let entry = match text {
                    InstructionText::WordLevel(tokenizer) => {
                        (tokenizer.encode(&episode.instruction).unwrap_or_else(|_| vec![1]), None)
                    }
                    InstructionText::Sentence { encoder, .. } => {
                        let full = encoder.tokenize(&episode.instruction).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                        let TextInput::Embedded { tokens, pooled } = text.input(&full, device)? else {
                            unreachable!("a sentence encoder gives embeddings")
                        };
                        let tokens = tokens.squeeze(0)?;
                        (full[..tokens.dim(0)?].to_vec(), Some((tokens, pooled.squeeze(0)?)))
                    }
                };
                seen.insert(&episode.instruction, entry);
            }
            let (episode_ids, episode_embedded) = &seen[episode.instruction.as_str()];
            ids.push(episode_ids.clone());
            embedded.extend(episode_embedded.clone());
        }
        let embedded = matches!(text, InstructionText::Sentence { .. }).then_some(embedded);
        Ok(Self { data, history, preprocess, ids, embedded, device: device.clone(), encoded: None })
    }

    /// The text encoder's input for episode `e`'s instruction alone.
    fn text_input(&self, e: usize) -> candle_core::Result<TextInput> {
        Ok(match &self.embedded {
            Some(embedded) => {
                let (tokens, pooled) = &embedded[e];
                TextInput::Embedded { tokens: tokens.unsqueeze(0)?, pooled: pooled.unsqueeze(0)? }
            }
            None => TextInput::Ids(Tensor::new(self.ids[e].as_slice(), &self.device)?.unsqueeze(0)?),
        })
    }

    /// Whether batches carry the frozen encoders' output.
    pub fn is_encoded(&self) -> bool {
        self.encoded.is_some()
    }

    /// Runs `model`'s encoders once over every step (each frame under its episode's instruction)
    /// and serves their output from then on. `progress(done, total)` sees the episodes.
    pub fn encode_all(&mut self, model: &VlaModel, mut progress: impl FnMut(usize, usize)) -> candle_core::Result<()> {
        let episodes = self.data.episodes.len();
        let mut text_of: HashMap<&[u32], TextEncoding> = HashMap::new();
        for e in 0..episodes {
            let ids = self.ids[e].as_slice();
            if !text_of.contains_key(ids) {
                text_of.insert(ids, model.encode_text(&self.text_input(e)?, None)?);
            }
        }
        let s = self.data.image_size();
        // Episodes are encoded side by side (one per thread); each one's result does not depend on
        // the others, so neither does the cache on the thread count.
        let encode = |e: usize| -> candle_core::Result<(Tensor, Tensor)> {
            let episode = &self.data.episodes[e];
            let instruction = &text_of[self.ids[e].as_slice()];
            let steps: Vec<usize> = (episode.first..episode.first + episode.len).collect();
            let images = Tensor::from_vec(self.pixels(&steps), (steps.len(), 3, s, s), &self.device)?;
            // Detached: kept with their graphs, the cached outputs would hold every activation.
            Ok((model.encode_frame(&images, instruction)?.detach(), instruction.tokens.squeeze(0)?.detach()))
        };
        let mut frames = Vec::with_capacity(episodes);
        let mut text = Vec::with_capacity(episodes);
        // Enough episodes per chunk that threads seldom wait for the slowest one.
        let chunk_len = ENCODE_CHUNK.max(4 * rayon::current_num_threads());
        for first in (0..episodes).step_by(chunk_len) {
            progress(first, episodes);
            let chunk: Vec<(Tensor, Tensor)> =
                (first..(first + chunk_len).min(episodes)).into_par_iter().map(encode).collect::<candle_core::Result<_>>()?;
            for (f, t) in chunk {
                frames.push(f);
                text.push(t);
            }
        }
        progress(episodes, episodes);
        self.encoded = Some(EncodedSteps { frames: Tensor::cat(&frames, 0)?, text });
        Ok(())
    }

    /// Normalised CHW pixels of the frames `indices`, one after another.
    fn pixels(&self, indices: &[usize]) -> Vec<f32> {
        let s = self.data.image_size();
        let mut pixels = Vec::with_capacity(indices.len() * 3 * s * s);
        for &f in indices {
            preprocess::normalise_into(self.data.frame(f), &self.preprocess, &mut pixels);
        }
        pixels
    }

    fn observation(&self, steps: &[usize]) -> candle_core::Result<Observations> {
        let windows: Vec<usize> = steps.iter().flat_map(|&step| self.data.history(step, self.history)).collect();
        let episodes: Vec<usize> = steps.iter().map(|&i| self.data.episode_of[i] as usize).collect();
        let len = episodes.iter().map(|&e| self.ids[e].len()).max().unwrap_or(1).max(1);
        let padded = episodes.iter().any(|&e| self.ids[e].len() != len);
        let valid: Vec<f32> =
            episodes.iter().flat_map(|&e| (0..len).map(move |j| f32::from(u8::from(j < self.ids[e].len())))).collect();
        let text_valid = padded.then(|| Tensor::from_vec(valid, (steps.len(), len), &self.device)).transpose()?;
        if let Some(encoded) = &self.encoded {
            let (_, t, d) = encoded.frames.dims3()?;
            let index = Tensor::from_vec(windows.iter().map(|&f| f as u32).collect::<Vec<_>>(), windows.len(), &self.device)?;
            let frames = encoded.frames.index_select(&index, 0)?.reshape((steps.len(), self.history, t, d))?;
            let text = episodes.iter().map(|&e| pad_rows(&encoded.text[e], len)).collect::<candle_core::Result<Vec<_>>>()?;
            return Ok(Observations::Encoded(EncodedObservation { text_tokens: Tensor::stack(&text, 0)?, text_valid, frames }));
        }
        let s = self.data.image_size();
        let frames = Tensor::from_vec(self.pixels(&windows), (steps.len(), self.history, 3, s, s), &self.device)?;
        let text = match &self.embedded {
            Some(embedded) => {
                let tokens = episodes.iter().map(|&e| pad_rows(&embedded[e].0, len)).collect::<candle_core::Result<Vec<_>>>()?;
                let pooled = episodes.iter().map(|&e| embedded[e].1.clone()).collect::<Vec<_>>();
                TextInput::Embedded { tokens: Tensor::stack(&tokens, 0)?, pooled: Tensor::stack(&pooled, 0)? }
            }
            None => {
                let flat: Vec<u32> =
                    episodes.iter().flat_map(|&e| (0..len).map(move |j| self.ids[e].get(j).copied().unwrap_or(0))).collect();
                TextInput::Ids(Tensor::from_vec(flat, (steps.len(), len), &self.device)?)
            }
        };
        Ok(Observations::Pixels(ObservationBatch { text, text_valid, frames }))
    }

    /// The batch of `steps` with n-step bootstrapping.
    pub fn batch(&self, steps: &[usize], gamma: f64, n: usize) -> candle_core::Result<Batch> {
        let dims = self.data.bins[0].len();
        let mut bins = Vec::with_capacity(steps.len() * dims);
        let (mut return_n, mut discount, mut mc, mut next) =
            (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f32>::new(), Vec::new());
        for &step in steps {
            bins.extend_from_slice(&self.data.bins[step]);
            let ep = self.data.episode_of(step);
            let (later, ret, disc, mc_return) = n_step(step - ep.first, ep.len - 1, ep.success, gamma, n);
            next.push(ep.first + later);
            return_n.push(ret);
            discount.push(disc);
            mc.push(mc_return);
        }
        let b = steps.len();
        Ok(Batch {
            obs: self.observation(steps)?,
            next: self.observation(&next)?,
            bins: Tensor::from_vec(bins, (b, dims), &self.device)?,
            return_n: Tensor::from_vec(return_n, b, &self.device)?,
            discount: Tensor::from_vec(discount, b, &self.device)?,
            mc_return: Tensor::from_vec(mc, b, &self.device)?,
        })
    }
}

/// `rows` [L, D] followed by zero rows up to `len`.
fn pad_rows(rows: &Tensor, len: usize) -> candle_core::Result<Tensor> {
    let (l, d) = rows.dims2()?;
    if l == len {
        return Ok(rows.clone());
    }
    Tensor::cat(&[rows, &Tensor::zeros((len - l, d), rows.dtype(), rows.device())?], 0)
}

/// Steps per family and outcome, for the training summary.
pub fn summary(data: &Dataset) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for e in &data.episodes {
        let entry = out.entry(e.family.clone()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(e.success);
    }
    out
}
