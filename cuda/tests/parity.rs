//! GPU against CPU: each backend operation and every metric to 1e-9 relative in float64,
//! the reduction kernels exactly, the column and shift kernels to 1e-12. Runs where a CUDA
//! device is usable; elsewhere each test prints that it was skipped and why.

use std::sync::Arc;

use faer::{Mat, MatRef};
use repflow_cuda::{one_tiny_singular_value, CudaBackend, Custom};
use repflow_kernels::backend::{self, Backend, Cpu};
use repflow_kernels::maps::{self, MapReduction, MapShape};
use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};

fn device() -> Option<CudaBackend> {
    match CudaBackend::open(0) {
        Ok(b) => Some(b.with_min_work(0)),
        Err(e) => {
            eprintln!("skipped: no usable CUDA device ({e})");
            None
        }
    }
}

fn matrix(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| {
        let h = (i as u64 * 2654435761 + j as u64 * 40503 + seed * 97) % 10007;
        h as f64 / 10007.0 - 0.5 + 0.1 * ((i + j) as f64).sin()
    })
}

fn assert_close(a: &Mat<f64>, b: &Mat<f64>, tol: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let err = (a - b).norm_max();
    assert!(
        err <= tol * b.norm_max().max(1.0),
        "{what}: max error {err:e}"
    );
}

/// `scores` with the CPU backend installed, then with `gpu`: each GPU score within 1e-9 of
/// the CPU's (relative, floored at 1e-3); returns how many there are.
fn agree_on_cpu_and_gpu(gpu: CudaBackend, scores: impl Fn() -> Vec<f64>) -> usize {
    backend::install(Arc::new(Cpu));
    let cpu = scores();
    backend::install(Arc::new(gpu));
    let on_gpu = scores();
    backend::install(Arc::new(Cpu));
    assert_eq!(on_gpu.len(), cpu.len());
    for (a, b) in on_gpu.iter().zip(&cpu) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-3), "{a} vs {b}");
    }
    cpu.len()
}

#[test]
fn backend_operations_match_the_cpu() {
    let Some(gpu) = device() else { return };
    gpu.self_check().unwrap();
    for (rows, p, q) in [(500, 64, 48), (300, 20, 90), (1000, 256, 256)] {
        let (a, b) = (matrix(rows, p, 1), matrix(rows, q, 2));
        assert_close(&gpu.gram(a.as_ref()), &Cpu.gram(a.as_ref()), 1e-12, "gram");
        let c = Cpu.cross(a.as_ref(), b.as_ref());
        assert_close(&gpu.cross(a.as_ref(), b.as_ref()), &c, 1e-12, "cross");
        // predictions: a block times a map, and times a transposed view of one
        let (pa, pb) = (a.as_ref(), c.as_ref());
        assert_close(&gpu.product(pa, pb), &Cpu.product(pa, pb), 1e-12, "product");
        let (pa, pb) = (b.as_ref(), c.transpose());
        assert_close(
            &gpu.product(pa, pb),
            &Cpu.product(pa, pb),
            1e-12,
            "product (view)",
        );
        let polar = gpu.polar(c.as_ref()).unwrap();
        assert_close(&polar, &Cpu.polar(c.as_ref()).unwrap(), 1e-9, "polar");
        let g = Cpu.gram(a.as_ref());
        let (vals, vecs) = gpu.sym_eigen(g.as_ref()).unwrap();
        let (cpu_vals, _) = Cpu.sym_eigen(g.as_ref()).unwrap();
        for (u, v) in vals.iter().zip(&cpu_vals) {
            assert!(
                (u - v).abs() <= 1e-9 * cpu_vals[p - 1],
                "eigenvalue {u} vs {v}"
            );
        }
        let rebuilt = Mat::from_fn(p, p, |i, j| {
            (0..p)
                .map(|k| vecs[(i, k)] * vals[k] * vecs[(j, k)])
                .sum::<f64>()
        });
        assert_close(&rebuilt, &g, 1e-9, "eigenvectors");
    }
}

