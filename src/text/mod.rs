//! Text: sentence stimuli (a user's file, or sentences drawn from WordNet) and language
//! models (BERT-family checkpoints) whose layers are pooled over tokens into one row per
//! sentence.

pub mod bert;
pub mod sentences;

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
