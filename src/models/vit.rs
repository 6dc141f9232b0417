//! A small Vision Transformer with a [CLS] token, as torchvision builds it (`conv_proj`,
//! `class_token`, `encoder.pos_embedding`, `encoder.layers.encoder_layer_{i}.{ln_1,
//! self_attention, ln_2, mlp.0, mlp.3}`, `encoder.ln`, `heads.head`). Width = hidden size;
//! 4 blocks of 4 heads, MLP 2 × hidden, patches of 7 pixels (28-pixel inputs) or 16
//! (ImageNet inputs). Each block's output (batch × tokens × hidden) is tapped; extraction
//! keeps its [CLS] token (or the mean of the patch tokens).

use candle_core::{Result, Tensor};
use candle_nn::{linear, Linear, Module, VarBuilder};

use super::conv::Conv;
use super::layer_norm::{softmax, LayerNorm};
use super::{ModelConfig, Taps};

/// Blocks of the small ViT.
pub const DEPTH: usize = 4;
/// Attention heads.
pub const HEADS: usize = 4;

struct Block {
    ln_1: LayerNorm,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    ln_2: LayerNorm,
    mlp_0: Linear,
    mlp_3: Linear,
    heads: usize,
}

impl Block {
    fn new(hidden: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let sa = vb.pp("self_attention");
        Ok(Block {
            ln_1: LayerNorm::new(hidden, 1e-6, vb.pp("ln_1"))?,
            in_proj_weight: sa.get((3 * hidden, hidden), "in_proj_weight")?,
            in_proj_bias: sa.get(3 * hidden, "in_proj_bias")?,
            out_proj: linear(hidden, hidden, sa.pp("out_proj"))?,
            ln_2: LayerNorm::new(hidden, 1e-6, vb.pp("ln_2"))?,
            mlp_0: linear(hidden, 2 * hidden, vb.pp("mlp.0"))?,
            mlp_3: linear(2 * hidden, hidden, vb.pp("mlp.3"))?,
            heads,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, h) = x.dims3()?;
        let d = h / self.heads;
        let qkv = x
            .broadcast_matmul(&self.in_proj_weight.t()?)?
            .broadcast_add(&self.in_proj_bias)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * h, h)?
                .reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        let attn = softmax(&scores)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, h))?;
        self.out_proj.forward(&out)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (self.attention(&self.ln_1.forward(x)?)? + x)?;
        let y = self
            .mlp_3
            .forward(&self.mlp_0.forward(&self.ln_2.forward(&x)?)?.gelu_erf()?)?;
        x + y
    }
}

/// A Vision Transformer.
pub struct Vit {
    conv_proj: Conv,
    class_token: Tensor,
    pos_embedding: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
    head: Linear,
}

impl Vit {
    /// Builds the ViT; the patch size is 7 for small inputs (28 pixels), 16 otherwise.
    pub fn new(cfg: &ModelConfig, image_size: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.width;
        let patch = if cfg.small_input { 7 } else { 16 };
        let tokens = (image_size / patch).pow(2) + 1;
        let conv_proj = Conv::new(
            (cfg.in_channels, hidden),
            patch,
            patch,
            0,
            true,
            vb.pp("conv_proj"),
        )?;
        let class_token = vb.get((1, 1, hidden), "class_token")?;
        let enc = vb.pp("encoder");
        let pos_embedding = enc.get((1, tokens, hidden), "pos_embedding")?;
        let blocks = (0..DEPTH)
            .map(|i| Block::new(hidden, HEADS, enc.pp(format!("layers.encoder_layer_{i}"))))
            .collect::<Result<_>>()?;
        Ok(Vit {
            conv_proj,
            class_token,
            pos_embedding,
            blocks,
            ln: LayerNorm::new(hidden, 1e-6, enc.pp("ln"))?,
            head: linear(hidden, cfg.num_classes, vb.pp("heads.head"))?,
        })
    }

    /// Logits; records each block's output (all tokens) and the head in `taps`.
    pub fn forward(&self, xs: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        let cls = self.features(xs, taps)?;
        let out = self.head.forward(&cls)?;
        taps.record("heads.head", &out);
        Ok(out)
    }

    /// The normalised [CLS] token after the last block (the head's input).
    pub fn features(&self, xs: &Tensor, taps: &mut Taps) -> Result<Tensor> {
        let p = self.conv_proj.forward(xs)?;
        let (b, h, _, _) = p.dims4()?;
        let p = p.contiguous()?.flatten_from(2)?.transpose(1, 2)?;
        let cls = self.class_token.broadcast_as((b, 1, h))?;
        let mut x = Tensor::cat(&[&cls, &p], 1)?.broadcast_add(&self.pos_embedding)?;
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(&x)?;
            taps.record(&format!("encoder.layers.encoder_layer_{i}"), &x);
        }
        let x = self.ln.forward(&x)?;
        x.narrow(1, 0, 1)?.squeeze(1)
    }

    /// The tapped layers in forward order.
    pub fn layer_names(&self) -> Vec<String> {
        let mut n: Vec<String> = (0..self.blocks.len())
            .map(|i| format!("encoder.layers.encoder_layer_{i}"))
            .collect();
        n.push("heads.head".into());
        n
    }
}
