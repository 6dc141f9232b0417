//! Column statistics, average ranks and Pearson correlations.

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef};
use rayon::prelude::*;

/// The standard normal distribution function Φ(x), from the complementary error function
/// (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The standard normal quantile Φ⁻¹(p) for p in (0, 1) (Acklam's rational approximation,
/// relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

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

/// Mean of each column.
pub fn col_means(x: MatRef<'_, f64>) -> Vec<f64> {
    let m = x.nrows() as f64;
    (0..x.ncols())
        .map(|j| x.col(j).iter().sum::<f64>() / m)
        .collect()
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
    let mut out = Mat::<f64>::zeros(r, r);
    triangular::matmul(
        out.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        m.transpose(),
        BlockStructure::Rectangular,
        rhs,
        BlockStructure::Rectangular,
        1.0,
        faer::get_global_parallelism(),
    );
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
    fn the_normal_distribution_matches_scipy() {
        // scipy.stats.norm.cdf / .ppf
        assert!((normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 2e-7);
        assert!((normal_cdf(-1.0) - 0.158_655_253_931_457_05).abs() < 2e-8);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((normal_quantile(0.001) + 3.090_232_306_167_813_5).abs() < 1e-8);
        assert!(normal_quantile(0.5).abs() < 1e-15);
    }

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
