//! The spatial-shift search (`repflow_kernels::shift`): agreement with the brute-force numpy
//! reference (`scripts/reference.py`'s `shift_procrustes`, fixtures by
//! `scripts/make_fixtures.py`), its invariances, and its 1 × 1 case equal to Procrustes.

use std::path::Path;

use faer::Mat;
use repflow_kernels::shift::{score, Maps};
use repflow_kernels::{Corr, FoldSpec, Folds, Metric, Pair, PreparedLayer, Settings};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOL * want.abs().max(1.0),
        "{what}: repflow {got:.15} vs reference {want:.15}"
    );
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn shift_search_agrees_with_the_brute_force_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shift.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.len(), 4);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let a: Vec<f32> = floats(&c["a"]).iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = floats(&c["b"]).iter().map(|&v| v as f32).collect();
        let (sa, sb) = (shape(&c["a_shape"]), shape(&c["b_shape"]));
        let folds = Folds::new(
            sa[0],
            FoldSpec {
                k: c["folds"].as_u64().unwrap() as usize,
                shuffle_seed: Some(c["seed"].as_u64().unwrap() as u32),
            },
        )
        .unwrap();
        let corr = if c["corr"] == "spearman" {
            Corr::Spearman
        } else {
            Corr::Pearson
        };
        let s = score(
            &Maps::new(&a, &sa).unwrap(),
            &Maps::new(&b, &sb).unwrap(),
            &folds,
            corr,
        )
        .unwrap();
        let e = &c["expected"];
        close(
            &format!("{name} score"),
            s.score,
            e["score"].as_f64().unwrap(),
        );
        close(&format!("{name} std"), s.std, e["std"].as_f64().unwrap());
        for (field, got) in [
            ("x_to_y", &s.x_to_y),
            ("y_to_x", &s.y_to_x),
            ("unshifted", &s.unshifted),
            ("angular_distance", &s.angular_distance),
        ] {
            let want = floats(&e[field]);
            assert_eq!(got.len(), want.len());
            for (f, (g, w)) in got.iter().zip(&want).enumerate() {
                close(&format!("{name} {field}[{f}]"), *g, *w);
            }
        }
        let shifts: Vec<(i64, i64)> = e["shifts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap()))
            .collect();
        assert_eq!(s.shifts, shifts, "{name}");
        assert_eq!(
            s.nan_units as u64,
            e["nan_units"].as_u64().unwrap(),
            "{name}"
        );
    }
}

/// Deterministic pseudo-random maps.
fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// `b = mix(a)` moved by `(dy, dx)` plus noise: n × c × h × w each.
fn pair(n: usize, c: usize, h: usize, w: usize, dy: usize, dx: usize) -> (Vec<f32>, Vec<f32>) {
    let a = noise(n * c * h * w, 1);
    let mix = noise(c * c, 2);
    let extra = noise(n * c * h * w, 3);
    let mut b = vec![0.0f32; a.len()];
    for k in 0..n {
        for j in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v: f32 = (0..c)
                        .map(|i| mix[i * c + j] * a[((k * c + i) * h + y) * w + x])
                        .sum();
                    b[((k * c + j) * h + (y + dy) % h) * w + (x + dx) % w] =
                        v + 0.3 * extra[((k * c + j) * h + y) * w + x];
                }
            }
        }
    }
    (a, b)
}

/// Applies the orthogonal `q` (c × c) to the channels of maps `a`.
fn rotate_channels(a: &[f32], n: usize, c: usize, p: usize, q: &Mat<f64>) -> Vec<f32> {
    let mut out = vec![0.0f32; a.len()];
    for k in 0..n {
        for j in 0..c {
            for pos in 0..p {
                out[(k * c + j) * p + pos] = (0..c)
                    .map(|i| a[(k * c + i) * p + pos] as f64 * q[(i, j)])
                    .sum::<f64>() as f32;
            }
        }
    }
    out
}

