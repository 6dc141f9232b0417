//! ResNet-18 and ResNet-50 as torchvision builds them (`conv1`, `bn1`, `layer{1..4}.{i}.conv{1,2,3}`,
//! `…downsample.0`/`.1`, `fc`), with a width multiplier and an optional small-image stem.

use candle_core::{Result, Tensor, D};
use candle_nn::{linear, Linear, Module, VarBuilder};

use super::conv::{Conv, Order};
use super::conv_bn::{conv_bn, conv_bn_add_relu};
use super::norm::BatchNorm;
use super::{Arch, ModelConfig, Taps};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv> {
    Conv::new((cin, cout), k, stride, k / 2, false, vb)
}

fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    BatchNorm::new(c, 1e-5, vb)
}

struct Block {
    prefix: String,
    convs: Vec<(Conv, BatchNorm)>,
    downsample: Option<(Conv, BatchNorm)>,
}

impl Block {
    fn new(
        prefix: String,
        cin: usize,
        planes: usize,
        stride: usize,
        bottleneck: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let expansion = if bottleneck { 4 } else { 1 };
        let cout = planes * expansion;
        let convs = if bottleneck {
            vec![
                (
                    conv(cin, planes, 1, 1, vb.pp("conv1"))?,
                    bn(planes, vb.pp("bn1"))?,
                ),
                (
                    conv(planes, planes, 3, stride, vb.pp("conv2"))?,
                    bn(planes, vb.pp("bn2"))?,
                ),
                (
                    conv(planes, cout, 1, 1, vb.pp("conv3"))?,
                    bn(cout, vb.pp("bn3"))?,
                ),
            ]
        } else {
            vec![
                (
                    conv(cin, planes, 3, stride, vb.pp("conv1"))?,
                    bn(planes, vb.pp("bn1"))?,
                ),
                (
                    conv(planes, planes, 3, 1, vb.pp("conv2"))?,
                    bn(planes, vb.pp("bn2"))?,
                ),
            ]
        };
        let downsample = if stride != 1 || cin != cout {
            Some((
                conv(cin, cout, 1, stride, vb.pp("downsample.0"))?,
                bn(cout, vb.pp("downsample.1"))?,
            ))
        } else {
            None
        };
        Ok(Block {
            prefix,
            convs,
            downsample,
        })
    }

    /// Channel-major in and out.
    fn forward(&self, xs: &Tensor, train: bool, taps: &mut Taps) -> Result<Tensor> {
        let mut h = xs.clone();
        let last = self.convs.len() - 1;
        let name = |i: usize| format!("{}.conv{}", self.prefix, i + 1);
        for (i, (c, b)) in self.convs[..last].iter().enumerate() {
            h = conv_bn(c, b, &h, Order::ChannelMajor, true, train, taps, &name(i))?;
        }
        let shortcut = |taps: &mut Taps| match &self.downsample {
            Some((c, b)) => {
                let name = format!("{}.downsample.0", self.prefix);
                conv_bn(c, b, xs, Order::ChannelMajor, false, train, taps, &name)
            }
            None => Ok(xs.clone()),
        };
        let (c, b) = &self.convs[last];
        conv_bn_add_relu(c, b, &h, shortcut, train, taps, &name(last))
    }

    fn batch_norms(&self) -> Vec<(String, &BatchNorm)> {
        let mut out: Vec<(String, &BatchNorm)> = self
            .convs
            .iter()
            .enumerate()
            .map(|(i, (_, b))| (format!("{}.bn{}", self.prefix, i + 1), b))
            .collect();
        if let Some((_, b)) = &self.downsample {
            out.push((format!("{}.downsample.1", self.prefix), b));
        }
        out
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = (0..self.convs.len())
            .map(|i| format!("{}.conv{}", self.prefix, i + 1))
            .collect();
        if self.downsample.is_some() {
            n.push(format!("{}.downsample.0", self.prefix));
        }
        n
    }
}

