//! A convolution followed by batch norm, and optionally ReLU: the unit the conv stacks
//! (ResNet, VGG) are built from. In evaluation, when no layer is being recorded, the batch
//! norm and ReLU are applied as the convolution's products are written
//! ([`Conv::forward_cm_affine`]), so the pass makes no batch-norm pass and no intermediate
//! tensor; the values are the same bit for bit. Otherwise the conv output is recorded in
//! `taps` under `name` and batch norm runs as its own op (with its gradient in training).
//! A ResNet block's last conv also takes the block's shortcut into that epilogue
//! ([`conv_bn_add_relu`]).

use candle_core::{Result, Tensor};

use super::conv::{Conv, Order};
use super::elementwise::add_relu;
use super::norm::BatchNorm;
use super::Taps;

/// Whether a pass may fuse: evaluation, with no layer being recorded.
fn fusable(train: bool, taps: &Taps) -> bool {
    !train && !taps.is_on()
}

/// `relu?(bn(conv(xs)))`, channel-major out; `xs` in order `input`.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn(
    conv: &Conv,
    bn: &BatchNorm,
    xs: &Tensor,
    input: Order,
    relu: bool,
    train: bool,
    taps: &mut Taps,
    name: &str,
) -> Result<Tensor> {
    if fusable(train, taps) {
        if let Some(ys) = conv.forward_cm_affine(xs, input, bn.eval_scale_shift()?, relu, None)? {
            return Ok(ys);
        }
    }
    let y = conv.forward_cm(xs, input)?;
    taps.record_cm(name, &y)?;
    if relu {
        bn.forward_relu_t(&y, train)
    } else {
        bn.forward_t(&y, train)
    }
}

/// `relu(bn(conv(xs)) + shortcut)`, the end of a ResNet block (channel-major in and out);
/// `shortcut` computes the block's shortcut (recording its layers after this conv's, the
/// forward order). When fused, the shortcut is added in the convolution's epilogue.
pub fn conv_bn_add_relu(
    conv: &Conv,
    bn: &BatchNorm,
    xs: &Tensor,
    shortcut: impl FnOnce(&mut Taps) -> Result<Tensor>,
    train: bool,
    taps: &mut Taps,
    name: &str,
) -> Result<Tensor> {
    let cm = Order::ChannelMajor;
    if fusable(train, taps) {
        let s = shortcut(taps)?;
        let scale_shift = bn.eval_scale_shift()?;
        if let Some(ys) = conv.forward_cm_affine(xs, cm, scale_shift, true, Some(&s))? {
            return Ok(ys);
        }
        return add_relu(&conv_bn(conv, bn, xs, cm, false, train, taps, name)?, &s);
    }
    let h = conv_bn(conv, bn, xs, cm, false, train, taps, name)?;
    add_relu(&h, &shortcut(taps)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::conv::tests::both_paths;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// The fused evaluation pass gives the separate passes' values bit for bit: ReLU or not,
    /// a conv bias (VGG's) or not, stride 1 ("same", shifted planes) and stride 2 (row copies), 1 × 1 kernels, NCHW and
    /// channel-major inputs, and batch-norm statistics far from 0 and 1.
    #[test]
    fn fused_evaluation_matches_separate_passes() -> Result<()> {
        both_paths(fused_evaluation_matches_separate_passes_on)
    }

    fn fused_evaluation_matches_separate_passes_on(path: &str) -> Result<()> {
        let dev = Device::Cpu;
        for (kernel, stride, padding, input, relu, bias) in [
            (3, 1, 1, Order::Nchw, true, false),
            (3, 1, 1, Order::Nchw, true, true),
            (3, 1, 1, Order::ChannelMajor, false, true),
            (3, 2, 1, Order::ChannelMajor, true, false),
            (1, 2, 0, Order::ChannelMajor, false, true),
            (1, 1, 0, Order::Nchw, true, false),
        ] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let conv = Conv::new((3, 5), kernel, stride, padding, bias, vb.pp("conv"))?;
            let bn = BatchNorm::new(5, 1e-5, vb.pp("bn"))?;
            for (name, v) in vm.data().lock().expect("varmap").iter() {
                let n = v.as_tensor().elem_count();
                let values: Vec<f32> = (0..n)
                    .map(|i| ((i * 37 + name.len()) % 11) as f32 * 0.3 + 0.2)
                    .map(|v| {
                        if name.ends_with("conv.bias") {
                            v - 1.6
                        } else {
                            v
                        }
                    })
                    .collect();
                v.set(&Tensor::from_vec(values, v.as_tensor().dims(), &dev)?)?;
            }
            // 9 × 9 planes take im2col and a gemm, 16 × 16 the direct products (on a CPU with
            // AVX-512); a NaN input must give the same result both ways
            for h in [9, 16] {
                let mut x = Tensor::randn(0f32, 1.0, (4 * 3 * h * h,), &dev)?.to_vec1::<f32>()?;
                x[2 * h * h + h + 3] = f32::NAN;
                let x = Tensor::from_vec(x, (4, 3, h, h), &dev)?;
                let xs = match input {
                    Order::Nchw => x,
                    Order::ChannelMajor => x.transpose(0, 1)?.contiguous()?,
                };
                let fused = conv_bn(&conv, &bn, &xs, input, relu, false, &mut Taps::off(), "c")?;
                let mut taps = Taps::on();
                let separate = conv_bn(&conv, &bn, &xs, input, relu, false, &mut taps, "c")?;
                assert_eq!(taps.outputs.len(), 1, "the separate pass records the conv");
                let bits = |t: &Tensor| -> Result<Vec<u32>> {
                    Ok(t.flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
                        .collect())
                };
                assert_eq!(fused.dims(), separate.dims());
                assert_eq!(
                    bits(&fused)?,
                    bits(&separate)?,
                    "{path}: k={kernel} s={stride} {input:?} bias={bias} {h}×{h}"
                );
                // with a residual (a ResNet block's end): relu(bn(conv(x)) + shortcut)
                let xs_cm = match input {
                    Order::Nchw => xs.transpose(0, 1)?.contiguous()?,
                    Order::ChannelMajor => xs.clone(),
                };
                let shortcut = Tensor::randn(0f32, 1.0, fused.dims(), &dev)?;
                let end = |taps: &mut Taps| {
                    conv_bn_add_relu(
                        &conv,
                        &bn,
                        &xs_cm,
                        |_| Ok(shortcut.clone()),
                        false,
                        taps,
                        "c",
                    )
                };
                let fused = end(&mut Taps::off())?;
                let separate = end(&mut Taps::on())?;
                assert_eq!(
                    bits(&fused)?,
                    bits(&separate)?,
                    "{path}: residual k={kernel} s={stride} bias={bias} {h}×{h}"
                );
            }
        }
        Ok(())
    }
}
