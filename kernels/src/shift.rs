//! The spatial-shift search: cross-validated orthogonal Procrustes between two convolutional
//! layers' full feature maps, after the best circular spatial shift of the second.
//!
//! A conv layer is equivariant to translation, so two networks may hold the same feature at
//! displaced positions; the centre pixel cannot see that. Here every position of every
//! stimulus is a sample (`n·h·w` rows, one column per channel), one orthogonal map acts on
//! the channels at every position (as for convolutional layers in Williams et al., 2021,
//! "Generalized shape metrics on neural representations"), and the second layer's maps may
//! be shifted circularly by any `s = (dy, dx)` of the grid first.
//!
//! In each fold, with the train stimuli's channel means `μ` (over stimuli and positions):
//! `C_s = Σ_train (A − μ_A)ᵀ (shift_s B − μ_B)`; the joint least-squares fit over the map and
//! the shift is `s* = argmax_s ‖C_s‖_*` (nuclear norm; `‖A‖` and `‖shift_s B‖` do not depend
//! on `s`), `M = polar(C_s*)`. The held-out stimuli are scored as [`crate::procrustes`]
//! scores a pair: X→Y predicts `(A_te − μ_A) M` against `shift_s* B_te`, Y→X predicts
//! `(shift_s* B_te − μ_B) Mᵀ` against `A_te`, one correlation per channel over held-out
//! stimuli × positions, averaged; the fold's score is the mean of both directions. The
//! narrower layer is zero-padded (a semi-orthogonal `M`). Channels constant over every
//! stimulus and position are dropped first. The same fit at `s = 0` is reported beside it
//! (`unshifted`), so the gain of the search is visible; on a 1 × 1 grid the search is
//! exactly [`crate::procrustes`] with zero padding.
//!
//! The per-fold cross-products over all shifts come from the compute backend
//! ([`crate::backend::Backend::shifted_cross`]); the rest is `h·w` small SVDs per fold.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::folds::Folds;
use crate::settings::{Corr, Setting};
use crate::shift_cross::MapDims;
use crate::{stats, KernelError};

/// The settings the shift search reads besides the fold split.
pub const READS: &[Setting] = &[Setting::Corr];

/// Most bytes the per-fold cross-products of one pair may take (beyond: an error, not an
/// allocation failure).
pub const MAX_CROSS_BYTES: usize = 8 << 30;

/// One layer's full feature maps: `n` stimuli × `c` channels × `h` × `w`, row-major f32
/// (PyTorch's and candle's order); a dense layer is `c` units on a 1 × 1 grid.
#[derive(Clone, Copy, Debug)]
pub struct Maps<'a> {
    data: &'a [f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
}

impl<'a> Maps<'a> {
    /// Wraps `data` of shape `[n, c, h, w]` (or `[n, c]`: a 1 × 1 grid).
    pub fn new(data: &'a [f32], shape: &[usize]) -> Result<Self, KernelError> {
        let (n, c, h, w) = match *shape {
            [n, c, h, w] => (n, c, h, w),
            [n, c] => (n, c, 1, 1),
            _ => {
                return Err(KernelError::Invalid(format!(
                    "full maps have shape [stimuli, channels, height, width] (or [stimuli, units]); got {shape:?}"
                )))
            }
        };
        if n == 0 || c == 0 || h == 0 || w == 0 {
            return Err(KernelError::Invalid(format!(
                "maps of shape {shape:?} are empty: stimuli, channels, height and width must all be at least 1"
            )));
        }
        let len = n
            .checked_mul(c)
            .and_then(|v| v.checked_mul(h))
            .and_then(|v| v.checked_mul(w));
        if len != Some(data.len()) {
            return Err(KernelError::Invalid(format!(
                "maps of shape {shape:?} need {} values; got {}",
                len.map(|l| l.to_string())
                    .unwrap_or_else(|| "too many".into()),
                data.len()
            )));
        }
        Ok(Self { data, n, c, h, w })
    }

    /// `[stimuli, channels, height, width]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    fn positions(&self) -> usize {
        self.h * self.w
    }

    fn map(&self, k: usize, ch: usize) -> &'a [f32] {
        let p = self.positions();
        &self.data[(k * self.c + ch) * p..(k * self.c + ch + 1) * p]
    }

    /// Channels not constant over every stimulus and position.
    fn live(&self) -> Vec<usize> {
        (0..self.c)
            .filter(|&ch| {
                let first = self.map(0, ch)[0];
                (0..self.n).any(|k| self.map(k, ch).iter().any(|&v| v != first))
            })
            .collect()
    }

    /// Stimuli `rows`, channels `live`, contiguous.
    fn subset(&self, rows: &[usize], live: &[usize]) -> Vec<f32> {
        rows.iter()
            .flat_map(|&k| {
                live.iter()
                    .flat_map(move |&ch| self.map(k, ch).iter().copied())
            })
            .collect()
    }
}

