//! A 2-D convolution computed as im2col + matrix products, inside candle's autograd.
//!
//! Why by hand: candle 0.11's CPU convolution computes the input gradient with
//! `conv_transpose2d`, a direct loop that takes about half of a ResNet training step. Here the
//! forward pass is `Y = W · cols(X)`, the weight gradient `dW = Σ dY · cols(X)ᵀ` and the input
//! gradient `dX = col2im(Wᵀ · dY)`, all faer gemms. The images go through in chunks of a few
//! megabytes of columns, chunks in parallel, each thread reusing one column buffer, so the
//! column matrix (9 × the activations for a 3 × 3 conv) is never built for the whole batch.
//!
//! The output is channel-major (`out × batch × h × w`, [`Order::ChannelMajor`]), the order the
//! conv stacks keep from one layer to the next: batch norm reads each channel as one run and
//! the next convolution's products read whole rows, so no transpose, reshape or copy stands
//! between layers (each would be a copy and a gradient accumulation in candle's backward
//! pass). The input may be in either order. f32 on the CPU; other devices and dtypes use
//! candle's `conv2d`. Same parameter names and shapes as torch's `Conv2d`, so checkpoints load
//! unchanged.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp2, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::storage::{contiguous, f32_data, is_cpu_f32, plane_start, planes_contiguous};

/// Bytes of column matrix per chunk of images.
const CHUNK_BYTES: usize = 4 << 20;

thread_local! {
    /// This thread's column buffer, kept from one chunk to the next (a fresh one per chunk
    /// was an allocation, a zeroing pass and page faults each time).
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's column buffer, at least `len` long (its contents are whatever
/// the last use left).
fn with_columns<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = COLUMNS.with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    COLUMNS.with(|c| c.replace(buf));
    out
}

/// The order of a 4-D activation tensor's first two dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `batch × channels × height × width`, torch's order (images).
    Nchw,
    /// `channels × batch × height × width`: what [`Conv`] writes and the conv stacks keep.
    ChannelMajor,
}

/// The shape of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// The order of the input's dimensions.
    input: Order,
}

/// A run of output pixels of one output row whose inputs lie in the image: column offsets
/// `dst..dst + len` read input pixels `src, src + stride, …`.
struct Span {
    tap: usize,
    dst: usize,
    src: usize,
    len: usize,
}

