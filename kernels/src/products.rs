//! The two products the metrics spend most of their time in — `lhs · rhs` (the
//! cross-products `aᵀ b`) and the lower triangle of a symmetric `aᵀ b` (the Gram matrices) —
//! as one sequential faer product per thread, each on its own block of output columns.
//!
//! Why by hand: faer's own parallel product splits the work so that two threads reach
//! 125–130 Gflop/s for `XᵀY` at m = 10,000, n = 1,024–2,048 on the 2-core machine of the
//! README, against 145–153 Gflop/s for two sequential products on halves of the output, and
//! 240 against 270 (counted as full products) for the symmetric one. faer splits output
//! tiles among threads, never the inner dimension, so every output value is the same sum in
//! the same order either way: the results are bit-identical to faer's (tested below).

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread (splitting costs more).
const SPLIT_MIN_WORK: usize = 1 << 20;

/// Each block of output columns gets at least this many columns.
const MIN_BLOCK_COLS: usize = 16;

/// How many column blocks a product of `work` multiply-adds over `cols` output columns
/// gets: one per thread of faer's global parallelism, fewer when they would be thin.
fn blocks(work: usize, cols: usize) -> usize {
    if work < SPLIT_MIN_WORK {
        return 1;
    }
    faer::get_global_parallelism()
        .degree()
        .min(cols / MIN_BLOCK_COLS)
        .max(1)
}

/// Splits `m` into column blocks that start at `cuts[0..]` (the last cut is its width).
fn column_blocks<'a>(mut m: MatMut<'a, f64>, cuts: &[usize]) -> Vec<(usize, MatMut<'a, f64>)> {
    let mut out = Vec::with_capacity(cuts.len().saturating_sub(1));
    for pair in cuts.windows(2) {
        let (block, rest) = m.split_at_col_mut(pair[1] - pair[0]);
        out.push((pair[0], block));
        m = rest;
    }
    out
}

/// `dst = lhs · rhs`, the columns of `dst` split evenly among the threads.
pub fn matmul_into(dst: MatMut<'_, f64>, lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>) {
    let q = rhs.ncols();
    let t = blocks(lhs.nrows() * lhs.ncols() * q, q);
    let cuts: Vec<usize> = (0..=t).map(|j| j * q / t).collect();
    column_blocks(dst, &cuts)
        .into_par_iter()
        .for_each(|(start, block)| {
            let w = block.ncols();
            matmul(
                block,
                Accum::Replace,
                lhs,
                rhs.subcols(start, w),
                1.0,
                Par::Seq,
            );
        });
}

/// `lhs · rhs`.
pub fn product(lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(lhs.nrows(), rhs.ncols());
    matmul_into(out.as_mut(), lhs, rhs);
    out
}

/// `aᵀ b` (a: rows × p, b: rows × q → p × q).
pub fn cross(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.ncols(), b.ncols());
    matmul_into(out.as_mut(), a.transpose(), b);
    out
}

/// Where `t` column blocks of an `r × r` lower triangle start (and, last, `r`), each
/// block holding about a `1/t` share of the triangle.
fn triangle_cuts(r: usize, t: usize) -> Vec<usize> {
    (0..=t)
        .map(|j| {
            let share = 1.0 - (1.0 - j as f64 / t as f64).sqrt();
            ((r as f64 * share).round() as usize).min(r)
        })
        .collect()
}

