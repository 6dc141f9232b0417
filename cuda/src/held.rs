//! Layers kept on the device while many pairs and folds read them ([`Backend::hold`]): each
//! whole layer is sent once, and a fold's test block — a view into it on the host — is
//! found on the device by its address, so that Procrustes' held-out predictions and their
//! correlations run on device data ([`Backend::held_correlations`]) instead of sending the
//! block again for every pair, fold and direction.
//!
//! [`Backend::hold`]: repflow_kernels::backend::Backend::hold
//! [`Backend::held_correlations`]: repflow_kernels::backend::Backend::held_correlations

use cudarc::driver::{CudaSlice, CudaView};
use faer::MatRef;

use crate::linalg::{Gpu, GpuResult};

/// Share of the device's free memory the held layers may take (the batches need the rest).
const HELD_SHARE: f64 = 0.5;

/// One layer on the device.
struct HeldLayer {
    /// The host data's address, rows (its leading dimension) and columns.
    host: usize,
    rows: usize,
    cols: usize,
    data: CudaSlice<f64>,
    /// Holds not yet released.
    holds: usize,
}

/// The layers held on one device.
#[derive(Default)]
pub(crate) struct HeldLayers {
    layers: Vec<HeldLayer>,
}

impl HeldLayers {
    /// Holds `layers` (contiguous, column-major) on the device as far as its free memory
    /// allows; a layer already held gains a hold. A layer that is not contiguous, does not
    /// fit or fails to upload is simply not held (its blocks are sent per call, as before).
    pub(crate) fn hold(&mut self, gpu: &Gpu, layers: &[MatRef<'_, f64>]) {
        for l in layers {
            let host = l.as_ptr() as usize;
            if let Some(h) = self.find(host, l.nrows(), l.ncols()) {
                h.holds += 1;
                continue;
            }
            if l.row_stride() != 1 || l.col_stride() != l.nrows() as isize {
                continue;
            }
            let bytes = (8 * l.nrows() * l.ncols()) as f64;
            let fits = gpu
                .free_bytes()
                .is_ok_and(|free| bytes <= HELD_SHARE * free as f64);
            if let (true, Ok(data)) = (fits, gpu.upload(*l)) {
                self.layers.push(HeldLayer {
                    host,
                    rows: l.nrows(),
                    cols: l.ncols(),
                    data,
                    holds: 1,
                });
            }
        }
    }

    /// Ends a hold of each of `layers` (those never held are ignored); a layer with no hold
    /// left leaves the device.
    pub(crate) fn release(&mut self, layers: &[MatRef<'_, f64>]) {
        for l in layers {
            if let Some(h) = self.find(l.as_ptr() as usize, l.nrows(), l.ncols()) {
                h.holds -= 1;
            }
        }
        self.layers.retain(|h| h.holds > 0);
    }

    fn find(&mut self, host: usize, rows: usize, cols: usize) -> Option<&mut HeldLayer> {
        self.layers
            .iter_mut()
            .find(|h| (h.host, h.rows, h.cols) == (host, rows, cols))
    }

    /// `view` on the device, with its leading dimension, when it lies inside a held layer.
    pub(crate) fn device_view(&self, view: MatRef<'_, f64>) -> Option<(CudaView<'_, f64>, usize)> {
        self.layers.iter().find_map(|h| {
            let offset = locate(h.host, h.rows, h.cols, view)?;
            Some((h.data.slice(offset..), h.rows))
        })
    }
}

/// Where `view` starts (in elements) inside the column-major `rows × cols` host matrix at
/// address `start`, when it is a block of it: same leading dimension, rows and columns
/// within bounds. `None` otherwise (another matrix, a transposed view, a stride).
pub(crate) fn locate(
    start: usize,
    rows: usize,
    cols: usize,
    view: MatRef<'_, f64>,
) -> Option<usize> {
    let at = view.as_ptr() as usize;
    let bytes = at.checked_sub(start)?;
    if bytes % 8 != 0 || view.row_stride() != 1 || view.col_stride() != rows as isize {
        return None;
    }
    let offset = bytes / 8;
    let (r0, c0) = (offset % rows.max(1), offset / rows.max(1));
    (r0 + view.nrows() <= rows && c0 + view.ncols() <= cols).then_some(offset)
}

/// `x m` on the device, for `x` a held view (`(x, ldx)`, `rows × p`) and `m` (`p × q`)
/// from the host: the held-out predictions, left on the device (`rows × q`).
pub(crate) fn predict(
    gpu: &Gpu,
    (x, ldx): (&CudaView<'_, f64>, usize),
    rows: usize,
    m: MatRef<'_, f64>,
) -> GpuResult<CudaSlice<f64>> {
    let dm = gpu.upload(m)?;
    gpu.gemm(
        false,
        false,
        (rows, m.ncols(), m.nrows()),
        x,
        ldx,
        &dm,
        m.nrows(),
    )
}

#[cfg(test)]
mod tests {
    use super::locate;
    use faer::{Mat, MatRef};

    #[test]
    fn blocks_of_a_layer_are_found_by_address() {
        // a layer's data: one contiguous column-major buffer (faer's own matrices may pad
        // their columns, which `hold` does not take)
        let data: Vec<f64> = (0..40).map(|k| k as f64).collect();
        let v = MatRef::from_column_major_slice(&data, 10, 4);
        let start = v.as_ptr() as usize;
        let at = |w| locate(start, 10, 4, w);
        assert_eq!(at(v), Some(0));
        // a fold's test rows, a column block, one element
        assert_eq!(at(v.subrows(6, 4)), Some(6));
        assert_eq!(at(v.subcols(2, 2)), Some(20));
        assert_eq!(at(v.submatrix(3, 1, 5, 3)), Some(13));
        let found = at(v.subrows(6, 4)).unwrap();
        assert_eq!(v.subrows(6, 4)[(1, 2)], data[found + 1 + 2 * 10]);
        // not blocks of it: transposed, another matrix, out of its bounds
        assert_eq!(at(v.transpose()), None);
        let other = vec![0.0; 40];
        assert_eq!(at(MatRef::from_column_major_slice(&other, 10, 4)), None);
        // a padded faer matrix's columns are not one buffer
        let padded = Mat::<f64>::zeros(10, 4);
        let p = padded.as_ref();
        assert!(p.col_stride() == 10 || locate(p.as_ptr() as usize, 10, 4, p).is_none());
        assert_eq!(locate(start, 10, 3, v.subcols(2, 2)), None);
        assert_eq!(locate(start, 5, 8, v), None);
    }
}
