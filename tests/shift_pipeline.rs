//! Full maps in a pipeline: `stimuli.maps` stores each network's full layer outputs and
//! reduces them in `reduce` nodes (the same numbers as reducing in the forward pass, and a
//! new reduction reruns no network); `reduce = "shift-search"` adds the spatial-shift
//! search. Needs `make data`.

mod common;

use common::*;

fn pipeline(dir: &std::path::Path, stimuli: &str, metrics: &str) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let deb =
        format!("{root}/data/downloads/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb");
    write_pipeline(
        &dir.join("maps.toml"),
        &format!(
            r#"name = "maps"
results = "{results}"
metrics = [{metrics}]

[stimuli]
count = 60
package = "{deb}"
{stimuli}

[training]
package = "{deb}"
epochs = 1
batch = 64
train_limit = 128
test_limit = 50
checkpoints = ["end"]

[[model]]
name = "a"
arch = "resnet18"
width = 4
seed = 0

[[model]]
name = "b"
arch = "resnet18"
width = 4
seed = 1
"#,
            results = s(&dir.join("results"))
        ),
    )
}

fn table(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results/scores.json")).unwrap())
            .unwrap();
    v.as_array()
        .cloned()
        .unwrap_or_else(|| v["rows"].as_array().unwrap().clone())
}

#[test]
fn stored_maps_reduce_to_the_same_numbers_and_a_new_reduction_reruns_no_network() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let metric = "\"procrustes\"";
    let p = pipeline(t.path(), "", metric);
    assert_eq!(run(&p, &cache, &[])["failed"], 0);
    let direct = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();

    let p = pipeline(t.path(), "maps = true", metric);
    let summary = run(&p, &cache, &[]);
    assert_eq!(summary["failed"], 0, "{summary}");
    let via_maps = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    assert_eq!(
        direct, via_maps,
        "reducing stored maps must give the same scores, bit for bit"
    );

    let p = pipeline(t.path(), "maps = true\nreduce = \"mean-pool\"", metric);
    let before = plan(&p, &cache);
    assert_eq!(node(&before, "extract/a@step2", "state"), "cached");
    assert_eq!(node(&before, "train/a/step2", "state"), "cached");
    assert_eq!(node(&before, "reduce/a@step2", "state"), "stale");
    assert_eq!(run(&p, &cache, &[])["failed"], 0);
    let pooled = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    assert_ne!(pooled, via_maps);

    // mean pooling in the forward pass: the same bits as pooling the stored maps
    let p = pipeline(t.path(), "reduce = \"mean-pool\"", metric);
    assert_eq!(run(&p, &cache, &[])["failed"], 0);
    let pooled_directly = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    assert_eq!(pooled, pooled_directly);
}

#[test]
fn the_shift_search_scores_every_pair_on_one_grid_and_explains_the_others() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let p = pipeline(t.path(), "reduce = \"shift-search\"", "\"procrustes\"");
    let summary = run(&p, &cache, &[]);
    assert_eq!(summary["failed"], 0, "{summary}");
    let rows = table(t.path());
    let shift: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["metric"] == "procrustes-shift")
        .collect();
    let plain = rows.iter().filter(|r| r["metric"] == "procrustes").count();
    assert_eq!(
        shift.len(),
        plain,
        "one shift score beside each Procrustes score"
    );
    for r in &shift {
        let score = r["score"]
            .as_f64()
            .unwrap_or_else(|| panic!("matched layers share a grid: {r}"));
        assert!(score.is_finite() && score > -1.0 && score <= 1.0, "{r}");
        let shifts = r["shifts"].as_array().unwrap();
        assert_eq!(shifts.len(), 5);
        assert!(r["unshifted"].as_f64().unwrap().is_finite());
    }
    // every layer pair: pairs on different grids get no number, and say why
    let p = pipeline(t.path(), "", "\"procrustes-shift\"");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("[stimuli]", "layers = \"all\"\n\n[stimuli]");
    std::fs::write(&p, text).unwrap();
    assert_eq!(run(&p, &cache, &[])["failed"], 0);
    let rows = table(t.path());
    let unscored: Vec<_> = rows.iter().filter(|r| r["score"].is_null()).collect();
    assert!(!unscored.is_empty() && unscored.len() < rows.len());
    for r in &unscored {
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("one grid") || e.contains("full maps"), "{e}");
    }
}

#[test]
fn the_shift_search_needs_networks_and_is_not_rotated() {
    let t = tempdir();
    write_model(t.path(), "x", 1, 30, &[4]);
    write_model(t.path(), "y", 2, 30, &[4]);
    let p = write_pipeline(
        &t.path().join("files.toml"),
        "models = [\"x\", \"y\"]\nmetrics = [\"procrustes-shift\"]\n[source]\ndir = \".\"\n",
    );
    let out = repflow(&["run", &s(&p), "--cache", &s(&t.path().join("c"))]);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("procrustes-shift") && e.contains("full feature maps"),
        "{e}"
    );
}
