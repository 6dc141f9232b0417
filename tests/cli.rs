//! The `repflow score` command line: output formats, and a clear one-line error with exit
//! code 2 for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn repflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repflow"))
        .args(args)
        .output()
        .expect("repflow runs")
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

/// Runs `repflow score` expecting a usage error: exit code 2, no panic, the message contains
/// every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let out = repflow(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "args {args:?} panicked: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "args {args:?}: {n:?} not in {stderr:?}");
    }
}

#[test]
fn json_output_has_the_documented_fields() {
    let out = repflow(&[
        "score",
        &path("equal_widths/x.npy"),
        &path("equal_widths/y.npy"),
        "--metric",
        "linear",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "metric",
        "score",
        "std",
        "fold_scores",
        "x_to_y",
        "y_to_x",
        "n_units_x",
        "n_units_y",
        "dropped_x",
        "dropped_y",
        "nan_units",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["metric"], "linear");
    assert_eq!(v["fold_scores"].as_array().unwrap().len(), 5);
}

#[test]
fn all_metrics_give_an_array_and_skip_permutation_for_unequal_widths() {
    let out = repflow(&[
        "score",
        &path("unequal_widths/x.npy"),
        &path("unequal_widths/y.npy"),
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metric"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["linear", "procrustes", "soft-matching", "cka", "rsa"]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("permutation skipped"));
}

#[test]
fn table_output_lists_every_metric() {
    let out = repflow(&[
        "score",
        &path("equal_widths/x.npy"),
        &path("equal_widths/y.npy"),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for m in [
        "linear",
        "procrustes",
        "permutation",
        "soft-matching",
        "cka",
        "rsa",
        "5-fold, shuffled with seed 42",
    ] {
        assert!(text.contains(m), "{m} missing from\n{text}");
    }
}

#[test]
fn safetensors_with_several_tensors_needs_a_key() {
    let st = path("bad/two_tensors.safetensors");
    refused(
        &["score", &st, &path("bad/rows30.npy")],
        &["holds 2 tensors", "--x-key", "a, b"],
    );
    refused(
        &["score", &st, &path("bad/rows30.npy"), "--x-key", "c"],
        &["no tensor named `c`"],
    );
    let out = repflow(&[
        "score",
        &st,
        &path("bad/rows30.npy"),
        "--x-key",
        "a",
        "--metric",
        "cka",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn different_row_counts_are_refused() {
    refused(
        &["score", &path("bad/rows30.npy"), &path("bad/rows29.npy")],
        &["30 rows", "29", "same stimuli"],
    );
}

#[test]
fn fewer_rows_than_folds_are_refused() {
    refused(
        &["score", &path("bad/rows3.npy"), &path("bad/rows3.npy")],
        &["3 stimuli", "5 folds", "--folds"],
    );
}

#[test]
fn arrays_that_are_not_2d_are_refused() {
    refused(
        &["score", &path("bad/one_d.npy"), &path("bad/rows30.npy")],
        &["one_d.npy", "1-D", "(stimuli × units)"],
    );
    refused(
        &["score", &path("bad/rows30.npy"), &path("bad/three_d.npy")],
        &["three_d.npy", "3-D", "[30, 5, 1]"],
    );
}

#[test]
fn non_finite_values_are_refused_with_their_position() {
    refused(
        &["score", &path("bad/nan.npy"), &path("bad/rows30.npy")],
        &["nan.npy", "NaN", "row 7, column 3"],
    );
    refused(
        &["score", &path("bad/rows30.npy"), &path("bad/inf.npy")],
        &["inf.npy", "inf", "row 2, column 1"],
    );
}

#[test]
fn unsupported_dtypes_are_refused() {
    refused(
        &["score", &path("bad/int64.npy"), &path("bad/rows30.npy")],
        &["int64.npy", "<i8", "float32 or float64"],
    );
    refused(
        &["score", &path("bad/float16.npy"), &path("bad/rows30.npy")],
        &["float16", "float32 or float64"],
    );
}

#[test]
fn unknown_metric_is_refused() {
    refused(
        &[
            "score",
            &path("bad/rows30.npy"),
            &path("bad/rows30.npy"),
            "--metric",
            "cca",
        ],
        &["cca", "soft-matching"],
    );
}

#[test]
fn permutation_with_unequal_widths_suggests_soft_matching() {
    refused(
        &[
            "score",
            &path("bad/rows30.npy"),
            &path("bad/width4.npy"),
            "--metric",
            "permutation",
        ],
        &["equal widths", "5", "4", "soft-matching"],
    );
}

#[test]
fn unreadable_files_are_refused() {
    refused(
        &["score", &path("bad/missing.npy"), &path("bad/rows30.npy")],
        &["cannot read", "missing.npy"],
    );
    refused(
        &["score", &path("bad/garbage.npy"), &path("bad/rows30.npy")],
        &["garbage.npy", "not a valid .npy"],
    );
    refused(
        &["score", &path("cases.json"), &path("bad/rows30.npy")],
        &["cases.json", "neither a .npy nor a .safetensors"],
    );
}

#[test]
fn bad_flag_values_are_refused() {
    refused(
        &[
            "score",
            &path("bad/rows30.npy"),
            &path("bad/rows30.npy"),
            "--folds",
            "1",
        ],
        &["--folds", "at least 2"],
    );
    refused(
        &[
            "score",
            &path("bad/rows30.npy"),
            &path("bad/rows30.npy"),
            "--alphas=-1",
        ],
        &["--alphas", ">= 0"],
    );
}

#[test]
fn a_grid_with_zero_on_nearly_square_data_still_scores() {
    // α = 0 (least squares) inside a grid, on nearly square data (30 units, 32 train rows).
    let out = repflow(&[
        "score",
        &path("wide/x.npy"),
        &path("wide/y.npy"),
        "--metric",
        "linear",
        "--alphas",
        "0,1,10",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["score"].as_f64().unwrap().is_finite());
}

#[test]
fn statistics_add_their_fields_and_a_p_value_column() {
    let (x, y) = (path("inference/x.npy"), path("inference/y.npy"));
    let out = repflow(&[
        "score",
        &x,
        &y,
        "--json",
        "--null",
        "19",
        "--null-seed",
        "3",
        "--bootstrap",
        "10",
        "--rotations",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for o in v.as_array().unwrap() {
        let metric = o["metric"].as_str().unwrap();
        let null = &o["null"];
        assert_eq!(null["n"], 19, "{metric}");
        assert_eq!(null["seed"], 3);
        let p = null["p_value"].as_f64().unwrap();
        assert!((0.05..=1.0).contains(&p), "{metric}: p {p}");
        for q in ["0.5", "0.95", "0.99"] {
            assert!(null["quantiles"][q].is_number(), "{metric}: quantile {q}");
        }
        let corrected = o["chance_corrected"].as_f64().unwrap();
        let want = o["score"].as_f64().unwrap() - null["mean"].as_f64().unwrap();
        assert!((corrected - want).abs() < 1e-15);
        if metric == "rsa" {
            assert!(o["bootstrap"]["error"].as_str().unwrap().contains("rsa"));
        } else {
            let b = &o["bootstrap"];
            assert!(
                b["low"].as_f64().unwrap() <= b["high"].as_f64().unwrap(),
                "{metric}: {b}"
            );
            assert_eq!(b["level"], 0.95);
        }
        let has_rotation_null = o["rotation_null"]["p_value"].is_number();
        assert_eq!(
            has_rotation_null,
            ["permutation", "soft-matching"].contains(&metric),
            "{metric}"
        );
    }
    let table = repflow(&["score", &x, &y, "--null", "9", "--metric", "cka"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(" p ") && text.contains("0.10000"), "{text}");
    refused(
        &["score", &x, &y, "--metric", "cka", "--rotations", "5"],
        &["--rotations", "permutation"],
    );
    refused(&["score", &x, &y, "--null", "0"], &["--null"]);
    refused(
        &["score", &x, &y, "--bootstrap", "5", "--ci", "1.5"],
        &["--ci"],
    );
}
