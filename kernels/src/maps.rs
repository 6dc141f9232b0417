//! Reductions of convolutional feature maps (stimuli × channels × height × width, f32,
//! row-major as PyTorch and candle store them) to one value per channel.
//!
//! One fixed order of arithmetic, written out here and in `kernels/cuda/reduce.cu`: the mean
//! sums each row of a map from left to right, divides by the width, sums those row means
//! from top to bottom and divides by the height. So a reduction is the same bits on every
//! CPU (no SIMD-width-dependent summation order) and on the GPU, whether it is done during
//! the forward pass or later from stored maps.

use rayon::prelude::*;

use crate::KernelError;

/// How a feature map becomes one value per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapReduction {
    /// The value at `(h/2, w/2)` (floor).
    CenterPixel,
    /// The mean over positions: over the width, then the height.
    MeanPool,
    /// The maximum over positions (a NaN is passed over, as `f32::max` does).
    MaxPool,
}

/// A map batch's shape: `n` stimuli × `c` channels × `h` × `w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    /// Stimuli.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl MapShape {
    /// Checks that `len` values make this shape with at least one position per map.
    pub fn check(&self, len: usize) -> Result<(), KernelError> {
        let MapShape { n, c, h, w } = *self;
        let values = n
            .checked_mul(c)
            .and_then(|v| v.checked_mul(h)?.checked_mul(w));
        if values != Some(len) || h * w == 0 {
            return Err(KernelError::Invalid(format!(
                "{len} values are not a {n} × {c} × {h} × {w} feature map"
            )));
        }
        Ok(())
    }
}

/// One map's reduction (`map`: `h · w` values, row-major).
fn reduce_one(map: &[f32], h: usize, w: usize, how: MapReduction) -> f32 {
    match how {
        MapReduction::CenterPixel => map[(h / 2) * w + w / 2],
        MapReduction::MaxPool => map[1..].iter().fold(map[0], |best, &v| best.max(v)),
        MapReduction::MeanPool => {
            let mut total = 0.0f32;
            for row in map.chunks_exact(w) {
                let mut sum = 0.0f32;
                for &v in row {
                    sum += v;
                }
                total += sum / w as f32;
            }
            total / h as f32
        }
    }
}

/// Reduces `maps` (`shape`, row-major) to `n × c` values, row-major; on the CPU, maps side
/// by side. The CUDA kernels give the same bits (`cuda/tests/parity.rs`).
pub fn reduce_maps(
    maps: &[f32],
    shape: MapShape,
    how: MapReduction,
) -> Result<Vec<f32>, KernelError> {
    shape.check(maps.len())?;
    let (h, w) = (shape.h, shape.w);
    Ok(maps
        .par_chunks_exact(h * w)
        .map(|map| reduce_one(map, h, w, how))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n: usize, c: usize, h: usize, w: usize) -> MapShape {
        MapShape { n, c, h, w }
    }

    #[test]
    fn each_reduction_takes_its_value_from_each_channel() {
        // 1 × 2 × 4 × 4: value = 100·c + 10·y + x; the centre is (2, 2)
        let v: Vec<f32> = (0..2)
            .flat_map(|c| {
                (0..4).flat_map(move |y| (0..4).map(move |x| (100 * c + 10 * y + x) as f32))
            })
            .collect();
        let s = shape(1, 2, 4, 4);
        let r = |how| reduce_maps(&v, s, how).unwrap();
        assert_eq!(r(MapReduction::CenterPixel), vec![22.0, 122.0]);
        assert_eq!(r(MapReduction::MaxPool), vec![33.0, 133.0]);
        assert_eq!(r(MapReduction::MeanPool), vec![16.5, 116.5]);
    }

    #[test]
    fn odd_sizes_take_the_floor_centre_and_the_mean_is_close_to_float64s() {
        let (n, c, h, w) = (3, 4, 7, 37);
        let v: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 13.0)
            .collect();
        let s = shape(n, c, h, w);
        let centre = reduce_maps(&v, s, MapReduction::CenterPixel).unwrap();
        let mean = reduce_maps(&v, s, MapReduction::MeanPool).unwrap();
        let max = reduce_maps(&v, s, MapReduction::MaxPool).unwrap();
        for (i, map) in v.chunks(h * w).enumerate() {
            assert_eq!(centre[i], map[3 * w + 18]);
            let exact = map.iter().map(|&x| f64::from(x)).sum::<f64>() / (h * w) as f64;
            assert!(
                (f64::from(mean[i]) - exact).abs() < 1e-5,
                "{} vs {exact}",
                mean[i]
            );
            assert_eq!(max[i], map.iter().cloned().fold(f32::MIN, f32::max));
        }
    }

    #[test]
    fn a_constant_map_pools_to_its_value_and_a_nan_is_passed_over_by_the_maximum() {
        let v = vec![0.25f32; 2 * 3 * 5 * 5];
        let mean = reduce_maps(&v, shape(2, 3, 5, 5), MapReduction::MeanPool).unwrap();
        assert!(mean.iter().all(|&m| m == 0.25));
        let mut w = vec![1.0f32, f32::NAN, 3.0, 2.0];
        assert_eq!(
            reduce_maps(&w, shape(1, 1, 2, 2), MapReduction::MaxPool).unwrap(),
            vec![3.0]
        );
        w[2] = f32::NAN;
        assert!(reduce_maps(&w, shape(1, 1, 2, 2), MapReduction::MeanPool).unwrap()[0].is_nan());
    }

    #[test]
    fn a_shape_that_does_not_match_the_values_is_refused() {
        for (len, s) in [
            (10, shape(1, 2, 2, 2)),
            (0, shape(1, 1, 0, 4)),
            (8, shape(usize::MAX, 2, 2, 2)),
        ] {
            let e = reduce_maps(&vec![0.0; len], s, MapReduction::MeanPool).unwrap_err();
            assert!(matches!(e, KernelError::Invalid(_)), "{e:?}");
        }
    }
}
