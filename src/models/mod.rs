//! Networks in candle, with torchvision's parameter names (`conv1.weight`,
//! `layer1.0.conv1.weight`, `features.0.weight`, …) so that a `.safetensors` file saved
//! from a torchvision model loads as it is.
//!
//! Every architecture has a width multiplier and two stems: the small-image stem (28 or 32
//! pixels: 3 × 3 convolution with stride 1, no max-pool) and torchvision's ImageNet stem.
//! A forward pass can record the output of every convolution and linear layer (before
//! batch norm and ReLU) in forward order: the layers whose activations repflow compares.

pub mod augment;
pub mod checkpoint;
pub mod conv;
pub mod conv_bn;
mod conv_direct;
pub mod elementwise;
pub mod extract;
pub mod layer_norm;
pub mod memory;
pub mod moco;
pub mod norm;
pub mod optim;
pub mod probe;
pub mod resnet;
mod storage;
pub mod train;
pub mod vgg;
pub mod vit;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// An architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// ResNet-18 (BasicBlock, [2, 2, 2, 2]).
    Resnet18,
    /// ResNet-50 (Bottleneck, [3, 4, 6, 3]).
    Resnet50,
    /// VGG-16 with batch norm.
    Vgg16Bn,
    /// VGG-19 with batch norm.
    Vgg19Bn,
    /// A small Vision Transformer with a [CLS] token (width = hidden size).
    Vit,
}

impl Arch {
    /// Parses `resnet18`, `resnet50`, `vgg16-bn`, `vgg19-bn` or `vit`.
    pub fn from_name(name: &str) -> std::result::Result<Arch, crate::error::UserError> {
        use crate::error::UserError;
        Ok(match name {
            "resnet18" => Arch::Resnet18,
            "resnet50" => Arch::Resnet50,
            "vgg16-bn" => Arch::Vgg16Bn,
            "vgg19-bn" => Arch::Vgg19Bn,
            "vit" => Arch::Vit,
            other => {
                return Err(UserError::input(format!("unknown architecture `{other}`"))
                    .hint("one of resnet18, resnet50, vgg16-bn, vgg19-bn, vit"))
            }
        })
    }
}

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Arch,
    /// Channels of the first stage (torchvision: 64); later stages scale with it.
    pub width: usize,
    /// Output classes.
    pub num_classes: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Small-image stem (3 × 3, stride 1, no max-pool) instead of the ImageNet stem.
    pub small_input: bool,
    /// MoCo v2's projection head: a ResNet's `fc` becomes `fc.0` (features → features),
    /// ReLU, `fc.2` (features → `num_classes`, the projection's dimension). A VGG's
    /// classifier is already such an MLP and is used as it is. Absent from keys when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub projection: bool,
}

/// Outputs of convolution and linear layers recorded during a forward pass.
#[derive(Default)]
pub struct Taps {
    enabled: bool,
    /// (layer name, output) in forward order.
    pub outputs: Vec<(String, Tensor)>,
}

impl Taps {
    /// Records nothing.
    pub fn off() -> Self {
        Taps::default()
    }

    /// Records every layer.
    pub fn on() -> Self {
        Taps {
            enabled: true,
            outputs: Vec::new(),
        }
    }

    /// Whether layers are recorded.
    pub fn is_on(&self) -> bool {
        self.enabled
    }

    /// Records `xs` as the output of layer `name` (when enabled).
    pub fn record(&mut self, name: &str, xs: &Tensor) {
        if self.enabled {
            self.outputs.push((name.to_string(), xs.clone()));
        }
    }

    /// Records channel-major `xs` (a conv's output) batch-first, as [`Taps::record`] does.
    pub fn record_cm(&mut self, name: &str, xs: &Tensor) -> Result<()> {
        if self.enabled {
            self.outputs.push((name.to_string(), xs.transpose(0, 1)?));
        }
        Ok(())
    }
}

/// A network built from a [`ModelConfig`].
pub enum Network {
    /// A ResNet.
    Resnet(resnet::ResNet),
    /// A VGG.
    Vgg(vgg::Vgg),
    /// A Vision Transformer.
    Vit(vit::Vit),
}

impl Network {
    /// Builds the network; parameters come from `vb` (a `VarMap` to train, a checkpoint to load).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg.arch {
            Arch::Resnet18 | Arch::Resnet50 => Network::Resnet(resnet::ResNet::new(cfg, vb)?),
            Arch::Vgg16Bn | Arch::Vgg19Bn => Network::Vgg(vgg::Vgg::new(cfg, vb)?),
            Arch::Vit => Network::Vit(vit::Vit::new(
                cfg,
                if cfg.small_input { 28 } else { 224 },
                vb,
            )?),
        })
    }

    /// Logits for `xs` (batch × channels × height × width); `train` selects batch-norm mode.
    pub fn forward(&self, xs: &Tensor, train: bool, taps: &mut Taps) -> Result<Tensor> {
        match self {
            Network::Resnet(n) => n.forward(xs, train, taps),
            Network::Vgg(n) => n.forward(xs, train, taps),
            Network::Vit(n) => n.forward(xs, taps),
        }
    }

    /// The backbone's pooled features, the input of the head (a ResNet's or VGG's global
    /// average pool; a ViT's normalised [CLS] token).
    pub fn features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut taps = Taps::off();
        match self {
            Network::Resnet(n) => n.features(xs, train, &mut taps),
            Network::Vgg(n) => n.features(xs, train, &mut taps),
            Network::Vit(n) => n.features(xs, &mut taps),
        }
    }

    /// Batch-norm layers with their parameter prefixes (their running statistics live in the
    /// layers, not in the `VarMap`).
    pub fn batch_norms(&self) -> Vec<(String, &norm::BatchNorm)> {
        match self {
            Network::Resnet(n) => n.batch_norms(),
            Network::Vgg(n) => n.batch_norms(),
            Network::Vit(_) => Vec::new(),
        }
    }

    /// Names of the convolution and linear layers, in forward order.
    pub fn layer_names(&self) -> Vec<String> {
        match self {
            Network::Resnet(n) => n.layer_names(),
            Network::Vgg(n) => n.layer_names(),
            Network::Vit(n) => n.layer_names(),
        }
    }
}
