//! The products of a stride-1 "same" convolution computed directly, in AVX-512 register
//! tiles, without a column matrix.
//!
//! Why by hand: im2col writes and re-reads nine copies of a 3 × 3 convolution's input, and a
//! gemm with `channels · 9` rows of depth (144 for 16 channels) spends much of its time packing;
//! at ResNet-18 w16's 28 × 28 layers that path ran at ~114 GFLOP/s on this 2-core machine. No
//! crate offers a direct convolution for channel-major f32 on the CPU (candle's is a scalar
//! loop; oneDNN is a C++ JIT).
//!
//! How: a chunk of images is copied once into a zero-padded layout in which each channel is
//! `h + 2p` lines and each line holds the padded rows (`w + 2p`) of every image of the chunk
//! side by side, so a kernel tap is one fixed offset for every output pixel. A tile is 48
//! consecutive positions of a line (three 16-lane vectors) × 8 output channels: 24
//! accumulators that stay in registers while the loop runs over input channels and taps,
//! each step three input loads, eight weight broadcasts and 24 fused multiply-adds. The
//! positions of the padding columns are computed too and never read (`2p / (w + 2p)` more
//! work: 7% at 28 × 28, 14% at 14 × 14), which is why narrow planes keep im2col.
//!
//! Each output is `Σ_c Σ_ky Σ_kx w · x` accumulated in that order with one fused multiply-add
//! per term from zero, so the result does not depend on the tile, the chunk or the thread
//! count (the tests compare every output bit for bit with a scalar `mul_add` loop). The
//! epilogue (bias, batch norm's affine map, residual, ReLU) is applied as each line is
//! copied out, with the formulas of `conv::Epilogue`.

/// Positions per tile: three 16-lane vectors.
const TILE: usize = 48;
/// Output channels per tile.
const Q: usize = 8;

/// A convolution the direct products apply to: stride 1, `padding = kernel / 2`, odd kernel,
/// on a CPU with AVX-512.
#[derive(Debug, Clone, Copy)]
pub(super) struct Direct {
    channels: usize,
    out: usize,
    height: usize,
    width: usize,
    kernel: usize,
}

impl Direct {
    /// The direct products for this shape, or `None` where they do not apply (another
    /// stride or padding, planes narrower than `min_width`, no AVX-512).
    pub(super) fn new(
        (channels, out): (usize, usize),
        (height, width): (usize, usize),
        (kernel, stride, padding): (usize, usize, usize),
        min_width: usize,
    ) -> Option<Direct> {
        let d = Direct {
            channels,
            out,
            height,
            width,
            kernel,
        };
        let shape = stride == 1
            && kernel % 2 == 1
            && 2 * padding + 1 == kernel
            && width >= min_width
            && channels > 0
            && out > 0;
        (shape && avx512()).then_some(d)
    }

    /// Output channels.
    pub(super) fn out(&self) -> usize {
        self.out
    }

    fn pad(&self) -> usize {
        self.kernel / 2
    }

    fn padded_width(&self) -> usize {
        self.width + 2 * self.pad()
    }

    /// Values from one line of a chunk's padded input to the next: the line's padded row of
    /// each of the chunk's `nb` images, side by side.
    fn pitch(&self, nb: usize) -> usize {
        nb * self.padded_width()
    }

    /// Values in one channel's padded input (or products) for a chunk of `nb` images.
    fn plane(&self, nb: usize) -> usize {
        (self.height + 2 * self.pad()) * self.pitch(nb)
    }

    /// Bytes of padded input and products per image of a chunk.
    pub(super) fn bytes_per_image(&self) -> usize {
        4 * (self.channels + self.out) * self.plane(1)
    }

    /// Length of the padded input buffer for `nb` images: `channels` planes after a margin of
    /// `pad` values, and a margin of `pad + TILE` after them (read only for positions in the
    /// padding or past the last line).
    pub(super) fn input_len(&self, nb: usize) -> usize {
        self.channels * self.plane(nb) + 2 * self.pad() + TILE
    }

    /// Values from one output channel's products to the next: a plane and the last tile's
    /// overhang.
    fn products_stride(&self, nb: usize) -> usize {
        self.plane(nb) + TILE
    }

    /// Length of the products buffer for `nb` images.
    pub(super) fn products_len(&self, nb: usize) -> usize {
        self.out * self.products_stride(nb)
    }

