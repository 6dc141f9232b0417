//! Agreement with the independent Python reference (numpy, scipy, scikit-learn, POT):
//! fixtures written by `scripts/make_fixtures.py`, compared to 1e-8.

use std::path::{Path, PathBuf};

use repflow::matrix_io::read_matrix;
use repflow_kernels::{
    rotation, Corr, DimMatch, FoldSpec, Folds, HsicEstimator, Metric, Pair, PreparedLayer,
    Settings, TestZscore,
};
use serde_json::Value;

const TOL: f64 = 1e-8;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        is_close(got, want),
        "{what}: repflow {got:.15} vs reference {want:.15} (diff {:.2e})",
        (got - want).abs()
    );
}

fn is_close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOL * want.abs().max(1.0)
}

fn close_all(what: &str, got: &[f64], want: &Value) {
    let want: Vec<f64> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        close(&format!("{what}[{i}]"), *g, *w);
    }
}

fn settings_of(s: &Value) -> Settings {
    Settings {
        folds: FoldSpec {
            k: s["folds"].as_u64().unwrap() as usize,
            shuffle_seed: s["seed"].as_u64().map(|v| v as u32),
        },
        corr: if s["corr"] == "spearman" {
            Corr::Spearman
        } else {
            Corr::Pearson
        },
        test_zscore: if s["test_zscore"] == "own" {
            TestZscore::Own
        } else {
            TestZscore::Train
        },
        alphas: match s["alphas"].as_array() {
            Some(a) => a.iter().map(|v| v.as_f64().unwrap()).collect(),
            None => Settings::default_alphas(),
        },
        dim_match: if s["dim_match"] == "pca" {
            DimMatch::Pca
        } else {
            DimMatch::ZeroPad
        },
        hsic: if s["hsic"] == "unbiased" {
            HsicEstimator::Unbiased
        } else {
            HsicEstimator::Biased
        },
        rsa_compare: if s["rsa_compare"] == "pearson" {
            Corr::Pearson
        } else {
            Corr::Spearman
        },
    }
}

#[test]
fn scores_match_the_python_reference() {
    let cases = load("cases.json");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let settings = settings_of(&case["settings"]);
        let mut x = read_matrix(&fixtures().join(case["x"].as_str().unwrap()), None).unwrap();
        let y = read_matrix(&fixtures().join(case["y"].as_str().unwrap()), None).unwrap();
        if let Some(seed) = case["settings"]["rotate_x"].as_u64() {
            x = rotation::rotate(x.as_ref(), seed as u32).unwrap();
        }
        let a = PreparedLayer::new(x.as_ref(), &settings).unwrap();
        let b = PreparedLayer::new(y.as_ref(), &settings).unwrap();
        assert_eq!(
            a.dropped().len() as u64,
            case["dropped_x"].as_u64().unwrap(),
            "{name}: dropped_x"
        );
        assert_eq!(
            b.dropped().len() as u64,
            case["dropped_y"].as_u64().unwrap(),
            "{name}: dropped_y"
        );
        let pair = Pair::new(&a, &b).unwrap();
        for (metric_name, want) in case["expected"].as_object().unwrap() {
            let metric = Metric::from_name(metric_name).unwrap();
            let got = pair.score(metric).unwrap();
            let what = format!("{name}/{metric_name}");
            if !is_close(got.score, want["score"].as_f64().unwrap()) {
                failures.push(format!(
                    "{what}: repflow {} vs reference {}",
                    got.score, want["score"]
                ));
                continue;
            }
            close(
                &format!("{what} score"),
                got.score,
                want["score"].as_f64().unwrap(),
            );
            assert_eq!(
                got.nan_units as u64,
                want["nan_units"].as_u64().unwrap(),
                "{what}: nan_units"
            );
            if metric.is_cross_validated() {
                close_all(
                    &format!("{what} folds"),
                    &got.fold_scores,
                    &want["fold_scores"],
                );
                close(
                    &format!("{what} std"),
                    got.std.unwrap(),
                    want["std"].as_f64().unwrap(),
                );
            }
            if let Some(xy) = &got.x_to_y {
                close_all(&format!("{what} x_to_y"), xy, &want["x_to_y"]);
                close_all(
                    &format!("{what} y_to_x"),
                    got.y_to_x.as_ref().unwrap(),
                    &want["y_to_x"],
                );
            }
            if let Some(ang) = &got.angular_distance {
                close_all(&format!("{what} angular"), ang, &want["angular_distance"]);
            }
            if let Some((axy, ayx)) = &got.alphas {
                close_all(&format!("{what} alpha_x_to_y"), axy, &want["alpha_x_to_y"]);
                close_all(&format!("{what} alpha_y_to_x"), ayx, &want["alpha_y_to_x"]);
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} results differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 40, "only {checked} metric results checked");
}

