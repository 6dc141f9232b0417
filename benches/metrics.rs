//! Times repflow's metrics on matrices written by `scripts/bench.py`, which runs the Python
//! reference on the same matrices in the same run and prints both with their ratio.
//!
//! Usage: `cargo bench --bench metrics -- pair X.npy Y.npy METRIC[,METRIC...]`
//!        `cargo bench --bench metrics -- all-pairs DIR` (DIR/a_0.npy..a_7.npy, DIR/b_0.npy..)
//!        `cargo bench --bench metrics -- products X.npy Y.npy` (the cross-products' rate)
//! Prints one JSON object per line: {case, metric, seconds, score}.

use std::path::Path;
use std::time::Instant;

use repflow::matrix_io::read_matrix;
use repflow_kernels::backend::Backend;
use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};
use serde_json::json;

/// The allocator the `repflow` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn pair(x: &str, y: &str, metrics: &str) {
    let x = read_matrix(Path::new(x), None).expect("X reads");
    let y = read_matrix(Path::new(y), None).expect("Y reads");
    let settings = Settings::default();
    for name in metrics.split(',') {
        let metric = Metric::from_name(name).expect("known metric");
        // Each metric starts from raw matrices: no work is shared between metrics here.
        let start = Instant::now();
        let (a, b) = rayon::join(
            || PreparedLayer::new(x.as_ref(), &settings).unwrap(),
            || PreparedLayer::new(y.as_ref(), &settings).unwrap(),
        );
        let s = Pair::new(&a, &b).unwrap().score(metric).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({"metric": name, "seconds": seconds, "score": s.score})
        );
    }
}

/// What every metric's bound is made of, as the CPU backend computes it: the Gram `XᵀX`
/// (symmetric: the lower triangle, then mirrored) and the cross-product `XᵀY`, with their
/// rates in Gflop/s counted as a full product's 2·m·n² (so a symmetric product can show
/// twice a general one's rate); the polar factor of `XᵀY` (Procrustes' SVD) and the
/// eigendecomposition of `XᵀX` (the ridge factorisation's), in seconds. The best of three.
fn products(x: &str, y: &str) {
    let x = read_matrix(Path::new(x), None).expect("X reads");
    let y = read_matrix(Path::new(y), None).expect("Y reads");
    let backend = repflow_kernels::backend::Cpu;
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let gram = best(&|| drop(backend.gram(x.as_ref())));
    let cross = best(&|| drop(backend.cross(x.as_ref(), y.as_ref())));
    let flop = 2.0 * (x.nrows() * x.ncols() * y.ncols()) as f64;
    let (g, c) = (
        backend.gram(x.as_ref()),
        backend.cross(x.as_ref(), y.as_ref()),
    );
    let polar = best(&|| drop(backend.polar(c.as_ref()).expect("polar factor")));
    let eigen = best(&|| drop(backend.sym_eigen(g.as_ref()).expect("eigendecomposition")));
    println!(
        "{}",
        json!({"gram_seconds": gram, "cross_seconds": cross,
               "gram_gflops": flop / gram / 1e9, "cross_gflops": flop / cross / 1e9,
               "polar_seconds": polar, "eigen_seconds": eigen})
    );
}

fn all_pairs(dir: &str, layers: usize) {
    let load = |prefix: &str| -> Vec<faer::Mat<f64>> {
        (0..layers)
            .map(|l| {
                read_matrix(&Path::new(dir).join(format!("{prefix}_{l}.npy")), None)
                    .expect("layer reads")
            })
            .collect()
    };
    let (xs, ys) = (load("a"), load("b"));
    let settings = Settings::default();
    let start = Instant::now();
    let prepare = |ms: &Vec<faer::Mat<f64>>| -> Vec<PreparedLayer> {
        ms.iter()
            .map(|m| PreparedLayer::new(m.as_ref(), &settings).unwrap())
            .collect()
    };
    let (a, b) = (prepare(&xs), prepare(&ys));
    let mut scores = Vec::new();
    for la in &a {
        for lb in &b {
            let pair = Pair::new(la, lb).unwrap();
            for metric in Metric::ALL {
                scores.push(
                    json!({"metric": metric.name(), "score": pair.score(metric).unwrap().score}),
                );
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"metric": "all-pairs", "seconds": seconds, "scores": scores})
    );
}

