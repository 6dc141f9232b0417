//! Activation extraction: a network's conv and linear outputs on a stimulus set, streamed in
//! batches (memory bounded by the batch), reduced to one row per stimulus.

use candle_core::{CpuStorage, Device, Storage, Tensor};
use repflow_kernels::maps::{self, MapReduction, MapShape};
use serde::{Deserialize, Serialize};

use super::{Network, Taps};
use crate::error::UserError;
use crate::stimuli::Images;

/// Most units a flattened layer may have (beyond, pick another reduction).
pub const FLATTEN_LIMIT: usize = 65_536;

/// How a convolution output (batch × channels × height × width) becomes one row per stimulus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduction {
    /// The value at the centre pixel `(h/2, w/2)` (floor) of each channel: the seed paper's.
    /// For transformer blocks: the [CLS] token.
    CenterPixel,
    /// The mean over positions, per channel (transformers: over patch tokens).
    MeanPool,
    /// The maximum over positions, per channel.
    MaxPool,
    /// Every value (channels × height × width), up to [`FLATTEN_LIMIT`] units.
    Flatten,
}

impl Reduction {
    /// The pool this reduction is on feature maps, if it is one (the arithmetic of
    /// [`repflow_kernels::maps`], bit for bit the GPU kernels').
    pub fn pool(self) -> Option<MapReduction> {
        match self {
            Reduction::MeanPool => Some(MapReduction::MeanPool),
            Reduction::MaxPool => Some(MapReduction::MaxPool),
            Reduction::CenterPixel | Reduction::Flatten => None,
        }
    }
}

/// One layer's activations, row-major f32: stimuli × units when reduced, else the layer's
/// full output shape (stimuli × channels × height × width for a convolution).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerActivations {
    /// The layer's name.
    pub name: String,
    /// The shape, stimuli first.
    pub shape: Vec<usize>,
    /// Values, stimulus by stimulus.
    pub data: Vec<f32>,
}