/// A ResNet.
pub struct ResNet {
    conv1: Conv,
    bn1: BatchNorm,
    small_input: bool,
    blocks: Vec<Block>,
    /// `fc`, or MoCo v2's projection head `fc.0`, ReLU, `fc.2`.
    head: Vec<(String, Linear)>,
}

impl ResNet {
    /// Builds ResNet-18 or ResNet-50 from `cfg`.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (bottleneck, counts) = match cfg.arch {
            Arch::Resnet18 => (false, [2, 2, 2, 2]),
            _ => (true, [3, 4, 6, 3]),
        };
        let w = cfg.width;
        let (k, stride) = if cfg.small_input { (3, 1) } else { (7, 2) };
        let conv1 = conv(cfg.in_channels, w, k, stride, vb.pp("conv1"))?;
        let bn1 = bn(w, vb.pp("bn1"))?;
        let mut blocks = Vec::new();
        let mut cin = w;
        for (stage, &n) in counts.iter().enumerate() {
            let planes = w << stage;
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let prefix = format!("layer{}.{i}", stage + 1);
                blocks.push(Block::new(
                    prefix.clone(),
                    cin,
                    planes,
                    stride,
                    bottleneck,
                    vb.pp(&prefix),
                )?);
                cin = planes * if bottleneck { 4 } else { 1 };
            }
        }
        let head = if cfg.projection {
            vec![
                ("fc.0".to_string(), linear(cin, cin, vb.pp("fc.0"))?),
                (
                    "fc.2".to_string(),
                    linear(cin, cfg.num_classes, vb.pp("fc.2"))?,
                ),
            ]
        } else {
            vec![("fc".to_string(), linear(cin, cfg.num_classes, vb.pp("fc"))?)]
        };
        Ok(ResNet {
            conv1,
            bn1,
            small_input: cfg.small_input,
            blocks,
            head,
        })
    }

    /// Logits (or projections); records conv and linear outputs in `taps`.
    pub fn forward(&self, xs: &Tensor, train: bool, taps: &mut Taps) -> Result<Tensor> {
        let mut h = self.features(xs, train, taps)?;
        let last = self.head.len() - 1;
        for (i, (name, l)) in self.head.iter().enumerate() {
            let y = l.forward(&h)?;
            taps.record(name, &y);
            h = if i < last { y.relu()? } else { y };
        }
        Ok(h)
    }

    /// The globally pooled output of the last stage (the head's input); records conv
    /// outputs in `taps`.
    pub fn features(&self, xs: &Tensor, train: bool, taps: &mut Taps) -> Result<Tensor> {
        // channel-major from here to the pooling (see `conv`)
        let mut h = conv_bn(
            &self.conv1,
            &self.bn1,
            xs,
            Order::Nchw,
            true,
            train,
            taps,
            "conv1",
        )?;
        if !self.small_input {
            // 3 × 3 max-pool, stride 2, padding 1: inputs are ≥ 0 after ReLU, so zero padding
            // equals torchvision's −∞ padding.
            h = h
                .pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .max_pool2d_with_stride(3, 2)?;
        }
        for b in &self.blocks {
            h = b.forward(&h, train, taps)?;
        }
        h.mean(D::Minus1)?.mean(D::Minus1)?.t()
    }

    /// Batch-norm layers with their parameter prefixes.
    pub fn batch_norms(&self) -> Vec<(String, &BatchNorm)> {
        let mut out = vec![("bn1".to_string(), &self.bn1)];
        for b in &self.blocks {
            out.extend(b.batch_norms());
        }
        out
    }

    /// Conv and linear layer names in forward order.
    pub fn layer_names(&self) -> Vec<String> {
        let mut n = vec!["conv1".to_string()];
        for b in &self.blocks {
            n.extend(b.names());
        }
        n.extend(self.head.iter().map(|(name, _)| name.clone()));
        n
    }
}
