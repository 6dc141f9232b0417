//! Cross-products of two layers' full feature maps under every circular spatial shift:
//! `out[s][i][j] = Σ_k Σ_p a[k, i, p] · b[k, j, p + s]` over stimuli `k` and positions
//! `p = (y, x)`, with `p + s = ((y + dy) mod h, (x + dx) mod w)` and `s = dy·w + dx`.
//!
//! Directly this is `(h·w)²·n·ca·cb` multiply-adds; by the cross-correlation theorem it is
//! one 2-D FFT per stimulus and channel, one `ca × cb` complex product per spatial frequency
//! (`Σ_k conj(Â_k)ᵀ B̂_k`, a GEMM over the stimuli), and one inverse FFT per channel pair:
//! `(ca + cb)·n·hw·log hw + n·ca·cb·hw` — the CPU path. The GPU kernel
//! (`kernels/cuda/shift.cu`) sums directly, in the same layout.

use faer::{c64, Mat, MatRef};
use rayon::prelude::*;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// The geometry of two layers' full maps over the same stimuli: `n` stimuli, `ca` and `cb`
/// channels, an `h × w` grid shared by both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDims {
    /// Stimuli.
    pub n: usize,
    /// Channels of the first layer.
    pub ca: usize,
    /// Channels of the second layer.
    pub cb: usize,
    /// Grid height.
    pub h: usize,
    /// Grid width.
    pub w: usize,
}

impl MapDims {
    /// Positions (and shifts) of the grid: `h·w`.
    pub fn positions(&self) -> usize {
        self.h * self.w
    }

    /// Length of the output: shifts × ca × cb.
    pub fn out_len(&self) -> usize {
        self.positions() * self.ca * self.cb
    }
}

/// Most complex values one chunk of transformed maps holds (64 MiB per layer).
const CHUNK_VALUES: usize = 1 << 22;

/// A 2-D FFT over an `h × w` grid (rows, then columns), and its inverse.
struct Fft2 {
    h: usize,
    w: usize,
    rows: Arc<dyn Fft<f64>>,
    cols: Arc<dyn Fft<f64>>,
    rows_inv: Arc<dyn Fft<f64>>,
    cols_inv: Arc<dyn Fft<f64>>,
}

impl Fft2 {
    fn new(h: usize, w: usize) -> Self {
        let mut p = FftPlanner::new();
        Self {
            h,
            w,
            rows: p.plan_fft_forward(w),
            cols: p.plan_fft_forward(h),
            rows_inv: p.plan_fft_inverse(w),
            cols_inv: p.plan_fft_inverse(h),
        }
    }

    /// Forward transform of a row-major `h × w` map into `out` (frequency order `[qx][qy]`,
    /// the transposed grid; [`Fft2::inverse`] undoes exactly this).
    fn forward(&self, map: &[f32], out: &mut [c64]) {
        let (h, w) = (self.h, self.w);
        let mut grid: Vec<c64> = map.iter().map(|&v| c64::new(v as f64, 0.0)).collect();
        self.rows.process(&mut grid);
        for y in 0..h {
            for x in 0..w {
                out[x * h + y] = grid[y * w + x];
            }
        }
        self.cols.process(out);
    }

    /// Inverse of [`Fft2::forward`] (unnormalised) into a row-major `h × w` grid.
    fn inverse(&self, spectrum: &mut [c64]) -> Vec<c64> {
        let (h, w) = (self.h, self.w);
        self.cols_inv.process(spectrum);
        let mut grid = vec![c64::new(0.0, 0.0); h * w];
        for x in 0..w {
            for y in 0..h {
                grid[y * w + x] = spectrum[x * h + y];
            }
        }
        self.rows_inv.process(&mut grid);
        grid
    }
}

/// The spectra of stimuli `k0..k1` of one layer's maps, laid out `[q][k][channel]` so each
/// frequency's block is a row-major `(k1 - k0) × c` matrix.
fn spectra(fft: &Fft2, maps: &[f32], c: usize, k0: usize, k1: usize) -> Vec<c64> {
    let p = fft.h * fft.w;
    let nk = k1 - k0;
    let per_map: Vec<Vec<c64>> = (0..nk * c)
        .into_par_iter()
        .map(|t| {
            let (k, ch) = (k0 + t / c, t % c);
            let mut out = vec![c64::new(0.0, 0.0); p];
            fft.forward(&maps[(k * c + ch) * p..(k * c + ch + 1) * p], &mut out);
            out
        })
        .collect();
    let mut laid = vec![c64::new(0.0, 0.0); p * nk * c];
    for (t, s) in per_map.iter().enumerate() {
        for (q, v) in s.iter().enumerate() {
            laid[q * nk * c + t] = *v;
        }
    }
    laid
}

