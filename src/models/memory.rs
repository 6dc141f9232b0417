//! Upper estimates of the memory a network's training and extraction nodes take, for
//! `repflow run --max-memory` (the engine holds a node back until its estimate fits).
//!
//! A network's size is counted, not guessed: [`Footprint::of`] builds it and runs one image
//! forward with every layer recorded, giving its parameters and the activations one image
//! leaves at the recorded layers. The nodes' estimates scale those by the batch and add
//! the image sets; the constants were calibrated on the peak resident memory of `repflow
//! run` (below) with a margin.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::{ModelConfig, Network, Taps};

/// Parameters and per-image activations of one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Trainable values (weights, biases, batch-norm affine parameters).
    pub params: usize,
    /// Values one image leaves at the recorded layers (every convolution and linear layer).
    pub recorded_per_image: usize,
    /// An upper bound of the values one image leaves after reduction to one row per
    /// stimulus: each recorded layer's largest dimension (its channels, or units, or for a
    /// small map its height).
    pub reduced_per_image: usize,
}

/// Values a training step keeps per recorded value: the layer's output, batch norm's output
/// (ReLU fused) and the gradients of each.
const TRAIN_PER_RECORDED: u64 = 4;
/// Copies of each parameter in training: weights, gradients, momentum, candle's summed
/// gradient and the optimiser's update.
const TRAIN_PER_PARAM: u64 = 6;
/// Fixed memory of a training node. Measured (`/usr/bin/time`, `repflow run --jobs 1
/// --force train/`, 3,000 Fashion-MNIST images, batch 128): VGG-16-BN w8 peaks at 441 MB
/// though a batch's activations are ~50 MB (the allocator's retained pages and per-thread
/// buffers grow over the first steps); ResNet-18 w16 at 415 MB. With this base the
/// estimates are 492 MB and 697 MB.
const TRAIN_BASE: u64 = 384 << 20;
/// Fixed memory of an extraction node: per-thread column buffers, the allocator's retained
/// pages, the process's share of the libraries. Measured as above (`--force extract/`, 2,000
/// stimuli): VGG-16-BN w8 150 MB, ResNet-18 w16 234 MB; estimated 177 MB and 484 MB.
const EXTRACT_BASE: u64 = 64 << 20;

impl Footprint {
    /// Counts `model`'s parameters and its activations for one `c × h × w` image.
    pub fn of(model: &ModelConfig, (c, h, w): (usize, usize, usize)) -> candle_core::Result<Self> {
        let vm = VarMap::new();
        let net = Network::new(
            model,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )?;
        let params = vm
            .all_vars()
            .iter()
            .map(|v| v.as_tensor().elem_count())
            .sum();
        let image = Tensor::zeros((1, c, h, w), DType::F32, &Device::Cpu)?;
        let mut taps = Taps::on();
        net.forward(&image, false, &mut taps)?;
        let recorded_per_image = taps.outputs.iter().map(|(_, t)| t.elem_count()).sum();
        let reduced_per_image = taps
            .outputs
            .iter()
            .map(|(_, t)| t.dims().iter().skip(1).copied().max().unwrap_or(1))
            .sum();
        Ok(Self {
            params,
            recorded_per_image,
            reduced_per_image,
        })
    }

    /// Bytes a training node takes: its image sets (read from the store and copied),
    /// the parameters with their gradients and optimiser state, and a batch's activations
    /// with their gradients. `encoders` is 2 for MoCo (a query and a momentum encoder, two
    /// views per image), else 1.
    pub fn training_bytes(&self, batch: usize, image_values: usize, encoders: usize) -> u64 {
        let f = 4u64;
        let images = 2 * f * image_values as u64;
        let params = TRAIN_PER_PARAM * f * self.params as u64 * encoders as u64;
        let activations =
            TRAIN_PER_RECORDED * f * (batch * self.recorded_per_image) as u64 * encoders as u64;
        TRAIN_BASE + images + params + activations
    }

    /// Bytes an extraction node takes: the stimuli (read and copied), the weights, one batch
    /// of `batch` images forward, and the output — `out_per_image` values per stimulus (the
    /// recorded values with full maps, the reduced units otherwise), assembled and then
    /// written.
    pub fn extraction_bytes(
        &self,
        n_stimuli: usize,
        stimulus_values: usize,
        batch: usize,
        out_per_image: usize,
    ) -> u64 {
        let f = 4u64;
        let stimuli = 2 * f * stimulus_values as u64;
        let weights = 2 * f * self.params as u64;
        let forward = 3 * f * (batch.min(n_stimuli) * self.recorded_per_image) as u64;
        let output = 3 * f * (n_stimuli * out_per_image) as u64;
        EXTRACT_BASE + stimuli + weights + forward + output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    fn config(arch: Arch, width: usize) -> ModelConfig {
        ModelConfig {
            arch,
            width,
            num_classes: 10,
            in_channels: 1,
            small_input: true,
            projection: false,
        }
    }

    /// The counts are the network's: parameters as torch counts them for a small
    /// ResNet-18 (bench-models' 701,178), activations growing with the width.
    #[test]
    fn counts_parameters_and_recorded_activations() {
        let r = Footprint::of(&config(Arch::Resnet18, 16), (1, 28, 28)).unwrap();
        // the VarMap also holds batch norm's running statistics
        assert!(r.params >= 701_178, "{}", r.params);
        assert!(r.params < 720_000, "{}", r.params);
        // conv1: 16 × 28 × 28 alone
        assert!(r.recorded_per_image > 16 * 28 * 28);
        let wide = Footprint::of(&config(Arch::Resnet18, 32), (1, 28, 28)).unwrap();
        assert!(wide.recorded_per_image > r.recorded_per_image);
        assert!(wide.params > 3 * r.params);
        // reduced: at least the channels of every recorded layer, far fewer than the maps
        assert!(r.reduced_per_image >= 16 + 10);
        assert!(r.reduced_per_image * 10 < r.recorded_per_image);
        let v = Footprint::of(&config(Arch::Vit, 32), (1, 28, 28)).unwrap();
        assert!(v.params > 0 && v.recorded_per_image > 0);
    }
}
