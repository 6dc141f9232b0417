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
