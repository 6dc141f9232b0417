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

/// Checks a fixture's logits and every tapped layer; returns the taps for further checks.
fn check(file: &str, arch: Arch, width: usize, small_input: bool, in_channels: usize) -> Taps {
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
        width,
        num_classes: 10,
        in_channels,
        small_input,
        projection: false,
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
    taps
}

#[test]
fn resnet18_small_stem_matches_pytorch() {
    check("resnet18-small.safetensors", Arch::Resnet18, 4, true, 1);
}

#[test]
fn resnet18_imagenet_stem_matches_pytorch() {
    check("resnet18-imagenet.safetensors", Arch::Resnet18, 4, false, 3);
}

#[test]
fn resnet50_matches_pytorch() {
    check("resnet50-small.safetensors", Arch::Resnet50, 4, true, 1);
}

#[test]
fn vgg16_bn_small_matches_pytorch() {
    check("vgg16-bn-small.safetensors", Arch::Vgg16Bn, 4, true, 1);
}

#[test]
fn vgg16_bn_imagenet_matches_pytorch() {
    check("vgg16-bn-imagenet.safetensors", Arch::Vgg16Bn, 4, false, 3);
}

#[test]
fn vgg19_bn_matches_pytorch() {
    check("vgg19-bn-small.safetensors", Arch::Vgg19Bn, 4, true, 1);
}

#[test]
fn extraction_takes_each_conv_outputs_centre_pixel() {
    use repflow::models::extract::{extract, Reduction};
    use repflow::stimuli::Images;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/resnet18-small.safetensors");
    let dev = Device::Cpu;
    let tensors = candle_core::safetensors::load(&path, &dev).unwrap();
    let input = &tensors["__input__"];
    let cfg = ModelConfig {
        arch: Arch::Resnet18,
        width: 4,
        num_classes: 10,
        in_channels: 1,
        small_input: true,
        projection: false,
    };
    let net = Network::new(
        &cfg,
        VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev),
    )
    .unwrap();
    let images = Images {
        n: 2,
        c: 1,
        h: 28,
        w: 28,
        data: input.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        labels: vec![0, 0],
        ids: vec!["a".into(), "b".into()],
    };
    // Batches of one image: streaming must not change the result.
    let layers = extract(&net, &images, &[], Some(Reduction::CenterPixel), 1).unwrap();
    assert_eq!(layers.len(), 21);
    for l in &layers {
        let tap = &tensors[&format!("__tap__.{}", l.name)];
        let want: Vec<f32> = if tap.rank() == 4 {
            let (_, _, h, w) = tap.dims4().unwrap();
            tap.narrow(2, h / 2, 1)
                .unwrap()
                .narrow(3, w / 2, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        } else {
            tap.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(l.data.len(), want.len(), "{}", l.name);
        for (a, b) in l.data.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{}: {a} vs {b}",
                l.name
            );
        }
    }
}

#[test]
fn extract_writes_a_pipeline_model_folder() {
    let t = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = t.path().join("data/r18");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_repflow"))
        .current_dir(root)
        .args([
            "extract",
            "--arch",
            "resnet18",
            "--width",
            "4",
            "--checkpoint",
            "tests/fixtures/models/resnet18-small.safetensors",
        ])
        .args([
            "--stimuli",
            "mnist5k",
            "--limit",
            "64",
            "--transform",
            "contrast:0.5",
            "--layers",
            "conv1,layer4.1.conv2,fc",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("layers.txt")).unwrap(),
        "conv1\nlayer4.1.conv2\nfc\n"
    );
    let stimuli = std::fs::read_to_string(out.join("stimuli.txt")).unwrap();
    assert_eq!(stimuli.lines().next(), Some("mnist5k/0@contrast-0.5"));
    let fc = repflow::matrix_io::read_matrix(&out.join("fc.npy"), None).unwrap();
    assert_eq!(fc.shape(), (64, 10));
    let conv = repflow::matrix_io::read_matrix(&out.join("layer4.1.conv2.npy"), None).unwrap();
    assert_eq!(conv.shape(), (64, 32));
}

#[test]
fn vit_matches_pytorch() {
    let taps = check("vit-small.safetensors", Arch::Vit, 16, true, 1);
    // Extraction keeps the [CLS] token of each block.
    let cls = repflow::models::extract::reduce(
        &taps.outputs[0].1,
        repflow::models::extract::Reduction::CenterPixel,
        "b0",
    )
    .unwrap();
    assert_eq!(cls.dims(), &[2, 16]);
}

#[test]
fn vit_with_the_imagenet_stem_matches_pytorch() {
    // 224-pixel colour input, torchvision's 16-pixel patches: 196 patch tokens and [CLS].
    let taps = check("vit-imagenet.safetensors", Arch::Vit, 16, false, 3);
    assert_eq!(taps.outputs[0].1.dims(), &[1, 197, 16]);
}
