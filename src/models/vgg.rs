//! VGG-16-BN and VGG-19-BN as torchvision builds them (`features.{i}` for conv, batch norm,
//! ReLU and max-pool in sequence; `classifier.{0,3,6}`), with a width multiplier. The
//! small-image variant drops the last max-pool, pools globally and uses a classifier
//! 8 × narrower (input 28 → 1 × 1 after four pools).

use candle_core::{Result, Tensor, D};
use candle_nn::{linear, Linear, Module, VarBuilder};

use super::conv::{Conv, Order};
use super::conv_bn::conv_bn;
use super::elementwise::max_pool2;
use super::norm::BatchNorm;
use super::{Arch, ModelConfig, Taps};

enum Stage {
    /// Conv name, conv, batch-norm name, batch norm.
    Conv(String, Conv, String, BatchNorm),
    Pool,
}

/// A VGG with batch norm.
pub struct Vgg {
    features: Vec<Stage>,
    classifier: Vec<(String, Linear)>,
    small_input: bool,
}

impl Vgg {
    /// Builds VGG-16-BN or VGG-19-BN from `cfg`.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let w = cfg.width;
        let plan: Vec<Option<usize>> = match cfg.arch {
            Arch::Vgg16Bn => vec![
                Some(1),
                Some(1),
                None,
                Some(2),
                Some(2),
                None,
                Some(4),
                Some(4),
                Some(4),
                None,
                Some(8),
                Some(8),
                Some(8),
                None,
                Some(8),
                Some(8),
                Some(8),
                None,
            ],
            _ => vec![
                Some(1),
                Some(1),
                None,
                Some(2),
                Some(2),
                None,
                Some(4),
                Some(4),
                Some(4),
                Some(4),
                None,
                Some(8),
                Some(8),
                Some(8),
                Some(8),
                None,
                Some(8),
                Some(8),
                Some(8),
                Some(8),
                None,
            ],
        };
        let mut features = Vec::new();
        let mut idx = 0;
        let mut cin = cfg.in_channels;
        let last_pool = plan.iter().rposition(|p| p.is_none());
        for (i, p) in plan.iter().enumerate() {
            match p {
                Some(mult) => {
                    let cout = w * mult;
                    let name = format!("features.{idx}");
                    let c = Conv::new((cin, cout), 3, 1, 1, true, vb.pp(&name))?;
                    let bn_name = format!("features.{}", idx + 1);
                    let b = BatchNorm::new(cout, 1e-5, vb.pp(&bn_name))?;
                    features.push(Stage::Conv(name, c, bn_name, b));
                    cin = cout;
                    idx += 3;
                }
                None => {
                    if !(cfg.small_input && Some(i) == last_pool) {
                        features.push(Stage::Pool);
                    }
                    idx += 1;
                }
            }
        }
        let (flat, hidden) = if cfg.small_input {
            (cin, 8 * w)
        } else {
            (cin * 7 * 7, 64 * w)
        };
        let classifier = vec![
            (
                "classifier.0".to_string(),
                linear(flat, hidden, vb.pp("classifier.0"))?,
            ),
            (
                "classifier.3".to_string(),
                linear(hidden, hidden, vb.pp("classifier.3"))?,
            ),
            (
                "classifier.6".to_string(),
                linear(hidden, cfg.num_classes, vb.pp("classifier.6"))?,
            ),
        ];
        Ok(Vgg {
            features,
            classifier,
            small_input: cfg.small_input,
        })
    }

    /// Logits; records conv and linear outputs in `taps`. (Dropout is the identity here:
    /// evaluation mode, and training without dropout.)
    pub fn forward(&self, xs: &Tensor, train: bool, taps: &mut Taps) -> Result<Tensor> {
        let mut h = self.features(xs, train, taps)?;
        let last = self.classifier.len() - 1;
        for (i, (name, l)) in self.classifier.iter().enumerate() {
            let y = l.forward(&h)?;
            taps.record(name, &y);
            h = if i < last { y.relu()? } else { y };
        }
        Ok(h)
    }

    /// The pooled output of the convolutional stages (the classifier's input); records conv
    /// outputs in `taps`.
    pub fn features(&self, xs: &Tensor, train: bool, taps: &mut Taps) -> Result<Tensor> {
        // channel-major after the first conv (see `conv`)
        let mut h = xs.clone();
        let mut order = Order::Nchw;
        for s in &self.features {
            h = match s {
                Stage::Conv(name, c, _, b) => {
                    let y = conv_bn(c, b, &h, order, true, train, taps, name)?;
                    order = Order::ChannelMajor;
                    y
                }
                Stage::Pool => max_pool2(&h)?,
            };
        }
        if self.small_input {
            h.mean(D::Minus1)?.mean(D::Minus1)?.t()
        } else {
            adaptive_avg_pool_7(&h)?.transpose(0, 1)?.flatten_from(1)
        }
    }

    /// Batch-norm layers with their parameter prefixes.
    pub fn batch_norms(&self) -> Vec<(String, &BatchNorm)> {
        self.features
            .iter()
            .filter_map(|s| match s {
                Stage::Conv(_, _, name, b) => Some((name.clone(), b)),
                Stage::Pool => None,
            })
            .collect()
    }

    /// Conv and linear layer names in forward order.
    pub fn layer_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .features
            .iter()
            .filter_map(|s| match s {
                Stage::Conv(name, _, _, _) => Some(name.clone()),
                Stage::Pool => None,
            })
            .collect();
        n.extend(self.classifier.iter().map(|(name, _)| name.clone()));
        n
    }
}

/// torchvision's `AdaptiveAvgPool2d((7, 7))`: bin `i` of `n` covers `floor(i·n/7) .. ceil((i+1)·n/7)`.
fn adaptive_avg_pool_7(xs: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let bins = |n: usize| -> Vec<(usize, usize)> {
        (0..7)
            .map(|i| (i * n / 7, ((i + 1) * n).div_ceil(7)))
            .collect()
    };
    let mut rows = Vec::with_capacity(7);
    for (y0, y1) in bins(h) {
        let mut cols = Vec::with_capacity(7);
        for &(x0, x1) in &bins(w) {
            cols.push(
                xs.narrow(2, y0, y1 - y0)?
                    .narrow(3, x0, x1 - x0)?
                    .mean_keepdim(2)?
                    .mean_keepdim(3)?,
            );
        }
        rows.push(Tensor::cat(&cols, 3)?);
    }
    Tensor::cat(&rows, 2)
}