impl Geometry {
    fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output pixels per image.
    fn l(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Rows of the column matrix (`channels · k²`).
    fn k(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Images per chunk: at most `CHUNK_BYTES` of columns, and at least four chunks per
    /// thread so that chunks, not gemms, are what runs in parallel.
    fn chunk(&self) -> usize {
        let threads = rayon::current_num_threads().max(1);
        (CHUNK_BYTES / (4 * self.k() * self.l()).max(1))
            .min(self.batch.div_ceil(4 * threads))
            .clamp(1, self.batch.max(1))
    }

    /// The chunks: (first image, images).
    fn chunks(&self) -> Vec<(usize, usize)> {
        let c = self.chunk();
        (0..self.batch)
            .step_by(c)
            .map(|b0| (b0, c.min(self.batch - b0)))
            .collect()
    }

    /// Where the input's plane (image b, channel c) starts; planes must be contiguous.
    fn input_plane(&self, layout: &Layout) -> Result<impl Fn(usize, usize) -> usize + Sync> {
        let start = plane_start(layout, "conv")?;
        let channel_major = self.input == Order::ChannelMajor;
        Ok(move |b: usize, c: usize| {
            if channel_major {
                start(c, b)
            } else {
                start(b, c)
            }
        })
    }

    /// The in-image spans of one channel plane, for every kernel tap and output row.
    fn spans(&self) -> Vec<Span> {
        let (ho, wo) = (self.out_height(), self.out_width());
        let (k, s, pad) = (self.kernel, self.stride, self.padding);
        let mut out = Vec::new();
        for ki in 0..k {
            for kj in 0..k {
                // ox is valid when 0 ≤ ox·s + kj − pad < width
                let first = pad.saturating_sub(kj).div_ceil(s);
                let end = ((self.width + pad).saturating_sub(kj)).div_ceil(s).min(wo);
                if first >= end {
                    continue;
                }
                for oy in 0..ho {
                    let iy = oy * s + ki;
                    if iy < pad || iy - pad >= self.height {
                        continue;
                    }
                    out.push(Span {
                        tap: ki * k + kj,
                        dst: oy * wo + first,
                        src: (iy - pad) * self.width + first * s + kj - pad,
                        len: end - first,
                    });
                }
            }
        }
        out
    }

    /// Columns of images `b0..b0 + nb` into `cols` (`k²` rows per channel, `nb · L` columns).
    /// `plane(b, c)` is the start of image b's channel c in `x`.
    fn im2col(
        &self,
        x: &[f32],
        plane: impl Fn(usize, usize) -> usize + Sync,
        b0: usize,
        nb: usize,
        spans: &[Span],
        cols: &mut [f32],
    ) {
        let (l, taps, s) = (self.l(), self.kernel * self.kernel, self.stride);
        let ld = nb * l;
        // zeros first, then the in-image spans: one streaming pass over the buffer makes the
        // many short copies land in cache (copying into cold lines and zeroing only the
        // padding was 2.5x slower, measured)
        cols[..self.k() * ld].fill(0.0);
        for (c, rows) in cols[..self.k() * ld].chunks_mut(taps * ld).enumerate() {
            for b in 0..nb {
                let input = &x[plane(b0 + b, c)..][..self.height * self.width];
                for sp in spans {
                    let dst = &mut rows[sp.tap * ld + b * l + sp.dst..][..sp.len];
                    if s == 1 {
                        dst.copy_from_slice(&input[sp.src..sp.src + sp.len]);
                    } else {
                        for (j, d) in dst.iter_mut().enumerate() {
                            *d = input[sp.src + j * s];
                        }
                    }
                }
            }
        }
    }

    /// Adds columns `cols` of `nb` images back into their pixels: `dx` is those images'
    /// block of the channel-major gradient (`channels` rows of `nb` planes).
    fn col2im(&self, cols: &[f32], nb: usize, spans: &[Span], mut dx: MatMut<'_, f32>) {
        let (l, taps, s) = (self.l(), self.kernel * self.kernel, self.stride);
        let (ld, plane) = (nb * l, self.height * self.width);
        for c in 0..self.channels {
            let row = dx
                .rb_mut()
                .row_mut(c)
                .try_as_row_major_mut()
                .expect("rows of a row-major block are contiguous")
                .as_slice_mut();
            let rows = &cols[c * taps * ld..][..taps * ld];
            for (b, out) in row.chunks_mut(plane).enumerate() {
                for sp in spans {
                    let src = &rows[sp.tap * ld + b * l + sp.dst..][..sp.len];
                    if s == 1 {
                        let dst = &mut out[sp.src..sp.src + sp.len];
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                    } else {
                        for (j, v) in src.iter().enumerate() {
                            out[sp.src + j * s] += v;
                        }
                    }
                }
            }
        }
    }
}

/// `m`'s columns split into one block per chunk, `per` columns per image, in order.
fn column_blocks<'a>(
    mut m: MatMut<'a, f32>,
    chunks: &[(usize, usize)],
    per: usize,
) -> Vec<MatMut<'a, f32>> {
    let mut blocks = Vec::with_capacity(chunks.len());
    for &(_, nb) in chunks {
        let (block, rest) = m.split_at_col_mut(nb * per);
        blocks.push(block);
        m = rest;
    }
    blocks
}

