//! The pipeline engine: incremental reruns (exact counts of executed nodes), early cutoff,
//! forced nodes, execution by a separate process, crash safety under SIGKILL, corrupt
//! objects, pinned keys, and a clear error for each class of bad pipeline.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;

fn two_model_pipeline(dir: &Path, models: &str, extra: &str) -> std::path::PathBuf {
    write_pipeline(
        &dir.join("p.toml"),
        &format!(
            "name = \"t\"\nresults = \"{}\"\nmodels = [{models}]\nmetrics = [\"linear\", \"cka\"]\n\n[source]\ndir = \"data\"\n{extra}",
            s(&dir.join("results"))
        ),
    )
}

fn setup(dir: &Path) {
    for (m, seed) in [("net_a", 1), ("net_b", 2), ("net_c", 3)] {
        write_model(&dir.join("data"), m, seed, 120, &[6, 9]);
    }
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn reruns_compute_only_what_changed() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", "");
    // folds 1 + sources 4 + prepared 4 + scores (2 layer pairs x 2 metrics) 4 + table 1
    let first = run(&p, &cache, &[]);
    assert_eq!(
        (
            n(&first, "executed"),
            n(&first, "cached"),
            n(&first, "failed")
        ),
        (14, 0, 0)
    );
    assert!(t.path().join("results/scores.csv").exists());
    let again = run(&p, &cache, &[]);
    assert_eq!((n(&again, "executed"), n(&again, "cached")), (0, 14));

    // A third model: its 2 sources and 2 prepared layers, 2 new model pairs x 2 layers x 2 metrics, the table.
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\", \"net_c\"", "");
    let third = run(&p, &cache, &[]);
    assert_eq!(
        (n(&third, "executed"), n(&third, "cached")),
        (2 + 2 + 8 + 1, 14 - 1)
    );

    // One metric option: only CKA's 6 score nodes and the table.
    let p = two_model_pipeline(
        t.path(),
        "\"net_a\", \"net_b\", \"net_c\"",
        "\n[options]\nhsic = \"unbiased\"\n",
    );
    let option = run(&p, &cache, &[]);
    assert_eq!(n(&option, "executed"), 6 + 1);

    // Touching a source file without changing its bytes: nothing.
    let f = std::fs::File::options()
        .write(true)
        .open(t.path().join("data/net_a/layer1.npy"))
        .unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    assert_eq!(n(&run(&p, &cache, &[]), "executed"), 0);

    // Reordering the TOML file's keys changes nothing either.
    write_pipeline(
        &p,
        &format!(
            "metrics = [\"linear\", \"cka\"]\nmodels = [\"net_a\", \"net_b\", \"net_c\"]\nresults = \"{}\"\nname = \"t\"\n\n[options]\nhsic = \"unbiased\"\n\n[source]\ndir = \"data\"\n",
            s(&t.path().join("results"))
        ),
    );
    assert_eq!(n(&run(&p, &cache, &[]), "executed"), 0);
}

#[test]
fn an_unchanged_output_stops_the_cascade() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", "");
    run(&p, &cache, &[]);
    // Same values saved as float64: the file's bytes (and the source key) change, the
    // matrix read from it does not, so nothing downstream reruns.
    write_npy(
        &t.path().join("data/net_a/layer1.npy"),
        120,
        6,
        false,
        |i, j| activation(31, i, j) as f32 as f64,
    );
    let r = run(&p, &cache, &[]);
    assert_eq!((n(&r, "executed"), n(&r, "cached")), (1, 13));
}

#[test]
fn forced_nodes_rerun_and_identical_outputs_stop_there() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", "");
    run(&p, &cache, &[]);
    // The 2 linear score nodes recompute to the same bytes, so the table stays cached.
    let r = run(&p, &cache, &["--force", "score/linear"]);
    assert_eq!(n(&r, "executed"), 2);
}

