//! Host-side staging between faer views and the column-major buffers the device reads and
//! writes: whole columns are copied as slices where a view's columns are contiguous (test
//! blocks of a layer, whole matrices), element by element otherwise (transposed views,
//! which are the small maps). Before, every upload went element by element through faer's
//! indexing — the host copy, not the bus, would have bounded a batched audit's transfers.

use faer::{Mat, MatRef};

/// `m` written column-major into `out` with leading dimension `ld` (≥ `m.nrows()`; rows
/// below `m.nrows()` in each column are left as they are, so a zeroed `out` pads).
pub(crate) fn write_columns(m: MatRef<'_, f64>, out: &mut [f64], ld: usize) {
    let rows = m.nrows();
    assert!(ld >= rows && out.len() >= ld * m.ncols().saturating_sub(1) + rows);
    for j in 0..m.ncols() {
        let dst = &mut out[j * ld..j * ld + rows];
        match m.col(j).try_as_col_major() {
            Some(col) => dst.copy_from_slice(col.as_slice()),
            None => {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = m[(i, j)];
                }
            }
        }
    }
}

/// `m` as a column-major buffer (leading dimension `m.nrows()`).
pub(crate) fn column_major(m: MatRef<'_, f64>) -> Vec<f64> {
    let mut out = vec![0.0; m.nrows() * m.ncols()];
    write_columns(m, &mut out, m.nrows());
    out
}

/// `mats` (each at most `rows` rows, `cols` columns) as one buffer of `rows × cols`
/// column-major matrices, one after another, each padded below with zero rows (never empty:
/// a device buffer needs one element).
pub(crate) fn stacked(mats: &[MatRef<'_, f64>], rows: usize, cols: usize) -> Vec<f64> {
    let mut host = vec![0.0; (mats.len() * rows * cols).max(1)];
    if rows * cols > 0 {
        for (m, out) in mats.iter().zip(host.chunks_mut(rows * cols)) {
            write_columns(*m, out, rows);
        }
    }
    host
}

/// The `rows × cols` matrix stored column-major in `host` from `base` (leading dimension
/// `rows`).
pub(crate) fn from_column_major(host: &[f64], base: usize, rows: usize, cols: usize) -> Mat<f64> {
    MatRef::from_column_major_slice(&host[base..base + rows * cols], rows, cols).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Mat<f64> {
        Mat::from_fn(rows, cols, |i, j| (i * 31 + j * 7) as f64 - 0.5 * j as f64)
    }

    /// Element-by-element column-major copy: the reference.
    fn slow(m: MatRef<'_, f64>) -> Vec<f64> {
        (0..m.ncols())
            .flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)]))
            .collect()
    }

    #[test]
    fn views_of_every_layout_stage_as_column_major() {
        let a = matrix(23, 9);
        let views = [
            a.as_ref(),
            a.as_ref().subrows(5, 11),
            a.as_ref().subcols(2, 4),
            a.as_ref().transpose(),
            a.as_ref().subrows(3, 7).transpose(),
            a.as_ref().subrows(0, 0),
        ];
        for v in views {
            let host = column_major(v);
            assert_eq!(host, slow(v), "{:?}", v.shape());
            assert_eq!(
                from_column_major(&host, 0, v.nrows(), v.ncols()),
                v.to_owned()
            );
        }
        // padded below with zeros, one matrix after another
        let (b, c) = (a.as_ref().subrows(0, 4), a.as_ref().subrows(4, 6));
        let host = stacked(&[b, c], 6, 9);
        let padded = from_column_major(&host, 0, 6, 9);
        assert_eq!(padded.as_ref().subrows(0, 4), b);
        assert!((4..6).all(|i| (0..9).all(|j| padded[(i, j)] == 0.0)));
        assert_eq!(from_column_major(&host, 6 * 9, 6, 9), c.to_owned());
    }
}
