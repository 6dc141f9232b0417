//! Invariances every metric must show, independent of any reference implementation:
//! identity-like transforms score 1 under the metrics invariant to them, independent noise
//! scores near 0, swapping X and Y changes nothing, and a random rotation of X leaves the
//! rotation-invariant metrics unchanged while the permutation score drops.

use faer::Mat;
use repflow_kernels::rng::LegacyRandomState;
use repflow_kernels::{rotation, HsicEstimator, Metric, Pair, PreparedLayer, Score, Settings};

fn gaussian(m: usize, n: usize, seed: u32) -> Mat<f64> {
    let mut rng = LegacyRandomState::new(seed);
    let draws: Vec<f64> = (0..m * n).map(|_| rng.gauss()).collect();
    Mat::from_fn(m, n, |i, j| draws[i * n + j])
}

/// Sparse non-negative units driven by 8 latent factors: a layer with a privileged basis.
fn relu_layer(m: usize, n: usize, seed: u32) -> Mat<f64> {
    let z = gaussian(m, 8, seed);
    let w = gaussian(8, n, seed + 1);
    let pre = &z * &w;
    Mat::from_fn(m, n, |i, j| {
        (pre[(i, j)] - 0.5).max(0.0) + 0.05 * ((i * 31 + j * 17) % 7) as f64
    })
}

fn score(x: &Mat<f64>, y: &Mat<f64>, metric: Metric, settings: &Settings) -> Score {
    let a = PreparedLayer::new(x.as_ref(), settings).unwrap();
    let b = PreparedLayer::new(y.as_ref(), settings).unwrap();
    Pair::new(&a, &b).unwrap().score(metric).unwrap()
}

