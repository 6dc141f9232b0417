//! Language models as DAG nodes: `sentences` (a sentence set: a user's file or WordNet
//! examples) and `embed` (every layer of one language model — a BERT-family checkpoint or a
//! byte-level decoder — on those sentences, pooled over tokens, in the layout `prepared`
//! nodes read).

use std::path::PathBuf;

use repflow_cache::{Bundle, MappedBundle};
use repflow_engine::{Inputs, Kind, NodeError};
use serde::{Deserialize, Serialize};

use super::network::{names, reduced_bundle, tensors_from_bundle};
use super::RunContext;
use crate::error::UserError;
use crate::stimuli::datasets::default_package;
use crate::text::bert::Bert;
use crate::text::embed::embed;
use crate::text::gpt::{Gpt, GptConfig};
use crate::text::sentences::{read_file, wordnet_examples, Sentences, WORDNET_DEB};
use crate::text::LanguageModel;
use crate::text::TokenPooling;

/// A set of sentences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SentenceSet {
    /// A text file, one sentence a line (enters the key by content).
    File {
        /// The file.
        file: PathBuf,
    },
    /// `count` WordNet example sentences from the wordnet-base package.
    WordNet {
        /// How many.
        count: usize,
        /// The .deb (enters the key by content).
        package: PathBuf,
    },
}

impl SentenceSet {
    /// The set a `--sentences` flag or `sentences.source` key names: `wordnet:N`, or a text
    /// file relative to `base`; `package` is the wordnet-base .deb (default:
    /// `data/downloads/`).
    pub fn parse(
        spec: &str,
        base: &std::path::Path,
        package: Option<PathBuf>,
    ) -> Result<SentenceSet, UserError> {
        Ok(match spec.strip_prefix("wordnet:") {
            Some(n) => SentenceSet::WordNet {
                count: n.parse().map_err(|_| {
                    UserError::input(format!("`{n}` is not a count of sentences"))
                        .hint("e.g. wordnet:1000")
                })?,
                package: package.unwrap_or_else(|| default_package(WORDNET_DEB)),
            },
            None => SentenceSet::File {
                file: base.join(spec),
            },
        })
    }

    /// Reads the sentences.
    pub fn read(&self) -> Result<Sentences, UserError> {
        match self {
            SentenceSet::File { file } => read_file(file),
            SentenceSet::WordNet { count, package } => wordnet_examples(package, *count),
        }
    }

    /// How many sentences the set holds (a file is read; WordNet's count is checked when
    /// the node runs).
    pub fn count(&self) -> Result<usize, UserError> {
        match self {
            SentenceSet::File { .. } => Ok(self.read()?.text.len()),
            SentenceSet::WordNet { count, .. } => Ok(*count),
        }
    }
}

/// No inputs; the file or package enters the key by content. Output: metadata `{ids, text}`.
impl Kind<RunContext> for SentenceSet {
    const KIND: &'static str = "sentences";
    const VERSION: u32 = 1;

    fn key_params(&self) -> serde_json::Value {
        match self {
            SentenceSet::File { .. } => serde_json::json!({ "source": "file" }),
            SentenceSet::WordNet { count, .. } => {
                serde_json::json!({ "source": "wordnet", "count": count })
            }
        }
    }

    fn external_files(&self) -> Vec<PathBuf> {
        match self {
            SentenceSet::File { file } => vec![file.clone()],
            SentenceSet::WordNet { package, .. } => vec![package.clone()],
        }
    }

    fn run(&self, _: &RunContext, _: &Inputs) -> Result<Bundle, NodeError> {
        let s = self.read()?;
        Ok(Bundle::meta(
            serde_json::json!({ "ids": s.ids, "text": s.text }).to_string(),
        ))
    }
}

/// The language model an `embed` node runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextModel {
    /// A BERT-family checkpoint folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    Bert {
        /// The folder (its files enter the key by content).
        checkpoint: PathBuf,
    },
    /// A decoder checkpoint folder (`config.json`, `model.safetensors`) saved by `train-lm`.
    Gpt {
        /// The folder (its files enter the key by content).
        checkpoint: PathBuf,
    },
    /// A decoder trained in the pipeline, its weights the `weights` input (an `lm-train`
    /// output).
    Trained {
        /// Its shape.
        config: GptConfig,
    },
}

/// Every layer of one language model on a sentence set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    /// The model.
    pub model: TextModel,
    /// How tokens are pooled.
    pub pooling: TokenPooling,
    /// Sentences per forward pass (padding differs with it, so it is in the key).
    pub batch: usize,
}

/// Inputs: `sentences`, and `weights` for a trained decoder. Output: one column-major array
/// per layer (sentences × hidden), with metadata `{layers, stimuli, truncated}`. Version 2:
/// decoders beside BERT.
impl Kind<RunContext> for Embed {
    const KIND: &'static str = "embed";
    const VERSION: u32 = 2;

    fn key_params(&self) -> serde_json::Value {
        let model = match &self.model {
            TextModel::Bert { .. } => serde_json::json!("bert"),
            TextModel::Gpt { .. } => serde_json::json!("gpt"),
            TextModel::Trained { config } => serde_json::json!({ "trained": config }),
        };
        serde_json::json!({ "model": model, "pooling": self.pooling, "batch": self.batch })
    }

    fn external_files(&self) -> Vec<PathBuf> {
        let (dir, files): (_, &[&str]) = match &self.model {
            TextModel::Bert { checkpoint } => (
                checkpoint,
                &["config.json", "model.safetensors", "tokenizer.json"],
            ),
            TextModel::Gpt { checkpoint } => (checkpoint, &["config.json", "model.safetensors"]),
            TextModel::Trained { .. } => return Vec::new(),
        };
        files.iter().map(|f| dir.join(f)).collect()
    }

    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let weights = match self.model {
            TextModel::Trained { .. } => Some(inputs.bundle("weights")?),
            _ => None,
        };
        Ok(self.embed(inputs.bundle("sentences")?, weights)?)
    }
}

impl Embed {
    /// Embeds the sentences of a `sentences` output (`weights`: a trained decoder's
    /// `lm-train` output).
    pub fn embed(
        &self,
        sentences: &MappedBundle,
        weights: Option<&MappedBundle>,
    ) -> Result<Bundle, UserError> {
        let meta: serde_json::Value = serde_json::from_str(sentences.meta())
            .map_err(|e| UserError::input(format!("corrupt sentences object: {e}")))?;
        let text: Vec<String> = serde_json::from_value(meta["text"].clone())
            .map_err(|e| UserError::input(format!("corrupt sentences object: {e}")))?;
        let model: Box<dyn LanguageModel> = match (&self.model, weights) {
            (TextModel::Bert { checkpoint }, _) => Box::new(Bert::load(checkpoint)?),
            (TextModel::Gpt { checkpoint }, _) => Box::new(Gpt::load(checkpoint)?),
            (TextModel::Trained { config }, Some(w)) => Box::new(Gpt::from_tensors(
                *config,
                tensors_from_bundle(w, "w:", &names(w, "weights")?)?,
            )?),
            (TextModel::Trained { .. }, None) => {
                return Err(UserError::input(
                    "a trained decoder's embed node needs its weights",
                ))
            }
        };
        let (layers, truncated) = embed(model.as_ref(), &text, self.pooling, self.batch)?;
        let out = serde_json::json!({
            "layers": model.layer_names(), "stimuli": meta["ids"], "truncated": truncated,
        });
        Ok(reduced_bundle(out.to_string(), layers))
    }
}
