//! Representational similarity analysis on all stimuli.
//!
//! A layer's RDM holds $1 - r(x_i, x_j)$ for every pair of stimuli $i < j$ (Pearson
//! correlation between the stimuli's response patterns over units). The score is the
//! Spearman (default) or Pearson correlation between the two layers' RDM upper triangles.
//! Each layer stores its triangle already ranked (for Spearman) and standardised, so a
//! pair costs one dot product.

use faer::Mat;
use rayon::prelude::*;

use crate::layer::PreparedLayer;
use crate::pair::{Pair, Score};
use crate::settings::{Corr, Metric, Setting};
use crate::stats;

/// A layer's RDM upper triangle, standardised to zero mean and unit norm.
pub struct Rdm {
    /// Standardised entries; `None` when all distances are equal (RSA undefined).
    z: Option<Vec<f64>>,
}

impl Rdm {
    /// Bytes of memory it holds.
    pub fn heap_bytes(&self) -> u64 {
        self.z.as_ref().map_or(0, |z| z.len() as u64 * 8)
    }

    /// Computes the RDM of `layer` over all stimuli, ranked when RSA compares by Spearman.
    pub fn new(layer: &PreparedLayer) -> Rdm {
        let data = layer.data();
        let (m, n) = data.shape();
        let mean = layer.mean();
        // Stimulus patterns centred and scaled to unit norm (a constant pattern stays 0).
        let mut p = Mat::from_fn(m, n, |i, j| data[(i, j)] + mean[j]);
        for i in 0..m {
            let mu = (0..n).map(|j| p[(i, j)]).sum::<f64>() / n as f64;
            let mut norm = 0.0;
            for j in 0..n {
                p[(i, j)] -= mu;
                norm += p[(i, j)] * p[(i, j)];
            }
            let inv = if norm > 0.0 { 1.0 / norm.sqrt() } else { 0.0 };
            for j in 0..n {
                p[(i, j)] *= inv;
            }
        }
        let len = m * (m - 1) / 2;
        let mut tri = vec![0.0; len];
        // Row i's entries (i, i+1..m) start at i*m − i(i+1)/2 (scipy's condensed order).
        let mut slices: Vec<(usize, &mut [f64])> = Vec::with_capacity(m);
        let mut rest: &mut [f64] = &mut tri;
        for i in 0..m.saturating_sub(1) {
            let (head, tail) = rest.split_at_mut(m - 1 - i);
            slices.push((i, head));
            rest = tail;
        }
        const BLOCK: usize = 256;
        slices.par_chunks_mut(BLOCK).for_each(|chunk| {
            let i0 = chunk[0].0;
            let rows = p.as_ref().subrows(i0, chunk.len());
            let cols = p.as_ref().subrows(i0, m - i0);
            let corr = rows * cols.transpose();
            for (r, (i, out)) in chunk.iter_mut().enumerate() {
                debug_assert_eq!(*i, i0 + r);
                for (c, v) in out.iter_mut().enumerate() {
                    *v = 1.0 - corr[(r, r + 1 + c)];
                }
            }
        });
        if layer.settings().rsa_compare == Corr::Spearman {
            tri = par_average_ranks(&tri);
        }
        let mu = stats::mean(&tri);
        let norm = tri.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>().sqrt();
        let z = if norm > 0.0 && !stats::is_constant(tri.iter().copied()) {
            Some(tri.iter().map(|v| (v - mu) / norm).collect())
        } else {
            None
        };
        Rdm { z }
    }
}

/// Average ranks with a parallel sort of (value, index) pairs (RDM triangles reach tens of
/// millions of entries; sorting contiguous pairs avoids random access into the values).
fn par_average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<(f64, u32)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, i as u32))
        .collect();
    order.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && order[end].0 == order[start].0 {
            end += 1;
        }
        let rank = (start + 1 + end) as f64 / 2.0;
        for &(_, i) in &order[start..end] {
            ranks[i as usize] = rank;
        }
        start = end;
    }
    ranks
}

/// The RSA score of a pair (on all stimuli, not cross-validated).
/// The settings RSA reads (its score's key holds exactly these).
pub const READS: &[Setting] = &[Setting::RsaCompare];

pub(crate) fn score(pair: &Pair<'_>) -> Score {
    match (&pair.x().rdm().z, &pair.y().rdm().z) {
        (Some(a), Some(b)) => {
            // Fixed chunks summed in order: rayon's `sum` groups by work stealing, which
            // made the last bit of RSA differ between runs.
            const CHUNK: usize = 1 << 14;
            let partial: Vec<f64> = a
                .par_chunks(CHUNK)
                .zip(b.par_chunks(CHUNK))
                .map(|(u, v)| u.iter().zip(v).map(|(p, q)| p * q).sum::<f64>())
                .collect();
            let r: f64 = partial.iter().sum();
            Score::whole(Metric::Rsa, r.clamp(-1.0, 1.0), 0)
        }
        _ => Score::whole(Metric::Rsa, 0.0, 1),
    }
}
