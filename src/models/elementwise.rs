//! 2 × 2 max-pooling and the residual `relu(a + b)` as single passes with their own backward
//! passes (f32 on the CPU; candle's ops elsewhere).
//!
//! Why by hand: candle's max-pool backward is six whole-tensor ops (upsample, compare, average
//! pool, …) and its binary ops fall back to slow strided loops when one operand is a
//! channel-major view (a batch-norm output). Both ops read either layout (image planes
//! contiguous) and write NCHW. Ties in a pooling window send the gradient to the first
//! maximum, as torch does.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::storage::{f32_data, is_cpu_f32, plane_start, planes_contiguous};

/// 2 × 2 max-pooling with stride 2 (odd rows and columns dropped, as torch does).
pub fn max_pool2(xs: &Tensor) -> Result<Tensor> {
    if !is_cpu_f32(xs) {
        return xs.max_pool2d_with_stride(2, 2);
    }
    planes_contiguous(xs)?.apply_op1(MaxPool2)
}

/// `relu(a + b)` for two tensors of the same shape.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !is_cpu_f32(a) || a.dims().len() != 4 {
        return (a + b)?.relu();
    }
    planes_contiguous(a)?.apply_op2(&planes_contiguous(b)?, AddRelu)
}

/// The first maximum of window (oy, ox) in a plane of width `w`: its index.
fn argmax(plane: &[f32], w: usize, oy: usize, ox: usize) -> usize {
    let i = 2 * oy * w + 2 * ox;
    [i, i + 1, i + w, i + w + 1]
        .into_iter()
        .fold(i, |best, j| if plane[j] > plane[best] { j } else { best })
}

struct MaxPool2;

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(storage, "max-pool")?;
        let start = plane_start(layout, "max-pool")?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let mut out = vec![0f32; b * c * ho * wo];
        out.par_chunks_mut((ho * wo).max(1))
            .enumerate()
            .for_each(|(bc, o)| {
                let plane = &x[start(bc / c, bc % c)..][..h * w];
                for oy in 0..ho {
                    for ox in 0..wo {
                        o[oy * wo + ox] = plane[argmax(plane, w, oy, ox)];
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPool2Backward,
        )?))
    }
}

/// `(x, dy)` → dx: each window's gradient goes to its first maximum.
struct MaxPool2Backward;

