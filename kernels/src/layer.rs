//! A layer prepared for scoring: everything that depends on one activation matrix only.
//!
//! Preparing drops dead units, centres the data, reorders rows so that each fold's test
//! block is contiguous, and computes each fold's statistics. Heavier per-layer work (the
//! ridge factorisation, fold ranks, the RDM) is computed on first use and then shared by
//! every pair and direction the layer takes part in, so an audit of L layers does O(L)
//! factorisations, not O(L²).

use std::sync::Arc;

use crate::lazy::Lazy;

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::folds::Folds;
use crate::ridge::RidgeFactor;
use crate::rsa::Rdm;
use crate::settings::Settings;
use crate::stats;
use crate::KernelError;

/// Mean and standard deviation (ddof = 0) of each unit on one fold's train and test rows.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldStats {
    /// Train-row mean of each unit (in the layer's centred coordinates).
    pub train_mean: Vec<f64>,
    /// Train-row standard deviation; exactly 0 for a unit constant on the train rows.
    pub train_std: Vec<f64>,
    /// Test-row mean of each unit.
    pub test_mean: Vec<f64>,
    /// Test-row standard deviation; exactly 0 for a unit constant on the test rows.
    pub test_std: Vec<f64>,
}

/// Ranks of each unit within one fold's train rows and within its test rows.
pub struct FoldRanks {
    /// Average ranks over the train rows (m_train × n).
    pub train: Mat<f64>,
    /// Average ranks over the test rows (m_test × n).
    pub test: Mat<f64>,
}

/// Column-major f64 storage of a prepared layer's data: owned, or borrowed from elsewhere
/// (a memory-mapped cache object) without a copy.
pub trait DataBuffer: Send + Sync {
    /// The values, column-major.
    fn as_slice(&self) -> &[f64];
}

impl DataBuffer for Vec<f64> {
    fn as_slice(&self) -> &[f64] {
        self
    }
}

/// Everything a prepared layer holds besides its data, to store it and rebuild it later
/// ([`PreparedLayer::parts`], [`PreparedLayer::from_parts`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParts {
    /// Number of stimuli.
    pub n_rows: usize,
    /// Number of units given.
    pub n_units_in: usize,
    /// Input indices of the dropped (constant) units.
    pub dropped: Vec<usize>,
    /// Mean of each kept unit.
    pub mean: Vec<f64>,
    /// Test rows of each fold (the data's rows are these, concatenated).
    pub test_rows: Vec<Vec<usize>>,
    /// Statistics of each fold.
    pub stats: Vec<FoldStats>,
}

/// A fold's ridge factorisation: the one the layer keeps, or one computed for a single use
/// ([`PreparedLayer::ridge_fold`]).
pub enum FoldFactor<'a> {
    /// Kept by the layer for every pair.
    Kept(&'a RidgeFactor),
    /// Computed for this use, dropped after it.
    Once(Box<RidgeFactor>),
}

impl std::ops::Deref for FoldFactor<'_> {
    type Target = RidgeFactor;
    fn deref(&self) -> &RidgeFactor {
        match self {
            FoldFactor::Kept(r) => r,
            FoldFactor::Once(r) => r,
        }
    }
}

/// One layer's activations, prepared once and reused by every pair it takes part in.
pub struct PreparedLayer {
    settings: Settings,
    folds: Folds,
    n_units_in: usize,
    dropped: Vec<usize>,
    mean: Vec<f64>,
    data: Arc<dyn DataBuffer>,
    n_rows: usize,
    n_units: usize,
    bounds: Vec<(usize, usize)>,
    /// Fold statistics, computed on first use (CKA and RSA need none).
    stats: Lazy<Vec<FoldStats>>,
    gram_total: Lazy<Mat<f64>>,
    ridge: Lazy<Result<Vec<RidgeFactor>, KernelError>>,
    ranks: Lazy<Vec<FoldRanks>>,
    rdm: Lazy<Rdm>,
    /// Whether the ridge factorisations are kept for the next pair (see [`Self::single_use`]).
    keep_factors: bool,
}

impl PreparedLayer {
    /// Prepares `x` (stimuli × units): checks it, drops units constant over all stimuli,
    /// centres it and splits it into folds as `settings.folds` says.
    pub fn new(x: MatRef<'_, f64>, settings: &Settings) -> Result<Self, KernelError> {
        let folds = Folds::new(x.nrows(), settings.folds)?;
        Self::with_folds(x, settings, folds)
    }