/// The lower triangle (diagonal included) of `aᵀ b` for a symmetric product (`a` and `b`:
/// rows × r; `b` is `a` or `a` with its rows weighted); the strict upper triangle is left
/// zero. Column block `j` of `t` starts at `r·(1 − √(1 − j/t))`, so every block holds
/// about the same share of the triangle.
pub fn lower(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let r = a.ncols();
    let mut out = Mat::<f64>::zeros(r, r);
    let cuts = triangle_cuts(r, blocks(a.nrows() * r * r / 2, r));
    column_blocks(out.as_mut(), &cuts)
        .into_par_iter()
        .for_each(|(s, block)| {
            let w = block.ncols();
            if w == 0 {
                return;
            }
            let (top, below) = block.split_at_row_mut(s + w);
            let diagonal = top.split_at_row_mut(s).1;
            let (a_block, b_block) = (a.subcols(s, w), b.subcols(s, w));
            triangular::matmul(
                diagonal,
                BlockStructure::TriangularLower,
                Accum::Replace,
                a_block.transpose(),
                BlockStructure::Rectangular,
                b_block,
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
            if s + w < r {
                matmul(
                    below,
                    Accum::Replace,
                    a.subcols(s + w, r - s - w).transpose(),
                    b_block,
                    1.0,
                    Par::Seq,
                );
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
        let mut state = seed;
        Mat::from_fn(rows, cols, |_, _| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
    }

    fn bits(m: MatRef<'_, f64>) -> Vec<u64> {
        (0..m.ncols())
            .flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)].to_bits()))
            .collect()
    }

    /// `lhs · rhs` by faer's own product with parallelism `par`.
    fn faer_product(lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let mut out = Mat::<f64>::zeros(lhs.nrows(), rhs.ncols());
        matmul(out.as_mut(), Accum::Replace, lhs, rhs, 1.0, par);
        out
    }

    fn faer_lower(a: MatRef<'_, f64>, b: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let mut out = Mat::<f64>::zeros(a.ncols(), a.ncols());
        triangular::matmul(
            out.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            a.transpose(),
            BlockStructure::Rectangular,
            b,
            BlockStructure::Rectangular,
            1.0,
            par,
        );
        out
    }

    /// Shapes from tiny (one block) to several blocks with ragged edges.
    const SHAPES: &[(usize, usize, usize)] = &[
        (5, 3, 4),
        (700, 37, 53),
        (2_000, 129, 300),
        (3_001, 257, 190),
    ];

    #[test]
    fn cross_is_faers_product_bit_for_bit() {
        for &(rows, p, q) in SHAPES {
            let (a, b) = (matrix(rows, p, 1), matrix(rows, q, 2));
            let ours = bits(cross(a.as_ref(), b.as_ref()).as_ref());
            for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                let theirs = faer_product(a.transpose(), b.as_ref(), par);
                assert!(ours == bits(theirs.as_ref()), "{rows}×{p}, {q}: {par:?}");
            }
        }
    }

    #[test]
    fn product_is_faers_product_bit_for_bit() {
        for &(rows, p, q) in SHAPES {
            let (a, b) = (matrix(rows, p, 4), matrix(p, q, 5));
            let ours = bits(product(a.as_ref(), b.as_ref()).as_ref());
            // and through a transposed right-hand side, as Procrustes' X → Y map
            let bt = b.transpose().to_owned();
            let via = bits(product(a.as_ref(), bt.transpose()).as_ref());
            for par in [Par::Seq, Par::rayon(2)] {
                let theirs = faer_product(a.as_ref(), b.as_ref(), par);
                assert!(ours == bits(theirs.as_ref()), "{rows}×{p}, {q}: {par:?}");
                let theirs = faer_product(a.as_ref(), bt.transpose(), par);
                assert!(via == bits(theirs.as_ref()), "{rows}×{p}, {q}ᵀ: {par:?}");
            }
        }
    }

    #[test]
    fn lower_is_faers_triangular_product_bit_for_bit() {
        for &(rows, r, _) in SHAPES {
            let a = matrix(rows, r, 3);
            // a weighted copy, as the ridge's weighted Gram passes
            let b = Mat::from_fn(rows, r, |i, k| a[(i, k)] * (1.0 + (i % 7) as f64));
            for (lhs, rhs) in [(&a, &a), (&a, &b)] {
                let ours = bits(lower(lhs.as_ref(), rhs.as_ref()).as_ref());
                for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                    let theirs = faer_lower(lhs.as_ref(), rhs.as_ref(), par);
                    assert!(ours == bits(theirs.as_ref()), "{rows}×{r}: {par:?}");
                }
            }
        }
    }

    #[test]
    fn triangle_cuts_share_the_triangle_evenly() {
        for (r, t) in [(1_000, 4), (2_048, 2), (257, 3), (16, 1)] {
            let cuts = triangle_cuts(r, t);
            assert_eq!((cuts[0], cuts[t]), (0, r), "{r}, {t}");
            let size = |c: usize| ((r - c) * (r - c + 1) / 2) as f64;
            for pair in cuts.windows(2) {
                assert!(pair[0] <= pair[1], "{cuts:?}");
                let share = (size(pair[0]) - size(pair[1])) / size(0);
                // one rounded cut moves a block's share by at most 2/r
                assert!(
                    (share - 1.0 / t as f64).abs() <= 2.0 / r as f64,
                    "{cuts:?}: {share}"
                );
            }
        }
    }
}
