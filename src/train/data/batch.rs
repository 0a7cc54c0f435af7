//! Training batches: the network's input for sampled steps (normalised frames and padded
//! instruction ids, sentence-encoder output, or the frozen encoders' cached output) and each
//! step's n-step target bookkeeping.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::Dataset;
use crate::model::{EncodedObservation, ObservationBatch, PreprocessConfig, TextEncoding, TextInput, VlaModel};
use crate::policy::{preprocess, InstructionText};

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
/// (index of s_{t+n}, return within the n steps, bootstrap discount, Monte-Carlo return). An
/// episode `cut_short` (a timeout whose targets bootstrap) does not end at `last`: where the n
/// steps reach past it, the target bootstraps from the last observation, as from the state the
/// episode would have gone on from, one period after the last step.
pub fn n_step(step: usize, last: usize, success: bool, cut_short: bool, gamma: f64, n: usize) -> (usize, f32, f32, f32) {
    let n = n.max(1);
    let mc = if success { gamma.powi((last - step) as i32) } else { 0.0 };
    if step + n > last && cut_short {
        (last, 0.0, gamma.powi((last - step).max(1) as i32) as f32, mc as f32)
    } else if step + n > last {
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

    /// The batch of `steps` with n-step bootstrapping (from the last observation of a timed-out
    /// episode too, with `bootstrap_timeouts`).
    pub fn batch(&self, steps: &[usize], gamma: f64, n: usize, bootstrap_timeouts: bool) -> candle_core::Result<Batch> {
        let dims = self.data.bins[0].len();
        let mut bins = Vec::with_capacity(steps.len() * dims);
        let (mut return_n, mut discount, mut mc, mut next) =
            (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f32>::new(), Vec::new());
        for &step in steps {
            bins.extend_from_slice(&self.data.bins[step]);
            let ep = self.data.episode_of(step);
            let cut_short = bootstrap_timeouts && ep.timed_out();
            let (later, ret, disc, mc_return) = n_step(step - ep.first, ep.len - 1, ep.success, cut_short, gamma, n);
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