#[test]
fn every_metric_scores_the_same_on_the_gpu() {
    let Some(gpu) = device() else { return };
    let settings = Settings::default();
    let (x, y) = (matrix(400, 40, 3), matrix(400, 30, 4));
    let score_all = || -> Vec<f64> {
        let a = PreparedLayer::new(x.as_ref(), &settings).unwrap();
        let b = PreparedLayer::new(y.as_ref(), &settings).unwrap();
        let pair = Pair::new(&a, &b).unwrap();
        Metric::ALL
            .iter()
            .map(|&m| pair.score(m).unwrap().score)
            .collect()
    };
    agree_on_cpu_and_gpu(gpu, score_all);
}

#[test]
fn held_layers_give_the_cpus_held_out_correlations() {
    let Some(gpu) = device() else { return };
    // layers' data: contiguous column-major buffers (faer's own matrices may pad columns)
    let contiguous = |m: Mat<f64>| -> Vec<f64> {
        let (rows, cols) = m.shape();
        (0..rows * cols).map(|k| m[(k % rows, k / rows)]).collect()
    };
    let (xd, yd) = (
        contiguous(matrix(500, 40, 31)),
        contiguous(matrix(500, 30, 32)),
    );
    let x = MatRef::from_column_major_slice(&xd, 500, 40);
    let y = MatRef::from_column_major_slice(&yd, 500, 30);
    let m = Cpu.polar(Cpu.cross(x, y).as_ref()).unwrap();
    let (xt, yt) = (x.subrows(300, 100), y.subrows(300, 100));
    // not held: the caller predicts
    assert!(gpu.held_correlations(xt, m.as_ref(), yt).is_none());
    gpu.hold(&[x, y]);
    let cpu = |a: MatRef<'_, f64>, map: MatRef<'_, f64>, b: MatRef<'_, f64>| {
        let pred = Cpu.product(a, map);
        repflow_kernels::stats::paired_column_correlations(pred.as_ref(), b, false).0
    };
    for (got, want) in [
        (
            gpu.held_correlations(xt, m.as_ref(), yt),
            cpu(xt, m.as_ref(), yt),
        ),
        (
            gpu.held_correlations(yt, m.transpose(), xt),
            cpu(yt, m.transpose(), xt),
        ),
    ] {
        let got = got.expect("held views are answered");
        for (u, v) in got.iter().zip(&want) {
            assert!((u - v).abs() <= 1e-12, "{u} vs {v}");
        }
    }
    // fold blocks of held layers come from the device's copies
    let blocks: Vec<_> = [(0, 100), (100, 200), (300, 200)]
        .iter()
        .map(|&(s, n)| (x.subrows(s, n), y.subrows(s, n)))
        .collect();
    for (got, (a, b)) in gpu.cross_many(&blocks).iter().zip(&blocks) {
        assert_close(got, &Cpu.cross(*a, *b), 1e-12, "cross_many of held layers");
    }
    gpu.release(&[x, y]);
    assert!(gpu.held_correlations(xt, m.as_ref(), yt).is_none());
}

#[test]
fn batched_operations_and_all_pairs_match_the_cpu() {
    // batches cut to 1 MB, so that every group runs in several chunks
    let Some(gpu) = device().map(|g| g.with_batch_bytes(1 << 20)) else {
        return;
    };
    // fold blocks of unequal rows (one strided-batched product, zero-padded) and a second
    // shape group
    let (a, b, c) = (matrix(503, 40, 11), matrix(503, 30, 12), matrix(503, 7, 13));
    let cuts = [0, 101, 202, 302, 403, 503];
    let mut blocks = Vec::new();
    for w in cuts.windows(2) {
        let rows = w[1] - w[0];
        blocks.push((
            a.as_ref().subrows(w[0], rows),
            b.as_ref().subrows(w[0], rows),
        ));
        blocks.push((
            a.as_ref().subrows(w[0], rows),
            c.as_ref().subrows(w[0], rows),
        ));
    }
    for (got, (x, y)) in gpu.cross_many(&blocks).iter().zip(&blocks) {
        assert_close(got, &Cpu.cross(*x, *y), 1e-12, "cross_many");
    }
    // polar factors: tall, wide, square, large, and a badly conditioned one (by SVD after
    // the Newton–Schulz steps do not converge on it)
    let tall = Cpu.cross(a.as_ref(), b.as_ref());
    let square = Cpu.gram(matrix(300, 64, 14).as_ref());
    let badly = one_tiny_singular_value(square.as_ref()).unwrap();
    let large = Cpu.cross(matrix(900, 256, 15).as_ref(), matrix(900, 200, 16).as_ref());
    let cs = [
        tall.as_ref(),
        tall.transpose(),
        square.as_ref(),
        badly.as_ref(),
        large.as_ref(),
        tall.as_ref(),
    ];
    for (k, (got, c)) in gpu.polar_many(&cs).into_iter().zip(cs).enumerate() {
        assert_close(
            &got.unwrap(),
            &Cpu.polar(c).unwrap(),
            1e-9,
            &format!("polar_many {k}"),
        );
    }
    // every pair of four layers' Procrustes scores in one batch, against the CPU
    let settings = Settings::default();
    let xs: Vec<Mat<f64>> = [(20, 21), (40, 22), (40, 23), (64, 24)]
        .iter()
        .map(|&(n, seed)| matrix(400, n, seed))
        .collect();
    let all_pairs = || -> Vec<f64> {
        let layers: Vec<PreparedLayer> = xs
            .iter()
            .map(|x| PreparedLayer::new(x.as_ref(), &settings).unwrap())
            .collect();
        let pairs: Vec<Pair<'_>> = (0..4)
            .flat_map(|i| (0..4).map(move |j| (i, j)))
            .map(|(i, j)| Pair::new(&layers[i], &layers[j]).unwrap())
            .collect();
        Pair::score_many(&pairs, Metric::Procrustes)
            .into_iter()
            .flat_map(|s| s.unwrap().fold_scores)
            .collect()
    };
    assert_eq!(agree_on_cpu_and_gpu(gpu, all_pairs), 16 * 5);
}