#[test]
fn shift_search_is_invariant_to_rotations_scale_and_finds_moved_maps() {
    let (n, c, h, w) = (30, 3, 4, 5);
    let (a, b) = pair(n, c, h, w, 1, 3);
    let shape = [n, c, h, w];
    let folds = Folds::new(n, FoldSpec::default()).unwrap();
    let base = score(
        &Maps::new(&a, &shape).unwrap(),
        &Maps::new(&b, &shape).unwrap(),
        &folds,
        Corr::Pearson,
    )
    .unwrap();
    assert!(
        base.shifts.iter().all(|&s| s == (1, -2)),
        "{:?}",
        base.shifts
    );
    assert!(
        base.score > 0.6
            && base.unshifted.iter().all(|&u| u < 0.1)
            && base.unshifted.iter().all(|&u| u < 0.5),
        "{base:?}"
    );
    // rotating X's channels (at every position alike): the map absorbs it, so predicting Y
    // from X changes only by rounding (Y->X scores X's rotated channels one by one, as
    // Procrustes does), and the shift found stays
    let q = repflow_kernels::rotation::haar_rotation(c, 5).unwrap();
    let ra = rotate_channels(&a, n, c, h * w, &q);
    let r = score(
        &Maps::new(&ra, &shape).unwrap(),
        &Maps::new(&b, &shape).unwrap(),
        &folds,
        Corr::Pearson,
    )
    .unwrap();
    for (g, w) in r.x_to_y.iter().zip(&base.x_to_y) {
        assert!((g - w).abs() < 1e-5, "X->Y {g} vs {w}");
    }
    for (g, w) in r.angular_distance.iter().zip(&base.angular_distance) {
        assert!((g - w).abs() < 1e-5, "angular {g} vs {w}");
    }
    assert_eq!(r.shifts, base.shifts);
    // scale and offset of either layer: any representable scale
    for factor in [1e-30f32, 1e30] {
        let sa: Vec<f32> = a.iter().map(|v| v * factor + 3.0 * factor).collect();
        let r = score(
            &Maps::new(&sa, &shape).unwrap(),
            &Maps::new(&b, &shape).unwrap(),
            &folds,
            Corr::Pearson,
        )
        .unwrap();
        assert!(
            (r.score - base.score).abs() < 1e-5,
            "scale {factor}: {} vs {}",
            r.score,
            base.score
        );
    }
    // moving Y's maps further moves the chosen shift with them
    let mut moved = vec![0.0f32; b.len()];
    for k in 0..n * c {
        for y in 0..h {
            for x in 0..w {
                moved[k * h * w + ((y + 2) % h) * w + x] = b[k * h * w + y * w + x];
            }
        }
    }
    let r = score(
        &Maps::new(&a, &shape).unwrap(),
        &Maps::new(&moved, &shape).unwrap(),
        &folds,
        Corr::Pearson,
    )
    .unwrap();
    assert!(r.shifts.iter().all(|&s| s == (-1, -2)), "{:?}", r.shifts);
    assert!((r.score - base.score).abs() < 1e-9);
}

#[test]
fn on_a_one_by_one_grid_the_search_is_procrustes() {
    let (n, cx, cy) = (60, 5, 3);
    let a = noise(n * cx, 7);
    let mut b = noise(n * cy, 8);
    for k in 0..n {
        b[k * cy] += a[k * cx] + a[k * cx + 1];
    }
    let folds = Folds::new(n, FoldSpec::default()).unwrap();
    let s = score(
        &Maps::new(&a, &[n, cx]).unwrap(),
        &Maps::new(&b, &[n, cy]).unwrap(),
        &folds,
        Corr::Pearson,
    )
    .unwrap();
    // the same matrices through the ordinary Procrustes metric (stimuli × units, f64)
    let xm = Mat::from_fn(n, cx, |i, j| a[i * cx + j] as f64);
    let ym = Mat::from_fn(n, cy, |i, j| b[i * cy + j] as f64);
    let settings = Settings::default();
    let (px, py) = (
        PreparedLayer::new(xm.as_ref(), &settings).unwrap(),
        PreparedLayer::new(ym.as_ref(), &settings).unwrap(),
    );
    let p = Pair::new(&px, &py)
        .unwrap()
        .score(Metric::Procrustes)
        .unwrap();
    close("score", s.score, p.score);
    for (g, w) in s.x_to_y.iter().zip(p.x_to_y.as_ref().unwrap()) {
        close("x_to_y", *g, *w);
    }
    assert_eq!(s.shifts, vec![(0, 0); 5]);
}

