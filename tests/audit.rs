//! The default audit, `pipelines/quick.toml`, reduced for CI (fewer training images, stimuli,
//! checkpoints and OOD sets; the same networks, metrics and report): the claims table is
//! complete and agrees with the score table, every figure is drawn, a rerun does nothing, and
//! adding a seed or an OOD set runs only what is new. Needs `make data`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// quick.toml with smaller numbers: 512 training images (4 steps of 128), 100 stimuli, three
/// OOD sets, checkpoints at steps 0, 2 and 4.
fn reduced(dir: &Path, extra: &str, ood: &str) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    write_pipeline(
        &dir.join("quick_ci.toml"),
        &format!(
            r#"include = "{root}/pipelines/quick.toml"
name = "quick_ci"
results = "{results}"

[stimuli]
count = 100
ood = [{ood}]

[training]
train_limit = 512
test_limit = 200
checkpoints = ["0", "2", "end"]
{extra}"#,
            results = s(&dir.join("results"))
        ),
    )
}

const OOD: &str = r#""contrast:0.1", "rotation:90", "mnist5k""#;

fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn the_reduced_default_audit_reports_complete_consistent_claims() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let p = reduced(t.path(), "", OOD);
    let first = run(&p, &cache, &[]);
    assert_eq!(first["failed"], 0, "{first}");
    let results = t.path().join("results");

    // The claims table: every claim present, each with a verdict or a reason.
    let claims: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(results.join("claims.json")).unwrap()).unwrap();
    let ids: Vec<&str> = claims.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "metric-order",
            "early-vs-late",
            "trained-vs-untrained",
            "rotation-cnn",
            "rotation-vit",
            "first-epoch",
            "ood-late",
            "ood-accuracy-trend",
            "above-chance"
        ]
    );
    for c in &claims {
        let measured = c["measured"].as_str().unwrap();
        assert!(!measured.is_empty());
        // this audit measures everything but the ViT claim; one epoch or less of training
        // leaves the first-epoch claim without a verdict, and 99 null draws are too few for
        // Holm's correction over its layers (the claim says how many it needs)
        match c["id"].as_str().unwrap() {
            "rotation-vit" | "first-epoch" => assert!(c["holds"].is_null(), "{c}"),
            "above-chance" => {
                assert!(c["holds"].is_null(), "{c}");
                assert!(measured.contains("needs at least"), "{c}");
            }
            _ => assert!(c["holds"].is_boolean(), "{c}"),
        }
    }

    // Numerically consistent with scores.csv: the metric-order means, recomputed here (mean
    // over layers of the seed pairs' scores at the last checkpoint, base set).
    let scores = csv_rows(&results.join("scores.csv"));
    let models = csv_rows(&results.join("models.csv"));
    let arch: BTreeMap<&str, &str> = models
        .iter()
        .map(|m| (m["model"].as_str(), m["arch"].as_str()))
        .collect();
    // quick.toml's [statistics]: the final checkpoints' permutation scores on the base set
    // carry a null and a rotation null, nothing else does.
    for r in &scores {
        let tested = r["metric"] == "permutation"
            && r["stimuli"] == "base"
            && r["model_a"].ends_with("@step4");
        assert_eq!(!r["p_value"].is_empty(), tested, "{r:?}");
        assert_eq!(!r["rotation_p_value"].is_empty(), tested, "{r:?}");
        if tested {
            let p: f64 = r["p_value"].parse().unwrap();
            assert!((0.01..=1.0).contains(&p));
        }
    }
    let order = &claims[0]["values"];
    for a in ["resnet18", "vgg16-bn"] {
        for metric in ["linear", "procrustes", "permutation"] {
            let mut by_layer: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in scores.iter().filter(|r| {
                r["metric"] == metric
                    && r["stimuli"] == "base"
                    && r["model_a"].ends_with("@step4")
                    && arch[r["model_a"].as_str()] == a
            }) {
                by_layer
                    .entry(r["depth_a"].clone())
                    .or_default()
                    .push(r["score"].parse().unwrap());
            }
            assert!(!by_layer.is_empty());
            let means: Vec<f64> = by_layer
                .values()
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
                .collect();
            let want = means.iter().sum::<f64>() / means.len() as f64;
            let got = order[format!("{a}.{metric}")].as_f64().unwrap();
            assert!((want - got).abs() < 1e-9, "{a} {metric}: {want} vs {got}");
        }
    }

    // Every figure the audit supports, as SVG and PNG, inline in the report.
    let html = std::fs::read_to_string(results.join("report.html")).unwrap();
    for fig in ["fig1_depth", "fig3_rotation", "fig4_training", "fig5_ood"] {
        for ext in ["svg", "png"] {
            let f = results.join("figures").join(format!("{fig}.{ext}"));
            assert!(f.metadata().unwrap().len() > 1000, "{}", f.display());
        }
        assert!(html.contains(&format!("<figure id=\"{fig}\">")), "{fig}");
    }
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(html.contains("id=\"claims\"") && html.contains("scores.csv"));

    // A second run computes nothing and rewrites nothing.
    let before = std::fs::metadata(results.join("report.html"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(run(&p, &cache, &[])["executed"], 0);
    let after = std::fs::metadata(results.join("report.html"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

/// What `repflow plan` says will run, as node labels.
fn would_run(p: &Path, cache: &Path) -> Vec<String> {
    plan(p, cache)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] != "cached")
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_third_seed_or_a_new_ood_set_runs_only_what_is_new() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let p = reduced(t.path(), "", OOD);
    assert_eq!(run(&p, &cache, &[])["failed"], 0);

    // A third ResNet seed, paired with the first: its training chain, its extractions and the
    // new pairs' nodes, and the table; nothing of the other four networks.
    let seed = "\n[[model]]\nname = \"resnet18_s2\"\narch = \"resnet18\"\nwidth = 8\nseed = 2\n";
    let p = reduced(t.path(), seed, OOD);
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("name = \"quick_ci\"", "name = \"quick_ci\"\npairs = [[\"resnet18_s0\", \"resnet18_s1\"], [\"vgg16_s0\", \"vgg16_s1\"], [\"resnet18_s0\", \"resnet18_s2\"]]");
    std::fs::write(&p, text).unwrap();
    let planned = would_run(&p, &cache);
    assert!(!planned.is_empty());
    for label in &planned {
        assert!(
            label.contains("resnet18_s2") || label.starts_with("table/"),
            "{label} would run"
        );
    }
    assert_eq!(
        planned.iter().filter(|l| l.starts_with("train/")).count(),
        3
    );
    let out = run(&p, &cache, &[]);
    assert_eq!(out["failed"], 0);
    assert_eq!(
        out["executed"].as_u64().unwrap(),
        planned.len() as u64,
        "{out}"
    );

    // An OOD set more: its transform, extractions and scores only.
    let more = format!("{OOD}, \"low-pass:2\"");
    let text = std::fs::read_to_string(&p).unwrap().replace(OOD, &more);
    std::fs::write(&p, text).unwrap();
    let planned = would_run(&p, &cache);
    for label in &planned {
        assert!(
            label.contains("low-pass-2") || label.starts_with("table/"),
            "{label} would run"
        );
    }
    assert!(planned.iter().all(|l| !l.starts_with("train/")));
    let out = run(&p, &cache, &[]);
    assert_eq!(
        out["executed"].as_u64().unwrap(),
        planned.len() as u64,
        "{out}"
    );
}

/// Every audit pipeline under `pipelines/`, shrunk (64 stimuli, 256 training images, three
/// checkpoints, the pipeline's own OOD sets), runs and draws the figures it is for.
#[test]
fn every_audit_pipeline_runs_reduced_and_draws_its_figures() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cases: [(&str, &[&str]); 6] = [
        ("hierarchy", &["fig1_depth"]),
        (
            "cross_arch",
            &[
                "fig2_heatmap_procrustes_within",
                "fig2_heatmap_procrustes_across",
                "fig2_heatmap_soft-matching_within",
                "fig2_heatmap_soft-matching_across",
            ],
        ),
        ("rotation", &["fig3_rotation", "fig3_rotation_vit"]),
        ("training", &["fig4_training"]),
        ("ood", &["fig5_ood"]),
        (
            "vit",
            &[
                "fig1_depth_vit",
                "fig3_rotation_vit",
                "fig4_training_vit",
                "fig5_ood",
            ],
        ),
    ];
    let t = tempdir();
    let cache = t.path().join("cache");
    for (name, figures) in cases {
        let results = t.path().join(name);
        let p = write_pipeline(
            &t.path().join(format!("{name}.toml")),
            &format!(
                "include = \"{root}/pipelines/{name}.toml\"\nresults = \"{}\"\n\n\
                 [stimuli]\ncount = 64\n\n[training]\ntrain_limit = 256\ntest_limit = 100\n\
                 checkpoints = [\"0\", \"2\", \"end\"]\n",
                s(&results)
            ),
        );
        let out = run(&p, &cache, &[]);
        assert_eq!(out["failed"], 0, "{name}: {out}");
        let html = std::fs::read_to_string(results.join("report.html")).unwrap();
        for fig in figures {
            assert!(
                results.join("figures").join(format!("{fig}.png")).is_file(),
                "{name}: {fig} missing"
            );
            assert!(
                html.contains(&format!("<figure id=\"{fig}\">")),
                "{name}: {fig}"
            );
        }
    }
    // The ViT's rotation claim is measured where a ViT is.
    let claims: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(t.path().join("rotation/claims.json")).unwrap())
            .unwrap();
    let vit = claims.iter().find(|c| c["id"] == "rotation-vit").unwrap();
    assert!(vit["holds"].is_boolean(), "{vit}");
}