#[test]
fn custom_kernels_match_the_cpu() {
    if device().is_none() {
        return;
    }
    let k = Custom::open(0, None).unwrap();
    // small maps, odd sizes, and maps wider than a SIMD register's worth of sums (where a
    // vectorised CPU sum would have taken another order): the CPU's bits
    for (n, c, h, w) in [(7, 5, 6, 9), (3, 4, 7, 37), (2, 3, 56, 56), (1, 2, 1, 1)] {
        let values: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0 + (i as f32).sin())
            .collect();
        let shape = MapShape { n, c, h, w };
        for how in [
            MapReduction::CenterPixel,
            MapReduction::MaxPool,
            MapReduction::MeanPool,
        ] {
            let cpu = maps::reduce_maps(&values, shape, how).unwrap();
            let kernel = k.reduce_maps(&values, shape, how).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&kernel), bits(&cpu), "{how:?} {n}×{c}×{h}×{w}");
        }
    }
    let a = matrix(300, 12, 5);
    let (mu, sd) = k.column_stats(a.as_ref(), 40, 250).unwrap();
    for j in 0..12 {
        let col: Vec<f64> = (40..250).map(|i| a[(i, j)]).collect();
        let m = col.iter().sum::<f64>() / col.len() as f64;
        let s = (col.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / col.len() as f64).sqrt();
        assert!((mu[j] - m).abs() <= 1e-12 && (sd[j] - s).abs() <= 1e-12);
    }
    // how far matrices are from s I (the Newton–Schulz stop): exact, NaN → infinite
    let id = Mat::<f64>::identity(6, 6);
    let mut near = id.clone();
    near[(0, 1)] = 1e-3;
    let mut broken = id.clone();
    broken[(5, 2)] = f64::NAN;
    let twice = Mat::from_fn(6, 6, |i, j| if i == j { 2.0 } else { 0.0 });
    let mats = [id.as_ref(), near.as_ref(), twice.as_ref(), broken.as_ref()];
    let d = k.identity_distance_of(&mats, 1.0).unwrap();
    assert_eq!(d[..3], [0.0, 1e-3, 1.0]);
    assert!(d[3].is_infinite(), "{d:?}");
    assert_eq!(k.identity_distance_of(&mats[2..3], 2.0).unwrap(), vec![0.0]);
    let b = matrix(300, 12, 6);
    let r = k.matched_correlation(a.as_ref(), b.as_ref()).unwrap();
    let (want, _) =
        repflow_kernels::stats::paired_column_correlations(a.as_ref(), b.as_ref(), false);
    for (u, v) in r.iter().zip(&want) {
        assert!((u - v).abs() <= 1e-12, "{u} vs {v}");
    }
    let (n, ca, cb, h, w) = (7, 3, 4, 6, 9);
    let ma: Vec<f32> = (0..n * ca * h * w)
        .map(|i| (i % 13) as f32 / 13.0)
        .collect();
    let mb: Vec<f32> = (0..n * cb * h * w).map(|i| (i % 7) as f32 / 7.0).collect();
    let out = k.shifted_cross(&ma, &mb, (n, ca, cb, h, w)).unwrap();
    for (dy, dx) in [(0, 0), (2, 5), (h - 1, w - 1)] {
        for (i, j) in [(0, 0), (2, 3)] {
            let mut acc = 0.0f64;
            for s in 0..n {
                for y in 0..h {
                    for x in 0..w {
                        acc += ma[((s * ca + i) * h + y) * w + x] as f64
                            * mb[((s * cb + j) * h + (y + dy) % h) * w + (x + dx) % w] as f64;
                    }
                }
            }
            let got = out[((dy * w + dx) * ca + i) * cb + j];
            assert!(
                (got - acc).abs() <= 1e-12 * acc.abs().max(1.0),
                "{got} vs {acc}"
            );
        }
    }
}