    /// The weights (`out × channels × k × k`, torch's layout) in tile order: for each block of
    /// eight output channels (the last may be smaller), for each input channel and tap, the
    /// block's weights side by side.
    pub(super) fn tile_weights(&self, w: &[f32]) -> Vec<f32> {
        let taps = self.kernel * self.kernel;
        let per = self.channels * taps;
        let mut out = Vec::with_capacity(self.out * per);
        for o0 in (0..self.out).step_by(Q) {
            let q = Q.min(self.out - o0);
            for i in 0..per {
                out.extend((o0..o0 + q).map(|o| w[o * per + i]));
            }
        }
        out
    }

    /// Copies images `b0..b0 + nb` of `x` (`plane(b, c)` is where image b's channel c starts)
    /// into `xp` with zero padding: per channel, `h + 2p` lines, each line the padded rows of
    /// the `nb` images side by side.
    pub(super) fn pad_input(
        &self,
        x: &[f32],
        plane: impl Fn(usize, usize) -> usize,
        (b0, nb): (usize, usize),
        xp: &mut [f32],
    ) {
        let (p, w, wp, h) = (self.pad(), self.width, self.padded_width(), self.height);
        let (pitch, len) = (self.pitch(nb), self.plane(nb));
        let body = p + self.channels * len;
        xp[..p].fill(0.0);
        xp[body..].fill(0.0);
        for (c, dst) in xp[p..body].chunks_exact_mut(len).enumerate() {
            dst[..p * pitch].fill(0.0);
            dst[(p + h) * pitch..].fill(0.0);
            for b in 0..nb {
                let src = &x[plane(b0 + b, c)..][..h * w];
                let lines = dst[p * pitch..(p + h) * pitch].chunks_exact_mut(pitch);
                for (line, row) in lines.zip(src.chunks_exact(w)) {
                    let seg = &mut line[b * wp..][..wp];
                    seg[..p].fill(0.0);
                    seg[p..p + w].copy_from_slice(row);
                    seg[p + w..].fill(0.0);
                }
            }
        }
    }

    /// The products of `nb` padded images `xp` (from [`Direct::pad_input`]) with the tiled
    /// weights `wt` (from [`Direct::tile_weights`]) into `y` (`out` planes laid out as the
    /// input's; only the image lines' positions are written).
    pub(super) fn products(&self, xp: &[f32], nb: usize, wt: &[f32], y: &mut [f32]) {
        let (p, pitch, len) = (self.pad(), self.pitch(nb), self.plane(nb));
        assert!(xp.len() >= self.input_len(nb) && y.len() >= self.products_len(nb));
        assert!(wt.len() == self.out * self.channels * self.kernel * self.kernel);
        let taps = self.tap_offsets(nb);
        // the positions of the image lines (with their padding columns)
        let (first, span) = (p * pitch, self.height * pitch);
        let per = self.channels * taps.len();
        let ystride = self.products_stride(nb);
        for o0 in (0..self.out).step_by(Q) {
            let q = Q.min(self.out - o0);
            let w = &wt[o0 * per..][..q * per];
            for pos in (first..first + span).step_by(TILE) {
                // SAFETY: `avx512()` held when `self` was made. Reads: a tile's positions
                // (< first + span + TILE) plus tap offsets (|t| ≤ p · pitch + p) stay within
                // `xp`'s margins (`input_len`), and `w` holds `q × per` weights. Writes: `q`
                // rows of `TILE` values from `pos`, within each row's `ystride`.
                unsafe {
                    tile(
                        q,
                        xp.as_ptr().add(p + pos),
                        (len, &taps, self.channels),
                        w.as_ptr(),
                        y.as_mut_ptr().add(o0 * ystride + pos),
                        ystride,
                    )
                };
            }
        }
    }
}

impl Direct {
    /// The offset of each kernel tap in the padded layout of a chunk of `nb` images.
    fn tap_offsets(&self, nb: usize) -> Vec<isize> {
        let (p, pitch) = (self.pad() as isize, self.pitch(nb) as isize);
        (0..self.kernel * self.kernel)
            .map(|t| {
                let (ky, kx) = ((t / self.kernel) as isize, (t % self.kernel) as isize);
                (ky - p) * pitch + (kx - p)
            })
            .collect()
    }