    /// Prepares `x` with a given fold split (which must cover its rows).
    pub fn with_folds(
        x: MatRef<'_, f64>,
        settings: &Settings,
        folds: Folds,
    ) -> Result<Self, KernelError> {
        let (m, n_in) = x.shape();
        if folds.n_rows() != m {
            return Err(KernelError::Invalid(format!(
                "the folds split {} rows but the matrix has {m}",
                folds.n_rows()
            )));
        }
        if n_in == 0 {
            return Err(KernelError::Invalid(
                "the matrix has no units (0 columns)".into(),
            ));
        }
        // one pass in the storage order (a row-major view read column by column would jump
        // a row's length at every value): each unit's range, and whether all are finite
        let (lo, hi) = column_ranges(x);
        if lo.iter().chain(&hi).any(|v| !v.is_finite()) {
            // the first non-finite value in column order, for the message
            for j in 0..n_in {
                for i in 0..m {
                    if !x[(i, j)].is_finite() {
                        return Err(KernelError::Invalid(format!(
                            "non-finite value {} at row {i}, column {j}",
                            x[(i, j)]
                        )));
                    }
                }
            }
        }
        let (kept, dropped): (Vec<usize>, Vec<usize>) = (0..n_in).partition(|&j| lo[j] != hi[j]);
        if kept.is_empty() {
            return Err(KernelError::Invalid(format!(
                "all {n_in} units are constant over the {m} stimuli; nothing to compare"
            )));
        }
        let mut order = Vec::with_capacity(m);
        let mut bounds = Vec::with_capacity(folds.k());
        for f in 0..folds.k() {
            let start = order.len();
            order.extend_from_slice(folds.test(f));
            bounds.push((start, order.len()));
        }
        // Every metric is invariant to the matrix's scale, but products of raw values over-
        // or underflow outside about 1e±150: the data are brought to a largest |value| in
        // [1, 2) by a power of two, which is exact, so scores are the same at any scale.
        let largest = lo.iter().chain(&hi).fold(0.0f64, |a, v| a.max(v.abs()));
        let [f0, f1] = scale_of(largest);
        let scaled = |v: f64| v * f0 * f1;
        // each kept unit's sum over rows 0, 1, …, m − 1 in that order, in the storage order
        let mut sums = vec![0.0; kept.len()];
        if x.row_stride() == 1 || m == 0 {
            for (s, &j) in sums.iter_mut().zip(&kept) {
                *s = x.col(j).iter().map(|&v| scaled(v)).sum::<f64>();
            }
        } else {
            for i in 0..m {
                let row = x.row(i);
                for (s, &j) in sums.iter_mut().zip(&kept) {
                    *s += scaled(row[j]);
                }
            }
        }
        let mean: Vec<f64> = sums.iter().map(|s| s / m as f64).collect();
        // Centred, rows in fold order, column-major: written once, straight into the buffer.
        let n_units = kept.len();
        let mut data = vec![0.0; m * n_units];
        data.par_chunks_mut(m.max(1))
            .zip(kept.par_iter().zip(&mean))
            .for_each(|(col, (&j, &mu))| {
                let src = x.col(j);
                for (v, &i) in col.iter_mut().zip(&order) {
                    *v = scaled(src[i]) - mu;
                }
            });
        Ok(Self {
            settings: settings.clone(),
            folds,
            n_units_in: n_in,
            dropped,
            mean,
            data: Arc::new(data),
            n_rows: m,
            n_units,
            bounds,
            stats: Lazy::new(),
            gram_total: Lazy::new(),
            ridge: Lazy::new(),
            ranks: Lazy::new(),
            rdm: Lazy::new(),
            keep_factors: true,
        })
    }

    /// Everything but the data, to store the layer.
    pub fn parts(&self) -> LayerParts {
        LayerParts {
            n_rows: self.n_rows,
            n_units_in: self.n_units_in,
            dropped: self.dropped.clone(),
            mean: self.mean.clone(),
            test_rows: (0..self.k()).map(|f| self.folds.test(f).to_vec()).collect(),
            stats: self.all_stats().to_vec(),
        }
    }

