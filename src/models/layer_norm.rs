//! Layer norm and softmax for the transformers (the ViT and the language decoders), written
//! with differentiable primitives. candle's fused `LayerNorm` module and
//! `ops::softmax_last_dim` are forward-only ops: a loss through them back-propagates to
//! nothing before them, and training silently fits only what comes after (the ViT's head,
//! the decoder's tied embedding). These are used for inference too, so a network computes
//! the same function when trained and when extracted.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

/// Layer norm over the last dimension, with a learned scale (`weight`) and shift (`bias`).
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Reads (or, from a `VarMap`, creates as 1 and 0) `weight` and `bias` of width `d`.
    pub fn new(d: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(d, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(d, "bias", candle_nn::Init::Const(0.0))?,
            eps,
        })
    }

    /// `(x − mean) / √(var + eps) · weight + bias` along the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension (max-subtracted; `-inf` entries get probability 0).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}