    /// A chunk's share of the weight gradient, `dw[o][c][t] = Σ_pos dy[o][pos] · x[c][pos +
    /// tap t]` (`out × channels × k²`, torch's layout), as one gemm per tap over the padded
    /// layouts: `xp` is the chunk's input from [`Direct::pad_input`], `dyp` its output
    /// gradient padded the same way (by the [`Direct`] of the input gradient, whose channels
    /// are this one's outputs), so the padding positions add zeros and no column matrix is
    /// built.
    pub(super) fn weight_gradient(&self, xp: &[f32], dyp: &[f32], nb: usize) -> Vec<f32> {
        use faer::linalg::matmul::matmul;
        use faer::{Accum, Mat, MatRef, Par};
        let (p, len) = (self.pad(), self.plane(nb));
        let (first, span) = (p * self.pitch(nb), self.height * self.pitch(nb));
        let (o, c, taps) = (self.out, self.channels, self.kernel * self.kernel);
        assert!(xp.len() >= self.input_len(nb) && dyp.len() >= o * len + 2 * p);
        let dy = MatRef::from_row_major_slice_with_stride(&dyp[p + first..], o, span, len);
        let mut dw = vec![0f32; o * c * taps];
        let mut part = Mat::<f32>::zeros(o, c);
        for (t, off) in self.tap_offsets(nb).into_iter().enumerate() {
            // the tap's view of the input: position × channel (≥ 0: the margin and the
            // padding lines cover the most negative offset)
            let from = (p + first).wrapping_add_signed(off);
            let x = MatRef::from_column_major_slice_with_stride(&xp[from..], span, c, len);
            matmul(part.as_mut(), Accum::Replace, dy, x, 1.0, Par::Seq);
            for oc in 0..o {
                for ic in 0..c {
                    dw[(oc * c + ic) * taps + t] = part[(oc, ic)];
                }
            }
        }
        dw
    }
}

/// What the epilogue does to one output channel's products, in this order: add `bias`, then
/// `v · scale + shift` (`affine`), then the residual, then ReLU — the formulas of
/// `conv::Epilogue`, which this matches bit for bit.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ChannelOps {
    /// The conv's bias for this channel.
    pub bias: Option<f32>,
    /// Evaluation-mode batch norm's `(scale, shift)` for this channel.
    pub affine: Option<(f32, f32)>,
    /// Whether ReLU follows.
    pub relu: bool,
}

impl Direct {
    /// Writes output channel `ch`'s products of a chunk of `nb` images (`y` from
    /// [`Direct::products`]) to `dst` (the chunk's `nb · h · w` values of that channel, without
    /// the padding columns), applying `ops` and adding `residual` (same shape as `dst`).
    pub(super) fn finish_channel(
        &self,
        (nb, ch): (usize, usize),
        y: &[f32],
        ops: ChannelOps,
        residual: Option<&[f32]>,
        dst: &mut [std::mem::MaybeUninit<f32>],
    ) {
        let (h, w, p) = (self.height, self.width, self.pad());
        assert!(dst.len() == nb * h * w);
        assert!(residual.is_none_or(|r| r.len() == dst.len()));
        assert!(y.len() >= self.products_len(nb));
        let lines = Lines {
            first: ch * self.products_stride(nb) + p * self.pitch(nb) + p,
            pitch: self.pitch(nb),
            padded_width: self.padded_width(),
            height: h,
            width: w,
            images: nb,
        };
        let res = residual.map(<[f32]>::as_ptr);
        // SAFETY: `avx512()` held when `self` was made; every line of `lines` lies in `y`
        // (`products_len`), and `res` and `dst` hold `nb · h · w` values.
        unsafe { finish_lines(y.as_ptr(), lines, res, dst.as_mut_ptr().cast(), ops) }
    }
}

/// Where one output channel's lines lie in a chunk's products: image `b`'s row `r` starts at
/// `first + r · pitch + b · padded_width` and holds `width` values.
#[derive(Debug, Clone, Copy)]
struct Lines {
    first: usize,
    pitch: usize,
    padded_width: usize,
    height: usize,
    width: usize,
    images: usize,
}

