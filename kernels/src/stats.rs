//! Column statistics, average ranks and Pearson correlations.

use faer::{Mat, MatRef};
use rayon::prelude::*;

/// Whether every value of `col` is the same (exact equality; an empty sequence counts as not constant).
pub fn is_constant(col: impl Iterator<Item = f64>) -> bool {
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    for v in col {
        min = min.min(v);
        max = max.max(v);
    }
    min == max
}

/// Average ranks (1-based; tied values share the mean of their ranks), as
/// `scipy.stats.rankdata(method="average")`.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // ranks start+1 ..= end share their mean
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Replaces every column of `x` by its average ranks.
pub fn rank_columns(x: MatRef<'_, f64>) -> Mat<f64> {
    let cols: Vec<Vec<f64>> = (0..x.ncols())
        .into_par_iter()
        .map(|j| average_ranks(&x.col(j).iter().copied().collect::<Vec<_>>()))
        .collect();
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| cols[j][i])
}

/// Pearson's r between two equally long sequences; `None` when either is constant
/// (the correlation is undefined).
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    debug_assert_eq!(a.len(), b.len());
    if is_constant(a.iter().copied()) || is_constant(b.iter().copied()) {
        return None;
    }
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&u, &v) in a.iter().zip(b) {
        let (du, dv) = (u - ma, v - mb);
        sab += du * dv;
        saa += du * du;
        sbb += dv * dv;
    }
    Some((sab / (saa.sqrt() * sbb.sqrt())).clamp(-1.0, 1.0))
}

/// Correlation (Pearson, or Spearman when `spearman`) between two sequences; undefined is `None`.
pub fn correlation(a: &[f64], b: &[f64], spearman: bool) -> Option<f64> {
    if spearman {
        pearson(&average_ranks(a), &average_ranks(b))
    } else {
        pearson(a, b)
    }
}

/// Column-by-column correlations of two matrices of equal shape: entry `j` compares
/// `a[:, j]` with `b[:, j]`. Undefined correlations (a constant column) count as 0.
/// Returns the correlations and how many were undefined.
pub fn paired_column_correlations(
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
    spearman: bool,
) -> (Vec<f64>, usize) {
    assert_eq!(a.shape(), b.shape());
    let rs: Vec<Option<f64>> = (0..a.ncols())
        .into_par_iter()
        .map(|j| {
            let u: Vec<f64> = a.col(j).iter().copied().collect();
            let v: Vec<f64> = b.col(j).iter().copied().collect();
            correlation(&u, &v, spearman)
        })
        .collect();
    let undefined = rs.iter().filter(|r| r.is_none()).count();
    (
        rs.into_iter().map(|r| r.unwrap_or(0.0)).collect(),
        undefined,
    )
}

/// Correlations as a backend returns them (NaN where a column is constant) in the form
/// [`paired_column_correlations`] gives: clamped to [−1, 1], an undefined one taken as 0,
/// and how many were undefined.
pub fn defined_correlations(rs: Vec<f64>) -> (Vec<f64>, usize) {
    let undefined = rs.iter().filter(|r| r.is_nan()).count();
    let rs = rs
        .into_iter()
        .map(|r| if r.is_nan() { 0.0 } else { r.clamp(-1.0, 1.0) })
        .collect();
    (rs, undefined)
}

/// `Mᵀ diag(d) M` (with `d = 1` when `None`): one triangle computed, then mirrored, for half
/// the work of a general product.
pub fn gram(m: MatRef<'_, f64>, d: Option<&dyn Fn(usize) -> f64>) -> Mat<f64> {
    let (rows, r) = m.shape();
    let scaled;
    let rhs = match d {
        Some(d) => {
            scaled = Mat::from_fn(rows, r, |i, k| m[(i, k)] * d(i));
            scaled.as_ref()
        }
        None => m,
    };
    let mut out = crate::products::lower(m, rhs);
    for j in 0..r {
        for i in 0..j {
            out[(i, j)] = out[(j, i)];
        }
    }
    out
}

/// Mean of a slice.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Population standard deviation (ddof = 0, numpy's default) of a slice.
pub fn std(xs: &[f64]) -> f64 {
    let mu = mean(xs);
    (xs.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / xs.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_share_their_mean_rank() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn constant_sequences_have_no_correlation() {
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        let r = pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]).unwrap();
        assert!((r - 0.993_399_267_798_783).abs() < 1e-12);
    }
}