#[test]
fn a_separate_process_executes_a_node_from_the_store_and_its_key() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", "");
    run(&p, &cache, &[]);
    let plan = repflow(&["plan", &s(&p), "--cache", &s(&cache), "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let node = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"].as_str().unwrap().starts_with("score/linear"))
        .unwrap();
    let key = node["key"].as_str().unwrap().to_string();
    // Forget its entry, as if it had never run, then let a worker execute it.
    let entry = cache.join("v2/entries").join(&key[..2]).join(&key[2..]);
    std::fs::remove_file(&entry).unwrap();
    let out = repflow(&["exec-node", &key, "--cache", &s(&cache)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(entry.exists());
    assert_eq!(n(&run(&p, &cache, &[]), "executed"), 0);

    // Several keys in one call (a batched Slurm element): every score node at once, with a
    // key the store has no recipe for among them — it fails alone, named; the others run.
    let scores: Vec<String> = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["node"].as_str().unwrap().starts_with("score/"))
        .map(|n| n["key"].as_str().unwrap().to_string())
        .collect();
    assert!(scores.len() >= 4, "{plan}");
    let entry = |k: &str| cache.join("v2/entries").join(&k[..2]).join(&k[2..]);
    for k in &scores {
        std::fs::remove_file(entry(k)).unwrap();
    }
    let unknown = "ab".repeat(32);
    let mut args = vec!["exec-node", "--cache"];
    let c = s(&cache);
    args.push(&c);
    args.extend(scores.iter().map(String::as_str));
    args.push(&unknown);
    let out = repflow(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no recipe") && err.contains(&unknown[..12]),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("executed score/").count(),
        scores.len(),
        "{stdout}"
    );
    assert!(scores.iter().all(|k| entry(k).exists()));
    assert_eq!(n(&run(&p, &cache, &[]), "executed"), 0);
    // a key that is not a key: exit 2, naming it
    let out = repflow(&["exec-node", "--cache", &c, &scores[0], "not-a-key"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("key `not-a-key`"), "{err}");
}

#[test]
fn corrupt_objects_are_detected_and_recomputed() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", "");
    run(&p, &cache, &[]);
    let csv = std::fs::read(t.path().join("results/scores.csv")).unwrap();
    let entry_of = |label: &str| -> serde_json::Value {
        let plan: serde_json::Value = serde_json::from_slice(
            &repflow(&["plan", &s(&p), "--cache", &s(&cache), "--json"]).stdout,
        )
        .unwrap();
        let key = plan["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"].as_str().unwrap().starts_with(label))
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string();
        serde_json::from_slice(
            &std::fs::read(cache.join("v2/entries").join(&key[..2]).join(&key[2..])).unwrap(),
        )
        .unwrap()
    };
    let flip = |object: &str| {
        let path = cache
            .join("v2/objects")
            .join(&object[..2])
            .join(&object[2..]);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
    };
    // The table object is read on every run: a flipped byte is caught and the table rebuilt.
    flip(entry_of("table/").get("object").unwrap().as_str().unwrap());
    let r = run(&p, &cache, &[]);
    assert_eq!(n(&r, "failed"), 0);
    assert_eq!(n(&r, "executed"), 1);
    assert_eq!(
        std::fs::read(t.path().join("results/scores.csv")).unwrap(),
        csv
    );
    // A score object is found by `cache verify`, removed, and recomputed by the next run.
    flip(
        entry_of("score/cka")
            .get("object")
            .unwrap()
            .as_str()
            .unwrap(),
    );
    let out = repflow(&["cache", "verify", "--cache", &s(&cache)]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 corrupt objects removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = run(&p, &cache, &[]);
    assert_eq!(
        n(&r, "executed"),
        1,
        "only the score node: its output is identical, so the table stays"
    );
    assert_eq!(
        std::fs::read(t.path().join("results/scores.csv")).unwrap(),
        csv
    );
}

/// How many files lie under `dir`, at any depth (0 when it does not exist).
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => files_under(&e.path()),
                Ok(_) => 1,
                Err(_) => 0,
            })
            .sum()
    })
}

