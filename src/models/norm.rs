//! 2-D batch normalisation with torch's parameter names (`weight`, `bias`, `running_mean`,
//! `running_var`) and update rule (momentum 0.1, unbiased variance in the running estimate).
//!
//! Why by hand: candle-nn's `BatchNorm` builds training mode from about ten whole-tensor ops
//! (transposes, copies, broadcasts), each with its own backward. Here the statistics,
//! normalisation and affine map are one pass over the data and the backward pass one more
//! ([`candle_core::CustomOp3`], f32 on the CPU); the data are viewed channel-major, which is how
//! [`super::conv::Conv`] leaves them, so no copy is made. Other devices and dtypes use the same
//! formulas written as candle ops.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use super::storage::{contiguous, is_cpu_f32};

/// Momentum of the running statistics (torch's default).
const MOMENTUM: f64 = 0.1;

/// A batch-norm layer over the channels of `batch × channels × height × width` inputs.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
}

impl BatchNorm {
    /// Reads the layer's four tensors from `vb` (1, 0, 0, 1 when they are created).
    pub fn new(channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.))?;
        let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.))?;
        Ok(BatchNorm {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.))?,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps,
        })
    }

    /// The running mean of each channel.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance of each channel.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// Normalises channel-major `xs` (`channels × batch × h × w`, a
    /// [`super::conv::Conv::forward_cm`] output) with the batch's statistics (and updates the
    /// running ones) when `train`, with the running statistics otherwise; channel-major out.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_fused(xs, train, false)
    }

    /// `forward_t` followed by ReLU, in the same pass.
    pub fn forward_relu_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_fused(xs, train, true)
    }

    fn forward_fused(&self, xs: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        // channel-major: each channel's values are one run (no copy for a conv's output)
        let xs = xs.contiguous()?;
        let c = xs.dim(0)?;
        let n = xs.elem_count() / c.max(1);
        if is_cpu_f32(&xs) {
            return if train {
                let op = TrainForward {
                    eps: self.eps,
                    relu,
                    saved: Arc::default(),
                };
                let saved = op.saved.clone();
                let ys = xs.apply_op3(&self.weight, &self.bias, op)?;
                let saved = saved.lock().expect("batch-norm statistics");
                let column = |v: Vec<f32>| Tensor::from_vec(v, c, xs.device());
                let mean = column(saved.stats.iter().map(|s| s.mean as f32).collect())?;
                let var = column(saved.stats.iter().map(|s| s.var as f32).collect())?;
                self.update_running(&mean, &var, n)?;
                Ok(ys)
            } else {
                let (scale, shift) = self.eval_affine()?;
                xs.apply_op3_no_bwd(&scale, &shift, &Affine { relu })
            };
        }
        let cm = xs.reshape((c, n))?;
        let ys = if train {
            let mean = cm.mean_keepdim(1)?;
            let centred = cm.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(1)?;
            self.update_running(&mean.flatten_all()?, &var.flatten_all()?, n)?;
            centred
                .broadcast_div(&(var + self.eps)?.sqrt()?)?
                .broadcast_mul(&self.weight.reshape((c, 1))?)?
                .broadcast_add(&self.bias.reshape((c, 1))?)?
        } else {
            let (scale, shift) = self.eval_affine()?;
            cm.broadcast_mul(&scale.reshape((c, 1))?)?
                .broadcast_add(&shift.reshape((c, 1))?)?
        };
        let ys = if relu { ys.relu()? } else { ys };
        ys.reshape(xs.dims())
    }

    /// Evaluation mode's per-channel `(scale, shift)` as values (what [`BatchNorm::forward_t`]
    /// applies when not training).
    pub fn eval_scale_shift(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (scale, shift) = self.eval_affine()?;
        Ok((scale.to_vec1()?, shift.to_vec1()?))
    }

    /// Evaluation mode's per-channel `(scale, shift)`.
    fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// torch's update: `r ← (1 − m)·r + m·batch`, the variance with Bessel's correction.
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let unbiased = n as f64 / (n.max(2) - 1) as f64;
        let rm =
            ((self.running_mean.as_tensor() * (1.0 - MOMENTUM))? + (mean.detach() * MOMENTUM)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - MOMENTUM))?
            + (var.detach() * (MOMENTUM * unbiased))?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }
}

/// One channel's batch statistics, in f64.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    mean: f64,
    /// The biased variance.
    var: f64,
    /// 1/√(var + ε).
    inv_std: f64,
}

/// Per-channel statistics of channel-major data `x` (C × N).
fn channel_stats(x: &[f32], n: usize, eps: f64) -> Vec<Stats> {
    x.par_chunks(n)
        .map(|row| {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            Stats {
                mean,
                var,
                inv_std: 1.0 / (var + eps).sqrt(),
            }
        })
        .collect()
}

/// A channel-major tensor's (channels, values per channel).
fn rows(layout: &Layout) -> (usize, usize) {
    let c = layout.dims().first().copied().unwrap_or(1).max(1);
    (c, layout.shape().elem_count() / c)
}