impl CustomOp2 for MaxPool2Backward {
    fn name(&self) -> &'static str {
        "max-pool-2x2-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s1, "max-pool")?;
        let start = plane_start(l1, "max-pool")?;
        let dy = f32_data(s2, "max-pool gradient")?;
        let dy = &dy[l2.start_offset()..];
        let (b, c, h, w) = l1.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let mut dx = vec![0f32; b * c * h * w];
        dx.par_chunks_mut(h * w).enumerate().for_each(|(bc, d)| {
            let plane = &x[start(bc / c, bc % c)..][..h * w];
            let g = &dy[bc * ho * wo..][..ho * wo];
            for oy in 0..ho {
                for ox in 0..wo {
                    d[argmax(plane, w, oy, ox)] = g[oy * wo + ox];
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((b, c, h, w))))
    }
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32_data(s1, "add-relu")?, f32_data(s2, "add-relu")?);
        let (sa, sb) = (plane_start(l1, "add-relu")?, plane_start(l2, "add-relu")?);
        let (n, c, h, w) = l1.shape().dims4()?;
        if l2.dims() != l1.dims() {
            candle_core::bail!(
                "add-relu: shapes {:?} and {:?} differ",
                l1.dims(),
                l2.dims()
            )
        }
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(bc, o)| {
            let pa = &a[sa(bc / c, bc % c)..][..h * w];
            let pb = &b[sb(bc / c, bc % c)..][..h * w];
            for ((o, &x), &y) in o.iter_mut().zip(pa).zip(pb) {
                *o = (x + y).max(0.0);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d(a + b) = dy where the output is positive
        let g = (grad * res.gt(0f64)?.to_dtype(grad.dtype())?)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919) % 37) as f32 / 9.0 - 2.0)
            .collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("difference")
    }

    /// Max-pool: candle's output and the gradient at each window's maximum; add-ReLU: candle's
    /// output and gradients; for contiguous and transposed inputs.
    #[test]
    fn match_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        for transposed in [false, true] {
            let shape = if transposed {
                (3, 2, 8, 6)
            } else {
                (2, 3, 8, 6)
            };
            let n = 2 * 3 * 8 * 6;
            let distinct: Vec<f32> = (0..n).map(|i| ((i * 37) % n) as f32 * 0.01 - 1.0).collect();
            let x = Var::from_vec(distinct, shape, &dev)?;
            let y = Var::from_vec(ramp(n), shape, &dev)?;
            let view = |v: &Var| -> Result<Tensor> {
                if transposed {
                    v.as_tensor().transpose(0, 1)
                } else {
                    Ok(v.as_tensor().clone())
                }
            };
            let (xs, ys) = (view(&x)?, view(&y)?);
            // a gradient with respect to the Var, in the logical (B, C, H, W) order of `xs`
            let view_grad = |g: &Tensor| -> Result<Vec<f32>> {
                let g = if transposed {
                    g.transpose(0, 1)?
                } else {
                    g.clone()
                };
                g.contiguous()?.flatten_all()?.to_vec1::<f32>()
            };

            let ours = max_pool2(&xs)?;
            let theirs = xs.contiguous()?.max_pool2d_with_stride(2, 2)?;
            assert_eq!(max_diff(&ours, &theirs), 0.0);
            // The gradient: each window's output gradient at its maximum, zero elsewhere.
            // (candle's own max-pool backward multiplies by the share of maxima in the window
            // instead of dividing by their count — a quarter of the gradient here — so it is
            // computed directly.)
            let probe = Tensor::new(ramp(ours.elem_count()), &dev)?.reshape(ours.dims())?;
            let g1 = (ours * &probe)?.sum_all()?.backward()?;
            let dx = view_grad(g1.get(x.as_tensor()).expect("gradient"))?;
            let (data, p) = (
                xs.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
                probe.flatten_all()?.to_vec1::<f32>()?,
            );
            let mut want = vec![0f32; data.len()];
            for plane in 0..6 {
                let base = plane * 48;
                for oy in 0..4 {
                    for ox in 0..3 {
                        let best = argmax(&data[base..base + 48], 6, oy, ox);
                        want[base + best] = p[plane * 12 + oy * 3 + ox];
                    }
                }
            }
            assert_eq!(dx, want);

            let ours = add_relu(&xs, &ys)?;
            let theirs = (&xs + &ys)?.relu()?;
            assert!(max_diff(&ours, &theirs) < 1e-6);
            let probe = Tensor::new(ramp(ours.elem_count()), &dev)?.reshape(ours.dims())?;
            let g1 = (ours * &probe)?.sum_all()?.backward()?;
            let g2 = (theirs * &probe)?.sum_all()?.backward()?;
            for v in [&x, &y] {
                let (a, b) = (
                    g1.get(v.as_tensor()).expect("gradient"),
                    g2.get(v.as_tensor()).expect("gradient"),
                );
                assert!(max_diff(a, b) < 1e-6);
            }
        }
        Ok(())
    }

    /// Odd sizes: the last row and column are dropped, and each window's gradient goes to its
    /// maximum (the first one on ties), as in torch.
    #[test]
    fn odd_sizes_and_ties_follow_torch() -> Result<()> {
        let dev = Device::Cpu;
        // one 3 × 5 plane: windows [[1, 5], [2, 5]] (tie: first) and [[3, 0], [4, 9]]
        let x = Var::from_vec(
            vec![1f32, 5., 3., 0., 7., 2., 5., 4., 9., 8., 6., 6., 6., 6., 6.],
            (1, 1, 3, 5),
            &dev,
        )?;
        let y = max_pool2(x.as_tensor())?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5., 9.]);
        let g = y.sum_all()?.backward()?;
        let dx = g
            .get(x.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = vec![0f32; 15];
        want[1] = 1.0;
        want[8] = 1.0;
        assert_eq!(dx, want);
        Ok(())
    }
}
