//! Inference on summaries of many scores: the mean over seed pairs with its standard error,
//! a mean of scores against the matching mean of their null draws, and a correlation with a
//! permutation p-value.

use crate::inference::{permutations, Draws};
use crate::{stats, KernelError};

/// The mean of one value per seed pair and, when it can be estimated, its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairMean {
    /// Mean over the pairs.
    pub mean: f64,
    /// Standard error of that mean by the delete-one-network jackknife; `None` with fewer
    /// than three networks or two pairs.
    pub se: Option<f64>,
    /// Number of pairs.
    pub pairs: usize,
    /// Number of distinct networks among them.
    pub networks: usize,
}

/// Mean over seed pairs `(network a, network b, value)` and its standard error.
///
/// Pairs that share a network are not independent (three seeds give three pairs but only
/// three networks), so the standard error of the mean over pairs is not `std / √pairs`: it is
/// the delete-one-network jackknife of that mean (the jackknife of a U-statistic, Arvesen
/// 1969): for each network k, the mean over the pairs without k, then
/// `se² = (K − 1)/K · Σ_k (mean_k − mean_·)²` over the K networks whose removal leaves a
/// pair. Non-finite values are skipped.
pub fn pair_mean<T: PartialEq + Clone>(values: &[(T, T, f64)]) -> PairMean {
    let ok: Vec<&(T, T, f64)> = values.iter().filter(|v| v.2.is_finite()).collect();
    let mut networks: Vec<&T> = Vec::new();
    for (a, b, _) in &ok {
        for n in [a, b] {
            if !networks.contains(&n) {
                networks.push(n);
            }
        }
    }
    let all: Vec<f64> = ok.iter().map(|v| v.2).collect();
    let mean = if all.is_empty() {
        f64::NAN
    } else {
        stats::mean(&all)
    };
    let se = (networks.len() >= 3 && ok.len() >= 2).then(|| {
        let leave_out: Vec<f64> = networks
            .iter()
            .filter_map(|&k| {
                let rest: Vec<f64> = ok
                    .iter()
                    .filter(|v| &v.0 != k && &v.1 != k)
                    .map(|v| v.2)
                    .collect();
                (!rest.is_empty()).then(|| stats::mean(&rest))
            })
            .collect();
        let k = leave_out.len() as f64;
        let centre = stats::mean(&leave_out);
        ((k - 1.0) / k * leave_out.iter().map(|t| (t - centre).powi(2)).sum::<f64>()).sqrt()
    });
    PairMean {
        mean,
        se: se.filter(|s| s.is_finite()),
        pairs: ok.len(),
        networks: networks.len(),
    }
}

/// The mean of several observed scores against the means of their null draws taken draw by
/// draw: draw k of the pooled null is the mean over scores of each score's draw k.
///
/// Valid when the draws of different scores are exchangeable with their observed values
/// jointly (the rotation null: each layer rotated independently, the joint distribution of
/// the layers invariant under the null); it tests "the mean over layers exceeds chance",
/// which needs far fewer draws than a corrected test of every layer.
pub fn pooled_null(observed: &[f64], draws: &[&[f64]], seed: u32) -> Result<Draws, KernelError> {
    let n = draws.first().map_or(0, |d| d.len());
    if observed.is_empty() || observed.len() != draws.len() || n == 0 {
        return Err(KernelError::Invalid(format!(
            "a pooled null needs one non-empty set of draws per score ({} scores, {} sets)",
            observed.len(),
            draws.len()
        )));
    }
    if let Some(d) = draws.iter().find(|d| d.len() != n) {
        return Err(KernelError::Invalid(format!(
            "a pooled null needs the same number of draws for every score ({n} and {})",
            d.len()
        )));
    }
    let pooled = (0..n)
        .map(|k| draws.iter().map(|d| d[k]).sum::<f64>() / draws.len() as f64)
        .collect();
    Ok(Draws::new(stats::mean(observed), pooled, seed))
}

/// A Pearson correlation and its one-sided permutation p-value.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelationTest {
    /// Pearson r of the pairs.
    pub r: f64,
    /// `P(r_perm ≥ r)` under random pairings of the two series.
    pub p_value: f64,
    /// Number of pairings in the null.
    pub permutations: usize,
    /// Whether the null enumerates every pairing (n ≤ [`EXACT_UP_TO`]) or samples them.
    pub exact: bool,
}

/// Series up to this length get an exact null (all n! pairings).
pub const EXACT_UP_TO: usize = 8;

