//! Training on real Fashion-MNIST (fetched by `make data`): it learns, it is bit-for-bit
//! reproducible for a seed, and its checkpoints load for extraction.

use std::path::Path;
use std::process::Command;

fn repflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_repflow"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

fn train(out: &Path, seed: &str) -> Vec<serde_json::Value> {
    let o = repflow(&[
        "train",
        "--arch",
        "resnet18",
        "--width",
        "4",
        "--seed",
        seed,
        "--train-limit",
        "2048",
        "--test-limit",
        "500",
        "--epochs",
        "3",
        "--batch",
        "64",
        "--lr",
        "0.05",
        "--checkpoints",
        "0,0.5e",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn training_learns_is_reproducible_and_its_checkpoints_extract() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    let metrics = train(&a, "0");
    // Checkpoints at steps 0, 16 (half an epoch of 32 steps) and 96 (the end).
    let steps: Vec<u64> = metrics
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![0, 16, 96]);
    let acc = |m: &serde_json::Value| m["test_accuracy"].as_f64().unwrap();
    assert!(
        acc(&metrics[0]) < 0.25,
        "untrained accuracy {}",
        acc(&metrics[0])
    );
    assert!(
        acc(&metrics[2]) > 0.5,
        "accuracy after 3 small epochs {}",
        acc(&metrics[2])
    );
    train(&b, "0");
    train(&c, "1");
    let bytes = |d: &Path| std::fs::read(d.join("step-96.safetensors")).unwrap();
    assert_eq!(
        bytes(&a),
        bytes(&b),
        "same seed, same thread count: identical weights"
    );
    assert_ne!(bytes(&a), bytes(&c), "another seed: other weights");
    let x = t.path().join("acts");
    let o = repflow(&[
        "extract",
        "--arch",
        "resnet18",
        "--width",
        "4",
        "--checkpoint",
        a.join("step-96.safetensors").to_str().unwrap(),
        "--stimuli",
        "fashion-mnist-test",
        "--limit",
        "40",
        "--normalize",
        "0.2860,0.3530",
        "--out",
        x.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(x.join("layers.txt"))
            .unwrap()
            .lines()
            .count(),
        21
    );
}

#[test]
fn resuming_from_a_saved_state_gives_the_uninterrupted_weights() {
    use repflow::models::train::{train_until, Optimizer, TrainConfig};
    use repflow::models::{Arch, ModelConfig};
    use repflow::stimuli::Images;
    let n = 96;
    let images = |offset: usize| Images {
        n,
        c: 1,
        h: 28,
        w: 28,
        data: (0..n * 784)
            .map(|i| (((i + offset) * 2_654_435_761usize) % 1000) as f32 / 1000.0)
            .collect(),
        labels: (0..n).map(|i| (i % 10) as u32).collect(),
        ids: (0..n).map(|i| format!("s/{i}")).collect(),
    };
    let (train_set, test_set) = (images(0), images(7));
    for optimizer in [Optimizer::Sgd, Optimizer::Adamw] {
        let cfg = TrainConfig {
            model: ModelConfig {
                arch: Arch::Resnet18,
                width: 4,
                num_classes: 10,
                in_channels: 1,
                small_input: true,
                projection: false,
            },
            seed: 3,
            optimizer,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch: 32,
            steps: 8,
            augment: true,
            normalize: (0.5, 0.25),
            checkpoints: vec![0, 4, 8],
            objective: Default::default(),
        };
        let whole = train_until(&cfg, &train_set, &test_set, None, 8, |_, _| Ok(())).unwrap();
        let half = train_until(&cfg, &train_set, &test_set, None, 4, |_, _| Ok(())).unwrap();
        let resumed =
            train_until(&cfg, &train_set, &test_set, Some(half), 8, |_, _| Ok(())).unwrap();
        assert_eq!(whole.step, 8);
        for (name, t) in &whole.tensors {
            let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = resumed.tensors[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(a, b, "{optimizer:?}: {name} differs after resuming");
        }
    }
}

/// One step moves every trainable parameter of every architecture: a forward-only op (as
/// candle's fused layer norm and softmax are) would cut the graph and leave the parameters
/// before it at their initial values, as the ViT's encoder once was.
#[test]
fn one_step_moves_every_parameter_of_every_architecture() {
    use repflow::models::train::{train_until, Optimizer, TrainConfig};
    use repflow::models::{Arch, ModelConfig};
    use repflow::stimuli::Images;
    let n = 32;
    let images = Images {
        n,
        c: 1,
        h: 28,
        w: 28,
        data: (0..n * 784)
            .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 1000.0)
            .collect(),
        labels: (0..n).map(|i| (i % 10) as u32).collect(),
        ids: (0..n).map(|i| format!("s/{i}")).collect(),
    };
    for (arch, width) in [(Arch::Resnet18, 4), (Arch::Vgg16Bn, 4), (Arch::Vit, 16)] {
        let cfg = TrainConfig {
            model: ModelConfig {
                arch,
                width,
                num_classes: 10,
                in_channels: 1,
                small_input: true,
                projection: false,
            },
            seed: 1,
            optimizer: Optimizer::Adamw,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            batch: 16,
            steps: 1,
            augment: false,
            normalize: (0.5, 0.25),
            checkpoints: vec![0, 1],
            objective: Default::default(),
        };
        let start = train_until(&cfg, &images, &images, None, 0, |_, _| Ok(())).unwrap();
        let moved = train_until(&cfg, &images, &images, None, 1, |_, _| Ok(())).unwrap();
        for (name, t) in &start.tensors {
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                continue;
            }
            let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = moved.tensors[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_ne!(a, b, "{arch:?}: `{name}` did not move in one step");
        }
    }
}
