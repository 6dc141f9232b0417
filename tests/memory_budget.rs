//! `repflow run --max-memory`: within a budget that admits one linear score at a time the
//! run completes with the same numbers; a node whose estimate alone exceeds the budget fails
//! with an error naming the flag and the size that would do, while the others run; a size
//! that does not parse is refused with exit code 2.

mod common;

use std::path::Path;

use common::*;

fn pipeline(dir: &Path) -> std::path::PathBuf {
    for (m, seed) in [("net_a", 1), ("net_b", 2)] {
        write_model(&dir.join("data"), m, seed, 120, &[6, 9]);
    }
    write_pipeline(
        &dir.join("p.toml"),
        &format!(
            "name = \"t\"\nresults = \"{}\"\nmodels = [\"net_a\", \"net_b\"]\nmetrics = [\"linear\", \"cka\"]\n\n[source]\ndir = \"data\"\n",
            s(&dir.join("results"))
        ),
    )
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn a_tight_budget_gives_the_same_scores() {
    let t = tempdir();
    let p = pipeline(t.path());
    let free = run(&p, &t.path().join("c1"), &[]);
    assert_eq!(count(&free, "failed"), 0);
    let scores = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    std::fs::remove_dir_all(t.path().join("results")).unwrap();
    // a linear score of 120 × (9 + 9) is estimated at 338 KiB: one at a time
    let tight = run(
        &p,
        &t.path().join("c2"),
        &["--max-memory", "400K", "--jobs", "2"],
    );
    assert_eq!(count(&tight, "failed"), 0, "{tight}");
    assert_eq!(count(&tight, "executed"), count(&free, "executed"));
    let again = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    assert_eq!(scores, again);
}

#[test]
fn a_node_larger_than_the_budget_fails_and_says_what_would_do() {
    let t = tempdir();
    let p = pipeline(t.path());
    // linear scores need ~280-340 KiB, CKA ~50 KiB
    let out = run(&p, &t.path().join("c"), &["--max-memory", "100K"]);
    assert_eq!(count(&out, "failed"), 2, "the two linear scores: {out}");
    let failures = out["failures"].as_array().expect("failures");
    for f in failures {
        let msg = f["error"].as_str().expect("message");
        assert!(
            msg.contains("--max-memory 100.0 KiB")
                && msg.contains("raise --max-memory to at least"),
            "{msg}"
        );
        assert!(
            f["node"].as_str().unwrap_or_default().contains("linear"),
            "{f}"
        );
    }
    assert!(t.path().join("c").exists());
}

#[test]
fn a_size_that_does_not_parse_is_refused() {
    let t = tempdir();
    let p = pipeline(t.path());
    for bad in ["8X", "0", "-1G", "lots"] {
        let flag = format!("--max-memory={bad}");
        let out = repflow(&["run", p.to_str().unwrap(), &flag]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--max-memory") && err.contains("8G"),
            "{bad}: {err}"
        );
    }
}

/// Training and extraction nodes give estimates too (counted from the network: parameters
/// and one image's activations, scaled by the batch): under a budget below a ResNet's
/// training estimate the train nodes fail with the message, and a larger network's
/// estimate is larger. Needs `make data`.
#[test]
fn training_and_extraction_nodes_are_held_to_the_budget() {
    let root = env!("CARGO_MANIFEST_DIR");
    let deb =
        format!("{root}/data/downloads/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb");
    let t = tempdir();
    let estimate = |width: usize| -> f64 {
        let p = write_pipeline(
            &t.path().join(format!("net{width}.toml")),
            &format!(
                "name = \"net\"\nresults = \"{}\"\nmetrics = [\"cka\"]\n\n[stimuli]\ncount = 60\npackage = \"{deb}\"\n\n\
                 [training]\npackage = \"{deb}\"\nepochs = 1\nbatch = 32\ntrain_limit = 64\ntest_limit = 50\ncheckpoints = [\"end\"]\n\n\
                 [[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = {width}\nseed = 0\n\n\
                 [[model]]\nname = \"b\"\narch = \"resnet18\"\nwidth = {width}\nseed = 1\n",
                s(&t.path().join("results"))
            ),
        );
        let out = run(
            &p,
            &t.path().join(format!("c{width}")),
            &["--max-memory", "64M"],
        );
        let failures = out["failures"].as_array().expect("failures");
        assert_eq!(failures.len(), 2, "the two train nodes: {out}");
        let mut sizes = failures.iter().map(|f| {
            let node = f["node"].as_str().unwrap_or_default();
            assert!(node.starts_with("train/"), "{f}");
            let msg = f["error"].as_str().expect("message");
            assert!(msg.contains("more than --max-memory 64.0 MiB"), "{msg}");
            // "needs about 402.1 MiB of working memory"
            let about = msg.split("needs about ").nth(1).expect("an estimate");
            let (v, unit) = about.split_once(' ').expect("value and unit");
            assert!(unit.starts_with("MiB"), "{msg}");
            v.parse::<f64>().expect("a number")
        });
        let a = sizes.next().unwrap();
        assert_eq!(Some(a), sizes.next(), "same network, same estimate");
        a
    };
    let (small, wide) = (estimate(4), estimate(32));
    assert!(small > 64.0 && wide > small, "{small} {wide}");
    // imported weights: the extraction nodes are the network's
    let p = write_pipeline(
        &t.path().join("imported.toml"),
        &format!(
            "name = \"imp\"\nresults = \"{}\"\nmetrics = [\"cka\"]\n\n[stimuli]\ncount = 60\npackage = \"{deb}\"\n\n\
             [[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = 4\ncheckpoint = \"{root}/tests/fixtures/models/resnet18-small.safetensors\"\n\n\
             [[model]]\nname = \"b\"\narch = \"resnet18\"\nwidth = 4\ncheckpoint = \"{root}/tests/fixtures/models/resnet18-small.safetensors\"\n",
            s(&t.path().join("results-imported"))
        ),
    );
    let out = run(&p, &t.path().join("c-imported"), &["--max-memory", "32M"]);
    let failures = out["failures"].as_array().expect("failures");
    assert!(!failures.is_empty(), "{out}");
    for f in failures {
        assert!(
            f["node"]
                .as_str()
                .unwrap_or_default()
                .starts_with("extract/"),
            "{f}"
        );
        assert!(
            f["error"]
                .as_str()
                .unwrap_or_default()
                .contains("--max-memory 32.0 MiB"),
            "{f}"
        );
    }
    // and with room for them the run completes
    let out = run(&p, &t.path().join("c-imported"), &["--max-memory", "1G"]);
    assert_eq!(count(&out, "failed"), 0, "{out}");
}