    /// Rebuilds a stored layer from its parts and its data (`data()`'s values, column-major),
    /// without copying the data.
    pub fn from_parts(
        parts: LayerParts,
        settings: &Settings,
        data: Arc<dyn DataBuffer>,
    ) -> Result<Self, KernelError> {
        let n_units = parts.mean.len();
        if data.as_slice().len() != parts.n_rows * n_units
            || parts.stats.len() != parts.test_rows.len()
        {
            return Err(KernelError::Invalid(
                "stored layer parts do not fit together".into(),
            ));
        }
        let folds = Folds::from_test_rows(parts.n_rows, parts.test_rows)?;
        let mut bounds = Vec::with_capacity(folds.k());
        let mut start = 0;
        for f in 0..folds.k() {
            bounds.push((start, start + folds.test(f).len()));
            start += folds.test(f).len();
        }
        Ok(Self {
            settings: settings.clone(),
            folds,
            n_units_in: parts.n_units_in,
            dropped: parts.dropped,
            mean: parts.mean,
            data,
            n_rows: parts.n_rows,
            n_units,
            bounds,
            stats: Lazy::with(parts.stats),
            gram_total: Lazy::new(),
            ridge: Lazy::new(),
            ranks: Lazy::new(),
            rdm: Lazy::new(),
            keep_factors: true,
        })
    }

    fn x(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(self.data.as_slice(), self.n_rows, self.n_units)
    }

    /// The settings the layer was prepared with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The fold split of the stimuli.
    pub fn folds(&self) -> &Folds {
        &self.folds
    }

    /// Number of folds.
    pub fn k(&self) -> usize {
        self.bounds.len()
    }

    /// Number of stimuli (rows).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of units given, before dead units were dropped.
    pub fn n_units_in(&self) -> usize {
        self.n_units_in
    }

    /// Number of units kept (the width every metric sees).
    pub fn n_units(&self) -> usize {
        self.n_units
    }

    /// Input column indices of the units dropped for being constant over all stimuli.
    pub fn dropped(&self) -> &[usize] {
        &self.dropped
    }

    /// Mean of each kept unit over all stimuli, in the layer's coordinates (the input times
    /// [`unit_scale`]'s power of two); the data are stored minus this mean.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The kept units with their means restored, rows in the input's order (in the layer's
    /// coordinates: the input times [`unit_scale`]'s power of two). Preparing it again with
    /// the same folds gives the same layer; the statistics in [`crate::inference`] permute or
    /// resample these rows.
    pub fn input_rows(&self) -> Mat<f64> {
        let x = self.x();
        // data row `pos` is input row `row`: the folds' test rows, concatenated
        let mut at = vec![0; self.n_rows];
        let rows = (0..self.k()).flat_map(|f| self.folds.test(f).iter());
        for (pos, &row) in rows.enumerate() {
            at[row] = pos;
        }
        Mat::from_fn(self.n_rows, self.n_units, |i, j| {
            x[(at[i], j)] + self.mean[j]
        })
    }