/// Writes a 10,000 × 1,024 matrix into a fresh store and times reading it back: mapping,
/// verifying its blake3 digest, and borrowing the values (no copy of the data).
fn store_read(dir: &str) {
    let (m, n) = (10_000, 1_024);
    let store = repflow_cache::Store::open(Path::new(dir)).expect("store opens");
    let data: Vec<f64> = (0..m * n).map(|i| (i % 977) as f64).collect();
    let bundle = repflow_cache::Bundle::meta("{}".into()).with_array("x", &[m, n], data);
    let digest = store.put(&bundle.to_bytes()).expect("store writes");
    let reps = 10;
    let start = Instant::now();
    let mut checksum = 0.0;
    for _ in 0..reps {
        let b = store.get(&digest).expect("object reads");
        let x = b.array("x").expect("array present");
        checksum += x.as_f64().expect("f64 array")[m * n - 1];
    }
    let seconds = start.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{}",
        json!({"metric": "store-read", "seconds": seconds, "bytes": m * n * 8, "checksum": checksum})
    );
}

/// Training and inference throughput (images/s) of a network at 28 × 28, random data:
/// the median of ten timed training steps (batch 128, after twenty warm-up steps: the
/// allocator's heap grows over the first ~25 steps, see the README) and of eight inference
/// batches of 256 (after one warm-up).
fn model_speed(arch: &str, width: usize) {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use repflow::models::train::{train_until, Optimizer, TrainConfig};
    use repflow::models::{ModelConfig, Network, Taps};
    use repflow::stimuli::Images;
    let arch = repflow::models::Arch::from_name(arch).expect("known architecture");
    let model = ModelConfig {
        arch,
        width,
        num_classes: 10,
        in_channels: 1,
        small_input: true,
        projection: false,
    };
    let (batch, warm_up, steps) = (128usize, 20u64, 30u64);
    let n = batch * steps as usize;
    let images = Images {
        n,
        c: 1,
        h: 28,
        w: 28,
        data: (0..n * 784)
            .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 1000.0)
            .collect(),
        labels: (0..n).map(|i| (i % 10) as u32).collect(),
        ids: (0..n).map(|i| i.to_string()).collect(),
    };
    let cfg = TrainConfig {
        model,
        seed: 0,
        optimizer: Optimizer::Sgd,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        batch,
        steps: 1000,
        augment: false,
        normalize: (0.0, 1.0),
        checkpoints: vec![],
        objective: Default::default(),
    };
    let tiny = images.take(10);
    // Warm-up steps, then each step timed on its own (resuming is exact, see `train_until`):
    // the median step is robust to this machine's passing slow-downs.
    let mut state =
        train_until(&cfg, &images, &tiny, None, warm_up, |_, _| Ok(())).expect("training runs");
    let mut step_s = Vec::new();
    for until in warm_up + 1..=steps {
        let start = Instant::now();
        state = train_until(&cfg, &images, &tiny, Some(state), until, |_, _| Ok(()))
            .expect("training runs");
        step_s.push(start.elapsed().as_secs_f64());
    }
    let train_ips = batch as f64 / median(&mut step_s);
    let vm = VarMap::new();
    let net = Network::new(
        &model,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .expect("network builds");
    let infer_batch = 256;
    let xs = Tensor::from_slice(
        &images.data[..infer_batch * 784],
        (infer_batch, 1, 28, 28),
        &Device::Cpu,
    )
    .expect("tensor");
    net.forward(&xs, false, &mut Taps::off()).expect("forward");
    let mut batch_s: Vec<f64> = (0..8)
        .map(|_| {
            let start = Instant::now();
            net.forward(&xs, false, &mut Taps::off()).expect("forward");
            start.elapsed().as_secs_f64()
        })
        .collect();
    let infer_ips = infer_batch as f64 / median(&mut batch_s);
    let params: usize = vm
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum();
    println!(
        "{}",
        json!({"metric": "model-speed", "train_images_per_s": train_ips, "infer_images_per_s": infer_ips, "params": params})
    );
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    repflow::allocator::configure();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("pair") if args.len() == 4 => pair(&args[1], &args[2], &args[3]),
        Some("store-read") if args.len() == 2 => store_read(&args[1]),
        Some("products") if args.len() == 3 => products(&args[1], &args[2]),
        Some("model-speed") if args.len() == 3 => {
            model_speed(&args[1], args[2].parse().expect("width"))
        }
        Some("all-pairs") if args.len() >= 2 => all_pairs(
            &args[1],
            args.get(2)
                .map(|s| s.parse().expect("layer count"))
                .unwrap_or(8),
        ),
        _ => {
            eprintln!(
                "usage: metrics pair X.npy Y.npy METRICS | metrics all-pairs DIR [LAYERS] \
                 | metrics products X.npy Y.npy"
            );
            std::process::exit(2);
        }
    }
}
