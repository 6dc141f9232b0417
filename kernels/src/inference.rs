//! Statistical inference on a pair's score: a stimulus-permutation null, a fold-stratified
//! stimulus bootstrap, and the Haar-rotation null of the privileged-basis test.
//!
//! Every draw is reproducible with numpy's legacy `RandomState`:
//!
//! - **Permutation null** (`RandomState(seed)`, then one `permutation(m)` per draw): Y's rows
//!   are permuted relative to X's (`Y[perm]`), the folds stay as they are, and the whole
//!   cross-validated score is recomputed. X's prepared layer — its fold statistics, ridge
//!   factorisation, Gram, ranks and RDM — does not depend on the pairing and is shared by
//!   every draw; Y is prepared again for each draw (its fold statistics and factorisation
//!   depend on which of its rows fall in each fold).
//! - **Bootstrap** (`RandomState(seed)`, then for each draw and each fold in order
//!   `randint(0, len(test_f), len(test_f))`): each fold's held-out stimuli are resampled with
//!   replacement; the fold's map is fitted on its own train rows exactly as in the score and
//!   evaluated on the resampled held-out rows, so every stimulus is predicted only by the
//!   fold that held it out and no copy of a stimulus is ever trained on. The draw is the
//!   mean of those fold scores (CKA, computed on all stimuli: the score of the resampled
//!   stimuli). The interval is the percentile interval of the draws: the evaluation's
//!   sampling variability, given the fitted maps. RSA has no
//!   bootstrap here: a resampled stimulus's copies form zero-distance pairs in the RDM.
//! - **Rotation null** (draw k: `haar_rotation(n, seed + k)`): X is rotated by R independent
//!   Haar rotations and scored against Y with a basis-dependent metric (permutation,
//!   soft-matching); the native score's p-value against those answers "is X's basis
//!   privileged?".
//!
//! p-values are `(1 + #{draw ≥ observed}) / (1 + N)`; quantiles interpolate linearly as
//! `numpy.quantile`.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::folds::Folds;
use crate::layer::PreparedLayer;
use crate::pair::Pair;
use crate::rng::LegacyRandomState;
use crate::settings::Metric;
use crate::{rotation, stats, KernelError};

/// The distribution of a statistic's draws and where the observed value falls in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Draws {
    /// Number of draws.
    pub n: usize,
    /// The seed they were drawn from.
    pub seed: u32,
    /// The draws, in order.
    pub values: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their standard deviation (ddof = 0).
    pub std: f64,
    /// Quantiles at 0.5, 0.95 and 0.99.
    pub quantiles: [(f64, f64); 3],
    /// `(1 + #{draw ≥ observed}) / (1 + n)`.
    pub p_value: f64,
}

impl Draws {
    /// Summarises `values` drawn from `seed` against `observed`.
    pub fn new(observed: f64, values: Vec<f64>, seed: u32) -> Draws {
        let n = values.len();
        let at_least = values.iter().filter(|&&v| v >= observed).count();
        let q = |p: f64| (p, quantile(&values, p));
        Draws {
            n,
            seed,
            mean: stats::mean(&values),
            std: stats::std(&values),
            quantiles: [q(0.5), q(0.95), q(0.99)],
            p_value: (1 + at_least) as f64 / (1 + n) as f64,
            values,
        }
    }
}

/// The `p`-quantile of `values` with linear interpolation (`numpy.quantile`'s default).
pub fn quantile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// The `n` row permutations of the null, as `RandomState(seed).permutation(m)` drawn `n`
/// times in turn.
pub fn permutations(m: usize, n: usize, seed: u32) -> Vec<Vec<usize>> {
    let mut rng = LegacyRandomState::new(seed);
    (0..n)
        .map(|_| {
            let mut p: Vec<usize> = (0..m).collect();
            rng.shuffle(&mut p);
            p
        })
        .collect()
}

fn rows(x: MatRef<'_, f64>, idx: &[usize]) -> Mat<f64> {
    Mat::from_fn(idx.len(), x.ncols(), |i, j| x[(idx[i], j)])
}

fn score_of(x: &PreparedLayer, y: &PreparedLayer, metric: Metric) -> Result<f64, KernelError> {
    Ok(Pair::new(x, y)?.score(metric)?.score)
}

/// The stimulus-permutation null of `metric` between `x` and `y`: `n` scores of X against
/// Y with its rows permuted (see the module notes).
pub fn permutation_null(
    x: &PreparedLayer,
    y: &PreparedLayer,
    metric: Metric,
    n: usize,
    seed: u32,
) -> Result<Vec<f64>, KernelError> {
    let yi = y.input_rows();
    permutations(x.n_rows(), n, seed)
        .par_iter()
        .map(|perm| {
            let yp = PreparedLayer::with_folds(
                rows(yi.as_ref(), perm).as_ref(),
                y.settings(),
                x.folds().clone(),
            )?;
            score_of(x, &yp, metric)
        })
        .collect()
}