#[test]
fn bad_shapes_are_errors_that_say_what_differs() {
    let a = vec![0.5f32; 2 * 3 * 4 * 4];
    let e = Maps::new(&a, &[2, 3, 4, 5]).unwrap_err().to_string();
    assert!(
        e.contains("[2, 3, 4, 5]") && e.contains("120") && e.contains("96"),
        "{e}"
    );
    assert!(Maps::new(&a, &[96])
        .unwrap_err()
        .to_string()
        .contains("channels"));
    // an empty grid or channel axis is an error, not an index out of range
    for shape in [[2, 3, 0, 4], [2, 0, 4, 4], [0, 3, 4, 4]] {
        let e = Maps::new(&[], &shape).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
    let (x, y) = (noise(10 * 2 * 4 * 4, 1), noise(10 * 2 * 2 * 8, 2));
    let folds = Folds::new(10, FoldSpec::default()).unwrap();
    let e = score(
        &Maps::new(&x, &[10, 2, 4, 4]).unwrap(),
        &Maps::new(&y, &[10, 2, 2, 8]).unwrap(),
        &folds,
        Corr::Pearson,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("4 × 4") && e.contains("2 × 8"), "{e}");
    let dead = vec![1.0f32; 10 * 2 * 4 * 4];
    let e = score(
        &Maps::new(&x, &[10, 2, 4, 4]).unwrap(),
        &Maps::new(&dead, &[10, 2, 4, 4]).unwrap(),
        &folds,
        Corr::Pearson,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("constant"), "{e}");
}

/// Writes a float32 `.npy` of `shape`.
fn npy(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn repflow_shift_scores_saved_maps_and_refuses_reduced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (n, c, h, w) = (30, 3, 4, 5);
    let (a, b) = pair(n, c, h, w, 1, 3);
    let (pa, pb, flat) = (
        dir.path().join("a.npy"),
        dir.path().join("b.npy"),
        dir.path().join("flat.npy"),
    );
    npy(&pa, &[n, c, h, w], &a);
    npy(&pb, &[n, c, h, w], &b);
    npy(&flat, &[n, c * h * w], &a);
    let bin = env!("CARGO_BIN_EXE_repflow");
    let out = std::process::Command::new(bin)
        .args([
            "shift",
            pa.to_str().unwrap(),
            pb.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let folds = Folds::new(n, FoldSpec::default()).unwrap();
    let want = score(
        &Maps::new(&a, &[n, c, h, w]).unwrap(),
        &Maps::new(&b, &[n, c, h, w]).unwrap(),
        &folds,
        Corr::Pearson,
    )
    .unwrap();
    assert_eq!(v["score"].as_f64().unwrap(), want.score);
    assert_eq!(v["shifts"][0], serde_json::json!([1, -2]));
    assert_eq!(v["grid"], serde_json::json!([4, 5]));
    let out = std::process::Command::new(bin)
        .args(["shift", flat.to_str().unwrap(), pb.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("flat.npy") && e.contains("height × width"),
        "{e}"
    );
    // different grids: exit 2, both grids named
    let other = dir.path().join("other.npy");
    npy(&other, &[n, c, w, h], &b);
    let out = std::process::Command::new(bin)
        .args(["shift", pa.to_str().unwrap(), other.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("4 × 5") && e.contains("5 × 4"), "{e}");
}