/// Evaluation mode on channel-major `x` (C × …): `x·scale + shift` per channel (then ReLU).
/// Forward only.
struct Affine {
    relu: bool,
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "batch-norm-eval"
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
        let (x, scale, shift) = (
            contiguous(s1, l1, "batch norm input")?,
            contiguous(s2, l2, "batch norm scale")?,
            contiguous(s3, l3, "batch norm shift")?,
        );
        let (_, n) = rows(l1);
        let mut ys = vec![0f32; x.len()];
        ys.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .enumerate()
            .for_each(|(ch, (out, row))| affine(out, row, (scale[ch], shift[ch]), self.relu));
        Ok((CpuStorage::F32(ys), l1.shape().clone()))
    }
}

/// `out = v · a + b` for each `v` of `row`, then ReLU (`max(v, 0)`) when `relu`. Without
/// ReLU a NaN stays NaN (a `max(v, −∞)` in its place had turned it into −∞).
fn affine(out: &mut [f32], row: &[f32], (a, b): (f32, f32), relu: bool) {
    if relu {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v * a + b).max(0.0);
        }
    } else {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = v * a + b;
        }
    }
}

/// What the forward pass leaves for the running statistics and the backward pass.
#[derive(Default)]
struct Saved {
    stats: Vec<Stats>,
    gamma: Vec<f32>,
}

/// Training-mode forward pass on channel-major `x` (C × …) with `weight` and `bias` (C), then
/// ReLU when `relu`: the output, and the batch mean and biased variance left in `saved`.
struct TrainForward {
    eps: f64,
    relu: bool,
    saved: Arc<Mutex<Saved>>,
}