/// `(x: B × C × H × W in either order, w: O × C·k²)` → `O × B × Ho × Wo`.
struct ConvForward(Geometry);

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "conv-im2col"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = f32_data(s1, "conv")?;
        let plane = g.input_plane(l1)?;
        let w = contiguous(s2, l2, "conv weight")?;
        let (o, k, l, bl) = (l2.dims()[0], g.k(), g.l(), g.batch * g.l());
        let spans = g.spans();
        let wm = MatRef::from_row_major_slice(w, o, k);
        let chunks = g.chunks();
        let mut out = vec![0f32; o * bl];
        // each chunk: its columns, then its block of Y = W · cols (O × nb·L), in place
        column_blocks(
            MatMut::from_row_major_slice_mut(&mut out, o, bl),
            &chunks,
            l,
        )
        .into_par_iter()
        .zip(chunks.par_iter())
        .for_each(|(y, &(b0, nb))| {
            with_columns(k * nb * l, |cols| {
                g.im2col(x, &plane, b0, nb, &spans, cols);
                matmul(
                    y,
                    Accum::Replace,
                    wm,
                    MatRef::from_row_major_slice(cols, k, nb * l),
                    1.0,
                    Par::Seq,
                );
            })
        });
        let shape = (o, g.batch, g.out_height(), g.out_width());
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // The first layer's input (the images) needs no gradient.
        let dx = if x.track_op() {
            let dx = grad.apply_op2_no_bwd(w, &ConvInputGrad(self.0))?;
            Some(match self.0.input {
                Order::ChannelMajor => dx,
                Order::Nchw => dx.transpose(0, 1)?,
            })
        } else {
            None
        };
        let dw = x.apply_op2_no_bwd(&grad, &ConvWeightGrad(self.0))?;
        Ok((dx, Some(dw)))
    }
}

/// `(dY: O × B·L, w: O × C·k²)` → `dX: C × B × H × W` (channel-major).
struct ConvInputGrad(Geometry);

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "conv-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let dy = contiguous(s1, l1, "conv input gradient")?;
        let w = contiguous(s2, l2, "conv weight")?;
        let (o, k, l, bl) = (l2.dims()[0], g.k(), g.l(), g.batch * g.l());
        let spans = g.spans();
        let wt = MatRef::from_row_major_slice(w, o, k).transpose();
        let plane = g.height * g.width;
        let chunks = g.chunks();
        let mut dx = vec![0f32; g.channels * g.batch * plane];
        // each chunk: dcols = Wᵀ · dY_chunk, scattered into its own images' block of dX
        let dxm = MatMut::from_row_major_slice_mut(&mut dx, g.channels, g.batch * plane);
        column_blocks(dxm, &chunks, plane)
            .into_par_iter()
            .zip(chunks.par_iter())
            .for_each(|(block, &(b0, nb))| {
                let dyc = MatRef::from_row_major_slice_with_stride(&dy[b0 * l..], o, nb * l, bl);
                with_columns(k * nb * l, |cols| {
                    matmul(
                        MatMut::from_row_major_slice_mut(cols, k, nb * l),
                        Accum::Replace,
                        wt,
                        dyc,
                        1.0,
                        Par::Seq,
                    );
                    g.col2im(cols, nb, &spans, block);
                })
            });
        let shape = (g.channels, g.batch, g.height, g.width);
        Ok((CpuStorage::F32(dx), Shape::from(shape)))
    }
}

/// `(x: B × C × H × W in either order, dY: O × B·L)` → `dW: O × C·k²`.
struct ConvWeightGrad(Geometry);

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "conv-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = f32_data(s1, "conv")?;
        let plane = g.input_plane(l1)?;
        let dy = contiguous(s2, l2, "conv output gradient")?;
        let (o, k, l, bl) = (l2.dims()[0], g.k(), g.l(), g.batch * g.l());
        let spans = g.spans();
        // each chunk: dW_chunk = dY_chunk · cols_chunkᵀ; summed in chunk order (the same
        // sum in every run: training is bit-reproducible)
        let parts: Vec<Vec<f32>> = g
            .chunks()
            .into_par_iter()
            .map(|(b0, nb)| {
                let dyc = MatRef::from_row_major_slice_with_stride(&dy[b0 * l..], o, nb * l, bl);
                let mut dw = vec![0f32; o * k];
                with_columns(k * nb * l, |cols| {
                    g.im2col(x, &plane, b0, nb, &spans, cols);
                    matmul(
                        MatMut::from_row_major_slice_mut(&mut dw, o, k),
                        Accum::Replace,
                        dyc,
                        MatRef::from_row_major_slice(cols, k, nb * l).transpose(),
                        1.0,
                        Par::Seq,
                    );
                });
                dw
            })
            .collect();
        let mut dw = vec![0f32; o * k];
        for part in &parts {
            for (a, b) in dw.iter_mut().zip(part) {
                *a += b;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from((o, k))))
    }
}

