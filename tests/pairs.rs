//! `repflow pairs`: every X layer against every Y layer, each row the numbers `repflow
//! score` gives that pair alone, whatever the batch size; a pair that cannot be scored is a
//! row with its reason (exit 1); bad input is a clear error naming the file (exit 2).

mod common;

use common::{repflow, s, tempdir, write_model};
use std::path::Path;

fn layers(dir: &Path, model: &str, seed: u64, widths: &[usize]) -> Vec<String> {
    write_model(dir, model, seed, 240, widths);
    (1..=widths.len())
        .map(|k| s(&dir.join(model).join(format!("layer{k}.npy"))))
        .collect()
}

fn pairs(x: &[String], y: &[String], extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["pairs", "--device", "cpu", "--x"];
    args.extend(x.iter().map(String::as_str));
    args.push("--y");
    args.extend(y.iter().map(String::as_str));
    args.extend(extra);
    let out = repflow(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn score_alone(x: &str, y: &str, metric: &str) -> serde_json::Value {
    let out = repflow(&[
        "score", x, y, "--metric", metric, "--json", "--device", "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_pair_scores_as_alone_in_one_batch_or_many() {
    let dir = tempdir();
    let x = layers(dir.path(), "a", 1, &[12, 20, 7]);
    let y = layers(dir.path(), "b", 2, &[20, 9]);
    for metric in ["procrustes", "linear", "cka"] {
        let (code, one_batch, err) = pairs(&x, &y, &["--metric", metric, "--json"]);
        assert_eq!(code, Some(0), "{err}");
        // one pair per batch
        let (_, many_batches, _) = pairs(
            &x,
            &y,
            &["--metric", metric, "--json", "--batch-memory", "1"],
        );
        assert_eq!(one_batch, many_batches, "{metric}: batches change nothing");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&one_batch).unwrap();
        assert_eq!(rows.len(), 6);
        for (k, row) in rows.iter().enumerate() {
            let (xi, yi) = (&x[k / 2], &y[k % 2]);
            assert_eq!(row["x"], xi.as_str());
            assert_eq!(row["y"], yi.as_str());
            let alone = score_alone(xi, yi, metric);
            for key in ["score", "std", "fold_scores", "n_units_x", "n_units_y"] {
                assert_eq!(row[key], alone[key], "{metric} {xi} {yi} {key}");
            }
        }
    }
}

#[test]
fn the_csv_table_has_a_row_per_pair_and_a_reason_where_there_is_no_score() {
    let dir = tempdir();
    let x = layers(dir.path(), "a", 1, &[12, 20]);
    let y = layers(dir.path(), "b", 2, &[20]);
    let out = dir.path().join("out/pairs.csv");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (code, stdout, stderr) = pairs(&x, &y, &["--metric", "permutation", "--out", &s(&out)]);
    // permutation needs equal widths: the 12 × 20 pair has a reason, not a number
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("1 of 2 pairs could not be scored"),
        "{stderr}"
    );
    let rows = common::csv_rows(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["score"], "");
    assert!(rows[0]["error"].contains("equal widths"), "{:?}", rows[0]);
    assert_eq!(rows[0]["metric"], "permutation");
    assert!(rows[1]["score"].parse::<f64>().unwrap() > 0.0);
    assert_eq!(rows[1]["error"], "");
    for f in 1..=5 {
        assert!(rows[1][&format!("fold_{f}")].parse::<f64>().is_ok());
    }
}

#[test]
fn bad_layer_files_are_refused_naming_the_file() {
    let dir = tempdir();
    let x = layers(dir.path(), "a", 1, &[12]);
    let short = dir.path().join("short.npy");
    common::write_npy(&short, 100, 5, false, |i, j| (i * j) as f64);
    let nan = dir.path().join("nan.npy");
    common::write_npy(&nan, 240, 5, false, |i, j| {
        if i == 3 && j == 2 {
            f64::NAN
        } else {
            1.0 + (i + j) as f64
        }
    });
    let missing = dir.path().join("missing.npy");
    for (file, needle) in [
        (s(&short), "has 100 rows"),
        (s(&nan), "nan.npy"),
        (s(&missing), "missing.npy"),
    ] {
        let (code, _, stderr) = pairs(&x, std::slice::from_ref(&file), &[]);
        assert_eq!(code, Some(2), "{file}: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (code, _, stderr) = pairs(&x, &x, &["--folds", "1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--folds"), "{stderr}");
    // an --out that cannot be written is refused before any pair is scored
    let nowhere = s(&dir.path().join("no/such/folder/t.csv"));
    let folder = s(dir.path());
    for (out, needle) in [(&nowhere, "does not exist"), (&folder, "is a folder")] {
        let (code, _, stderr) = pairs(&x, &x, &["--out", out]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(
            !stderr.contains("pairs:"),
            "scored before refusing: {stderr}"
        );
    }
}
