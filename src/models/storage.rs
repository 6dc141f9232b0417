//! Reading candle's CPU storage in repflow's own ops (`conv`, `norm`, `elementwise`): f32
//! data, contiguous slices and image planes in either NCHW or channel-major order.

use candle_core::{CpuStorage, Layout, Result, Tensor};

/// Whether `xs` is an f32 tensor on the CPU (where repflow's own ops run).
pub fn is_cpu_f32(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32
}

/// The storage's f32 values (all of them; the layout says which are the tensor's).
pub fn f32_data<'a>(storage: &'a CpuStorage, op: &str) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(data) => Ok(data),
        _ => candle_core::bail!("{op}: only f32 tensors are supported"),
    }
}

/// The tensor's values, which must be contiguous.
pub fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = f32_data(storage, op)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Where plane (b, c) of a 4-D tensor starts (NCHW or channel-major); planes must be
/// contiguous.
pub fn plane_start(layout: &Layout, op: &str) -> Result<impl Fn(usize, usize) -> usize + Sync> {
    let (st, dims) = (layout.stride(), layout.dims());
    if st[3] != 1 || st[2] != dims[3] {
        candle_core::bail!("{op}: image planes must be contiguous")
    }
    let (start, sb, sc) = (layout.start_offset(), st[0], st[1]);
    Ok(move |b: usize, c: usize| start + b * sb + c * sc)
}

/// `xs` itself when its image planes are contiguous, a contiguous copy otherwise.
pub fn planes_contiguous(xs: &Tensor) -> Result<Tensor> {
    let (st, w) = (xs.stride(), xs.dim(3)?);
    if st[3] == 1 && st[2] == w {
        Ok(xs.clone())
    } else {
        xs.contiguous()
    }
}
