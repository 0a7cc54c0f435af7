//! Cached decoding with the streaming decoder: the instruction's and the window's frames' keys and
//! values kept between control steps; a step runs only its new frame and the action tokens.

use candle_core::{Result, Tensor};

use super::{check_masks, greedy, GreedyAction};
use crate::model::decoder::LayerKv;
use crate::model::history::{history_window, FrameRetention, HistoryRing};
use crate::model::text::{TextEncoding, TextInput};
use crate::model::vla::VlaModel;

/// The streaming decoder's memory between control steps: the instruction's keys and values and
/// those of the frames still inside the history window, so a control step runs only its new
/// frame (and the action tokens) through the decoder. A new instruction clears it.
#[derive(Debug, Clone)]
pub struct StreamingCache {
    instruction: Option<(Vec<u32>, TextEncoding, LayerKv)>,
    frames: HistoryRing<LayerKv>,
}

impl StreamingCache {
    pub fn new(history: usize) -> Self {
        Self { instruction: None, frames: HistoryRing::new(history) }
    }

    /// Decodes the greedy action on the newest frame ([1, 3, S, S]) under instruction `ids`
    /// (text-encoder input `input`), keeping the frame's keys and values as `retention` says.
    pub fn decide(
        &mut self,
        model: &VlaModel,
        ids: &[u32],
        input: &TextInput,
        image: &Tensor,
        retention: FrameRetention,
        valid: &[Vec<bool>],
    ) -> Result<GreedyAction> {
        let Some(decoder) = model.streaming_decoder() else {
            candle_core::bail!("a StreamingCache decodes with a streaming decoder");
        };
        check_masks(valid, model.config().action_dims())?;
        let (text, instruction) = match &self.instruction {
            Some((cached, text, kv)) if cached == ids => (text.clone(), kv.clone()),
            _ => {
                let text = model.encode_text(input, None)?;
                let kv = decoder.instruction_kv(&text)?;
                self.frames.clear();
                self.instruction = Some((ids.to_vec(), text.clone(), kv.clone()));
                (text, kv)
            }
        };
        let frame = model.place_frame(&model.encode_frame(image, &text)?, 0)?;
        // The window after this frame joins: the newest `history - 1` stored frames, then it.
        let history = decoder.history;
        let kept: Vec<&LayerKv> = self.frames.items().skip((self.frames.len() + 1).saturating_sub(history)).collect();
        let window: Vec<Option<&LayerKv>> = history_window(0, kept.len(), history).map(|i| kept.get(i).copied()).collect();
        let (new_frame, mut cache, start, routing) = decoder.observe(&instruction, &window, &frame)?;
        if retention == FrameRetention::Keep {
            self.frames.push(new_frame);
        }
        let mut load = model.empty_load();
        routing.add_load_to(&mut load);
        let logits = model.q_logits(&start, 0)?.squeeze(1)?;
        greedy(valid, logits, load, |bin, dim| {
            let (state, routing) =
                decoder.step(model.action_tokens(&Tensor::new(&[[bin]], model.device())?, dim)?, &mut cache)?;
            Ok((model.q_logits(&state, dim + 1)?.squeeze(1)?, routing))
        })
    }

    /// Forgets everything (a new episode: old frames must not leak into it).
    pub fn reset(&mut self) {
        self.instruction = None;
        self.frames.clear();
    }
}
