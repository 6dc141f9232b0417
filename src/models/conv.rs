//! A 2-D convolution computed as im2col + matrix products (or, for stride-1 convolutions on
//! planes at least `DIRECT_MIN_WIDTH` wide, by direct products: `conv_direct`), inside
//! candle's autograd.
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
use std::mem::MaybeUninit;
use std::thread::LocalKey;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::conv_direct::{ChannelOps, Direct};
use super::storage::{contiguous, f32_data, is_cpu_f32, plane_start, planes_contiguous};

/// Bytes of column matrix per chunk of images in the forward pass and the input gradient: the
/// chunk's columns stay in a core's L2 cache between im2col and the gemm that reads them (4 MiB
/// chunks were 25% slower in inference, measured; see the README's network benchmark).
const CHUNK_BYTES: usize = 512 << 10;

/// Bytes of column matrix per chunk for the weight gradient, whose chunks each make a partial
/// weight gradient that is then summed: fewer, larger chunks.
const WEIGHT_CHUNK_BYTES: usize = 4 << 20;

/// The narrowest planes the forward pass computes by direct products ([`Direct`]); narrower
/// ones use im2col and a gemm (the direct tiles compute the padding columns too, a larger
/// share of a narrow plane).
const DIRECT_MIN_WIDTH: usize = 14;

thread_local! {
    /// This thread's column buffer, kept from one chunk to the next (a fresh one per chunk
    /// was an allocation, a zeroing pass and page faults each time).
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// This thread's buffer for a chunk's forward products, read out by the [`Epilogue`].
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's `buffer`, at least `len` long (its contents are whatever the
/// last use left).
fn with_buffer<R>(
    buffer: &'static LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = buffer.with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    buffer.with(|c| c.replace(buf));
    out
}

/// Runs `f` on this thread's column buffer (see [`with_buffer`]).
fn with_columns<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&COLUMNS, len, f)
}

/// What happens to each forward product as it is written out: nothing, or the conv's bias,
/// then evaluation-mode batch norm (`v · scale + shift` per output channel, the formula of
/// `norm`'s `Affine`) and optionally ReLU, so that an evaluation pass makes no separate bias
/// or batch-norm pass.
#[derive(Debug, Clone, Default)]
struct Epilogue {
    /// Per output channel bias, added first (`v + c`).
    bias: Option<Vec<f32>>,
    /// Per output channel `(scale, shift)`, when batch norm follows.
    affine: Option<(Vec<f32>, Vec<f32>)>,
    /// Whether ReLU follows.
    relu: bool,
}

impl Epilogue {
    /// What this epilogue does to output channel `ch`.
    fn channel(&self, ch: usize) -> ChannelOps {
        ChannelOps {
            bias: self.bias.as_ref().map(|b| b[ch]),
            affine: self.affine.as_ref().map(|(a, b)| (a[ch], b[ch])),
            relu: self.relu,
        }
    }

    /// Writes channel `ch`'s products `src`, plus `residual` when given, to `dst`, with the
    /// formulas of the separate ops: the bias (`v + c`), `Affine` (`v · a + b`), the residual
    /// add (`h + r`), then ReLU (`max(v, 0)`).
    fn write(
        &self,
        ch: usize,
        src: &[f32],
        residual: Option<&[f32]>,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let relu = |v: f32| v.max(0.0);
        match (self.bias.as_ref().map(|b| b[ch]), self.relu) {
            (Some(c), true) => self.write_with(ch, (src, residual), dst, |v| v + c, relu),
            (Some(c), false) => self.write_with(ch, (src, residual), dst, |v| v + c, |v| v),
            (None, true) => self.write_with(ch, (src, residual), dst, |v| v, relu),
            (None, false) => self.write_with(ch, (src, residual), dst, |v| v, |v| v),
        }
    }