/// Pearson r of `x` and `y` with the one-sided (`r` greater than chance) permutation
/// p-value, as `scipy.stats.permutation_test(..., permutation_type="pairings",
/// alternative="greater")` computes it: every pairing of `y` with `x` when n ≤ 8
/// (p = #{r_perm ≥ r}/n!, the identity included), otherwise `n_random` pairings
/// `RandomState(seed).permutation(n)` drawn in turn (p = (1 + #{r_perm ≥ r})/(1 + n_random)).
/// Comparisons allow scipy's relative tolerance, 100 ε |r|, so pairings equal to r up to
/// rounding count as at least r.
pub fn correlation_test(
    x: &[f64],
    y: &[f64],
    n_random: usize,
    seed: u32,
) -> Result<CorrelationTest, KernelError> {
    if x.len() != y.len() || x.len() < 3 {
        return Err(KernelError::Invalid(format!(
            "a correlation test needs two series of equal length ≥ 3 (got {} and {})",
            x.len(),
            y.len()
        )));
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(KernelError::Invalid(
            "a correlation test needs finite values".into(),
        ));
    }
    let Some(r) = stats::pearson(x, y) else {
        return Err(KernelError::Invalid(
            "a correlation test needs two series that are not constant".into(),
        ));
    };
    let threshold = r - (100.0 * f64::EPSILON * r).abs();
    let at_least = |perm: &[usize]| {
        let yp: Vec<f64> = perm.iter().map(|&i| y[i]).collect();
        stats::pearson(x, &yp).is_some_and(|rp| rp >= threshold)
    };
    let n = x.len();
    if n <= EXACT_UP_TO {
        let (mut count, mut total) = (0usize, 0usize);
        let mut perm: Vec<usize> = (0..n).collect();
        loop {
            total += 1;
            count += usize::from(at_least(&perm));
            if !next_permutation(&mut perm) {
                break;
            }
        }
        return Ok(CorrelationTest {
            r,
            p_value: count as f64 / total as f64,
            permutations: total,
            exact: true,
        });
    }
    if n_random == 0 {
        return Err(KernelError::Invalid(
            "a sampled correlation test needs at least one permutation".into(),
        ));
    }
    let count = permutations(n, n_random, seed)
        .iter()
        .filter(|p| at_least(p))
        .count();
    Ok(CorrelationTest {
        r,
        p_value: (1 + count) as f64 / (1 + n_random) as f64,
        permutations: n_random,
        exact: false,
    })
}

/// Lexicographic successor of `p` in place; false after the last permutation.
fn next_permutation(p: &mut [usize]) -> bool {
    let Some(i) = (1..p.len()).rev().find(|&i| p[i - 1] < p[i]) else {
        return false;
    };
    let j = (i..p.len())
        .rev()
        .find(|&j| p[j] > p[i - 1])
        .expect("a larger element");
    p.swap(i - 1, j);
    p[i..].reverse();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_seeds_jackknife_is_twice_the_naive_error() {
        // pairs (0,1), (0,2), (1,2): leaving out a network leaves the one pair without it
        let v = [(0, 1, 0.5), (0, 2, 0.6), (1, 2, 0.7)];
        let m = pair_mean(&v);
        assert!((m.mean - 0.6).abs() < 1e-15);
        let naive = (0.01f64 / 3.0).sqrt(); // sample std 0.1 over √3
        assert!((m.se.unwrap() - 2.0 * naive).abs() < 1e-12, "{m:?}");
        assert_eq!((m.pairs, m.networks), (3, 3));
    }

    #[test]
    fn one_pair_or_two_networks_have_no_standard_error() {
        assert_eq!(pair_mean(&[("a", "b", 0.5)]).se, None);
        assert_eq!(pair_mean(&[("a", "b", 0.5), ("b", "a", 0.6)]).se, None);
        assert!(pair_mean::<u8>(&[]).mean.is_nan());
    }

    #[test]
    fn pooled_null_averages_draw_by_draw() {
        let d = pooled_null(&[1.0, 0.0], &[&[0.0, 2.0], &[0.0, 0.0]], 7).unwrap();
        assert_eq!(d.values, vec![0.0, 1.0]);
        assert_eq!(d.p_value, 2.0 / 3.0); // observed mean 0.5: one draw (1.0) is above
        assert!(pooled_null(&[1.0], &[&[0.0], &[1.0]], 0).is_err());
        assert!(pooled_null(&[1.0, 2.0], &[&[0.0], &[1.0, 2.0]], 0).is_err());
    }

    #[test]
    fn exact_null_enumerates_every_pairing() {
        // a perfectly ordered series of 5: only the identity reaches r = 1
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let t = correlation_test(&x, &x, 0, 0).unwrap();
        assert_eq!((t.permutations, t.exact), (120, true));
        assert!((t.p_value - 1.0 / 120.0).abs() < 1e-15);
        let mut p = [0, 1, 2];
        let mut seen = 1;
        while next_permutation(&mut p) {
            seen += 1;
        }
        assert_eq!((seen, p), (6, [2, 1, 0]));
    }

    #[test]
    fn bad_series_are_refused() {
        assert!(correlation_test(&[1.0, 2.0], &[1.0, 2.0], 9, 0).is_err());
        assert!(correlation_test(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0], 9, 0).is_err());
        // 0.1 three times: the mean is not 0.1, the deviations not 0, r would be ±1
        assert!(correlation_test(&[0.3, 0.5, 0.4], &[0.1, 0.1, 0.1], 9, 0).is_err());
        assert!(correlation_test(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0], 9, 0).is_err());
        assert!(correlation_test(&[1.0; 9], &[1.0; 8], 9, 0).is_err());
    }
}
