//! Cached decoding with the full decoder: vision tokens of the window's frames kept between
//! control steps, the observation prefix once per step, then one cached step per dimension.

use candle_core::{Result, Tensor};

use super::{check_masks, greedy, GreedyAction};
use crate::model::decoder::DecoderCache;
use crate::model::history::{FrameRetention, HistoryRing};
use crate::model::text::{TextEncoding, TextInput};
use crate::model::vla::VlaModel;

/// The full decoder's memory between control steps: vision tokens of the frames still inside
/// the history window, so a control step encodes only its new frame. FiLM makes them depend on
/// the instruction: a new instruction clears them.
#[derive(Debug, Clone)]
pub struct FrameTokenCache {
    instruction: Option<(Vec<u32>, TextEncoding)>,
    frames: HistoryRing<Tensor>,
}

impl FrameTokenCache {
    pub fn new(history: usize) -> Self {
        Self { instruction: None, frames: HistoryRing::new(history) }
    }

    /// Encodes the newest frame ([1, 3, S, S]) under the instruction whose token ids are `ids` and
    /// whose text-encoder input is `input`, keeps its tokens as `retention` says, and returns the
    /// encoded instruction with the window of vision tokens that ends at it, oldest first.
    pub fn observe(
        &mut self,
        model: &VlaModel,
        ids: &[u32],
        input: &TextInput,
        image: &Tensor,
        retention: FrameRetention,
    ) -> Result<(TextEncoding, Vec<Tensor>)> {
        let text = match &self.instruction {
            Some((cached, text)) if cached == ids => text.clone(),
            _ => {
                let text = model.encode_text(input, None)?;
                self.frames.clear();
                self.instruction = Some((ids.to_vec(), text.clone()));
                text
            }
        };
        let tokens = model.encode_frame(image, &text)?;
        let window = self.frames.window_with(tokens.clone());
        if retention == FrameRetention::Keep {
            self.frames.push(tokens);
        }
        Ok((text, window))
    }

    /// Forgets everything (a new episode: old frames must not leak into it).
    pub fn reset(&mut self) {
        self.instruction = None;
        self.frames.clear();
    }
}

impl VlaModel {
    /// Greedy per-dimension argmax with a KV cache: the observation prefix once, then one
    /// single-token step per remaining dimension. `valid[i][b]`: whether bin b of dimension i may
    /// be chosen.
    pub fn decode_cached(&self, text: &TextEncoding, frames: &[Tensor], valid: &[Vec<bool>]) -> Result<GreedyAction> {
        let Some(decoder) = self.full_decoder() else {
            candle_core::bail!("decode_cached runs the full decoder; a streaming one decodes with StreamingCache");
        };
        let cfg = self.config();
        let dims = cfg.action_dims();
        check_masks(valid, dims)?;
        let prefix = self.observation(text, frames)?;
        let p = prefix.dim(1)?;
        let mut cache = DecoderCache::new(cfg.layers, p + dims);
        let (states, routing) = decoder.cached(prefix, &mut cache)?;
        let logits = self.q_logits(&states.narrow(1, p - 1, 1)?, 0)?.squeeze(1)?;
        let mut load = self.empty_load();
        routing.add_load_to(&mut load);
        greedy(valid, logits, load, |bin, dim| {
            let (state, routing) =
                decoder.cached(self.action_tokens(&Tensor::new(&[[bin]], self.device())?, dim)?, &mut cache)?;
            Ok((self.q_logits(&state, dim + 1)?.squeeze(1)?, routing))
        })
    }
}