    /// The centred data, rows in fold order (fold 0's test rows first).
    pub fn data(&self) -> MatRef<'_, f64> {
        self.x()
    }

    /// Statistics of fold `f`.
    pub fn stats(&self, f: usize) -> &FoldStats {
        &self.all_stats()[f]
    }

    fn all_stats(&self) -> &[FoldStats] {
        self.stats
            .get_or_compute(|| all_fold_stats(self.x(), &self.bounds))
            .as_slice()
    }

    /// Fold `f`'s test rows (a view, no copy).
    pub fn test_rows(&self, f: usize) -> MatRef<'_, f64> {
        let (s, e) = self.bounds[f];
        self.x().subrows(s, e - s)
    }

    /// Fold `f`'s train rows: the rows before and after its test block (views, no copy).
    pub fn train_parts(&self, f: usize) -> [MatRef<'_, f64>; 2] {
        let (s, e) = self.bounds[f];
        let x = self.x();
        [x.subrows(0, s), x.subrows(e, x.nrows() - e)]
    }

    /// Number of train rows of fold `f`.
    pub fn n_train(&self, f: usize) -> usize {
        let (s, e) = self.bounds[f];
        self.n_rows - (e - s)
    }

    /// Fold `f`'s train rows gathered into one matrix, each column minus `shift[j]`.
    pub fn train_rows_minus(&self, f: usize, shift: &[f64]) -> Mat<f64> {
        let [a, b] = self.train_parts(f);
        let s = a.nrows();
        Mat::from_fn(self.n_train(f), self.n_units(), |i, j| {
            let v = if i < s { a[(i, j)] } else { b[(i - s, j)] };
            v - shift[j]
        })
    }

    /// `Xᵀ X` over all stimuli (centred data), computed once.
    pub fn gram_total(&self) -> &Mat<f64> {
        self.gram_total
            .get_or_compute(|| crate::backend::current().gram(self.x()))
    }

    /// The ridge factorisation of every fold (for this layer as a regression source).
    pub fn ridge(&self) -> Result<&[RidgeFactor], KernelError> {
        self.ridge
            .get_or_compute(|| {
                // what every fold's factorisation reads, computed once before they run side by side
                self.gram_total();
                self.all_stats();
                (0..self.k())
                    .into_par_iter()
                    .map(|f| RidgeFactor::new(self, f))
                    .collect()
            })
            .as_ref()
            .map(|v| v.as_slice())
            .map_err(Clone::clone)
    }

    /// Marks the layer as taking part in one pair only (`repflow score` without statistics):
    /// its ridge factorisation of a fold is then computed where it is used and dropped
    /// after, instead of being kept for every fold at once. Scores are identical; at
    /// n = 2,048 units the kept factorisations of two layers are most of the linear metric's
    /// memory.
    pub fn single_use(mut self) -> Self {
        self.keep_factors = false;
        self
    }

    /// Whether the layer keeps its ridge factorisations (not [`Self::single_use`]).
    pub(crate) fn keeps_factors(&self) -> bool {
        self.keep_factors
    }

    /// Fold `f`'s ridge factorisation, kept ([`Self::ridge`]) or computed for this use only
    /// ([`Self::single_use`]).
    pub fn ridge_fold(&self, f: usize) -> Result<FoldFactor<'_>, KernelError> {
        if self.keep_factors {
            Ok(FoldFactor::Kept(&self.ridge()?[f]))
        } else {
            RidgeFactor::new(self, f).map(|r| FoldFactor::Once(Box::new(r)))
        }
    }

    /// Average ranks of every unit within each fold's train rows and test rows.
    pub fn ranks(&self) -> &[FoldRanks] {
        self.ranks
            .get_or_compute(|| {
                (0..self.k())
                    .into_par_iter()
                    .map(|f| FoldRanks {
                        train: stats::rank_columns(
                            self.train_rows_minus(f, &vec![0.0; self.n_units()])
                                .as_ref(),
                        ),
                        test: stats::rank_columns(self.test_rows(f)),
                    })
                    .collect()
            })
            .as_slice()
    }

    /// The layer's representational dissimilarity matrix, standardised for comparison.
    pub fn rdm(&self) -> &Rdm {
        self.rdm.get_or_compute(|| Rdm::new(self))
    }

    /// Bytes of memory the layer holds now: its data (owned or mapped: mapped pages count
    /// once read), means, and whatever fold statistics, Gram, ridge factorisations, ranks and
    /// RDM have been computed so far. What a run's cache of prepared layers adds up to decide
    /// what to evict under a memory budget.
    pub fn heap_bytes(&self) -> u64 {
        let mat = |m: &Mat<f64>| (m.nrows() * m.ncols() * 8) as u64;
        let vals = |n: usize| n as u64 * 8;
        let stats = self.stats.get().map_or(0, |s| {
            s.iter()
                .map(|f| {
                    vals(f.train_mean.len() + f.train_std.len())
                        + vals(f.test_mean.len() + f.test_std.len())
                })
                .sum()
        });
        let ridge = match self.ridge.get() {
            Some(Ok(factors)) => factors.iter().map(RidgeFactor::heap_bytes).sum(),
            _ => 0,
        };
        let ranks = self
            .ranks
            .get()
            .map_or(0, |r| r.iter().map(|f| mat(&f.train) + mat(&f.test)).sum());
        vals(self.data.as_slice().len() + self.mean.len())
            + stats
            + self.gram_total.get().map_or(0, mat)
            + ridge
            + ranks
            + self.rdm.get().map_or(0, Rdm::heap_bytes)
    }
}

