//! Forward-pass parity with PyTorch: fixed weights (torchvision parameter names), a fixed
//! input, logits and every conv/linear output within 1e-4 of PyTorch's in evaluation mode.
//! Fixtures: `scripts/model_fixtures.py`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use repflow::models::{Arch, ModelConfig, Network, Taps};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check(file: &str, arch: Arch, small_input: bool, in_channels: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(file);
    let dev = Device::Cpu;
    let tensors = candle_core::safetensors::load(&path, &dev).unwrap();
    let (meta, _) = {
        let bytes = std::fs::read(&path).unwrap();
        let m = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        (m.1.metadata().clone().unwrap_or_default(), ())
    };
    let input = tensors["__input__"].clone();
    let logits = tensors["__logits__"].clone();
    let cfg = ModelConfig {
        arch,
        width: 4,
        num_classes: 10,
        in_channels,
        small_input,
    };
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
    let net = Network::new(&cfg, vb).unwrap();
    let expected_layers: Vec<String> = meta["layers"].split(',').map(str::to_string).collect();
    assert_eq!(net.layer_names(), expected_layers, "{file}: layer order");
    let mut taps = Taps::on();
    let out = net.forward(&input, false, &mut taps).unwrap();
    let tol = |t: &Tensor| 1e-4 * max_abs(t).max(1.0);
    assert!(
        max_abs_diff(&out, &logits) <= tol(&logits),
        "{file}: logits differ by {}",
        max_abs_diff(&out, &logits)
    );
    assert_eq!(taps.outputs.len(), expected_layers.len());
    for (name, got) in &taps.outputs {
        let want = &tensors[&format!("__tap__.{name}")];
        let d = max_abs_diff(got, want);
        assert!(d <= tol(want), "{file}: layer {name} differs by {d}");
    }
}

#[test]
fn resnet18_small_stem_matches_pytorch() {
    check("resnet18-small.safetensors", Arch::Resnet18, true, 1);
}

#[test]
fn resnet18_imagenet_stem_matches_pytorch() {
    check("resnet18-imagenet.safetensors", Arch::Resnet18, false, 3);
}

#[test]
fn resnet50_matches_pytorch() {
    check("resnet50-small.safetensors", Arch::Resnet50, true, 1);
}

#[test]
fn vgg16_bn_small_matches_pytorch() {
    check("vgg16-bn-small.safetensors", Arch::Vgg16Bn, true, 1);
}

#[test]
fn vgg16_bn_imagenet_matches_pytorch() {
    check("vgg16-bn-imagenet.safetensors", Arch::Vgg16Bn, false, 3);
}

#[test]
fn vgg19_bn_matches_pytorch() {
    check("vgg19-bn-small.safetensors", Arch::Vgg19Bn, true, 1);
}