#[test]
fn a_killed_run_resumes_and_matches_an_uninterrupted_one() {
    let t = tempdir();
    for (m, seed) in [("net_a", 1), ("net_b", 2)] {
        write_model(
            &t.path().join("data"),
            m,
            seed,
            1500,
            &[60, 80, 100, 120, 140, 160],
        );
    }
    let p = write_pipeline(
        &t.path().join("p.toml"),
        &format!(
            "name = \"crash\"\nresults = \"{}\"\nmodels = [\"net_a\", \"net_b\"]\nlayers = \"all\"\nmetrics = [\"linear\", \"procrustes\", \"soft-matching\"]\n\n[source]\ndir = \"data\"\n",
            s(&t.path().join("results"))
        ),
    );
    let cache = t.path().join("cache");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_repflow"))
        .args(["run", &s(&p), "--cache", &s(&cache), "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the store holds a first entry (not after a fixed sleep: a slow machine may
    // not have stored anything by then), or when the run ends first.
    let start = std::time::Instant::now();
    while files_under(&cache.join("v2/entries")) == 0
        && child.try_wait().unwrap().is_none()
        && start.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    eprintln!("killed run: {status}");
    let resumed = run(&p, &cache, &[]);
    assert_eq!(n(&resumed, "failed"), 0);
    let total = 1 + 12 + 12 + 36 * 3 + 1;
    assert_eq!(n(&resumed, "executed") + n(&resumed, "cached"), total);
    if !status.success() {
        // Killed before the end: the rerun picked up what the killed run had finished.
        assert!(
            n(&resumed, "cached") > 0,
            "the killed run stored nothing: {resumed}"
        );
    }
    let verify = repflow(&["cache", "verify", "--cache", &s(&cache)]);
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(" 0 corrupt objects removed, 0 entries")
    );
    let resumed_csv = std::fs::read(t.path().join("results/scores.csv")).unwrap();
    let fresh = t.path().join("fresh-cache");
    run(&p, &fresh, &[]);
    assert_eq!(
        std::fs::read(t.path().join("results/scores.csv")).unwrap(),
        resumed_csv
    );
}

#[test]
fn batched_score_nodes_give_the_scores_and_keys_of_unbatched_ones() {
    let t = tempdir();
    for (m, seed) in [("net_a", 1), ("net_b", 2), ("net_c", 3)] {
        write_model(&t.path().join("data"), m, seed, 300, &[8, 12, 16]);
    }
    let p = write_pipeline(
        &t.path().join("p.toml"),
        &format!(
            "name = \"b\"\nresults = \"{}\"\nmodels = [\"net_a\", \"net_b\", \"net_c\"]\nlayers = \"all\"\nmetrics = [\"procrustes\", \"cka\"]\n\n[source]\ndir = \"data\"\n",
            s(&t.path().join("results"))
        ),
    );
    let table = || std::fs::read(t.path().join("results/scores.csv")).unwrap();
    // one task thread, and batches larger than the 27 Procrustes nodes: every ready
    // Procrustes node is taken with the others queued (they become ready 3 or 6 at once)
    let batched = run(
        &p,
        &t.path().join("c1"),
        &["--score-batch", "64", "--jobs", "1"],
    );
    assert_eq!(n(&batched, "failed"), 0, "{batched}");
    // 3 model pairs × 9 layer pairs of Procrustes, in batches; CKA never batches
    assert_eq!(n(&batched, "batched"), 27, "{batched}");
    let batched_table = table();
    let alone = run(
        &p,
        &t.path().join("c2"),
        &["--score-batch", "1", "--jobs", "1"],
    );
    assert_eq!(n(&alone, "batched"), 0);
    assert_eq!(table(), batched_table, "batching changes no number");
    // and no key: the batched run's store serves the unbatched run whole
    let again = run(&p, &t.path().join("c1"), &["--score-batch", "1"]);
    assert_eq!(n(&again, "executed"), 0, "{again}");
}

#[test]
fn keys_are_pinned() {
    let t = tempdir();
    write_model(&t.path().join("data"), "net_a", 1, 40, &[3]);
    write_model(&t.path().join("data"), "net_b", 2, 40, &[4]);
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", "");
    let cache = t.path().join("cache");
    // Sources and folds have keys before anything runs; these must never change by accident.
    let before = plan(&p, &cache);
    assert_eq!(
        &node(&before, "source/net_a/layer1", "key")[..16],
        "c1982d9c620b3d69"
    );
    assert_eq!(&node(&before, "folds/m40", "key")[..16], "895798f161586ff2");
    // After a run, a prepared layer's key follows from its inputs' outputs (both exact,
    // platform-independent bytes). Changes with the object format: store layout v2 (typed
    // f64/f32 arrays) moved it from 53bdc475cbea5f0b; prepared layers at unit scale (kind
    // version 2) from 3a25501c8d06ebce.
    run(&p, &cache, &[]);
    assert_eq!(
        &node(&plan(&p, &cache), "prepared/net_b/layer1", "key")[..16],
        "3833e156968b11d1"
    );
}

fn refused(pipeline_text: &str, needles: &[&str]) {
    let t = tempdir();
    setup(t.path());
    let p = write_pipeline(&t.path().join("bad.toml"), pipeline_text);
    let out = repflow(&["run", &s(&p), "--cache", &s(&t.path().join("cache"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
}

const GOOD_TAIL: &str = "metrics = [\"linear\"]\n\n[source]\ndir = \"data\"\n";

#[test]
fn a_syntax_error_names_line_and_column() {
    refused(
        &format!("models = [\"net_a\", \"net_b\"\n{GOOD_TAIL}"),
        &["bad.toml:", "2:"],
    );
}

#[test]
fn an_unknown_key_suggests_the_closest() {
    refused(
        &format!("modles = [\"net_a\", \"net_b\"]\n{GOOD_TAIL}"),
        &[
            "bad.toml:1:1",
            "unknown field `modles`",
            "did you mean `models`?",
        ],
    );
    refused(
        &format!("models = [\"net_a\", \"net_b\"]\n{GOOD_TAIL}\n[options]\nfodls = 3\n"),
        &["unknown field `fodls`", "did you mean `folds`?"],
    );
}

#[test]
fn a_wrong_type_is_named() {
    refused(
        &format!("models = \"net_a\"\n{GOOD_TAIL}"),
        &["bad.toml:1:10", "invalid type"],
    );
    refused(
        &format!("models = [\"net_a\", \"net_b\"]\n{GOOD_TAIL}\n[options]\nfolds = \"five\"\n"),
        &["folds", "invalid type"],
    );
}

#[test]
fn a_missing_folder_or_file_is_named() {
    refused(
        "models = [\"net_a\", \"net_b\"]\nmetrics = [\"linear\"]\n[source]\ndir = \"nowhere\"\n",
        &["`source.dir`", "nowhere", "relative to the pipeline file"],
    );
    refused(
        &format!("models = [\"net_a\", \"net_z\"]\n{GOOD_TAIL}"),
        &["model `net_z`", "cannot read folder"],
    );
}

#[test]
fn an_unknown_layer_or_metric_lists_the_valid_ones() {
    refused(
        &format!("models = [\"net_a\", \"net_b\"]\n{GOOD_TAIL}\n[layer_lists]\nnet_a = [\"layer1\", \"layer3\"]\n"),
        &["`layer_lists.net_a`", "`layer3`", "layer1, layer2"],
    );
    refused(
        "models = [\"net_a\", \"net_b\"]\nmetrics = [\"procrustse\"]\n[source]\ndir = \"data\"\n",
        &["unknown metric `procrustse`", "did you mean `procrustes`?"],
    );
}

#[test]
fn mismatched_stimuli_are_refused() {
    let t = tempdir();
    setup(t.path());
    write_model(&t.path().join("data"), "short", 9, 100, &[6, 9]);
    let p = write_pipeline(
        &t.path().join("bad.toml"),
        &format!("models = [\"net_a\", \"short\"]\n{GOOD_TAIL}"),
    );
    let out = repflow(&["run", &s(&p), "--cache", &s(&t.path().join("cache"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("`net_a` and `short`") && err.contains("120 and 100 stimuli"),
        "{err}"
    );
    // Same counts, different ids.
    std::fs::write(
        t.path().join("data/net_a/stimuli.txt"),
        (0..120).map(|i| format!("img{i}\n")).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        t.path().join("data/net_b/stimuli.txt"),
        (0..120)
            .map(|i| format!("img{}\n", if i == 7 { 99 } else { i }))
            .collect::<String>(),
    )
    .unwrap();
    let p = write_pipeline(
        &t.path().join("bad.toml"),
        &format!("models = [\"net_a\", \"net_b\"]\n{GOOD_TAIL}"),
    );
    let out = repflow(&["run", &s(&p), "--cache", &s(&t.path().join("cache"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("line 8") && err.contains("img7") && err.contains("img99"),
        "{err}"
    );
}

#[test]
fn two_processes_share_one_store_safely() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\", \"net_c\"", "");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_repflow"))
            .args(["run", &s(&p), "--cache", &s(&cache), "--json"])
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(spawn);
        let b = sc.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let verify = repflow(&["cache", "verify", "--cache", &s(&cache)]);
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(" 0 corrupt objects removed, 0 entries")
    );
    assert_eq!(n(&run(&p, &cache, &[]), "executed"), 0);
}

#[test]
fn gc_keeps_what_named_pipelines_reach() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let keep = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", "");
    let other = write_pipeline(
        &t.path().join("other.toml"),
        &format!("name = \"o\"\nresults = \"{}\"\nmodels = [\"net_b\", \"net_c\"]\nmetrics = [\"procrustes\"]\n\n[source]\ndir = \"data\"\n", s(&t.path().join("r2"))),
    );
    run(&keep, &cache, &[]);
    run(&other, &cache, &[]);
    let dry = repflow(&[
        "cache",
        "gc",
        "--keep",
        &s(&keep),
        "--dry-run",
        "--cache",
        &s(&cache),
    ]);
    assert!(
        String::from_utf8_lossy(&dry.stdout).starts_with("would remove"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    assert_eq!(
        n(&run(&other, &cache, &[]), "executed"),
        0,
        "a dry run removes nothing"
    );
    let gc = repflow(&["cache", "gc", "--keep", &s(&keep), "--cache", &s(&cache)]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert_eq!(n(&run(&keep, &cache, &[]), "executed"), 0);
    // net_c's source and prepared layers (2 + 2), 2 procrustes scores and the table are gone;
    // net_b's layers and the folds were kept (pipeline `t` reaches them).
    assert_eq!(n(&run(&other, &cache, &[]), "executed"), 2 + 2 + 2 + 1);
    let refused = repflow(&["cache", "gc", "--cache", &s(&cache)]);
    assert_eq!(refused.status.code(), Some(2));
}

/// `permutation:rotated` scores a Haar-rotated copy of the first model's layer: a permuted
/// copy scores 1 natively and clearly less rotated; Procrustes does not notice the rotation.
#[test]
fn rotated_metrics_test_for_a_privileged_basis() {
    let t = tempdir();
    let perm = |j: usize| (j * 5 + 3) % 12;
    let value = |i: usize, j: usize| activation(7, i, j) * (1.0 + (j % 3) as f64);
    write_npy(&t.path().join("data/a/l.npy"), 150, 12, false, value);
    write_npy(&t.path().join("data/b/l.npy"), 150, 12, false, |i, j| {
        value(i, perm(j))
    });
    let p = write_pipeline(
        &t.path().join("rot.toml"),
        &format!(
            "name = \"rot\"\nresults = \"{}\"\nmodels = [\"a\", \"b\"]\n\
             metrics = [\"permutation\", \"permutation:rotated\", \"procrustes:rotated\"]\n\n[source]\ndir = \"data\"\n",
            s(&t.path().join("results"))
        ),
    );
    let out = run(&p, &t.path().join("cache"), &[]);
    assert_eq!(out["failed"], 0, "{out}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("results/scores.json")).unwrap())
            .unwrap();
    let score = |metric: &str| -> f64 {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["metric"] == metric)
            .unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    assert!(score("permutation") > 0.999, "{}", score("permutation"));
    assert!(
        score("permutation:rotated") < 0.9,
        "{}",
        score("permutation:rotated")
    );
    assert!(
        score("procrustes:rotated") > 0.99,
        "{}",
        score("procrustes:rotated")
    );
}

#[test]
fn statistics_are_cache_nodes_joined_into_the_table() {
    let t = tempdir();
    setup(t.path());
    let cache = t.path().join("cache");
    let stats = |null: usize| {
        format!(
            "\n[statistics]\nnull = {null}\nbootstrap = 5\nrotations = 4\nmetrics = [\"linear\", \"cka\"]\n"
        )
    };
    let p = two_model_pipeline(t.path(), "\"net_a\", \"net_b\"", &stats(9));
    let first = run(&p, &cache, &[]);
    // 2 layer pairs × 2 metrics: a null and a bootstrap each (no rotation null: neither
    // metric depends on the basis) = 8 statistic nodes on top of the 14 of the plain run.
    assert_eq!(n(&first, "executed"), 14 + 8, "{first}");
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("results/scores.json")).unwrap())
            .unwrap();
    for r in rows.as_array().unwrap() {
        assert_eq!(r["null"]["n"], 9, "{r}");
        let p = r["null"]["p_value"].as_f64().unwrap();
        assert!(p == 0.1, "related layers beat every draw: {r}");
        assert!(r["bootstrap"]["low"].as_f64().unwrap() <= r["score"].as_f64().unwrap() + 0.05);
        assert!(r["rotation_null"].is_null());
        assert!(r["chance_corrected"].is_number());
    }
    let csv = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with("null_mean,null_q95,p_value,ci_low,ci_high,chance_corrected"),
        "{csv}"
    );
    // More null draws: only the null nodes (4) and the table run again.
    std::fs::write(
        &p,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("null = 9", "null = 19"),
    )
    .unwrap();
    assert_eq!(n(&run(&p, &cache, &[]), "executed"), 4 + 1);
    // Unknown names are refused at load.
    std::fs::write(
        &p,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"cka\"]", "\"cca\"]"),
    )
    .unwrap();
    let out = repflow(&["plan", &s(&p)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("statistics.metrics"));
}