/// `(y: O × …, b: O)` → `y + b` per output channel; the bias gradient is a row sum of the contiguous
/// output gradient (a broadcast add would sum over a transposed view, a slow strided pass).
struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "conv-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous(s1, l1, "conv bias")?;
        let b = contiguous(s2, l2, "conv bias")?;
        let n = l1.shape().elem_count() / b.len().max(1);
        let mut out = y.to_vec();
        out.par_chunks_mut(n.max(1))
            .zip(b)
            .for_each(|(row, &bias)| row.iter_mut().for_each(|v| *v += bias));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let db = grad.flatten_from(1)?.sum(1)?;
        Ok((Some(grad), Some(db)))
    }
}

/// A square convolution with torch's parameter layout (`weight`: `out × in × k × k`, optional
/// `bias`: `out`).
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv {
    /// Reads `weight` (`cout × cin × k × k`) and, when `bias`, `bias` from `vb` (torch's default
    /// initialisation when they are created).
    pub fn new(
        (cin, cout): (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let bound = 1.0 / ((cin * kernel * kernel) as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((cout, cin, kernel, kernel), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(cout, "bias", init)?)
        } else {
            None
        };
        Ok(Conv {
            weight,
            bias,
            kernel,
            stride,
            padding,
        })
    }
}

impl Conv {
    /// The convolution of `xs` (`batch × channels × h × w` in order `input`), channel-major:
    /// `out × batch × h' × w'`.
    pub fn forward_cm(&self, xs: &Tensor, input: Order) -> Result<Tensor> {
        let nchw = |t: &Tensor| match input {
            Order::Nchw => Ok(t.clone()),
            Order::ChannelMajor => t.transpose(0, 1),
        };
        if !is_cpu_f32(xs) {
            let cfg = candle_nn::Conv2dConfig {
                padding: self.padding,
                stride: self.stride,
                ..Default::default()
            };
            let conv = candle_nn::Conv2d::new(self.weight.clone(), self.bias.clone(), cfg);
            return conv.forward(&nchw(xs)?)?.transpose(0, 1)?.contiguous();
        }
        let (batch, channels, height, width) = nchw(xs)?.dims4()?;
        let g = Geometry {
            batch,
            channels,
            height,
            width,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            input,
        };
        let w = self.weight.reshape((self.weight.dim(0)?, g.k()))?;
        let ys = planes_contiguous(xs)?.apply_op2(&w, ConvForward(g))?;
        match &self.bias {
            Some(b) => ys.apply_op2(b, AddBias),
            None => Ok(ys),
        }
    }
}

impl Module for Conv {
    /// NCHW in, NCHW out (a transposed view of [`Conv::forward_cm`]'s output).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_cm(xs, Order::Nchw)?.transpose(0, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919) % 101) as f32 / 50.0 - 1.0) * scale)
            .collect()
    }

    /// Forward output, input gradient and weight gradient agree with candle's own conv2d, for
    /// NCHW inputs (contiguous, or a transposed view of channel-major storage) and for
    /// channel-major ones (a conv's output, read as they are), and when the batch goes
    /// through in several chunks.
    #[test]
    fn matches_candle_conv2d_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (batch, cin, cout, k, stride, pad, h, transposed, order) in [
            (2, 3, 5, 3, 1, 1, 9, false, Order::Nchw),
            (2, 3, 5, 3, 1, 1, 9, true, Order::Nchw),
            (2, 3, 5, 3, 1, 1, 9, true, Order::ChannelMajor),
            (2, 4, 6, 3, 2, 1, 8, false, Order::Nchw),
            (2, 4, 6, 3, 2, 1, 8, true, Order::ChannelMajor),
            (2, 4, 6, 1, 2, 0, 7, true, Order::Nchw),
            (2, 4, 6, 1, 2, 0, 7, true, Order::ChannelMajor),
            (2, 2, 3, 1, 1, 0, 5, false, Order::Nchw),
            (2, 3, 4, 7, 2, 3, 12, false, Order::Nchw),
            (3, 3, 4, 7, 2, 3, 12, true, Order::ChannelMajor),
            // 144 × 784 columns per image: 9 images per chunk, so 3 chunks
            (20, 16, 8, 3, 1, 1, 28, true, Order::Nchw),
            (20, 16, 8, 3, 1, 1, 28, true, Order::ChannelMajor),
        ] {
            let values = ramp(batch * cin * h * h, 1.0);
            let (x, input) = if transposed {
                let x = Var::from_vec(values, (cin, batch, h, h), &dev)?;
                let input = x.as_tensor().transpose(0, 1)?;
                (x, input)
            } else {
                let x = Var::from_vec(values, (batch, cin, h, h), &dev)?;
                let input = x.as_tensor().clone();
                (x, input)
            };
            let w = Var::from_vec(ramp(cout * cin * k * k, 0.3), (cout, cin, k, k), &dev)?;
            let conv = Conv {
                weight: w.as_tensor().clone(),
                bias: None,
                kernel: k,
                stride,
                padding: pad,
            };
            let ours = match order {
                Order::Nchw => conv.forward(&input)?,
                // the same values, handed over channel-major
                Order::ChannelMajor => conv
                    .forward_cm(&input.transpose(0, 1)?, order)?
                    .transpose(0, 1)?,
            };
            let theirs = input
                .contiguous()?
                .conv2d(w.as_tensor(), pad, stride, 1, 1)?;
            assert_eq!(ours.dims(), theirs.dims());
            // f32 sums of up to 15,680 terms in another order: ~√n·ε of the largest entry
            let rel = |a: &Tensor, b: &Tensor| -> Result<f32> {
                let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                Ok(diff / b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0))
            };
            let diff = rel(&ours, &theirs)?;
            assert!(diff < 2e-6, "forward differs by {diff}");
            let probe = Tensor::from_vec(ramp(ours.elem_count(), 1.0), ours.dims(), &dev)?;
            let g1 = (ours * &probe)?.sum_all()?.backward()?;
            let g2 = (theirs * &probe)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let a = g1.get(v.as_tensor()).expect("gradient");
                let b = g2.get(v.as_tensor()).expect("gradient");
                let diff = rel(a, b)?;
                assert!(diff < 2e-5, "gradient differs by {diff}");
            }
        }
        Ok(())
    }

    /// With a bias: candle's conv2d plus the bias broadcast, and the bias gradient.
    #[test]
    fn bias_matches_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(ramp(3 * 2 * 36, 1.0), (3, 2, 6, 6), &dev)?;
        let w = Tensor::from_vec(ramp(4 * 2 * 9, 0.3), (4, 2, 3, 3), &dev)?;
        let b = Var::from_vec(vec![0.5f32, -1.0, 2.0, 0.25], 4, &dev)?;
        let conv = Conv {
            weight: w.clone(),
            bias: Some(b.as_tensor().clone()),
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let ours = conv.forward(&x)?;
        let theirs = x
            .conv2d(&w, 1, 1, 1, 1)?
            .broadcast_add(&b.as_tensor().reshape((1, 4, 1, 1))?)?;
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let probe = Tensor::from_vec(ramp(ours.elem_count(), 1.0), ours.dims(), &dev)?;
        let g1 = (ours * &probe)?.sum_all()?.backward()?;
        let g2 = (theirs * &probe)?.sum_all()?.backward()?;
        let (a, c) = (
            g1.get(b.as_tensor()).expect("gradient"),
            g2.get(b.as_tensor()).expect("gradient"),
        );
        let diff = (a - c)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "bias gradient differs by {diff}");
        Ok(())
    }
}