/// The shift search's result for one pair.
#[derive(Clone, Debug, PartialEq)]
pub struct ShiftScore {
    /// Mean of the fold scores.
    pub score: f64,
    /// Standard deviation of the fold scores (ddof = 0).
    pub std: f64,
    /// Each fold's score (mean of both directions) at its chosen shift.
    pub fold_scores: Vec<f64>,
    /// Per-fold scores predicting Y from X.
    pub x_to_y: Vec<f64>,
    /// Per-fold scores predicting X from Y.
    pub y_to_x: Vec<f64>,
    /// The shift `(dy, dx)` each fold's train stimuli chose, each in `(−h/2, h/2]` and
    /// `(−w/2, w/2]`: Y's value at `p + s` is matched with X's at `p`.
    pub shifts: Vec<(i64, i64)>,
    /// Each fold's score with no shift (the same fit at `s = 0`).
    pub unshifted: Vec<f64>,
    /// netrep's angular distance (radians) of each fold at its chosen shift.
    pub angular_distance: Vec<f64>,
    /// Correlations that were undefined (a channel constant on a held-out fold), counted as 0.
    pub nan_units: usize,
    /// X's live channels (after dropping constant ones).
    pub n_units_x: usize,
    /// Y's live channels.
    pub n_units_y: usize,
    /// X's dropped (constant) channels.
    pub dropped_x: Vec<usize>,
    /// Y's dropped channels.
    pub dropped_y: Vec<usize>,
}

struct Side<'a> {
    maps: Maps<'a>,
    live: Vec<usize>,
    /// Per fold, the held-out stimuli's channel sums (over stimuli and positions).
    sums: Vec<Vec<f64>>,
}

impl<'a> Side<'a> {
    fn new(maps: Maps<'a>, folds: &Folds, name: &str) -> Result<Self, KernelError> {
        let live = maps.live();
        if live.is_empty() {
            return Err(KernelError::Invalid(format!(
                "every channel of {name} is constant over all stimuli and positions"
            )));
        }
        let sums = (0..folds.k())
            .map(|f| {
                live.iter()
                    .map(|&ch| {
                        folds
                            .test(f)
                            .iter()
                            .map(|&k| maps.map(k, ch).iter().map(|&v| v as f64).sum::<f64>())
                            .sum()
                    })
                    .collect()
            })
            .collect();
        Ok(Self { maps, live, sums })
    }

    fn train_mean(&self, f: usize, n_train_samples: f64) -> Vec<f64> {
        (0..self.live.len())
            .map(|i| {
                let total: f64 = self.sums.iter().map(|s| s[i]).sum();
                (total - self.sums[f][i]) / n_train_samples
            })
            .collect()
    }

    /// Held-out samples (stimulus × position rows, live channels), centred with `mu`, the
    /// grid shifted by `(dy, dx)`.
    fn test_samples(&self, rows: &[usize], mu: &[f64], dy: usize, dx: usize) -> Mat<f64> {
        let (h, w) = (self.maps.h, self.maps.w);
        let p = h * w;
        Mat::from_fn(rows.len() * p, self.live.len(), |r, i| {
            let (k, pos) = (rows[r / p], r % p);
            let (y, x) = (pos / w, pos % w);
            self.maps.map(k, self.live[i])[((y + dy) % h) * w + (x + dx) % w] as f64 - mu[i]
        })
    }
}

struct FoldResult {
    xy: f64,
    yx: f64,
    angular: f64,
    undefined: usize,
}

/// Scores the held-out stimuli of fold `f` at shift `s` with map `m`.
fn evaluate(
    x: &Side<'_>,
    y: &Side<'_>,
    rows: &[usize],
    means: (&[f64], &[f64]),
    s: usize,
    m: MatRef<'_, f64>,
    spearman: bool,
) -> FoldResult {
    let w = y.maps.w;
    let xte = x.test_samples(rows, means.0, 0, 0);
    let yte = y.test_samples(rows, means.1, s / w, s % w);
    let pred_y = &xte * m;
    let pred_x = &yte * m.transpose();
    let (ry, uy) = stats::paired_column_correlations(pred_y.as_ref(), yte.as_ref(), spearman);
    let (rx, ux) = stats::paired_column_correlations(pred_x.as_ref(), xte.as_ref(), spearman);
    let inner: f64 = (0..yte.ncols())
        .map(|j| {
            (0..yte.nrows())
                .map(|i| pred_y[(i, j)] * yte[(i, j)])
                .sum::<f64>()
        })
        .sum();
    let angular = (inner / (xte.norm_l2() * yte.norm_l2()))
        .clamp(-1.0, 1.0)
        .acos();
    FoldResult {
        xy: stats::mean(&ry),
        yx: stats::mean(&rx),
        angular,
        undefined: ux + uy,
    }
}

/// The signed form of grid offset `d` on an axis of length `len`: in `(−len/2, len/2]`.
fn signed(d: usize, len: usize) -> i64 {
    if 2 * d > len {
        d as i64 - len as i64
    } else {
        d as i64
    }
}