    /// [`Epilogue::write`] with `first` (the bias, or nothing) applied to each product and
    /// `last` (ReLU, or nothing) to each result.
    #[inline(always)]
    fn write_with(
        &self,
        ch: usize,
        (src, residual): (&[f32], Option<&[f32]>),
        dst: &mut [MaybeUninit<f32>],
        first: impl Fn(f32) -> f32,
        last: impl Fn(f32) -> f32,
    ) {
        match (&self.affine, residual) {
            (Some((scale, shift)), Some(res)) => {
                let (a, b) = (scale[ch], shift[ch]);
                for ((d, &v), &r) in dst.iter_mut().zip(src).zip(res) {
                    d.write(last(first(v) * a + b + r));
                }
            }
            (Some((scale, shift)), None) => {
                let (a, b) = (scale[ch], shift[ch]);
                for (d, &v) in dst.iter_mut().zip(src) {
                    d.write(last(first(v) * a + b));
                }
            }
            (None, Some(res)) => {
                for ((d, &v), &r) in dst.iter_mut().zip(src).zip(res) {
                    d.write(last(first(v) + r));
                }
            }
            (None, None) => {
                for (d, &v) in dst.iter_mut().zip(src) {
                    d.write(last(first(v)));
                }
            }
        }
    }
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

    /// The direct products ([`Direct`]) of a convolution of this shape from `cin` to `cout`
    /// channels, where they apply (and the test thread has not asked for im2col alone).
    fn direct(&self, (cin, cout): (usize, usize)) -> Option<Direct> {
        #[cfg(test)]
        if tests::IM2COL_ONLY.with(std::cell::Cell::get) {
            return None;
        }
        Direct::new(
            (cin, cout),
            (self.height, self.width),
            (self.kernel, self.stride, self.padding),
            DIRECT_MIN_WIDTH,
        )
    }

