//! MoCo v2 training (`objective = "moco"`): the InfoNCE loss falls, the key encoder is the
//! exponential moving average of the query encoder, the queue replaces its oldest keys, and
//! a run is bit-identical for a seed and resumes to the uninterrupted weights.

mod common;

use std::collections::HashMap;

use candle_core::Tensor;
use repflow::models::augment::ViewAugment;
use repflow::models::moco::MocoConfig;
use repflow::models::probe::ProbeConfig;
use repflow::models::train::{
    train_until, Checkpoint, Objective, Optimizer, TrainConfig, TrainState,
};
use repflow::models::{Arch, ModelConfig};
use repflow::stimuli::Images;

/// `n` distinct pseudo-random 28 × 28 images in ten classes.
fn images(n: usize, offset: usize) -> Images {
    Images {
        n,
        c: 1,
        h: 28,
        w: 28,
        data: (0..n * 784)
            .map(|i| (((i + offset) * 2_654_435_761usize) % 1000) as f32 / 1000.0)
            .collect(),
        labels: (0..n).map(|i| (i % 10) as u32).collect(),
        ids: (0..n).map(|i| format!("s/{i}")).collect(),
    }
}

fn recipe(steps: u64, augment: ViewAugment, checkpoints: Vec<u64>) -> TrainConfig {
    TrainConfig {
        model: ModelConfig {
            arch: Arch::Resnet18,
            width: 4,
            num_classes: 16,
            in_channels: 1,
            small_input: true,
            projection: true,
        },
        seed: 5,
        optimizer: Optimizer::Sgd,
        lr: 0.03,
        momentum: 0.9,
        weight_decay: 1e-4,
        batch: 32,
        steps,
        augment: false,
        normalize: (0.5, 0.25),
        checkpoints,
        objective: Objective::Moco(MocoConfig {
            queue: 64,
            momentum: 0.9,
            temperature: 0.2,
            augment,
            probe: ProbeConfig {
                images: 64,
                steps: 20,
                ..ProbeConfig::default()
            },
        }),
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A state's tensors copied out (a state's tensors share storage with the training
/// variables, which later steps overwrite in place).
struct Snapshot {
    tensors: HashMap<String, Vec<f32>>,
    optimizer: HashMap<String, Vec<f32>>,
}

fn snapshot(st: &TrainState) -> Snapshot {
    let copy =
        |m: &HashMap<String, Tensor>| m.iter().map(|(k, t)| (k.clone(), values(t))).collect();
    Snapshot {
        tensors: copy(&st.tensors),
        optimizer: copy(&st.optimizer),
    }
}

/// Every checkpoint and a copy of its state, and the final state.
fn run(cfg: &TrainConfig, set: &Images, until: u64) -> (Vec<(Checkpoint, Snapshot)>, Snapshot) {
    let mut seen = Vec::new();
    let end = train_until(cfg, set, set, None, until, |ck, st| {
        seen.push((ck, snapshot(st)));
        Ok(())
    })
    .unwrap();
    (seen, snapshot(&end))
}

/// The first `n` Fashion-MNIST training images (`make data` fetches them). Pooled features of
/// random-noise images are all alike, so the loss test needs real images.
fn fashion_mnist(n: usize) -> Images {
    let package = repflow::stimuli::datasets::default_package(
        "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
    );
    let (train, _) = repflow::stimuli::datasets::fashion_mnist(&package)
        .expect("Fashion-MNIST: run `make data` first");
    train.take(n)
}

/// With the two views the same image, MoCo is instance discrimination through a lagged key
/// encoder, which a few epochs of 256 images learn: the loss falls segment by segment. (With
/// MoCo v2's views the loss first rises while the queue fills with keys of a nearly constant
/// untrained representation — as in MoCo's own curves — so a short run cannot show the fall.)
#[test]
fn the_loss_falls_on_real_images() {
    let set = fashion_mnist(256);
    let none = ViewAugment {
        crop_scale: (1.0, 1.0),
        crop_ratio: (1.0, 1.0),
        jitter_p: 0.0,
        blur_p: 0.0,
        flip_p: 0.0,
        ..ViewAugment::default()
    };
    let mut cfg = recipe(80, none, vec![0, 8, 40, 80]);
    cfg.normalize = repflow::stimuli::datasets::FASHION_MNIST_NORMALIZE;
    let (seen, _) = run(&cfg, &set, 80);
    let loss: Vec<f64> = seen.iter().map(|(ck, _)| ck.train_loss).collect();
    assert!(loss[0].is_nan(), "no loss before the first step");
    // steps 0–7, 8–39 and 40–79 (the queue of 64 holds real keys after two steps)
    assert!(
        loss[2] < loss[1] - 0.2 && loss[3] < loss[2] - 0.2,
        "the loss did not fall: {loss:?}"
    );
    for (ck, _) in &seen {
        let knn = ck
            .knn_accuracy
            .expect("a MoCo checkpoint has a k-NN accuracy");
        assert!((0.0..=1.0).contains(&knn) && (0.0..=1.0).contains(&ck.test_accuracy));
    }
}

#[test]
fn the_key_encoder_is_the_moving_average_of_the_query_encoder() {
    let set = images(96, 3);
    let cfg = recipe(3, ViewAugment::default(), vec![0, 1, 2, 3]);
    let (seen, _) = run(&cfg, &set, 3);
    let query = |i: usize| -> &HashMap<String, Vec<f32>> { &seen[i].1.tensors };
    let key = |i: usize, name: &str| seen[i].1.optimizer[&format!("key.{name}")].clone();
    let m = 0.9f64;
    let mut checked = 0;
    for (name, q0) in query(0) {
        if name.starts_with("probe.")
            || name.ends_with("running_mean")
            || name.ends_with("running_var")
        {
            continue;
        }
        // step 0: a copy; each step first moves the key towards the query encoder as it is
        // before that step's update: k₁ = m·k₀ + (1 − m)·q₀, k₂ = m·k₁ + (1 − m)·q₁, …
        assert_eq!(
            &key(0, name),
            q0,
            "{name}: the key encoder starts as a copy"
        );
        let mut expected: Vec<f64> = q0.iter().map(|&v| v as f64).collect();
        for step in 1..=3 {
            let q_prev = &query(step - 1)[name];
            for (e, q) in expected.iter_mut().zip(q_prev) {
                *e = m * *e + (1.0 - m) * *q as f64;
            }
            let k = key(step, name);
            for (j, (a, b)) in k.iter().zip(&expected).enumerate() {
                let tol = 1e-5 * (1.0 + b.abs());
                assert!(
                    (*a as f64 - b).abs() <= tol,
                    "{name}[{j}] at step {step}: {a} vs {b}"
                );
            }
        }
        // and the query encoder did move, so the average is not trivially a copy
        assert_ne!(&query(3)[name], q0, "{name} did not train");
        checked += 1;
    }
    assert!(checked > 20, "only {checked} parameters checked");
}

#[test]
fn the_queue_advances_by_the_batch_and_holds_the_latest_keys() {
    let set = images(96, 1);
    let cfg = recipe(3, ViewAugment::default(), vec![0, 1, 3]);
    let (seen, end) = run(&cfg, &set, 3);
    let ptr = |st: &Snapshot| st.optimizer["moco.ptr"][0] as usize;
    assert_eq!(ptr(&seen[0].1), 0);
    assert_eq!(ptr(&seen[1].1), 32);
    // three batches of 32 into 64 slots: 96 mod 64
    assert_eq!(ptr(&end), 32);
    // keys are unit vectors: slots 0..32 hold step 2's keys, 32..64 step 1's
    let q = &end.optimizer["moco.queue"];
    for row in q.chunks(16) {
        let norm: f32 = row.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    let after_one = &seen[1].1.optimizer["moco.queue"];
    assert_ne!(
        q[..32 * 16],
        after_one[..32 * 16],
        "the oldest slots are overwritten first"
    );
}

#[test]
fn a_seed_gives_identical_weights_and_resuming_gives_the_uninterrupted_ones() {
    let set = images(96, 2);
    let cfg = recipe(4, ViewAugment::default(), vec![0, 2, 4]);
    let (_, a) = run(&cfg, &set, 4);
    let (_, b) = run(&cfg, &set, 4);
    let half = train_until(&cfg, &set, &set, None, 2, |_, _| Ok(())).unwrap();
    let resumed = snapshot(&train_until(&cfg, &set, &set, Some(half), 4, |_, _| Ok(())).unwrap());
    for (name, t) in &a.tensors {
        assert_eq!(t, &b.tensors[name], "{name} differs between runs");
        assert_eq!(t, &resumed.tensors[name], "{name} differs after resuming");
    }
    for (name, t) in &a.optimizer {
        assert_eq!(t, &resumed.optimizer[name], "{name} differs after resuming");
    }
    // and another seed trains other weights
    let mut other = cfg.clone();
    other.seed = 6;
    let (_, c) = run(&other, &set, 4);
    assert_ne!(a.tensors["conv1.weight"], c.tensors["conv1.weight"]);
}

/// `repflow train --objective moco` writes checkpoints with the projection head and each
/// checkpoint's probe and k-NN accuracies; `repflow extract` recognises the head.
#[test]
fn the_command_line_trains_moco_and_extracts_its_layers() {
    let t = tempfile::tempdir().unwrap();
    let (out, act) = (t.path().join("run"), t.path().join("act"));
    let repflow = |args: &[&str]| {
        let o = common::repflow(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let out_s = out.to_str().unwrap();
    repflow(&[
        "train",
        "--arch",
        "resnet18",
        "--width",
        "4",
        "--objective",
        "moco",
        "--queue",
        "128",
        "--train-limit",
        "256",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--batch",
        "64",
        "--lr",
        "0.03",
        "--weight-decay",
        "1e-4",
        "--checkpoints",
        "0",
        "--out",
        out_s,
    ]);
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 2);
    for m in &metrics {
        assert!(
            m["knn_accuracy"].as_f64().is_some() && m["test_accuracy"].as_f64().is_some(),
            "{m}"
        );
    }
    let ck = out.join("step-4.safetensors");
    repflow(&[
        "extract",
        "--arch",
        "resnet18",
        "--width",
        "4",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--stimuli",
        "fashion-mnist-test",
        "--limit",
        "50",
        "--out",
        act.to_str().unwrap(),
    ]);
    let layers = std::fs::read_to_string(act.join("layers.txt")).unwrap();
    assert!(layers.trim_end().ends_with("fc.0\nfc.2"), "{layers}");
}
