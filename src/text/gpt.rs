//! A GPT-style byte-level decoder (nanoGPT's layout and parameter names: pre-norm blocks,
//! learned positions, exact-erf GELU, the output head tied to the token embedding), trained
//! here by [`super::lm_train`] and read back from `config.json` + `model.safetensors`.
//!
//! Tokens are the UTF-8 bytes of the text (256 of them), so no tokenizer has to be trained
//! or shipped; `\n` (byte 10) separates training texts and starts every sentence. Layer
//! representations: the embedding output, then every block's output (the residual stream),
//! pooled over the sentence's own bytes (not the leading `\n`, whose state is the same for
//! every sentence in a causal model).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{LanguageModel, TokenBatch};
use crate::error::UserError;
use crate::models::layer_norm::{softmax, LayerNorm};

/// The separator and start token (`\n`).
pub const START: u32 = b'\n' as u32;

/// A decoder's shape (its `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Token ids are below this (256: bytes).
    pub vocab_size: usize,
    /// Positions (the context length).
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
}

impl GptConfig {
    /// Checks the shape: a width divisible by the heads, at least two positions, a block.
    pub fn check(&self, origin: &str) -> Result<(), UserError> {
        if self.vocab_size != 256 {
            return Err(UserError::input(format!(
                "{origin}: `vocab_size` is {}; repflow's decoders read bytes (256)",
                self.vocab_size
            )));
        }
        if self.n_head == 0
            || self.n_embd == 0
            || !self.n_embd.is_multiple_of(self.n_head)
            || self.n_positions < 2
            || self.n_layer == 0
            || self.n_layer > 64
            || self.n_embd > 4096
            || self.n_positions > 4096
        {
            return Err(UserError::input(format!(
                "{origin}: a decoder of width {} with {} heads, {} blocks and {} positions is not valid",
                self.n_embd, self.n_head, self.n_layer, self.n_positions
            ))
            .hint("the width must be a multiple of the heads; 1–64 blocks, 2–4096 positions, width ≤ 4096"));
        }
        Ok(())
    }

    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<GptConfig, UserError> {
        let text = String::from_utf8(crate::input::read(path)?)
            .map_err(|_| UserError::input(format!("`{}` is not UTF-8", path.display())))?;
        let c: GptConfig = serde_json::from_str(&text).map_err(|e| {
            UserError::input(format!("`{}`: {e}", path.display()))
                .hint("a decoder config.json: vocab_size, n_positions, n_embd, n_layer, n_head")
        })?;
        c.check(&format!("`{}`", path.display()))?;
        Ok(c)
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// A decoder.
pub struct Gpt {
    /// Its shape.
    pub config: GptConfig,
    wte: Embedding,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

fn candle(e: candle_core::Error) -> UserError {
    UserError::input(e.to_string().lines().next().unwrap_or_default().to_string())
}

impl Gpt {
    /// Builds the decoder from `vb` (nanoGPT names: `transformer.wte.weight`,
    /// `transformer.h.<l>.attn.c_attn.weight`, …), creating the variables when `vb` is
    /// backed by a `VarMap`.
    pub fn new(config: GptConfig, vb: VarBuilder) -> candle_core::Result<Gpt> {
        let d = config.n_embd;
        let t = vb.pp("transformer");
        let wte = candle_nn::embedding(config.vocab_size, d, t.pp("wte"))?;
        let wpe = t.get((config.n_positions, d), "wpe.weight")?;
        let blocks = (0..config.n_layer)
            .map(|l| {
                let b = t.pp(format!("h.{l}"));
                Ok(Block {
                    ln_1: LayerNorm::new(d, 1e-5, b.pp("ln_1"))?,
                    c_attn: candle_nn::linear(d, 3 * d, b.pp("attn.c_attn"))?,
                    attn_proj: candle_nn::linear(d, d, b.pp("attn.c_proj"))?,
                    ln_2: LayerNorm::new(d, 1e-5, b.pp("ln_2"))?,
                    c_fc: candle_nn::linear(d, 4 * d, b.pp("mlp.c_fc"))?,
                    mlp_proj: candle_nn::linear(4 * d, d, b.pp("mlp.c_proj"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ln_f = LayerNorm::new(d, 1e-5, t.pp("ln_f"))?;
        Ok(Gpt {
            config,
            wte,
            wpe,
            blocks,
            ln_f,
        })
    }

    /// Loads `dir/config.json` and `dir/model.safetensors`; a missing or mis-shaped tensor is
    /// an error naming it and the shape the configuration implies.
    pub fn load(dir: &Path) -> Result<Gpt, UserError> {
        let config = GptConfig::read(&dir.join("config.json"))?;
        let file = dir.join("model.safetensors");
        let tensors = crate::models::checkpoint::read(&file)?;
        Gpt::from_tensors(config, tensors)
            .map_err(|e| e.prefixed(&format!("`{}`: ", file.display())))
    }

    /// The decoder of shape `config` with weights `tensors` (nanoGPT names); a missing or
    /// mis-shaped tensor is an error naming it and the shape the configuration implies.
    pub fn from_tensors(
        config: GptConfig,
        tensors: std::collections::HashMap<String, Tensor>,
    ) -> Result<Gpt, UserError> {
        Gpt::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        )
        .map_err(|e| {
            UserError::input(e.to_string().lines().next().unwrap_or_default().to_string())
                .hint("the weights and config.json must come from the same decoder (nanoGPT names)")
        })
    }

    /// Every hidden state (batch × tokens × width: the embedding output, then each block's)
    /// of the token rows `ids` (all of one length).
    pub fn states(&self, ids: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let (b, t) = ids.dims2()?;
        let (d, heads) = (self.config.n_embd, self.config.n_head);
        let dh = d / heads;
        let x = self
            .wte
            .forward(ids)?
            .broadcast_add(&self.wpe.narrow(0, 0, t)?)?;
        let causal: Vec<f32> = (0..t * t)
            .map(|k| {
                if k % t > k / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), ids.device())?;
        let mut states = vec![x];
        for blk in &self.blocks {
            let x = states.last().expect("embeddings first");
            let qkv = blk.c_attn.forward(&blk.ln_1.forward(x)?)?;
            let split = |k: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(D::Minus1, k * d, d)?
                    .reshape((b, t, heads, dh))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let logits =
                (q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?.broadcast_add(&causal)?;
            let p = softmax(&logits)?;
            let ctx = p
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, d))?;
            let x = (x + blk.attn_proj.forward(&ctx)?)?;
            let f = blk
                .mlp_proj
                .forward(&blk.c_fc.forward(&blk.ln_2.forward(&x)?)?.gelu_erf()?)?;
            states.push((x + f)?);
        }
        Ok(states)
    }

    /// Next-token logits (batch × tokens × vocabulary) from the last hidden state, through the
    /// final norm and the head tied to the token embedding.
    pub fn logits(&self, last: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.ln_f.forward(last)?;
        let (b, t, d) = h.dims3()?;
        h.reshape((b * t, d))?
            .matmul(&self.wte.embeddings().t()?)?
            .reshape((b, t, self.config.vocab_size))
    }

    /// Mean next-token cross-entropy (nats) of rows `ids` (batch × (tokens + 1)): each
    /// position predicts the byte after it.
    pub fn loss(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t1) = ids.dims2()?;
        let input = ids.narrow(1, 0, t1 - 1)?;
        let target = ids.narrow(1, 1, t1 - 1)?.reshape(b * (t1 - 1))?;
        let states = self.states(&input)?;
        let logits = self.logits(states.last().expect("embeddings first"))?;
        candle_nn::loss::cross_entropy(
            &logits.reshape((b * (t1 - 1), self.config.vocab_size))?,
            &target,
        )
    }
}

impl LanguageModel for Gpt {
    fn layer_names(&self) -> Vec<String> {
        std::iter::once("transformer.wte+wpe".to_string())
            .chain((0..self.blocks.len()).map(|l| format!("transformer.h.{l}")))
            .collect()
    }

    fn width(&self) -> usize {
        self.config.n_embd
    }

    fn positions(&self) -> usize {
        self.config.n_positions
    }

    /// `\n` then the sentence's bytes, truncated to the positions.
    fn tokenize(&self, sentences: &[String]) -> Result<(Vec<Vec<u32>>, usize), UserError> {
        let room = self.config.n_positions - 1;
        let mut truncated = 0;
        let ids = sentences
            .iter()
            .map(|s| {
                truncated += usize::from(s.len() > room);
                std::iter::once(START)
                    .chain(s.bytes().take(room).map(u32::from))
                    .collect()
            })
            .collect();
        Ok((ids, truncated))
    }

    fn hidden_states(&self, batch: &TokenBatch) -> Result<(Vec<Tensor>, Tensor), UserError> {
        // right padding: in a causal model no real token attends to a padded one
        let (ids, mask) = batch.tensors().map_err(candle)?;
        let states = self.states(&ids).map_err(candle)?;
        // the leading `\n` is left out of the pooling
        let (b, t) = mask.dims2().map_err(candle)?;
        let first = Tensor::cat(
            &[
                Tensor::zeros((b, 1), DType::F32, &Device::Cpu).map_err(candle)?,
                Tensor::ones((b, t - 1), DType::F32, &Device::Cpu).map_err(candle)?,
            ],
            1,
        )
        .map_err(candle)?;
        Ok((states, (mask * first).map_err(candle)?))
    }

    fn pools_first_token(&self) -> bool {
        false
    }
}