#[test]
fn folds_match_scikit_learn_kfold() {
    for split in load("folds.json").as_array().unwrap() {
        let m = split["m"].as_u64().unwrap() as usize;
        let k = split["k"].as_u64().unwrap() as usize;
        let seed = split["seed"].as_u64().map(|s| s as u32);
        let folds = Folds::new(
            m,
            FoldSpec {
                k,
                shuffle_seed: seed,
            },
        )
        .unwrap();
        for (f, want) in split["test"].as_array().unwrap().iter().enumerate() {
            let want: Vec<usize> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                folds.test(f),
                want.as_slice(),
                "m={m} k={k} seed={seed:?} fold {f}"
            );
        }
    }
}

#[test]
fn rotations_match_numpy() {
    for r in load("rotations.json").as_array().unwrap() {
        let n = r["n"].as_u64().unwrap() as usize;
        let q = rotation::haar_rotation(n, r["seed"].as_u64().unwrap() as u32).unwrap();
        for (i, row) in r["q"].as_array().unwrap().iter().enumerate() {
            for (j, v) in row.as_array().unwrap().iter().enumerate() {
                close(&format!("Q[{i},{j}] n={n}"), q[(i, j)], v.as_f64().unwrap());
            }
        }
    }
}

#[test]
fn every_npy_layout_and_safetensors_read_the_same_matrix() {
    let base = read_matrix(&fixtures().join("layout_c_f64.npy"), None).unwrap();
    let fortran = read_matrix(&fixtures().join("layout_fortran_f64.npy"), None).unwrap();
    let f32_npy = read_matrix(&fixtures().join("layout_c_f32.npy"), None).unwrap();
    let st = read_matrix(&fixtures().join("layout.safetensors"), Some("acts")).unwrap();
    assert_eq!(base, fortran);
    assert_eq!(f32_npy, st);
    for i in 0..base.nrows() {
        for j in 0..base.ncols() {
            assert_eq!(f32_npy[(i, j)], base[(i, j)] as f32 as f64);
        }
    }
}

#[test]
fn null_bootstrap_and_rotation_draws_match_the_python_reference() {
    use repflow_kernels::inference::{bootstrap, permutation_null, rotation_null};
    let f = load("inference.json");
    let settings = Settings::default();
    let read = |k: &str| read_matrix(&fixtures().join(f[k].as_str().unwrap()), None).unwrap();
    let (x, y) = (read("x"), read("y"));
    let a = PreparedLayer::new(x.as_ref(), &settings).unwrap();
    let b = PreparedLayer::new(y.as_ref(), &settings).unwrap();
    let seed = |k: &str| f[k].as_u64().unwrap() as u32;
    let want = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let near = |what: &str, got: &[f64], want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-10, "{what}: {g} vs {w}");
        }
    };
    for (name, expected) in f["null"].as_object().unwrap() {
        let metric = Metric::from_name(name).unwrap();
        let got = permutation_null(&a, &b, metric, 3, seed("null_seed")).unwrap();
        near(&format!("{name} null"), &got, &want(expected));
        let boot = bootstrap(&a, &b, metric, 2, seed("bootstrap_seed"), 0.95).unwrap();
        near(
            &format!("{name} bootstrap"),
            &boot.draws.values,
            &want(&f["bootstrap"][name]),
        );
    }
    let got = rotation_null(&a, &b, Metric::Permutation, 3, seed("rotation_seed")).unwrap();
    near(
        "permutation rotation null",
        &got,
        &want(&f["rotation"]["permutation"]),
    );
}

#[test]
fn seed_pair_means_and_correlation_tests_match_the_python_reference() {
    use repflow_kernels::across_scores::{correlation_test, pair_mean};
    let f = load("summaries.json");
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    for case in f["pair_means"].as_array().unwrap() {
        let values: Vec<(u64, u64, f64)> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v[0].as_u64().unwrap(),
                    v[1].as_u64().unwrap(),
                    v[2].as_f64().unwrap(),
                )
            })
            .collect();
        let got = pair_mean(&values);
        assert!((got.mean - case["mean"].as_f64().unwrap()).abs() < 1e-14);
        match case["se"].as_f64() {
            Some(se) => assert!((got.se.unwrap() - se).abs() < 1e-14, "{case}: {got:?}"),
            None => assert_eq!(got.se, None, "{case}"),
        }
    }
    for case in f["correlations"].as_array().unwrap() {
        let (x, y) = (floats(&case["x"]), floats(&case["y"]));
        let t = correlation_test(
            &x,
            &y,
            case["n_random"].as_u64().unwrap() as usize,
            case["seed"].as_u64().unwrap() as u32,
        )
        .unwrap();
        assert!((t.r - case["r"].as_f64().unwrap()).abs() < 1e-12, "{case}");
        assert!(
            (t.p_value - case["p"].as_f64().unwrap()).abs() < 1e-12,
            "{case}: {t:?}"
        );
    }
}