/// The cross-products of `a` (n × ca × h × w, row-major) with every circular shift of `b`
/// (n × cb × h × w), layout `[s][i][j]` (see the module documentation), on the CPU.
pub fn shifted_cross_cpu(a: &[f32], b: &[f32], d: MapDims) -> Vec<f64> {
    let p = d.positions();
    assert_eq!(a.len(), d.n * d.ca * p, "a's length is n × ca × h × w");
    assert_eq!(b.len(), d.n * d.cb * p, "b's length is n × cb × h × w");
    if d.out_len() == 0 {
        return Vec::new();
    }
    let fft = Fft2::new(d.h, d.w);
    let chunk = (CHUNK_VALUES / (p * d.ca.max(d.cb)).max(1)).max(1);
    // One ca × cb accumulator per spatial frequency.
    let mut acc: Vec<Mat<c64>> = (0..p).map(|_| Mat::zeros(d.ca, d.cb)).collect();
    let mut k0 = 0;
    while k0 < d.n {
        let k1 = (k0 + chunk).min(d.n);
        let nk = k1 - k0;
        let (fa, fb) = (
            spectra(&fft, a, d.ca, k0, k1),
            spectra(&fft, b, d.cb, k0, k1),
        );
        acc.par_iter_mut().enumerate().for_each(|(q, g)| {
            let ma =
                MatRef::from_row_major_slice(&fa[q * nk * d.ca..(q + 1) * nk * d.ca], nk, d.ca);
            let mb =
                MatRef::from_row_major_slice(&fb[q * nk * d.cb..(q + 1) * nk * d.cb], nk, d.cb);
            *g += ma.adjoint() * mb;
        });
        k0 = k1;
    }
    let scale = 1.0 / p as f64;
    let pairs: Vec<Vec<f64>> = (0..d.ca * d.cb)
        .into_par_iter()
        .map(|t| {
            let (i, j) = (t / d.cb, t % d.cb);
            let mut spectrum: Vec<c64> = acc.iter().map(|g| g[(i, j)]).collect();
            fft.inverse(&mut spectrum)
                .iter()
                .map(|v| v.re * scale)
                .collect()
        })
        .collect();
    let mut out = vec![0.0; d.out_len()];
    for (t, values) in pairs.iter().enumerate() {
        for (s, v) in values.iter().enumerate() {
            out[s * d.ca * d.cb + t] = *v;
        }
    }
    out
}

/// The same sums taken directly (`(h·w)²·n·ca·cb` multiply-adds): the definition, for tests
/// and small grids.
pub fn shifted_cross_direct(a: &[f32], b: &[f32], d: MapDims) -> Vec<f64> {
    let p = d.positions();
    let mut out = vec![0.0; d.out_len()];
    out.par_chunks_mut(d.ca * d.cb)
        .enumerate()
        .for_each(|(s, block)| {
            let (dy, dx) = (s / d.w, s % d.w);
            for i in 0..d.ca {
                for j in 0..d.cb {
                    let mut acc = 0.0;
                    for k in 0..d.n {
                        let ma = &a[(k * d.ca + i) * p..(k * d.ca + i + 1) * p];
                        let mb = &b[(k * d.cb + j) * p..(k * d.cb + j + 1) * p];
                        for y in 0..d.h {
                            let ys = (y + dy) % d.h;
                            for x in 0..d.w {
                                acc +=
                                    ma[y * d.w + x] as f64 * mb[ys * d.w + (x + dx) % d.w] as f64;
                            }
                        }
                    }
                    block[i * d.cb + j] = acc;
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n * c * h * w)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn fft_sums_equal_the_direct_sums_on_odd_even_and_degenerate_grids() {
        for (n, ca, cb, h, w) in [
            (7, 3, 4, 5, 6),
            (4, 2, 2, 1, 1),
            (3, 1, 5, 4, 1),
            (600, 2, 3, 3, 3),
        ] {
            let d = MapDims { n, ca, cb, h, w };
            let (a, b) = (maps(n, ca, h, w, 1), maps(n, cb, h, w, 2));
            let fast = shifted_cross_cpu(&a, &b, d);
            let slow = shifted_cross_direct(&a, &b, d);
            let scale = slow.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (f, s) in fast.iter().zip(&slow) {
                assert!(
                    (f - s).abs() <= 1e-12 * scale.max(1.0),
                    "{f} vs {s} at {d:?}"
                );
            }
        }
    }

    #[test]
    fn a_shifted_copy_peaks_at_its_shift() {
        // b is a moved by (dy, dx) = (2, 3): b[p + (2, 3)] = a[p], so the cross-product
        // peaks at s = 2·w + 3.
        let (n, h, w) = (5, 6, 7);
        let a = maps(n, 1, h, w, 3);
        let mut b = vec![0.0; a.len()];
        for k in 0..n {
            for y in 0..h {
                for x in 0..w {
                    b[k * h * w + ((y + 2) % h) * w + (x + 3) % w] = a[k * h * w + y * w + x];
                }
            }
        }
        let d = MapDims {
            n,
            ca: 1,
            cb: 1,
            h,
            w,
        };
        let c = shifted_cross_cpu(&a, &b, d);
        let best = (0..c.len()).max_by(|&i, &j| c[i].total_cmp(&c[j])).unwrap();
        assert_eq!(best, 2 * w + 3);
    }
}
