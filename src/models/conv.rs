//! A 2-D convolution computed as im2col + one batched matrix product, inside candle's autograd.
//!
//! Why by hand: candle 0.11's CPU convolution computes the input gradient with
//! `conv_transpose2d`, a direct loop that takes about half of a ResNet training step. Written as
//! `y_b = W · cols(x_b)` the forward pass is one gemm per image batch, the weight gradient is the
//! gemm candle's matmul backward already does, and the input gradient is `col2im(Wᵀ · dy)`, a
//! scatter-add. Both copies are [`candle_core::CustomOp1`]s here (f32, CPU); other devices and
//! dtypes fall back to candle's own `conv2d`. Same parameter name and shape as torch's
//! `Conv2d.weight` (`out × in × k × k`), so checkpoints load unchanged.

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// The geometry shared by [`Im2Col`] and [`Col2Im`].
#[derive(Debug, Clone, Copy)]
struct Geometry {
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Calls `f(column row offset, input index)` for every valid (kernel offset, output pixel)
    /// of one channel plane; `f` receives the flat column index `r * L + p` and the input pixel.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (ho, wo) = (self.out_height(), self.out_width());
        let (k, s, pad) = (self.kernel, self.stride, self.padding as isize);
        for ki in 0..k {
            for kj in 0..k {
                let r = ki * k + kj;
                for oy in 0..ho {
                    let iy = (oy * s) as isize + ki as isize - pad;
                    if iy < 0 || iy >= self.height as isize {
                        continue;
                    }
                    for ox in 0..wo {
                        let ix = (ox * s) as isize + kj as isize - pad;
                        if ix < 0 || ix >= self.width as isize {
                            continue;
                        }
                        f(r, oy * wo + ox, iy as usize * self.width + ix as usize);
                    }
                }
            }
        }
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 tensors are supported")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// `(B, C, H, W)` → `(C·k·k, B·Ho·Wo)`: every receptive field as a column (zero padding), all
/// images side by side so that the convolution is one gemm.
struct Im2Col(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let CpuStorage::F32(x) = storage else {
            candle_core::bail!("im2col: only f32 tensors are supported")
        };
        let (batch, stride) = (layout.dims()[0], layout.stride());
        // Image and channel may be in either order (a conv output seen through a transpose);
        // each plane must be contiguous.
        if stride[3] != 1 || stride[2] != g.width {
            candle_core::bail!("im2col: image planes must be contiguous")
        }
        let (plane, taps) = (g.height * g.width, g.kernel * g.kernel);
        let l = g.out_height() * g.out_width();
        let bl = batch * l;
        let mut cols = vec![0f32; g.channels * taps * bl];
        // Channel c fills rows c·k²..(c+1)·k², image b the columns b·L..(b+1)·L of each.
        cols.par_chunks_mut(taps * bl)
            .enumerate()
            .for_each(|(c, out)| {
                for b in 0..batch {
                    let start = layout.start_offset() + b * stride[0] + c * stride[1];
                    let input = &x[start..][..plane];
                    g.for_each_tap(|r, p, i| out[r * bl + b * l + p] = input[i]);
                }
            });
        Ok((CpuStorage::F32(cols), Shape::from((g.channels * taps, bl))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let batch = arg.dim(0)?;
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&Col2Im(self.0, batch))?,
        ))
    }
}

/// The adjoint of [`Im2Col`] for a batch of the given size: `(C·k·k, B·Ho·Wo)` →
/// `(B, C, H, W)`, overlapping taps summed.
struct Col2Im(Geometry, usize);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, batch) = (self.0, self.1);
        let cols = contiguous_f32(storage, layout, "col2im")?;
        let (plane, taps) = (g.height * g.width, g.kernel * g.kernel);
        let l = g.out_height() * g.out_width();
        let bl = batch * l;
        let mut x = vec![0f32; batch * g.channels * plane];
        x.par_chunks_mut(plane).enumerate().for_each(|(bc, out)| {
            let (b, c) = (bc / g.channels, bc % g.channels);
            let rows = &cols[c * taps * bl..][..taps * bl];
            g.for_each_tap(|r, p, i| out[i] += rows[r * bl + b * l + p]);
        });
        Ok((
            CpuStorage::F32(x),
            Shape::from((batch, g.channels, g.height, g.width)),
        ))
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

impl Module for Conv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = xs.dims4()?;
        let cout = self.weight.dim(0)?;
        let cpu_f32 = xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32;
        if !cpu_f32 {
            let cfg = candle_nn::Conv2dConfig {
                padding: self.padding,
                stride: self.stride,
                ..Default::default()
            };
            return candle_nn::Conv2d::new(self.weight.clone(), self.bias.clone(), cfg).forward(xs);
        }
        let g = Geometry {
            channels,
            height,
            width,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        };
        let (ho, wo) = (g.out_height(), g.out_width());
        let xs = if xs.stride()[3] == 1 && xs.stride()[2] == width {
            xs.clone()
        } else {
            xs.contiguous()?
        };
        let cols = xs.apply_op1(Im2Col(g))?;
        let w = self
            .weight
            .reshape((cout, channels * self.kernel * self.kernel))?;
        // (O, B·L) → (B, O, Ho, Wo), seen through a transpose: batch norm works channel-major,
        // and the next im2col reads either order, so no copy is made here.
        let ys = w
            .matmul(&cols)?
            .reshape((cout, batch, ho, wo))?
            .transpose(0, 1)?;
        match &self.bias {
            Some(b) => ys.broadcast_add(&b.reshape((1, cout, 1, 1))?),
            None => Ok(ys),
        }
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
    /// contiguous inputs and for channel-major ones seen through a transpose (a conv's output).
    #[test]
    fn matches_candle_conv2d_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (cin, cout, k, stride, pad, h, transposed) in [
            (3, 5, 3, 1, 1, 9, false),
            (3, 5, 3, 1, 1, 9, true),
            (4, 6, 3, 2, 1, 8, false),
            (4, 6, 1, 2, 0, 7, true),
            (2, 3, 1, 1, 0, 5, false),
            (3, 4, 7, 2, 3, 12, false),
        ] {
            let values = ramp(2 * cin * h * h, 1.0);
            let (x, input) = if transposed {
                let x = Var::from_vec(values, (cin, 2, h, h), &dev)?;
                let input = x.as_tensor().transpose(0, 1)?;
                (x, input)
            } else {
                let x = Var::from_vec(values, (2, cin, h, h), &dev)?;
                let input = x.as_tensor().clone();
                (x, input)
            };
            let w = Var::from_vec(ramp(cout * cin * k * k, 0.3), (cout, cin, k, k), &dev)?;
            let ours = Conv {
                weight: w.as_tensor().clone(),
                bias: None,
                kernel: k,
                stride,
                padding: pad,
            }
            .forward(&input)?;
            let theirs = input
                .contiguous()?
                .conv2d(w.as_tensor(), pad, stride, 1, 1)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "forward differs by {diff}");
            let probe = Tensor::from_vec(ramp(ours.elem_count(), 1.0), ours.dims(), &dev)?;
            let g1 = (ours * &probe)?.sum_all()?.backward()?;
            let g2 = (theirs * &probe)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let a = g1.get(v.as_tensor()).expect("gradient");
                let b = g2.get(v.as_tensor()).expect("gradient");
                let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "gradient differs by {diff}");
            }
        }
        Ok(())
    }
}