/// Each line of `y` (see [`Lines`]) through `ops` (plus the residual) into the compact
/// `images × height × width` values at `dst`, 16 lanes at a time, each line's last vector
/// masked.
///
/// # Safety
/// AVX-512F must be available; the lines must lie in `y`, and `res` (when given) and `dst`
/// must hold `images · height · width` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn finish_lines(
    y: *const f32,
    l: Lines,
    res: Option<*const f32>,
    dst: *mut f32,
    ops: ChannelOps,
) {
    use std::arch::x86_64::*;
    let n = l.width;
    let tail = n % 16;
    let last: __mmask16 = if tail == 0 {
        u16::MAX
    } else {
        (1u16 << tail) - 1
    };
    let (bias, (scale, shift)) = (ops.bias.unwrap_or(0.0), ops.affine.unwrap_or((1.0, 0.0)));
    let (bias, scale, shift) = (
        _mm512_set1_ps(bias),
        _mm512_set1_ps(scale),
        _mm512_set1_ps(shift),
    );
    for b in 0..l.images {
        for r in 0..l.height {
            let at = (b * l.height + r) * n;
            // SAFETY (the loads and stores): lanes under the mask stay within the line.
            let src = unsafe { y.add(l.first + r * l.pitch + b * l.padded_width) };
            let mut i = 0;
            while i < n {
                let m = if n - i >= 16 { u16::MAX } else { last };
                let mut v = unsafe { _mm512_maskz_loadu_ps(m, src.add(i)) };
                if ops.bias.is_some() {
                    v = _mm512_add_ps(v, bias);
                }
                if ops.affine.is_some() {
                    v = _mm512_add_ps(_mm512_mul_ps(v, scale), shift);
                }
                if let Some(res) = res {
                    v = _mm512_add_ps(v, unsafe { _mm512_maskz_loadu_ps(m, res.add(at + i)) });
                }
                if ops.relu {
                    // `max(v, 0)` returns its second operand for a NaN, as `f32::max(v, 0.0)`
                    v = _mm512_max_ps(v, _mm512_setzero_ps());
                }
                unsafe { _mm512_mask_storeu_ps(dst.add(at + i), m, v) };
                i += 16;
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn finish_lines(_: *const f32, _: Lines, _: Option<*const f32>, _: *mut f32, _: ChannelOps) {
    unreachable!("Direct::new returns None without AVX-512")
}

/// Whether this CPU runs AVX-512 (foundation).
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One tile of `q` ≤ 8 output channels: dispatches to the register tile of that size.
///
/// # Safety
/// AVX-512F must be available; see [`tile_q`] for the pointers.
#[cfg(target_arch = "x86_64")]
unsafe fn tile(
    q: usize,
    x: *const f32,
    input: (usize, &[isize], usize),
    w: *const f32,
    y: *mut f32,
    ystride: usize,
) {
    unsafe {
        match q {
            8 => tile_q::<8>(x, input, w, y, ystride),
            7 => tile_q::<7>(x, input, w, y, ystride),
            6 => tile_q::<6>(x, input, w, y, ystride),
            5 => tile_q::<5>(x, input, w, y, ystride),
            4 => tile_q::<4>(x, input, w, y, ystride),
            3 => tile_q::<3>(x, input, w, y, ystride),
            2 => tile_q::<2>(x, input, w, y, ystride),
            _ => tile_q::<1>(x, input, w, y, ystride),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(
    _: usize,
    _: *const f32,
    _: (usize, &[isize], usize),
    _: *const f32,
    _: *mut f32,
    _: usize,
) {
    unreachable!("Direct::new returns None without AVX-512")
}

/// `N` output channels × [`TILE`] positions: `y[n · ystride + i] = Σ_c Σ_t w[(c·T + t)·N + n] ·
/// x[c · plane + i + taps[t]]`, each sum a chain of fused multiply-adds from zero in that order.
///
/// # Safety
/// AVX-512F must be available; `x + c · plane + taps[t] + i` must be readable for every
/// channel, tap and `i < TILE`; `w` must hold `channels · taps · N` values and `y + n · ystride +
/// i` be writable for `n < N`, `i < TILE`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_q<const N: usize>(
    x: *const f32,
    (plane, taps, channels): (usize, &[isize], usize),
    w: *const f32,
    y: *mut f32,
    ystride: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 3]; N];
    let mut wp = w;
    for c in 0..channels {
        // SAFETY (all pointer arithmetic below): the caller's bounds.
        let xc = unsafe { x.add(c * plane) };
        for &t in taps {
            let (v0, v1, v2) = unsafe {
                let xt = xc.offset(t);
                (
                    _mm512_loadu_ps(xt),
                    _mm512_loadu_ps(xt.add(16)),
                    _mm512_loadu_ps(xt.add(32)),
                )
            };
            for (n, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(unsafe { *wp.add(n) });
                a[0] = _mm512_fmadd_ps(v0, wv, a[0]);
                a[1] = _mm512_fmadd_ps(v1, wv, a[1]);
                a[2] = _mm512_fmadd_ps(v2, wv, a[2]);
            }
            wp = unsafe { wp.add(N) };
        }
    }
    for (n, a) in acc.iter().enumerate() {
        for (r, v) in a.iter().enumerate() {
            unsafe { _mm512_storeu_ps(y.add(n * ystride + 16 * r), *v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same sums in the same order, one scalar `mul_add` at a time, on the unpadded input.
    fn reference(d: &Direct, x: &[f32], w: &[f32], nb: usize) -> Vec<f32> {
        let (h, wd, k, p) = (d.height, d.width, d.kernel, d.pad() as isize);
        let mut y = vec![0f32; d.out * nb * h * wd];
        for o in 0..d.out {
            for b in 0..nb {
                for r in 0..h {
                    for col in 0..wd {
                        let mut acc = 0f32;
                        for c in 0..d.channels {
                            for t in 0..k * k {
                                let iy = r as isize + (t / k) as isize - p;
                                let ix = col as isize + (t % k) as isize - p;
                                let inside =
                                    (0..h as isize).contains(&iy) && (0..wd as isize).contains(&ix);
                                let v = if inside {
                                    x[((b * d.channels + c) * h + iy as usize) * wd + ix as usize]
                                } else {
                                    0.0
                                };
                                acc = v.mul_add(w[(o * d.channels + c) * k * k + t], acc);
                            }
                        }
                        y[((o * nb + b) * h + r) * wd + col] = acc;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    #[test]
    fn matches_scalar_fused_sums_bit_for_bit() {
        if !avx512() {
            println!("skipped: this CPU has no AVX-512 (the direct products are not used here)");
            return;
        }
        // (channels, out, height, width, kernel, images): tails of output channels, one input
        // channel, 1 × 1 and 5 × 5 kernels, odd sizes, one image and several
        for (c, o, h, wd, k, nb) in [
            (16, 16, 28, 28, 3, 3),
            (1, 16, 28, 28, 3, 2),
            (3, 13, 17, 21, 3, 2),
            (5, 9, 14, 14, 1, 4),
            (4, 6, 12, 15, 5, 1),
            (32, 24, 14, 14, 3, 2),
            // small planes: lines shorter than a tile, a chunk shorter than a tile
            (64, 16, 7, 7, 3, 5),
            (8, 16, 4, 4, 3, 3),
            (3, 5, 2, 3, 3, 1),
        ] {
            let d = Direct::new((c, o), (h, wd), (k, 1, k / 2), 1).expect("applies");
            let x = values(nb * c * h * wd, 1);
            let w = values(o * c * k * k, 2);
            let mut xp = vec![f32::NAN; d.input_len(nb)];
            d.pad_input(&x, |b, ch| (b * c + ch) * h * wd, (0, nb), &mut xp);
            let mut y = vec![f32::NAN; d.products_len(nb)];
            d.products(&xp, nb, &d.tile_weights(&w), &mut y);
            let want = reference(&d, &x, &w, nb);
            let plain = ChannelOps {
                bias: None,
                affine: None,
                relu: false,
            };
            for (ch, want) in want.chunks_exact(nb * h * wd).enumerate() {
                let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); nb * h * wd];
                d.finish_channel((nb, ch), &y, plain, None, &mut got);
                for (i, (g, e)) in got.iter().zip(want).enumerate() {
                    // SAFETY: initialised above
                    let g = unsafe { g.assume_init() };
                    assert!(
                        g.to_bits() == e.to_bits(),
                        "{c}→{o} {h}×{wd} k{k}: channel {ch}, value {i}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn does_not_apply_where_it_cannot() {
        for (why, (height, width), (kernel, stride, padding), min_width) in [
            ("stride 2", (28, 28), (3, 2, 1), 1),
            ("valid padding", (28, 28), (3, 1, 0), 1),
            ("even kernel", (28, 28), (2, 1, 1), 1),
            ("narrow plane", (7, 7), (3, 1, 1), 14),
        ] {
            let d = Direct::new(
                (16, 16),
                (height, width),
                (kernel, stride, padding),
                min_width,
            );
            assert!(d.is_none(), "{why}");
        }
    }
}
