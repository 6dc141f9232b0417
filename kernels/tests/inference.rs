//! The statistics of `repflow_kernels::inference` against what they promise: p-values of
//! independent noise are uniform, a rotated copy is never beaten by its null, the bootstrap
//! interval covers a known population value at its nominal rate, and the rotation null tells
//! a privileged basis from an isotropic one.

use faer::Mat;
use repflow_kernels::inference::{bootstrap, permutation_null, rotation_null, Draws};
use repflow_kernels::rng::LegacyRandomState;
use repflow_kernels::{Metric, PreparedLayer, Settings};

fn gaussian(m: usize, n: usize, seed: u32) -> Mat<f64> {
    let mut rng = LegacyRandomState::new(seed);
    let v: Vec<f64> = (0..m * n).map(|_| rng.gauss()).collect();
    Mat::from_fn(m, n, |i, j| v[i * n + j])
}

fn score(a: &PreparedLayer, b: &PreparedLayer, metric: Metric) -> f64 {
    repflow_kernels::Pair::new(a, b)
        .unwrap()
        .score(metric)
        .unwrap()
        .score
}

fn prepare(x: &Mat<f64>) -> PreparedLayer {
    PreparedLayer::new(x.as_ref(), &Settings::default()).unwrap()
}

/// Least squares (α = 0): the coverage test's 200 × 200 refits stay fast.
fn prepare_lstsq(x: &Mat<f64>) -> PreparedLayer {
    let settings = Settings {
        alphas: vec![0.0],
        ..Settings::default()
    };
    PreparedLayer::new(x.as_ref(), &settings).unwrap()
}

#[test]
fn bootstrap_intervals_cover_the_population_value_at_the_nominal_rate() {
    // X ~ N(0, I), Y = X + σE: in both directions each unit's best linear prediction has
    // population correlation 1/sqrt(1 + σ²), so the linear score's population value is that.
    let (m, n, sigma) = (250, 2, 0.8);
    let truth = 1.0 / (1.0f64 + sigma * sigma).sqrt();
    let datasets = 200;
    let (mut below, mut above) = (0, 0);
    let covered = (0..datasets)
        .filter(|&d| {
            let x = gaussian(m, n, 10_000 + d);
            let e = gaussian(m, n, 20_000 + d);
            let y = Mat::from_fn(m, n, |i, j| x[(i, j)] + sigma * e[(i, j)]);
            let i = bootstrap(
                &prepare_lstsq(&x),
                &prepare_lstsq(&y),
                Metric::Linear,
                200,
                d,
                0.95,
            )
            .unwrap();
            below += usize::from(truth < i.low);
            above += usize::from(truth > i.high);
            i.low <= truth && truth <= i.high
        })
        .count();
    let rate = covered as f64 / datasets as f64;
    eprintln!("coverage of the nominal 95% interval: {rate} (truth below {below}, above {above})");
    assert!((0.90..=0.99).contains(&rate), "coverage {rate}");
}

/// The largest gap between the empirical distribution of `p` and the uniform one, at the
/// values a permutation p-value with `n` draws can take (k / (n + 1)).
fn ks_uniform(p: &[f64], n: usize) -> f64 {
    (1..=n + 1)
        .map(|k| {
            let at = k as f64 / (n + 1) as f64;
            let below = p.iter().filter(|&&v| v <= at + 1e-12).count() as f64 / p.len() as f64;
            (below - at).abs()
        })
        .fold(0.0, f64::max)
}

#[test]
fn null_p_values_of_independent_noise_are_uniform() {
    let (datasets, n) = (150, 39);
    for metric in [Metric::Linear, Metric::Cka, Metric::Permutation] {
        let p: Vec<f64> = (0..datasets)
            .map(|d| {
                let (x, y) = (gaussian(30, 3, 500 + d), gaussian(30, 3, 900 + d));
                let (a, b) = (prepare_lstsq(&x), prepare_lstsq(&y));
                let observed = score(&a, &b, metric);
                Draws::new(observed, permutation_null(&a, &b, metric, n, d).unwrap(), d).p_value
            })
            .collect();
        let d = ks_uniform(&p, n);
        // Kolmogorov–Smirnov critical value at α = 0.01 for 150 values: 1.63 / sqrt(150).
        eprintln!("{metric:?}: KS distance from uniform {d:.3}");
        assert!(d < 1.63 / (datasets as f64).sqrt(), "{metric:?}: KS {d}");
    }
}

#[test]
fn a_rotated_copy_beats_every_null_draw_under_procrustes() {
    let x = gaussian(60, 5, 1);
    let q = repflow_kernels::rotation::haar_rotation(5, 4).unwrap();
    let y = &x * &q;
    let (a, b) = (prepare(&x), prepare(&y));
    let observed = score(&a, &b, Metric::Procrustes);
    let n = 49;
    let d = Draws::new(
        observed,
        permutation_null(&a, &b, Metric::Procrustes, n, 7).unwrap(),
        7,
    );
    assert_eq!(d.p_value, 1.0 / (n + 1) as f64);
    assert!(d.mean.abs() < 0.3, "null mean {}", d.mean);
}

#[test]
fn the_rotation_null_finds_a_privileged_basis_in_a_permuted_copy_only() {
    let r = 39;
    // A permuted copy (plus a little noise): its units align one to one, rotations break that.
    let x = gaussian(120, 6, 2);
    let noise = gaussian(120, 6, 3);
    let perm = [3, 0, 5, 1, 4, 2];
    let y = Mat::from_fn(120, 6, |i, j| x[(i, perm[j])] + 0.1 * noise[(i, j)]);
    let (a, b) = (prepare(&x), prepare(&y));
    let native = score(&a, &b, Metric::Permutation);
    let d = Draws::new(
        native,
        rotation_null(&a, &b, Metric::Permutation, r, 0).unwrap(),
        0,
    );
    assert_eq!(
        d.p_value,
        1.0 / (r + 1) as f64,
        "native {native}, null mean {}",
        d.mean
    );
    // An isotropic Gaussian X against a randomly rotated copy: no basis is privileged, so
    // the native score is a typical draw of the null (mean p over datasets near 1/2).
    let mean_p: f64 = (0..10u32)
        .map(|s| {
            let x = gaussian(120, 6, 40 + s);
            let q = repflow_kernels::rotation::haar_rotation(6, 77 + s).unwrap();
            let y = &x * &q;
            let (a, b) = (prepare(&x), prepare(&y));
            let native = score(&a, &b, Metric::Permutation);
            Draws::new(
                native,
                rotation_null(&a, &b, Metric::Permutation, r, 100 * s).unwrap(),
                0,
            )
            .p_value
        })
        .sum::<f64>()
        / 10.0;
    assert!((0.25..=0.75).contains(&mean_p), "mean p {mean_p}");
}
