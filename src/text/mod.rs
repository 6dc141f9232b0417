//! Text: sentence stimuli (a user's file, or sentences drawn from WordNet) and language
//! models (BERT-family checkpoints, and byte-level decoders trained here) whose layers are
//! pooled over tokens into one row per sentence.

pub mod bert;
pub mod embed;
pub mod gpt;
pub mod lm_train;
pub mod sentences;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::UserError;

/// How a layer's token states (tokens × hidden) become one row per sentence; only tokens
/// the attention mask keeps count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenPooling {
    /// The mean over the sentence's tokens (sentence-transformers' pooling; the default).
    Mean,
    /// The first token (`[CLS]` in BERT).
    Cls,
    /// The last token of the sentence (`[SEP]` in BERT; the next-token state in a decoder).
    Last,
}

impl TokenPooling {
    /// Parses `mean`, `cls` or `last`.
    pub fn parse(name: &str) -> Result<Self, UserError> {
        match name {
            "mean" => Ok(TokenPooling::Mean),
            "cls" => Ok(TokenPooling::Cls),
            "last" => Ok(TokenPooling::Last),
            other => Err(UserError::input(format!("unknown token pooling `{other}`"))
                .hint("language models take --reduce mean, cls or last")),
        }
    }
}

/// A language model whose every layer [`embed::embed`] pools: BERT encoders and the decoders
/// trained here.
pub trait LanguageModel {
    /// The names of the layers [`LanguageModel::hidden_states`] returns, in order (the
    /// embedding output first).
    fn layer_names(&self) -> Vec<String>;
    /// Width of every layer.
    fn width(&self) -> usize;
    /// Token positions (longer sentences are truncated).
    fn positions(&self) -> usize;
    /// Token ids of each sentence, truncated to the model's positions; and how many
    /// sentences were truncated.
    fn tokenize(&self, sentences: &[String]) -> Result<(Vec<Vec<u32>>, usize), UserError>;
    /// Every hidden state (each batch × tokens × width) of one padded batch, and the mask of
    /// the tokens pooling counts (batch × tokens, 1 or 0).
    fn hidden_states(&self, batch: &TokenBatch) -> Result<(Vec<Tensor>, Tensor), UserError>;
    /// Whether [`TokenPooling::Cls`] (the first token's state) means anything: not in a
    /// causal decoder, where the first token sees only itself.
    fn pools_first_token(&self) -> bool {
        true
    }
}

/// Token rows of one batch, padded on the right with id 0 to the longest.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// The rows.
    pub rows: Vec<Vec<u32>>,
}

impl TokenBatch {
    /// The padded length.
    pub fn len(&self) -> usize {
        self.rows.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether the batch has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The padded ids (batch × tokens, u32) and the mask of real tokens (f32, 1 or 0).
    pub fn tensors(&self) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t) = (self.rows.len(), self.len());
        let mut flat = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (r, row) in self.rows.iter().enumerate() {
            flat[r * t..r * t + row.len()].copy_from_slice(row);
            mask[r * t..r * t + row.len()].fill(1.0);
        }
        Ok((
            Tensor::from_vec(flat, (b, t), &Device::Cpu)?,
            Tensor::from_vec(mask, (b, t), &Device::Cpu)?,
        ))
    }
}