/// The shift search between `x` and `y` over `folds`, correlations by `corr`.
pub fn score(
    x: &Maps<'_>,
    y: &Maps<'_>,
    folds: &Folds,
    corr: Corr,
) -> Result<ShiftScore, KernelError> {
    if x.n != y.n || folds.n_rows() != x.n {
        return Err(KernelError::Invalid(format!(
            "X has {} stimuli, Y {} and the folds {}; rows must be the same stimuli in the same order",
            x.n,
            y.n,
            folds.n_rows()
        )));
    }
    if (x.h, x.w) != (y.h, y.w) {
        return Err(KernelError::Invalid(format!(
            "the shift search needs both layers on one grid; X's maps are {} × {}, Y's {} × {}",
            x.h, x.w, y.h, y.w
        )));
    }
    let (sx, sy) = (Side::new(*x, folds, "X")?, Side::new(*y, folds, "Y")?);
    let (ca, cb, p, k) = (sx.live.len(), sy.live.len(), x.positions(), folds.k());
    let bytes = (k + 1) * p * ca * cb * std::mem::size_of::<f64>();
    if bytes > MAX_CROSS_BYTES {
        return Err(KernelError::Invalid(format!(
            "the shift search between {ca} and {cb} channels on a {} × {} grid needs {:.1} GiB of cross-products (limit {} GiB); compare smaller layers or a coarser grid",
            x.h,
            x.w,
            bytes as f64 / (1u64 << 30) as f64,
            MAX_CROSS_BYTES >> 30
        )));
    }
    let backend = crate::backend::current();
    // Each fold's held-out cross-products over every shift; the folds partition the stimuli,
    // so the train products are the total minus the block.
    let blocks: Vec<Vec<f64>> = (0..k)
        .map(|f| {
            let rows = folds.test(f);
            let d = MapDims {
                n: rows.len(),
                ca,
                cb,
                h: x.h,
                w: x.w,
            };
            backend.shifted_cross(&x.subset(rows, &sx.live), &y.subset(rows, &sy.live), d)
        })
        .collect();
    let mut total = vec![0.0; p * ca * cb];
    for b in &blocks {
        total.iter_mut().zip(b).for_each(|(t, v)| *t += v);
    }
    let spearman = corr == Corr::Spearman;
    let mut out = Vec::with_capacity(k);
    for (f, block) in blocks.iter().enumerate() {
        let n_train = (x.n - folds.test(f).len()) as f64 * p as f64;
        let (mu_x, mu_y) = (sx.train_mean(f, n_train), sy.train_mean(f, n_train));
        let centred = |s: usize| {
            Mat::from_fn(ca, cb, |i, j| {
                let t = s * ca * cb + i * cb + j;
                (total[t] - block[t]) - n_train * mu_x[i] * mu_y[j]
            })
        };
        let nuclear: Vec<Result<f64, KernelError>> = (0..p)
            .into_par_iter()
            .map(|s| {
                centred(s)
                    .singular_values()
                    .map(|v| v.iter().sum())
                    .map_err(|e| {
                        KernelError::Numerical(format!("SVD of a shifted cross-covariance: {e:?}"))
                    })
            })
            .collect();
        let mut best = (0, f64::NEG_INFINITY);
        for (s, v) in nuclear.into_iter().enumerate() {
            let v = v?;
            if v > best.1 {
                best = (s, v);
            }
        }
        let s = best.0;
        let rows = folds.test(f);
        let means = (mu_x.as_slice(), mu_y.as_slice());
        let m = backend.polar(centred(s).as_ref())?;
        let at_best = evaluate(&sx, &sy, rows, means, s, m.as_ref(), spearman);
        let unshifted = if s == 0 {
            0.5 * (at_best.xy + at_best.yx)
        } else {
            let m0 = backend.polar(centred(0).as_ref())?;
            let r = evaluate(&sx, &sy, rows, means, 0, m0.as_ref(), spearman);
            0.5 * (r.xy + r.yx)
        };
        out.push((
            at_best,
            (signed(s / x.w, x.h), signed(s % x.w, x.w)),
            unshifted,
        ));
    }
    let xy: Vec<f64> = out.iter().map(|r| r.0.xy).collect();
    let yx: Vec<f64> = out.iter().map(|r| r.0.yx).collect();
    let fold_scores: Vec<f64> = xy.iter().zip(&yx).map(|(a, b)| 0.5 * (a + b)).collect();
    let dropped = |side: &Side<'_>, c: usize| -> Vec<usize> {
        (0..c).filter(|ch| !side.live.contains(ch)).collect()
    };
    Ok(ShiftScore {
        score: stats::mean(&fold_scores),
        std: stats::std(&fold_scores),
        x_to_y: xy,
        y_to_x: yx,
        shifts: out.iter().map(|r| r.1).collect(),
        unshifted: out.iter().map(|r| r.2).collect(),
        angular_distance: out.iter().map(|r| r.0.angular).collect(),
        nan_units: out.iter().map(|r| r.0.undefined).sum(),
        n_units_x: ca,
        n_units_y: cb,
        dropped_x: dropped(&sx, x.c),
        dropped_y: dropped(&sy, y.c),
        fold_scores,
    })
}