/// The row indices of each bootstrap draw, grouped by fold: `RandomState(seed)`, then for
/// each draw and each fold `randint(0, len(test_f), len(test_f))` into that fold's test rows.
pub fn bootstrap_rows(folds: &Folds, b: usize, seed: u32) -> Vec<Vec<Vec<usize>>> {
    let mut rng = LegacyRandomState::new(seed);
    (0..b)
        .map(|_| {
            (0..folds.k())
                .map(|f| {
                    let test = folds.test(f);
                    (0..test.len())
                        .map(|_| test[rng.interval(test.len() as u64 - 1) as usize])
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// A percentile confidence interval and the draws behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Lower end: the `(1 − level)/2` quantile of the draws.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// The draws' summary (its `p_value` is against the observed score, for completeness).
    pub draws: Draws,
}

/// The stimulus bootstrap of `metric` between `x` and `y` (module notes): `b` draws from
/// `seed`, a percentile interval at `level`.
pub fn bootstrap(
    x: &PreparedLayer,
    y: &PreparedLayer,
    metric: Metric,
    b: usize,
    seed: u32,
    level: f64,
) -> Result<Interval, KernelError> {
    if metric == Metric::Rsa {
        return Err(KernelError::Invalid(
            "no bootstrap for rsa: a resampled stimulus's copies make zero-distance RDM pairs"
                .into(),
        ));
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(KernelError::Invalid(format!(
            "the confidence level is {level}; it must be between 0 and 1"
        )));
    }
    let observed = score_of(x, y, metric)?;
    let (xi, yi) = (x.input_rows(), y.input_rows());
    let folds = x.folds();
    let on = |idx: &[usize], split: Folds| -> Result<crate::pair::Score, KernelError> {
        let xb = PreparedLayer::with_folds(
            rows(xi.as_ref(), idx).as_ref(),
            x.settings(),
            split.clone(),
        )?;
        let yb = PreparedLayer::with_folds(rows(yi.as_ref(), idx).as_ref(), y.settings(), split)?;
        Pair::new(&xb, &yb)?.score(metric)
    };
    let values: Vec<f64> = bootstrap_rows(folds, b, seed)
        .par_iter()
        .map(|picks| {
            if !metric.cross_validated() {
                // CKA: the statistic of all stimuli, on the resampled stimuli.
                let idx: Vec<usize> = picks.iter().flatten().copied().collect();
                let n = idx.len();
                let half =
                    Folds::from_test_rows(n, vec![(0..n / 2).collect(), (n / 2..n).collect()])?;
                return on(&idx, half).map(|s| s.score);
            }
            // Each fold's map is fitted on its own train rows, as in the score; its held-out
            // evaluation is on the fold's resampled test rows.
            let fold_scores = (0..folds.k())
                .map(|f| {
                    let mut idx = folds.train(f);
                    let n_train = idx.len();
                    idx.extend_from_slice(&picks[f]);
                    let n = idx.len();
                    let split = Folds::from_test_rows(
                        n,
                        vec![(n_train..n).collect(), (0..n_train).collect()],
                    )?;
                    Ok(on(&idx, split)?.fold_scores[0])
                })
                .collect::<Result<Vec<f64>, KernelError>>()?;
            Ok(stats::mean(&fold_scores))
        })
        .collect::<Result<_, _>>()?;
    Ok(Interval {
        level,
        low: quantile(&values, (1.0 - level) / 2.0),
        high: quantile(&values, (1.0 + level) / 2.0),
        draws: Draws::new(observed, values, seed),
    })
}

/// The rotation null of `metric` (permutation or soft-matching): `r` scores of X rotated by
/// `haar_rotation(n_x, seed + k)`, k = 0..r, against Y.
pub fn rotation_null(
    x: &PreparedLayer,
    y: &PreparedLayer,
    metric: Metric,
    r: usize,
    seed: u32,
) -> Result<Vec<f64>, KernelError> {
    if !matches!(metric, Metric::Permutation | Metric::SoftMatching) {
        return Err(KernelError::Invalid(format!(
            "the rotation null needs a basis-dependent metric (permutation or soft-matching); {} is rotation-invariant",
            crate::settings::Named::name(metric)
        )));
    }
    let xi = x.input_rows();
    (0..r)
        .into_par_iter()
        .map(|k| {
            let s = seed.checked_add(k as u32).ok_or_else(|| {
                KernelError::Invalid("the rotation seeds pass 2^32 − 1; use a smaller seed".into())
            })?;
            let xr = rotation::rotate(xi.as_ref(), s)?;
            let xl = PreparedLayer::with_folds(xr.as_ref(), x.settings(), x.folds().clone())?;
            score_of(&xl, y, metric)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [3.0, 1.0, 4.0, 1.0, 5.0];
        // numpy.quantile([3, 1, 4, 1, 5], [0, 0.5, 0.95, 1]) = [1, 3, 4.8, 5]
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert!((quantile(&v, 0.95) - 4.8).abs() < 1e-12);
        assert_eq!(quantile(&v, 1.0), 5.0);
    }

    #[test]
    fn p_values_count_the_observed_value_as_one_draw() {
        let d = Draws::new(0.5, vec![0.1, 0.6, 0.5, 0.2], 0);
        assert_eq!(d.p_value, 3.0 / 5.0);
        assert_eq!(Draws::new(9.0, vec![0.1; 99], 0).p_value, 0.01);
    }
}