    /// The chunks of at most `bytes` of columns each: (first image, images).
    fn chunks(&self, bytes: usize) -> Vec<(usize, usize)> {
        chunks(self.batch, bytes, 4 * self.k() * self.l())
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

    /// Whether the output planes are the input planes' size at stride 1 ("same" padding): then
    /// a kernel tap's row of columns is its input plane shifted by one offset, so im2col is one
    /// copy per run of adjacent planes and a few zeroed pixels, not a copy per output row
    /// ([`Geometry::im2col_same`], [`Geometry::col2im_same`]).
    fn same(&self) -> bool {
        self.stride == 1 && 2 * self.padding + 1 == self.kernel
    }

    /// Kernel tap `tap`'s input offset from its output pixel: (rows, columns).
    fn shift(&self, tap: usize) -> (isize, isize) {
        let p = self.padding as isize;
        (
            (tap / self.kernel) as isize - p,
            (tap % self.kernel) as isize - p,
        )
    }

    /// Zeros the pixels of a run of images' tap row (`images · h · w`) whose input pixel,
    /// offset by `(dy, dx)`, lies in the padding: the same columns of every line, then the
    /// top or bottom lines of each image.
    fn zero_padding(&self, run: &mut [f32], (dy, dx): (isize, isize)) {
        let (h, w) = (self.height, self.width);
        let cut = dx.unsigned_abs().min(w);
        if cut > 0 {
            let x0 = if dx < 0 { 0 } else { w - cut };
            if cut == 1 {
                // one store per line (a fill would be a memset call per line)
                run.chunks_exact_mut(w).for_each(|line| line[x0] = 0.0);
            } else {
                run.chunks_exact_mut(w)
                    .for_each(|line| line[x0..x0 + cut].fill(0.0));
            }
        }
        let rows = dy.unsigned_abs().min(h) * w;
        if rows > 0 {
            for image in run.chunks_exact_mut(h * w) {
                let lines = if dy < 0 {
                    &mut image[..rows]
                } else {
                    &mut image[h * w - rows..]
                };
                lines.fill(0.0);
            }
        }
    }

    /// Calls `f(first, images, start)` for each run of the images `b0..b0 + nb` whose channel
    /// `c` planes follow each other in memory (the whole chunk when the input is
    /// channel-major, one image at a time when it is NCHW); `first` counts from `b0`.
    fn runs(
        &self,
        plane: &impl Fn(usize, usize) -> usize,
        c: usize,
        (b0, nb): (usize, usize),
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let hw = self.height * self.width;
        let mut b = 0;
        while b < nb {
            let start = plane(b0 + b, c);
            let mut e = b + 1;
            while e < nb && plane(b0 + e, c) == start + (e - b) * hw {
                e += 1;
            }
            f(b, e - b, start);
            b = e;
        }
    }

    /// The range of `0..n` whose entries, offset by `off`, stay inside `0..n`.
    fn inside(n: usize, off: isize) -> std::ops::Range<usize> {
        let n = n as isize;
        (-off).clamp(0, n) as usize..(n - off).clamp(0, n) as usize
    }

    /// [`Geometry::im2col`] for "same" convolutions: each tap row is the run's planes copied
    /// at the tap's offset, then the pixels that read padding (or a neighbouring row or image)
    /// zeroed. Bit for bit the columns the row-by-row copy makes.
    fn im2col_same(
        &self,
        x: &[f32],
        plane: impl Fn(usize, usize) -> usize,
        b0: usize,
        nb: usize,
        cols: &mut [f32],
    ) {
        let (hw, taps) = (self.height * self.width, self.kernel * self.kernel);
        let ld = nb * hw;
        for (c, rows) in cols[..self.k() * ld].chunks_mut(taps * ld).enumerate() {
            for (tap, row) in rows.chunks_mut(ld).enumerate() {
                let (dy, dx) = self.shift(tap);
                let off = dy * self.width as isize + dx;
                self.runs(&plane, c, (b0, nb), |first, count, start| {
                    let dst = &mut row[first * hw..][..count * hw];
                    let keep = Self::inside(count * hw, off);
                    if !keep.is_empty() {
                        let from = (start + keep.start).wrapping_add_signed(off);
                        dst[keep.clone()].copy_from_slice(&x[from..][..keep.len()]);
                    }
                    self.zero_padding(dst, (dy, dx));
                });
            }
        }
    }

    /// [`Geometry::col2im`] for "same" convolutions: each tap row's padding pixels zeroed,
    /// then the row added to the chunk's gradient at the tap's offset in one pass. Each pixel
    /// receives its taps' terms in the same order as the row-by-row version.
    fn col2im_same(&self, cols: &mut [f32], nb: usize, mut dx: MatMut<'_, f32>) {
        let (hw, taps) = (self.height * self.width, self.kernel * self.kernel);
        let ld = nb * hw;
        for c in 0..self.channels {
            let out = dx
                .rb_mut()
                .row_mut(c)
                .try_as_row_major_mut()
                .expect("rows of a row-major block are contiguous")
                .as_slice_mut();
            let rows = &mut cols[c * taps * ld..][..taps * ld];
            for (tap, row) in rows.chunks_mut(ld).enumerate() {
                let (dy, dxs) = self.shift(tap);
                let off = dy * self.width as isize + dxs;
                self.zero_padding(row, (dy, dxs));
                let keep = Self::inside(ld, off);
                if keep.is_empty() {
                    continue;
                }
                let to = keep.start.wrapping_add_signed(off);
                out[to..][..keep.len()]
                    .iter_mut()
                    .zip(&row[keep])
                    .for_each(|(d, v)| *d += v);
            }
        }
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
        if self.same() {
            self.im2col_same(x, plane, b0, nb, cols)
        } else {
            self.im2col_rows(x, plane, b0, nb, spans, cols)
        }
    }

    /// [`Geometry::im2col`] for any convolution: zeros, then a copy per in-image span.
    fn im2col_rows(
        &self,
        x: &[f32],
        plane: impl Fn(usize, usize) -> usize,
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
    fn col2im(&self, cols: &mut [f32], nb: usize, spans: &[Span], dx: MatMut<'_, f32>) {
        if self.same() {
            self.col2im_same(cols, nb, dx)
        } else {
            self.col2im_rows(cols, nb, spans, dx)
        }
    }

    /// [`Geometry::col2im`] for any convolution: each in-image span added to its pixels.
    fn col2im_rows(&self, cols: &[f32], nb: usize, spans: &[Span], mut dx: MatMut<'_, f32>) {
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

/// `batch` images in chunks of at most `bytes` of working memory at `per_image` bytes each,
/// and at least four chunks per thread so that chunks, not gemms, are what runs in parallel:
/// (first image, images).
fn chunks(batch: usize, bytes: usize, per_image: usize) -> Vec<(usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    let c = (bytes / per_image.max(1))
        .min(batch.div_ceil(4 * threads))
        .clamp(1, batch.max(1));
    (0..batch)
        .step_by(c)
        .map(|b0| (b0, c.min(batch - b0)))
        .collect()
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
struct ConvForward(Geometry, Epilogue);

/// A row-major `rows × (Σ images · per)` matrix's rows cut into one segment per chunk: for
/// each chunk, its segment of every row (so chunks can be written in parallel).
fn row_segments<'a, T>(
    mut data: &'a mut [T],
    rows: usize,
    chunks: &[(usize, usize)],
    per: usize,
) -> Vec<Vec<&'a mut [T]>> {
    let width: usize = chunks.iter().map(|&(_, nb)| nb * per).sum();
    let mut out: Vec<Vec<&mut [T]>> = chunks.iter().map(|_| Vec::with_capacity(rows)).collect();
    for _ in 0..rows {
        let (mut row, rest) = std::mem::take(&mut data).split_at_mut(width);
        data = rest;
        for (segments, &(_, nb)) in out.iter_mut().zip(chunks) {
            let (segment, rest) = std::mem::take(&mut row).split_at_mut(nb * per);
            segments.push(segment);
            row = rest;
        }
    }
    out
}

impl ConvForward {
    /// The forward pass; `residual` (channel-major, the output's shape) is added in the
    /// epilogue when given.
    fn forward(
        &self,
        (x, l1): (&[f32], &Layout),
        (w, l2): (&[f32], &Layout),
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let plane = g.input_plane(l1)?;
        let (o, k, l, bl) = (l2.dims()[0], g.k(), g.l(), g.batch * g.l());
        if residual.is_some_and(|r| r.len() != o * bl) {
            candle_core::bail!("conv: the residual is not the output's shape")
        }
        let shape = (o, g.batch, g.out_height(), g.out_width());
        if let Some(d) = g.direct((g.channels, o)) {
            let ops = |ch| self.1.channel(ch);
            let out = by_direct_products(d, (g.batch, l), (x, &plane), w, ops, residual);
            return Ok((CpuStorage::F32(out), Shape::from(shape)));
        }
        let spans = g.spans();
        let wm = MatRef::from_row_major_slice(w, o, k);
        let chunks = g.chunks(CHUNK_BYTES);
        // each chunk: its columns, its products W · cols (O × nb·L) in a buffer that stays
        // in cache, then the epilogue writes them to the chunk's segment of every output row
        // (every value of `out` is written once: no zero fill)
        let mut out: Vec<f32> = Vec::with_capacity(o * bl);
        row_segments(&mut out.spare_capacity_mut()[..o * bl], o, &chunks, l)
            .into_par_iter()
            .zip(chunks.par_iter())
            .for_each(|(rows, &(b0, nb))| {
                with_columns(k * nb * l, |cols| {
                    g.im2col(x, &plane, b0, nb, &spans, cols);
                    with_buffer(&PRODUCTS, o * nb * l, |y| {
                        matmul(
                            MatMut::from_row_major_slice_mut(y, o, nb * l),
                            Accum::Replace,
                            wm,
                            MatRef::from_row_major_slice(cols, k, nb * l),
                            1.0,
                            Par::Seq,
                        );
                        let products = y.chunks(nb * l);
                        for (ch, (dst, src)) in rows.into_iter().zip(products).enumerate() {
                            let res = residual.map(|r| &r[ch * bl + b0 * l..][..nb * l]);
                            self.1.write(ch, src, res, dst);
                        }
                    })
                })
            });
        // SAFETY: the chunks cover every image, and each wrote its segment of all `o` rows.
        unsafe { out.set_len(o * bl) };
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// A convolution of `batch` images by direct products ([`Direct`]): each chunk's images
/// padded, their products computed in register tiles, then each output line written with
/// `ops(channel)` applied and `residual` (channel-major, the output's shape) added. `w` is
/// `out × channels × k × k`; the output is channel-major.
fn by_direct_products(
    d: Direct,
    (batch, l): (usize, usize),
    (x, plane): (&[f32], &(impl Fn(usize, usize) -> usize + Sync)),
    w: &[f32],
    ops: impl Fn(usize) -> ChannelOps + Sync,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (o, bl) = (d.out(), batch * l);
    let wt = d.tile_weights(w);
    let chunks = chunks(batch, CHUNK_BYTES, d.bytes_per_image());
    let mut out: Vec<f32> = Vec::with_capacity(o * bl);
    row_segments(&mut out.spare_capacity_mut()[..o * bl], o, &chunks, l)
        .into_par_iter()
        .zip(chunks.par_iter())
        .for_each(|(rows, &(b0, nb))| {
            with_columns(d.input_len(nb), |xp| {
                d.pad_input(x, plane, (b0, nb), xp);
                with_buffer(&PRODUCTS, d.products_len(nb), |y| {
                    d.products(xp, nb, &wt, y);
                    for (ch, dst) in rows.into_iter().enumerate() {
                        let res = residual.map(|r| &r[ch * bl + b0 * l..][..nb * l]);
                        d.finish_channel((nb, ch), y, ops(ch), res, dst);
                    }
                })
            })
        });
    // SAFETY: the chunks cover every image, and each wrote every line of its segment of all
    // `o` rows.
    unsafe { out.set_len(o * bl) };
    out
}

/// `(x, w, residual)` → the [`ConvForward`] epilogue's output with the residual of a ResNet
/// block added before the ReLU (evaluation only).
struct ConvForwardResidual(ConvForward);

impl CustomOp3 for ConvForwardResidual {
    fn name(&self) -> &'static str {
        "conv-im2col-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s1, "conv")?;
        let w = contiguous(s2, l2, "conv weight")?;
        let residual = contiguous(s3, l3, "conv residual")?;
        self.0.forward((x, l1), (w, l2), Some(residual))
    }
}

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
        let x = f32_data(s1, "conv")?;
        let w = contiguous(s2, l2, "conv weight")?;
        self.forward((x, l1), (w, l2), None)
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

/// `(x, w, b)` → the convolution plus its bias `b` (one value per output channel), added in
/// the epilogue as the products are written (no copy of the output, no separate pass). The
/// bias gradient is a row sum of the contiguous output gradient (a broadcast add would sum
/// over a transposed view, a slow strided pass).
struct ConvForwardBias(Geometry);

impl CustomOp3 for ConvForwardBias {
    fn name(&self) -> &'static str {
        "conv-im2col-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s1, "conv")?;
        let w = contiguous(s2, l2, "conv weight")?;
        let bias = contiguous(s3, l3, "conv bias")?.to_vec();
        if bias.len() != l2.dims()[0] {
            candle_core::bail!(
                "conv: {} bias values for {} output channels",
                bias.len(),
                l2.dims()[0]
            )
        }
        let epilogue = Epilogue {
            bias: Some(bias),
            ..Epilogue::default()
        };
        ConvForward(self.0, epilogue).forward((x, l1), (w, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (dx, dw) = ConvForward(self.0, Epilogue::default()).bwd(x, w, res, &grad)?;
        let db = grad.flatten_from(1)?.sum(1)?;
        Ok((dx, dw, Some(db)))
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
        let shape = Shape::from((g.channels, g.batch, g.height, g.width));
        if let Some(d) = g.direct((o, g.channels)) {
            // a stride-1 "same" convolution's input gradient is the convolution of dY with
            // the kernel flipped and its channel axes swapped: w'[c][o][t] = w[o][c][k² − 1 − t]
            let taps = g.kernel * g.kernel;
            let flipped: Vec<f32> = (0..g.channels * o * taps)
                .map(|i| {
                    let (c, oc, t) = (i / (o * taps), i / taps % o, i % taps);
                    w[(oc * g.channels + c) * taps + taps - 1 - t]
                })
                .collect();
            let plane = |b: usize, oc: usize| oc * bl + b * l;
            let ops = |_| ChannelOps::default();
            let dx = by_direct_products(d, (g.batch, l), (dy, &plane), &flipped, ops, None);
            return Ok((CpuStorage::F32(dx), shape));
        }
        let spans = g.spans();
        let wt = MatRef::from_row_major_slice(w, o, k).transpose();
        let plane = g.height * g.width;
        let chunks = g.chunks(CHUNK_BYTES);
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
        Ok((CpuStorage::F32(dx), shape))
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
        let direct = g.direct((g.channels, o)).zip(g.direct((o, g.channels)));
        // the im2col path's spans, which the direct one does not read
        let (chunks, spans) = match direct {
            Some((d, _)) => (
                chunks(g.batch, WEIGHT_CHUNK_BYTES, d.bytes_per_image()),
                vec![],
            ),
            None => (g.chunks(WEIGHT_CHUNK_BYTES), g.spans()),
        };
        // each chunk: dW_chunk = dY_chunk · cols_chunkᵀ; summed in chunk order (the same
        // sum in every run: training is bit-reproducible)
        let parts: Vec<Vec<f32>> = chunks
            .into_par_iter()
            .map(|(b0, nb)| {
                if let Some((d, dd)) = direct {
                    // stride-1 "same": one gemm per tap over the padded layouts, no columns
                    let dy_plane = |b: usize, oc: usize| oc * bl + b * l;
                    return with_columns(d.input_len(nb), |xp| {
                        d.pad_input(x, &plane, (b0, nb), xp);
                        with_buffer(&PRODUCTS, dd.input_len(nb), |dyp| {
                            dd.pad_input(dy, dy_plane, (b0, nb), dyp);
                            d.weight_gradient(xp, dyp, nb)
                        })
                    });
                }
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
    /// The shape of the convolution of `xs` (in order `input`), and the weight as the
    /// `out × channels·k²` matrix its gemms use.
    fn geometry(&self, xs: &Tensor, input: Order) -> Result<(Geometry, Tensor)> {
        let dims = xs.dims4()?;
        let (batch, channels, height, width) = match input {
            Order::Nchw => dims,
            Order::ChannelMajor => (dims.1, dims.0, dims.2, dims.3),
        };
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
        Ok((g, w))
    }

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
        let (g, w) = self.geometry(xs, input)?;
        let xs = planes_contiguous(xs)?;
        match &self.bias {
            Some(b) => xs.apply_op3(&w, b, ConvForwardBias(g)),
            None => xs.apply_op2(&w, ConvForward(g, Epilogue::default())),
        }
    }

    /// Evaluation only (no gradient): the convolution (with its bias) followed by
    /// `v · scale + shift` per output channel, plus `residual` (channel-major, the output's
    /// shape) when given, and ReLU when `relu`, applied as the products leave the gemm;
    /// channel-major out. Bit for bit [`Conv::forward_cm`] followed by evaluation-mode batch
    /// norm (and the residual add). `None` where the fused pass does not apply (not f32 on
    /// the CPU).
    pub fn forward_cm_affine(
        &self,
        xs: &Tensor,
        input: Order,
        (scale, shift): (Vec<f32>, Vec<f32>),
        relu: bool,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        if !is_cpu_f32(xs) || residual.is_some_and(|r| !is_cpu_f32(r)) {
            return Ok(None);
        }
        let (g, w) = self.geometry(xs, input)?;
        let w = w.detach();
        let epilogue = Epilogue {
            bias: self.bias.as_ref().map(Tensor::to_vec1).transpose()?,
            affine: Some((scale, shift)),
            relu,
        };
        let op = ConvForward(g, epilogue);
        let xs = planes_contiguous(&xs.detach())?;
        Ok(Some(match residual {
            Some(r) => {
                let r = r.detach().contiguous()?;
                xs.apply_op3_no_bwd(&w, &r, &ConvForwardResidual(op))?
            }
            None => xs.apply_op2_no_bwd(&w, &op)?,
        }))
    }
}

impl Module for Conv {
    /// NCHW in, NCHW out (a transposed view of [`Conv::forward_cm`]'s output).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_cm(xs, Order::Nchw)?.transpose(0, 1)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    thread_local! {
        /// Set by a test to run this thread's convolutions through im2col and a gemm even
        /// where the direct products apply (so both paths are tested on an AVX-512 machine).
        pub(in crate::models) static IM2COL_ONLY: std::cell::Cell<bool> =
            const { std::cell::Cell::new(false) };
    }

    /// Runs `f` once with the direct products where they apply and once with im2col alone.
    pub(in crate::models) fn both_paths(mut f: impl FnMut(&str) -> Result<()>) -> Result<()> {
        for im2col in [false, true] {
            IM2COL_ONLY.with(|c| c.set(im2col));
            let out = f(if im2col {
                "im2col"
            } else {
                "direct where it applies"
            });
            IM2COL_ONLY.with(|c| c.set(false));
            out?;
        }
        Ok(())
    }
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
        both_paths(matches_candle_on)
    }

    fn matches_candle_on(path: &str) -> Result<()> {
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
            assert!(diff < 2e-6, "{path}: forward differs by {diff}");
            let probe = Tensor::from_vec(ramp(ours.elem_count(), 1.0), ours.dims(), &dev)?;
            let g1 = (ours * &probe)?.sum_all()?.backward()?;
            let g2 = (theirs * &probe)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let a = g1.get(v.as_tensor()).expect("gradient");
                let b = g2.get(v.as_tensor()).expect("gradient");
                let diff = rel(a, b)?;
                assert!(diff < 2e-5, "{path}: gradient differs by {diff}");
            }
        }
        Ok(())
    }

    /// The shifted-plane im2col and col2im of "same" convolutions give bit for bit what the
    /// row-by-row versions give: kernels 1, 3, 5 and 7 (offsets wider than the plane), planes
    /// down to 1 × 2, several images per chunk, a chunk that starts mid-batch, both orders.
    #[test]
    fn shifted_planes_match_row_copies() {
        for (kernel, h, w, batch, b0, nb) in [
            (3, 5, 4, 4, 1, 3),
            (3, 1, 2, 3, 0, 3),
            (1, 3, 3, 2, 0, 2),
            (5, 4, 6, 3, 1, 2),
            (7, 2, 3, 3, 0, 3),
        ] {
            for input in [Order::Nchw, Order::ChannelMajor] {
                let g = Geometry {
                    batch,
                    channels: 3,
                    height: h,
                    width: w,
                    kernel,
                    stride: 1,
                    padding: kernel / 2,
                    input,
                };
                assert!(g.same());
                let x = ramp(batch * 3 * h * w, 1.0);
                let plane = |b: usize, c: usize| match input {
                    Order::Nchw => (b * 3 + c) * h * w,
                    Order::ChannelMajor => (c * batch + b) * h * w,
                };
                let len = g.k() * nb * g.l();
                // stale values in the buffers, as a reused column buffer has
                let (mut shifted, mut rows) = (vec![f32::NAN; len], vec![7.0; len]);
                let spans = g.spans();
                g.im2col_same(&x, plane, b0, nb, &mut shifted);
                g.im2col_rows(&x, plane, b0, nb, &spans, &mut rows);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&shifted),
                    bits(&rows),
                    "im2col k={kernel} {h}x{w} {input:?}"
                );

                let cols = ramp(len, 0.5);
                let (mut a, mut b) = (vec![0f32; 3 * nb * h * w], vec![0f32; 3 * nb * h * w]);
                g.col2im_same(
                    &mut cols.clone(),
                    nb,
                    MatMut::from_row_major_slice_mut(&mut a, 3, nb * h * w),
                );
                g.col2im_rows(
                    &cols,
                    nb,
                    &spans,
                    MatMut::from_row_major_slice_mut(&mut b, 3, nb * h * w),
                );
                assert_eq!(bits(&a), bits(&b), "col2im k={kernel} {h}x{w} {input:?}");
            }
        }
    }

    /// With a bias: candle's conv2d plus the bias broadcast, and the bias, weight and input
    /// gradients.
    #[test]
    fn bias_matches_candle() -> Result<()> {
        both_paths(bias_matches_candle_on)
    }

    fn bias_matches_candle_on(path: &str) -> Result<()> {
        let dev = Device::Cpu;
        // 6 × 6 planes take im2col and a gemm, 16 × 16 the direct products (with AVX-512)
        for h in [6, 16] {
            let x = Var::from_vec(ramp(3 * 2 * h * h, 1.0), (3, 2, h, h), &dev)?;
            let w = Var::from_vec(ramp(4 * 2 * 9, 0.3), (4, 2, 3, 3), &dev)?;
            let b = Var::from_vec(vec![0.5f32, -1.0, 2.0, 0.25], 4, &dev)?;
            // the input of a later layer (its gradient is computed), not the images
            let xs = (x.as_tensor() * 1.0)?;
            let conv = Conv {
                weight: w.as_tensor().clone(),
                bias: Some(b.as_tensor().clone()),
                kernel: 3,
                stride: 1,
                padding: 1,
            };
            let ours = conv.forward(&xs)?;
            let theirs = xs
                .conv2d(w.as_tensor(), 1, 1, 1, 1)?
                .broadcast_add(&b.as_tensor().reshape((1, 4, 1, 1))?)?;
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{path}: forward differs by {diff}");
            let probe = Tensor::from_vec(ramp(ours.elem_count(), 1.0), ours.dims(), &dev)?;
            let g1 = (ours * &probe)?.sum_all()?.backward()?;
            let g2 = (theirs * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("bias", &b), ("weight", &w), ("input", &x)] {
                let (a, c) = (
                    g1.get(v.as_tensor()).expect("gradient"),
                    g2.get(v.as_tensor()).expect("gradient"),
                );
                let diff = (a - c)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{path}: {name} gradient differs by {diff}");
            }
        }
        Ok(())
    }
}