fn assert_near(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

#[test]
fn a_rotated_copy_scores_one_under_procrustes_linear_and_cka() {
    let x = relu_layer(300, 20, 1);
    let y = rotation::rotate(x.as_ref(), 9).unwrap();
    let s = Settings::default();
    for metric in [Metric::Procrustes, Metric::Linear, Metric::Cka] {
        assert_near(metric.name(), score(&x, &y, metric, &s).score, 1.0, 1e-9);
    }
    assert!(score(&x, &y, Metric::Procrustes, &s)
        .angular_distance
        .unwrap()
        .iter()
        .all(|&a| a < 1e-6));
}

#[test]
fn a_permuted_copy_scores_one_under_permutation_and_soft_matching() {
    let x = relu_layer(300, 20, 2);
    let perm: Vec<usize> = (0..20).map(|j| (j * 7 + 3) % 20).collect();
    let y = Mat::from_fn(300, 20, |i, j| x[(i, perm[j])]);
    let s = Settings::default();
    for metric in [
        Metric::Permutation,
        Metric::SoftMatching,
        Metric::Procrustes,
        Metric::Rsa,
    ] {
        assert_near(metric.name(), score(&x, &y, metric, &s).score, 1.0, 1e-9);
    }
}

#[test]
fn an_affine_copy_scores_one_under_linear() {
    let x = relu_layer(300, 15, 3);
    let a = gaussian(15, 15, 33);
    let ax = &x * &a;
    let y = Mat::from_fn(300, 15, |i, j| ax[(i, j)] + 10.0 * j as f64 - 3.0);
    assert_near(
        "linear",
        score(&x, &y, Metric::Linear, &Settings::default()).score,
        1.0,
        1e-6,
    );
    // A wider affine image: X → Y is exact, and Y → X too (A has full column rank).
    let b = gaussian(15, 25, 34);
    let y = &x * &b;
    assert_near(
        "linear wide",
        score(&x, &y, Metric::Linear, &Settings::default()).score,
        1.0,
        1e-6,
    );
}

#[test]
fn independent_noise_scores_near_zero() {
    let x = gaussian(2000, 16, 4);
    let y = gaussian(2000, 16, 5);
    let mut s = Settings {
        hsic: HsicEstimator::Unbiased,
        ..Settings::default()
    };
    for metric in Metric::ALL {
        let got = score(&x, &y, metric, &s).score;
        assert!(
            got.abs() < 0.1,
            "{}: {got} on independent noise",
            metric.name()
        );
    }
    s.hsic = HsicEstimator::Biased;
    assert!(score(&x, &y, Metric::Cka, &s).score < 0.02);
}

#[test]
fn swapping_x_and_y_changes_no_score() {
    let x = relu_layer(200, 12, 6);
    let noise = gaussian(200, 12, 7);
    let y = Mat::from_fn(200, 12, |i, j| x[(i, (j + 5) % 12)] + 0.7 * noise[(i, j)]);
    let s = Settings::default();
    for metric in Metric::ALL {
        let xy = score(&x, &y, metric, &s);
        let yx = score(&y, &x, metric, &s);
        assert_near(metric.name(), xy.score, yx.score, 1e-10);
        if let (Some(a), Some(b)) = (&xy.x_to_y, &yx.y_to_x) {
            for (p, q) in a.iter().zip(b) {
                assert_near("direction", *p, *q, 1e-10);
            }
        }
    }
}

#[test]
fn soft_matching_equals_permutation_for_equal_widths() {
    let x = relu_layer(250, 30, 8);
    let noise = gaussian(250, 30, 9);
    let y = Mat::from_fn(250, 30, |i, j| x[(i, (j * 11) % 30)] + noise[(i, j)]);
    let s = Settings::default();
    let p = score(&x, &y, Metric::Permutation, &s);
    let sm = score(&x, &y, Metric::SoftMatching, &s);
    for (a, b) in p.fold_scores.iter().zip(&sm.fold_scores) {
        assert_near("fold", *a, *b, 1e-12);
    }
}

/// Mean over folds of the X→Y direction.
fn x_to_y(s: &Score) -> f64 {
    let f = s.x_to_y.as_ref().unwrap();
    f.iter().sum::<f64>() / f.len() as f64
}

#[test]
fn rotating_x_keeps_rotation_invariant_metrics_and_lowers_permutation() {
    let x = relu_layer(400, 24, 10);
    let noise = gaussian(400, 24, 11);
    let y = Mat::from_fn(400, 24, |i, j| x[(i, (j * 5) % 24)] + 0.3 * noise[(i, j)]);
    let xr = rotation::rotate(x.as_ref(), 2024).unwrap();
    let s = Settings::default();
    // Exactly invariant: CKA, and predicting Y from X by Procrustes or least squares (the
    // map absorbs the rotation).
    assert_near(
        "cka",
        score(&xr, &y, Metric::Cka, &s).score,
        score(&x, &y, Metric::Cka, &s).score,
        1e-9,
    );
    let p = |x: &Mat<f64>| x_to_y(&score(x, &y, Metric::Procrustes, &s));
    assert_near("procrustes X->Y", p(&xr), p(&x), 1e-9);
    let ols = Settings {
        alphas: vec![0.0],
        ..Settings::default()
    };
    let l = |x: &Mat<f64>| x_to_y(&score(x, &y, Metric::Linear, &ols));
    assert_near("least squares X->Y", l(&xr), l(&x), 1e-9);
    // Nearly invariant: ridge z-scores each unit, and the Y->X directions score X's
    // (rotated) units one by one, so the symmetric scores move a little.
    for metric in [Metric::Linear, Metric::Procrustes] {
        let native = score(&x, &y, metric, &s).score;
        let rotated = score(&xr, &y, metric, &s).score;
        assert_near(metric.name(), rotated, native, 0.02);
    }
    let native = score(&x, &y, Metric::Permutation, &s).score;
    let rotated = score(&xr, &y, Metric::Permutation, &s).score;
    assert!(native > 0.8, "native permutation score {native}");
    assert!(
        rotated < native - 0.3,
        "rotation should lower the permutation score: {native} -> {rotated}"
    );
}

#[test]
fn haar_rotations_are_proper_rotations() {
    for (n, seed) in [(1, 0), (5, 1), (40, 2)] {
        let q = rotation::haar_rotation(n, seed).unwrap();
        let qtq = q.transpose() * &q;
        for i in 0..n {
            for j in 0..n {
                assert_near("QᵀQ", qtq[(i, j)], if i == j { 1.0 } else { 0.0 }, 1e-12);
            }
        }
        assert_near("det", q.determinant(), 1.0, 1e-9);
    }
}

#[test]
fn dead_units_are_dropped_and_reported() {
    let mut x = relu_layer(100, 10, 12);
    for i in 0..100 {
        x[(i, 3)] = 2.5;
        x[(i, 7)] = 0.0;
    }
    let layer = PreparedLayer::new(x.as_ref(), &Settings::default()).unwrap();
    assert_eq!(layer.dropped(), &[3, 7]);
    assert_eq!(layer.n_units(), 8);
    assert_eq!(layer.n_units_in(), 10);
}