impl LayerActivations {
    /// Values per stimulus.
    pub fn units(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

fn candle(e: candle_core::Error) -> UserError {
    UserError::input(format!(
        "network forward pass: {}",
        e.to_string().lines().next().unwrap_or_default()
    ))
}

/// Reduces one layer output to batch × units.
pub fn reduce(xs: &Tensor, reduction: Reduction, layer: &str) -> Result<Tensor, UserError> {
    match xs.rank() {
        2 => Ok(xs.clone()),
        // Transformer tokens (batch × tokens × hidden): the [CLS] token (token 0), or the
        // mean / max over the patch tokens.
        3 => match reduction {
            Reduction::MeanPool => xs
                .narrow(1, 1, xs.dim(1).map_err(candle)? - 1)
                .and_then(|t| t.mean(1)),
            Reduction::MaxPool => xs
                .narrow(1, 1, xs.dim(1).map_err(candle)? - 1)
                .and_then(|t| t.max(1)),
            Reduction::CenterPixel | Reduction::Flatten => {
                xs.narrow(1, 0, 1).and_then(|t| t.squeeze(1))
            }
        }
        .map_err(candle),
        4 => {
            let (n, c, h, w) = xs.dims4().map_err(candle)?;
            let Some(how) = reduction.pool() else {
                return match reduction {
                    // a gather, no arithmetic: a view, not a copy of the maps
                    Reduction::CenterPixel => xs
                        .narrow(2, h / 2, 1)
                        .and_then(|t| t.narrow(3, w / 2, 1))
                        .and_then(|t| t.flatten_from(1))
                        .map_err(candle),
                    _ if c * h * w > FLATTEN_LIMIT => Err(UserError::input(format!(
                        "layer `{layer}` has {c} × {h} × {w} = {} values per stimulus; flatten is limited to {FLATTEN_LIMIT}",
                        c * h * w
                    ))
                    .hint("use the center-pixel, mean-pool or max-pool reduction for this layer")),
                    _ => xs.flatten_from(1).map_err(candle),
                };
            };
            // pools: one order of arithmetic on every CPU, the same as the GPU's kernels
            // (repflow_kernels::maps). On the CPU: pooling reads each value once, as a
            // transfer to a GPU would, so maps in host memory are pooled here.
            let pool = |values: &[f32]| {
                maps::reduce_maps(values, MapShape { n, c, h, w }, how)
                    .map_err(|e| UserError::from(e).prefixed(&format!("layer `{layer}`: ")))
            };
            // the tensor's own float32 buffer where it is one contiguous run (a forward
            // pass's output): a copy of a batch's maps into fresh memory cost 3-10x the
            // pooling (256 × 64 × 28 × 28: 30 ms against candle's 3-9 ms)
            let (storage, layout) = xs.storage_and_layout();
            let reduced = match (&*storage, layout.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => pool(&v[start..end])?,
                _ => {
                    drop(storage);
                    let values = xs
                        .flatten_all()
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(candle)?;
                    pool(&values)?
                }
            };
            Tensor::from_vec(reduced, (n, c), xs.device()).map_err(candle)
        }
        r => Err(UserError::input(format!(
            "layer `{layer}` gives a rank-{r} output; expected 2 or 4"
        ))),
    }
}

/// The outputs of `layers` (all conv and linear layers when empty) for every image, in
/// batches of `batch`, reduced by `reduction` (`None`: the full outputs).
pub fn extract(
    net: &Network,
    images: &Images,
    layers: &[String],
    reduction: Option<Reduction>,
    batch: usize,
) -> Result<Vec<LayerActivations>, UserError> {
    let valid = net.layer_names();
    let wanted: Vec<String> = if layers.is_empty() {
        valid.clone()
    } else {
        layers.to_vec()
    };
    for l in &wanted {
        if !valid.contains(l) {
            return Err(UserError::input(format!("the network has no layer `{l}`"))
                .hint(format!("its layers are: {}", valid.join(", "))));
        }
    }
    let mut out: Vec<LayerActivations> = wanted
        .iter()
        .map(|n| LayerActivations {
            name: n.clone(),
            shape: vec![0],
            data: Vec::new(),
        })
        .collect();
    let dev = Device::Cpu;
    let batch = batch.max(1);
    let len = images.image_len();
    for start in (0..images.n).step_by(batch) {
        let b = batch.min(images.n - start);
        let xs = Tensor::from_slice(
            &images.data[start * len..(start + b) * len],
            (b, images.c, images.h, images.w),
            &dev,
        )
        .map_err(candle)?;
        let mut taps = Taps::on();
        net.forward(&xs, false, &mut taps).map_err(candle)?;
        for (name, t) in taps.outputs {
            if let Some(slot) = out.iter_mut().find(|o| o.name == name) {
                let r = match reduction {
                    Some(reduction) => reduce(&t, reduction, &name)?,
                    None => t,
                };
                let mut shape = r.dims().to_vec();
                shape[0] += slot.shape[0];
                slot.shape = shape;
                slot.data.extend(
                    r.flatten_all()
                        .and_then(|f| f.to_vec1::<f32>())
                        .map_err(candle)?,
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_pixel_takes_the_floor_centre_of_each_channel() {
        // 1 × 2 × 4 × 4: value = 100·c + 10·y + x; the centre is (2, 2).
        let v: Vec<f32> = (0..2)
            .flat_map(|c| {
                (0..4).flat_map(move |y| (0..4).map(move |x| (100 * c + 10 * y + x) as f32))
            })
            .collect();
        let t = Tensor::from_vec(v, (1, 2, 4, 4), &Device::Cpu).unwrap();
        let r = reduce(&t, Reduction::CenterPixel, "l")
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(r, vec![vec![22.0, 122.0]]);
        let m = reduce(&t, Reduction::MaxPool, "l")
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m, vec![vec![33.0, 133.0]]);
        let mean = reduce(&t, Reduction::MeanPool, "l")
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mean, vec![vec![16.5, 116.5]]);
        assert_eq!(
            reduce(&t, Reduction::Flatten, "l").unwrap().dims(),
            &[1, 32]
        );
    }

    #[test]
    fn pools_have_the_kernels_bits_on_maps_wider_than_a_simd_sum() {
        // 2 × 3 × 40 × 56: candle's own mean summed rows of 32 or more values in a
        // SIMD-width-dependent order and multiplied by a rounded 1/n
        let (n, c, h, w) = (2, 3, 40, 56);
        let v: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 13.0 + (i as f32).sin())
            .collect();
        let t = Tensor::from_vec(v.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        for (reduction, how) in [
            (Reduction::MeanPool, MapReduction::MeanPool),
            (Reduction::MaxPool, MapReduction::MaxPool),
            (Reduction::CenterPixel, MapReduction::CenterPixel),
        ] {
            let got = reduce(&t, reduction, "l").unwrap();
            assert_eq!(got.dims(), &[n, c]);
            let got: Vec<u32> = got
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let want: Vec<u32> = maps::reduce_maps(&v, MapShape { n, c, h, w }, how)
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert_eq!(got, want, "{reduction:?}");
        }
    }

    #[test]
    fn a_view_into_other_maps_pools_as_its_own_copy_does() {
        // channels 1..3 of 4 (not one contiguous run) and a copy of them
        let v: Vec<f32> = (0..2 * 4 * 5 * 6)
            .map(|i| (i as f32 * 0.37).cos())
            .collect();
        let t = Tensor::from_vec(v, (2, 4, 5, 6), &Device::Cpu).unwrap();
        let view = t.narrow(1, 1, 2).unwrap();
        let copy = view.contiguous().unwrap();
        assert!(!view.is_contiguous());
        for r in [
            Reduction::MeanPool,
            Reduction::MaxPool,
            Reduction::CenterPixel,
        ] {
            let a = reduce(&view, r, "l").unwrap().to_vec2::<f32>().unwrap();
            let b = reduce(&copy, r, "l").unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(a, b, "{r:?}");
        }
    }

    #[test]
    fn flatten_is_refused_above_the_limit() {
        let t = Tensor::zeros((1, 128, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = reduce(&t, Reduction::Flatten, "big").unwrap_err();
        assert!(e.to_string().contains("131072") && e.to_string().contains("center-pixel"));
    }
}
