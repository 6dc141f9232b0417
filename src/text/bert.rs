//! BERT-family encoders (Hugging Face `BertModel` checkpoints: `config.json`,
//! `model.safetensors`, `tokenizer.json`) in candle, with every layer's output kept: the
//! embedding output, then each encoder layer's, as `output_hidden_states=True` returns them.
//!
//! Written here rather than taken from candle-transformers, whose `BertModel` returns only
//! the last layer; the arithmetic follows transformers' `modeling_bert` (post-norm layers,
//! exact-erf GELU, padding masked by adding `f32::MIN` to the attention logits) and is held
//! to it by `tests/bert.rs` on a committed fixture and on the real all-MiniLM-L6-v2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use super::{LanguageModel, TokenBatch};
use crate::error::UserError;

/// The fields of `config.json` the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Token ids are below this.
    pub vocab_size: usize,
    /// Width of every layer.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads (dividing `hidden_size`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest input, in tokens (longer sentences are truncated).
    pub max_position_embeddings: usize,
    /// Token-type (segment) embeddings.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm's epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Must be `gelu` (exact).
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Must be `absolute`.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn two() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}
fn absolute() -> String {
    "absolute".into()
}

fn candle(e: candle_core::Error) -> UserError {
    UserError::input(format!(
        "BERT forward pass: {}",
        e.to_string().lines().next().unwrap_or_default()
    ))
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A loaded encoder and its tokenizer.
pub struct Bert {
    /// Its configuration.
    pub config: BertConfig,
    tokenizer: Tokenizer,
    word: Embedding,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// The checkpoint's tensors, checked by name and shape as they are taken.
struct Weights {
    file: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, UserError> {
        let t = self
            .tensors
            .remove(name)
            .or_else(|| self.tensors.remove(&format!("bert.{name}")))
            .or_else(|| {
                // checkpoints from the TensorFlow era call LayerNorm's parameters gamma/beta
                let old = name
                    .replace("LayerNorm.weight", "LayerNorm.gamma")
                    .replace("LayerNorm.bias", "LayerNorm.beta");
                self.tensors
                    .remove(&old)
                    .or_else(|| self.tensors.remove(&format!("bert.{old}")))
            })
            .ok_or_else(|| {
                UserError::input(format!(
                    "`{}` has no tensor `{name}` (expected shape {shape:?})",
                    self.file.display()
                ))
                .hint("the folder must hold a BertModel checkpoint matching its config.json")
            })?;
        if t.dims() != shape {
            return Err(UserError::input(format!(
                "`{}`: tensor `{name}` has shape {:?}; config.json implies {shape:?}",
                self.file.display(),
                t.dims()
            ))
            .hint("config.json and model.safetensors come from different models"));
        }
        t.to_dtype(DType::F32).map_err(candle)
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear, UserError> {
        Ok(Linear::new(
            self.take(&format!("{name}.weight"), &[out, inp])?,
            Some(self.take(&format!("{name}.bias"), &[out])?),
        ))
    }

    fn norm(&mut self, name: &str, width: usize, eps: f64) -> Result<LayerNorm, UserError> {
        Ok(LayerNorm::new(
            self.take(&format!("{name}.weight"), &[width])?,
            self.take(&format!("{name}.bias"), &[width])?,
            eps,
        ))
    }
}

/// Reads and checks a checkpoint's `config.json`.
pub fn read_config(path: &Path) -> Result<BertConfig, UserError> {
    let text = String::from_utf8(crate::input::read(path)?)
        .map_err(|_| UserError::input(format!("`{}` is not UTF-8", path.display())))?;
    let c: BertConfig = serde_json::from_str(&text).map_err(|e| {
        UserError::input(format!("`{}`: {e}", path.display())).hint(
            "a Hugging Face BertModel config.json (vocab_size, hidden_size, num_hidden_layers, …)",
        )
    })?;
    let bad = |what: String| Err(UserError::input(format!("`{}`: {what}", path.display())));
    if c.hidden_act != "gelu" {
        return bad(format!(
            "`hidden_act` is `{}`; only `gelu` (exact) is supported",
            c.hidden_act
        ));
    }
    if c.position_embedding_type != "absolute" {
        return bad(format!(
            "`position_embedding_type` is `{}`; only `absolute` is supported",
            c.position_embedding_type
        ));
    }
    if c.num_attention_heads == 0
        || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        || c.max_position_embeddings < 2
    {
        return bad(format!(
            "`hidden_size` {} is not a multiple of `num_attention_heads` {} (or fewer than 2 positions)",
            c.hidden_size, c.num_attention_heads
        ));
    }
    Ok(c)
}

impl Bert {
    /// Loads the checkpoint folder `dir` (`config.json`, `model.safetensors`,
    /// `tokenizer.json`), checking every tensor's shape against the configuration and the
    /// tokenizer's vocabulary against the embedding table.
    pub fn load(dir: &Path) -> Result<Bert, UserError> {
        let config = read_config(&dir.join("config.json"))?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| {
            UserError::input(format!("`{}`: {e}", tok_path.display()))
                .hint("the checkpoint folder needs the tokenizer.json saved with the model")
        })?;
        let vocab = tokenizer.get_vocab(true);
        if let Some((token, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if id as usize >= config.vocab_size {
                return Err(UserError::input(format!(
                    "`{}` does not match the checkpoint: token `{token}` has id {id}, but config.json's vocab_size is {}",
                    tok_path.display(),
                    config.vocab_size
                ))
                .hint("use the tokenizer.json saved with this model"));
            }
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_position_embeddings,
                ..Default::default()
            }))
            .map_err(|e| UserError::input(format!("`{}`: {e}", tok_path.display())))?;
        let file = dir.join("model.safetensors");
        let tensors = crate::models::checkpoint::read(&file)?;
        let mut w = Weights { file, tensors };
        let (h, i, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let word = Embedding::new(
            w.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            h,
        );
        let position = w.take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = w.take(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embedding_norm = w.norm("embeddings.LayerNorm", h, eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    query: w.linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: w.linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: w.linear(&format!("{p}.attention.self.value"), h, h)?,
                    attention_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                    intermediate: w.linear(&format!("{p}.intermediate.dense"), i, h)?,
                    output: w.linear(&format!("{p}.output.dense"), h, i)?,
                    output_norm: w.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>, UserError>>()?;
        Ok(Bert {
            config,
            tokenizer,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
        })
    }
}

impl LanguageModel for Bert {
    fn layer_names(&self) -> Vec<String> {
        std::iter::once("embeddings".to_string())
            .chain((0..self.layers.len()).map(|l| format!("encoder.layer.{l}")))
            .collect()
    }

    fn width(&self) -> usize {
        self.config.hidden_size
    }

    fn positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Token ids of each sentence (with `[CLS]` and `[SEP]`), truncated to the model's
    /// positions; and how many sentences were truncated.
    fn tokenize(&self, sentences: &[String]) -> Result<(Vec<Vec<u32>>, usize), UserError> {
        let mut truncated = 0;
        let ids = sentences
            .iter()
            .map(|s| {
                let e = self
                    .tokenizer
                    .encode(s.as_str(), true)
                    .map_err(|e| UserError::input(format!("tokenizing `{s}`: {e}")))?;
                truncated += usize::from(!e.get_overflowing().is_empty());
                Ok(e.get_ids().to_vec())
            })
            .collect::<Result<Vec<_>, UserError>>()?;
        Ok((ids, truncated))
    }

    /// Every hidden state (embeddings first; each batch × tokens × hidden) of one padded
    /// batch, and its attention mask (batch × tokens, 1 for real tokens).
    fn hidden_states(&self, batch: &TokenBatch) -> Result<(Vec<Tensor>, Tensor), UserError> {
        let (b, t) = (batch.rows.len(), batch.len());
        let h = self.config.hidden_size;
        let (ids_t, mask_t) = batch.tensors().map_err(candle)?;
        let x = self
            .word
            .forward(&ids_t)
            .and_then(|x| x.broadcast_add(&self.position.narrow(0, 0, t)?))
            .and_then(|x| x.broadcast_add(&self.token_type.narrow(0, 0, 1)?))
            .and_then(|x| self.embedding_norm.forward(&x))
            .map_err(candle)?;
        // padding: f32::MIN added to the logits of padded keys (transformers' extended mask)
        let bias = ((mask_t.ones_like().map_err(candle)? - &mask_t)
            .and_then(|m| m * f32::MIN as f64)
            .and_then(|m| m.reshape((b, 1, 1, t))))
        .map_err(candle)?;
        let (heads, dh) = (
            self.config.num_attention_heads,
            h / self.config.num_attention_heads,
        );
        let mut states = vec![x];
        for layer in &self.layers {
            let x = states.last().expect("embeddings first");
            let split = |l: &Linear| -> candle_core::Result<Tensor> {
                l.forward(x)?
                    .reshape((b, t, heads, dh))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let y = (|| -> candle_core::Result<Tensor> {
                let (q, k, v) = (
                    split(&layer.query)?,
                    split(&layer.key)?,
                    split(&layer.value)?,
                );
                let logits = (q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?
                    .broadcast_add(&bias)?;
                let p = candle_nn::ops::softmax_last_dim(&logits)?;
                let ctx = p
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((b, t, h))?;
                let a = layer
                    .attention_norm
                    .forward(&(layer.attention_out.forward(&ctx)? + x)?)?;
                let f = layer
                    .output
                    .forward(&layer.intermediate.forward(&a)?.gelu_erf()?)?;
                layer.output_norm.forward(&(f + a)?)
            })()
            .map_err(candle)?;
            states.push(y);
        }
        Ok((states, mask_t))
    }
}