/// Each column's minimum and maximum, read in `x`'s storage order. A non-finite value makes
/// its column's range non-finite (NaN is carried, not skipped as `f64::min` would).
fn column_ranges(x: MatRef<'_, f64>) -> (Vec<f64>, Vec<f64>) {
    let n = x.ncols();
    let (mut lo, mut hi) = (vec![f64::INFINITY; n], vec![f64::NEG_INFINITY; n]);
    let mut see = |j: usize, v: f64| {
        if v.is_nan() {
            lo[j] = f64::NAN;
            hi[j] = f64::NAN;
        } else if !lo[j].is_nan() {
            lo[j] = lo[j].min(v);
            hi[j] = hi[j].max(v);
        }
    };
    if x.row_stride() == 1 {
        for j in 0..n {
            x.col(j).iter().for_each(|&v| see(j, v));
        }
    } else {
        for i in 0..x.nrows() {
            x.row(i).iter().enumerate().for_each(|(j, &v)| see(j, v));
        }
    }
    (lo, hi)
}

/// Two factors whose product is the power of two that brings the largest |value| of `x`
/// into [1, 2) (one f64 cannot hold every such power: subnormal inputs need up to 2^1074).
/// Multiplying by them is exact for every value that stays normal. `[1, 1]` for a zero or
/// non-finite matrix.
pub fn unit_scale(x: MatRef<'_, f64>) -> [f64; 2] {
    let mut max = 0.0f64;
    for j in 0..x.ncols() {
        for v in x.col(j).iter() {
            max = max.max(v.abs());
        }
    }
    scale_of(max)
}

/// [`unit_scale`] of a matrix whose largest absolute value is `max`.
fn scale_of(max: f64) -> [f64; 2] {
    if max == 0.0 || !max.is_finite() {
        return [1.0, 1.0];
    }
    let e = -(max.log2().floor() as i32);
    if (-1022..=1023).contains(&e) {
        [pow2(e), 1.0]
    } else {
        [pow2(e / 2), pow2(e - e / 2)]
    }
}

/// `2^e` for a normal exponent `e` in [-1022, 1023].
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Count, mean, centred sum of squares, minimum and maximum of one column on one block.
#[derive(Clone, Copy)]
struct BlockMoments {
    n: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl BlockMoments {
    /// Two passes over `values`.
    fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let (mut m2, mut min, mut max) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
        for &v in values {
            m2 += (v - mean) * (v - mean);
            min = min.min(v);
            max = max.max(v);
        }
        Self {
            n,
            mean,
            m2,
            min,
            max,
        }
    }

    /// The moments of the union of two blocks (Chan et al.'s pairwise update).
    fn merge(self, o: Self) -> Self {
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        Self {
            n,
            mean: self.mean + delta * o.n / n,
            m2: self.m2 + o.m2 + delta * delta * self.n * o.n / n,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }

    /// Standard deviation (ddof = 0), exactly 0 when every value is the same.
    fn std(&self) -> f64 {
        if self.min == self.max {
            0.0
        } else {
            (self.m2 / self.n).sqrt()
        }
    }
}

/// Train and test statistics of every fold, from per-block moments: one pass over each
/// column's blocks, then each fold's train rows are the union of the other blocks.
fn all_fold_stats(x: MatRef<'_, f64>, bounds: &[(usize, usize)]) -> Vec<FoldStats> {
    let n = x.ncols();
    let per_column: Vec<Vec<BlockMoments>> = (0..n)
        .into_par_iter()
        .map(|j| {
            let col = x
                .col(j)
                .try_as_col_major()
                .expect("owned matrices are column-major")
                .as_slice();
            bounds
                .iter()
                .map(|&(s, e)| BlockMoments::of(&col[s..e]))
                .collect()
        })
        .collect();
    (0..bounds.len())
        .map(|f| {
            let mut out = FoldStats {
                train_mean: vec![0.0; n],
                train_std: vec![0.0; n],
                test_mean: vec![0.0; n],
                test_std: vec![0.0; n],
            };
            for (j, blocks) in per_column.iter().enumerate() {
                let test = blocks[f];
                let train = blocks
                    .iter()
                    .enumerate()
                    .filter(|&(g, _)| g != f)
                    .map(|(_, b)| *b)
                    .reduce(BlockMoments::merge)
                    .expect("at least two folds");
                out.test_mean[j] = test.mean;
                out.test_std[j] = test.std();
                out.train_mean[j] = train.mean;
                out.train_std[j] = train.std();
            }
            out
        })
        .collect()
}