impl CustomOp3 for TrainForward {
    fn name(&self) -> &'static str {
        "batch-norm-train"
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
        let (x, gamma, beta) = (
            contiguous(s1, l1, "batch norm input")?,
            contiguous(s2, l2, "batch norm weight")?,
            contiguous(s3, l3, "batch norm bias")?,
        );
        let (_, n) = rows(l1);
        let stats = channel_stats(x, n, self.eps);
        let mut ys = vec![0f32; x.len()];
        ys.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .enumerate()
            .for_each(|(ch, (out, row))| {
                let Stats { mean, inv_std, .. } = stats[ch];
                let scale = (gamma[ch] as f64 * inv_std) as f32;
                let shift = (beta[ch] as f64 - mean * gamma[ch] as f64 * inv_std) as f32;
                affine(out, row, (scale, shift), self.relu);
            });
        *self.saved.lock().expect("batch-norm statistics") = Saved {
            stats,
            gamma: gamma.to_vec(),
        };
        Ok((CpuStorage::F32(ys), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = x.dim(0)?;
        let n = x.elem_count() / c.max(1);
        let op = {
            let saved = self.saved.lock().expect("batch-norm statistics");
            TrainBackward {
                relu: self.relu,
                stats: saved.stats.clone(),
                gamma: saved.gamma.clone(),
            }
        };
        let all = x.apply_op3_no_bwd(&grad.contiguous()?, res, &op)?;
        let dx = all.narrow(0, 0, c * n)?.reshape(x.dims())?;
        let dgamma = all.narrow(0, c * n, c)?;
        let dbeta = all.narrow(0, c * n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Gradients of [`TrainForward`] from (x, dy, y): dx (C·N), then dweight (C), dbias (C), in
/// one flat vector, with the forward pass's statistics. With ReLU, dy counts only where the
/// output is positive.
struct TrainBackward {
    relu: bool,
    stats: Vec<Stats>,
    gamma: Vec<f32>,
}

impl CustomOp3 for TrainBackward {
    fn name(&self) -> &'static str {
        "batch-norm-train-backward"
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
        let (x, dy, y) = (
            contiguous(s1, l1, "batch norm input")?,
            contiguous(s2, l2, "batch norm output gradient")?,
            contiguous(s3, l3, "batch norm output")?,
        );
        let (c, n) = rows(l1);
        let relu = self.relu;
        let grad = |g: f32, y: f32| if relu && y <= 0.0 { 0.0 } else { g as f64 };
        let mut out = vec![0f32; c * n + 2 * c];
        let (dx, params) = out.split_at_mut(c * n);
        // Per channel: dβ = Σ g, dγ = Σ g·x̂, dx = γ/σ · (g − dβ/N − x̂·dγ/N).
        let sums: Vec<(f64, f64)> = dx
            .par_chunks_mut(n)
            .zip(x.par_chunks(n).zip(dy.par_chunks(n).zip(y.par_chunks(n))))
            .enumerate()
            .map(|(ch, (out, (row, (dys, ys))))| {
                let Stats { mean, inv_std, .. } = self.stats[ch];
                let (mut dbeta, mut dgamma) = (0f64, 0f64);
                for ((&v, &g), &o) in row.iter().zip(dys).zip(ys) {
                    let g = grad(g, o);
                    dbeta += g;
                    dgamma += g * (v as f64 - mean) * inv_std;
                }
                let k = self.gamma[ch] as f64 * inv_std;
                let (a, b) = (dbeta / n as f64, dgamma / n as f64);
                for (((o, &v), &g), &yo) in out.iter_mut().zip(row).zip(dys).zip(ys) {
                    let xhat = (v as f64 - mean) * inv_std;
                    *o = (k * (grad(g, yo) - a - xhat * b)) as f32;
                }
                (dgamma, dbeta)
            })
            .collect();
        for (ch, (dgamma, dbeta)) in sums.into_iter().enumerate() {
            params[ch] = dgamma as f32;
            params[c + ch] = dbeta as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(c * n + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{ModuleT, VarMap};

    /// Output, gradients (input, weight, bias) and running statistics agree with candle-nn's
    /// `BatchNorm` (then `relu`) on the NCHW view in training mode, for contiguous
    /// channel-major inputs (a conv's output) and transposed NCHW ones (copied first), with
    /// and without the fused ReLU; then the evaluation mode.
    #[test]
    fn matches_candle_nn_in_training_mode() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w) = (3, 4, 5, 6);
        let data: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i * 7919) % 97) as f32 / 20.0 - 2.0 + (i % 4) as f32)
            .collect();
        for (transposed, relu) in [(false, false), (true, false), (false, true), (true, true)] {
            let x = if transposed {
                Var::from_vec(data.clone(), (c, b, h, w), &dev)?
            } else {
                Var::from_vec(data.clone(), (b, c, h, w), &dev)?
            };
            // `input` is NCHW, `cm` the same values channel-major
            let input = if transposed {
                x.as_tensor().transpose(0, 1)?
            } else {
                x.as_tensor().clone()
            };
            let cm = input.transpose(0, 1)?;
            let nchw = |t: Tensor| t.transpose(0, 1);
            let (vm_ours, vm_ref) = (VarMap::new(), VarMap::new());
            let ours =
                BatchNorm::new(c, 1e-5, VarBuilder::from_varmap(&vm_ours, DType::F32, &dev))?;
            let theirs =
                candle_nn::batch_norm(c, 1e-5, VarBuilder::from_varmap(&vm_ref, DType::F32, &dev))?;
            let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
            let beta: Vec<f32> = (0..c).map(|i| i as f32 - 1.0).collect();
            for vm in [&vm_ours, &vm_ref] {
                let data = vm.data().lock().expect("varmap");
                data["weight"].set(&Tensor::new(gamma.as_slice(), &dev)?)?;
                data["bias"].set(&Tensor::new(beta.as_slice(), &dev)?)?;
            }
            let (y1, y2) = if relu {
                (
                    nchw(ours.forward_relu_t(&cm, true)?)?,
                    theirs.forward_t(&input, true)?.relu()?,
                )
            } else {
                (
                    nchw(ours.forward_t(&cm, true)?)?,
                    theirs.forward_t(&input, true)?,
                )
            };
            let max = |t: Tensor| -> Result<f32> { t.abs()?.max_all()?.to_scalar::<f32>() };
            assert!(max((&y1 - &y2)?)? < 1e-5);
            let probe = Tensor::from_vec(
                (0..y1.elem_count())
                    .map(|i| ((i * 31) % 13) as f32 - 6.0)
                    .collect(),
                y1.dims(),
                &dev,
            )?;
            let g1 = (y1 * &probe)?.sum_all()?.backward()?;
            let g2 = (y2 * &probe)?.sum_all()?.backward()?;
            let w1 = vm_ours.data().lock().expect("varmap")["weight"].clone();
            let w2 = vm_ref.data().lock().expect("varmap")["weight"].clone();
            let b1 = vm_ours.data().lock().expect("varmap")["bias"].clone();
            let b2 = vm_ref.data().lock().expect("varmap")["bias"].clone();
            for (a, b) in [
                (g1.get(x.as_tensor()), g2.get(x.as_tensor())),
                (g1.get(w1.as_tensor()), g2.get(w2.as_tensor())),
                (g1.get(b1.as_tensor()), g2.get(b2.as_tensor())),
            ] {
                let (a, b) = (a.expect("gradient"), b.expect("gradient"));
                assert!(max((a - b)?)? < 1e-3, "gradients differ");
            }
            assert!(max((ours.running_mean() - theirs.running_mean())?)? < 1e-6);
            assert!(max((ours.running_var() - theirs.running_var())?)? < 1e-5);
            let (e1, e2) = if relu {
                (
                    nchw(ours.forward_relu_t(&cm, false)?)?,
                    theirs.forward_t(&input, false)?.relu()?,
                )
            } else {
                (
                    nchw(ours.forward_t(&cm, false)?)?,
                    theirs.forward_t(&input, false)?,
                )
            };
            assert!(max((e1 - e2)?)? < 1e-5);
        }
        Ok(())
    }
}
