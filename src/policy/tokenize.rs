//! Instructions -> token ids with a Hugging Face `tokenizer.json`.

use std::path::Path;

use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

pub const PAD: &str = "[PAD]";
pub const UNK: &str = "[UNK]";

/// Text beyond this many bytes cannot reach the model (it keeps `max_tokens` tokens), so it is
/// cut before tokenising to bound the work a huge message causes.
pub const MAX_INSTRUCTION_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenizeError {
    #[error("instruction is empty")]
    Empty,
    #[error("instruction is {bytes} bytes; at most {MAX_INSTRUCTION_BYTES} are accepted")]
    TooLong { bytes: usize },
    #[error("tokenizer failed: {0}")]
    Failed(String),
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    OutOfVocabulary { id: u32, vocab: usize },
}

/// The text a controller accepts as a new instruction: trimmed, not empty, at most
/// `MAX_INSTRUCTION_BYTES` (a longer one is refused rather than silently cut).
pub fn accept_instruction(text: &str) -> Result<&str, TokenizeError> {
    if text.len() > MAX_INSTRUCTION_BYTES {
        return Err(TokenizeError::TooLong { bytes: text.len() });
    }
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if text.is_empty() {
        return Err(TokenizeError::Empty);
    }
    Ok(text)
}

/// The part of `instruction` a tokenizer sees: at most `MAX_INSTRUCTION_BYTES`, trimmed, not empty.
pub(crate) fn clip_instruction(instruction: &str) -> Result<&str, TokenizeError> {
    let mut end = instruction.len().min(MAX_INSTRUCTION_BYTES);
    while !instruction.is_char_boundary(end) {
        end -= 1;
    }
    let text = instruction[..end].trim();
    if text.is_empty() {
        return Err(TokenizeError::Empty);
    }
    Ok(text)
}

#[derive(Clone)]
pub struct InstructionTokenizer {
    tokenizer: Tokenizer,
    max_tokens: usize,
    vocab_size: usize,
}

impl InstructionTokenizer {
    pub fn new(tokenizer: Tokenizer, max_tokens: usize, vocab_size: usize) -> Self {
        Self { tokenizer, max_tokens, vocab_size }
    }

    pub fn from_file(path: &Path, max_tokens: usize, vocab_size: usize) -> Result<Self, TokenizeError> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| TokenizeError::Failed(e.to_string()))?;
        Ok(Self::new(tokenizer, max_tokens, vocab_size))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids, truncated to `max_tokens`; unknown words map to the unknown token.
    pub fn encode(&self, instruction: &str) -> Result<Vec<u32>, TokenizeError> {
        let text = clip_instruction(instruction)?;
        let encoding = self.tokenizer.encode(text, true).map_err(|e| TokenizeError::Failed(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        ids.truncate(self.max_tokens);
        if ids.is_empty() {
            return Err(TokenizeError::Empty);
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizeError::OutOfVocabulary { id, vocab: self.vocab_size });
        }
        Ok(ids)
    }
}

/// A lower-casing word-level tokenizer trained on `instructions`, with `[PAD]` = 0 and
/// `[UNK]` = 1.
pub fn train_word_level<S: AsRef<str> + Send>(
    instructions: impl Iterator<Item = S> + Send,
    vocab_size: usize,
) -> Result<Tokenizer, TokenizeError> {
    let fail = |e: tokenizers::Error| TokenizeError::Failed(e.to_string());
    let model = WordLevel::builder().unk_token(UNK.to_string()).build().map_err(fail)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(Lowercase)).map_err(fail)?;
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    let mut trainer: TrainerWrapper = WordLevelTrainer::builder()
        .vocab_size(vocab_size)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(PAD, true), AddedToken::from(UNK, true)])
        .build()
        .map_err(|e| TokenizeError::Failed(e.to_string()))?
        .into();
    tokenizer.train(&mut trainer, instructions).map_err(fail)?;
    Ok(tokenizer)
}