/// Pooling a batch of ResNet-sized maps already in host memory on the CPU and with the
/// kernel (transfers included): the same bits, and both times printed for
/// `scripts/gpu-check.sh`'s table. repflow pools host maps on the CPU, which reads each value
/// once, as the transfer alone would; this measures that choice.
#[test]
fn pooling_host_maps_on_the_gpu_is_timed_beside_the_cpu() {
    let Ok(k) = Custom::open(0, None) else {
        eprintln!("skipped: no usable CUDA device");
        return;
    };
    let shape = MapShape {
        n: 64,
        c: 256,
        h: 56,
        w: 56,
    };
    let values: Vec<f32> = (0..shape.n * shape.c * shape.h * shape.w)
        .map(|i| (i % 1013) as f32 / 1013.0 - 0.5)
        .collect();
    for how in [MapReduction::MeanPool, MapReduction::MaxPool] {
        let best = |f: &dyn Fn() -> Vec<f32>| {
            let v = f(); // warm: kernels loaded, pages touched
            let s = (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    f();
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            (s, v)
        };
        let (cpu_s, cpu) = best(&|| maps::reduce_maps(&values, shape, how).unwrap());
        let (gpu_s, gpu) = best(&|| k.reduce_maps(&values, shape, how).unwrap());
        assert!(cpu
            .iter()
            .zip(&gpu)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        println!(
            "map reduction {how:?}, 64 x 256 x 56 x 56 f32 (205 MB) in host memory: \
             cpu {cpu_s:.4} s, cuda kernel with transfers {gpu_s:.4} s"
        );
    }
}

#[test]
fn the_shift_search_matches_the_cpu() {
    let Some(gpu) = device() else { return };
    let d = repflow_kernels::shift_cross::MapDims {
        n: 23,
        ca: 4,
        cb: 6,
        h: 5,
        w: 7,
    };
    let map = |c: usize, seed: u64| -> Vec<f32> {
        (0..d.n * c * d.h * d.w)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 10007) as f32 / 10007.0) - 0.5)
            .collect()
    };
    let (a, b) = (map(d.ca, 1), map(d.cb, 2));
    let want = Cpu.shifted_cross(&a, &b, d);
    let got = gpu.shifted_cross(&a, &b, d);
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-9 * scale, "{g} vs {w}");
    }
    // the whole metric, GPU backend installed
    let folds = repflow_kernels::Folds::new(d.n, repflow_kernels::FoldSpec::default()).unwrap();
    let (ma, mb) = (
        repflow_kernels::shift::Maps::new(&a, &[d.n, d.ca, d.h, d.w]).unwrap(),
        repflow_kernels::shift::Maps::new(&b, &[d.n, d.cb, d.h, d.w]).unwrap(),
    );
    let cpu =
        repflow_kernels::shift::score(&ma, &mb, &folds, repflow_kernels::Corr::Pearson).unwrap();
    backend::install(Arc::new(gpu));
    let on_gpu =
        repflow_kernels::shift::score(&ma, &mb, &folds, repflow_kernels::Corr::Pearson).unwrap();
    backend::install(Arc::new(Cpu));
    assert_eq!(on_gpu.shifts, cpu.shifts);
    assert!((on_gpu.score - cpu.score).abs() <= 1e-9 * cpu.score.abs().max(1.0));
}
