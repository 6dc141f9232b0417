//! The default audit, `pipelines/quick.toml`, reduced for CI (fewer training images, stimuli,
//! checkpoints and OOD sets; the same networks, metrics and report): the claims table is
//! complete and agrees with the score table, every figure is drawn, a rerun does nothing, and
//! adding a seed or an OOD set runs only what is new. Needs `make data`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// quick.toml with smaller numbers: 512 training images (4 steps of 128), 100 stimuli, four
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

const OOD: &str = r#""contrast:0.1", "rotation:90", "uniform-noise:0.35", "mnist5k""#;

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
            "ood-accuracy",
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
    // carry a null and a rotation null, nothing else does; OOD sets are scored at the final
    // checkpoints only.
    for r in &scores {
        assert!(
            r["stimuli"] == "base" || r["model_a"].ends_with("@step4"),
            "{r:?}"
        );
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

    // Three seeds per architecture: each mean carries its standard error over seed pairs,
    // the delete-one-network jackknife, recomputed here from each pair's mean over layers.
    for a in ["resnet18", "vgg16-bn"] {
        for metric in ["linear", "procrustes", "permutation"] {
            let mut per_pair: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
            for r in scores.iter().filter(|r| {
                r["metric"] == metric
                    && r["stimuli"] == "base"
                    && r["model_a"].ends_with("@step4")
                    && arch[r["model_a"].as_str()] == a
            }) {
                per_pair
                    .entry((r["model_a"].clone(), r["model_b"].clone()))
                    .or_default()
                    .push(r["score"].parse().unwrap());
            }
            assert_eq!(per_pair.len(), 3, "{a}: three seed pairs");
            let pair_means: Vec<((String, String), f64)> = per_pair
                .into_iter()
                .map(|(k, v)| (k, v.iter().sum::<f64>() / v.len() as f64))
                .collect();
            let networks: std::collections::BTreeSet<&String> =
                pair_means.iter().flat_map(|((x, y), _)| [x, y]).collect();
            let leave_out: Vec<f64> = networks
                .iter()
                .map(|n| {
                    let rest: Vec<f64> = pair_means
                        .iter()
                        .filter(|((x, y), _)| x != *n && y != *n)
                        .map(|p| p.1)
                        .collect();
                    rest.iter().sum::<f64>() / rest.len() as f64
                })
                .collect();
            let k = leave_out.len() as f64;
            let centre = leave_out.iter().sum::<f64>() / k;
            let want = ((k - 1.0) / k
                * leave_out.iter().map(|t| (t - centre).powi(2)).sum::<f64>())
            .sqrt();
            let got = order[format!("{a}.{metric}_se")].as_f64().unwrap();
            assert!(
                (want - got).abs() < 1e-9,
                "{a} {metric} se: {want} vs {got}"
            );
        }
    }

    // The rotation claim tests the layer mean against the rotation null pooled draw by draw,
    // recomputed here from scores.json's draws.
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(results.join("scores.json")).unwrap()).unwrap();
    let rotation = claims.iter().find(|c| c["id"] == "rotation-cnn").unwrap();
    for a in ["resnet18", "vgg16-bn"] {
        let tested: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| {
                r["metric"] == "permutation"
                    && r["stimuli"] == "base"
                    && r["model_a"].as_str().unwrap().ends_with("@step4")
                    && arch[r["model_a"].as_str().unwrap()] == a
            })
            .collect();
        let draws: Vec<Vec<f64>> = tested
            .iter()
            .map(|r| {
                r["rotation_null"]["draws"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let n = draws[0].len();
        assert_eq!(n, 99);
        let observed = tested
            .iter()
            .map(|r| r["score"].as_f64().unwrap())
            .sum::<f64>()
            / tested.len() as f64;
        let above = (0..n)
            .filter(|&k| draws.iter().map(|d| d[k]).sum::<f64>() / draws.len() as f64 >= observed)
            .count();
        let want = (1 + above) as f64 / (1 + n) as f64;
        let got = rotation["values"][format!("{a}.rotation_p")]
            .as_f64()
            .unwrap();
        assert!(
            (want - got).abs() < 1e-12,
            "{a} rotation p: {want} vs {got}"
        );
    }

    // The OOD-accuracy claim: r over the OOD sets between late-layer alignment (mean over
    // seed pairs) and the networks' mean accuracy, recomputed from scores.csv and models.csv;
    // mnist5k has no accuracy (its labels are not Fashion-MNIST's), so three sets remain and
    // every one of the 3! pairings is in the exact null.
    let ood = claims.iter().find(|c| c["id"] == "ood-accuracy").unwrap();
    let text = ood["measured"].as_str().unwrap();
    assert!(
        text.contains("all 6 pairings") && text.contains("mnist5k left out"),
        "{ood}"
    );
    let accuracy = |model: &str, set: &str| -> f64 {
        models
            .iter()
            .find(|m| m["model"] == model && m["stimuli"] == set)
            .unwrap()["accuracy_on_stimuli"]
            .parse()
            .unwrap()
    };
    for a in ["resnet18", "vgg16-bn"] {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for set in ["contrast-0.1", "rotation-90", "uniform-noise-0.35"] {
            let rows: Vec<&BTreeMap<String, String>> = scores
                .iter()
                .filter(|r| {
                    r["metric"] == "procrustes"
                        && r["stimuli"] == set
                        && r["model_a"].ends_with("@step4")
                        && arch[r["model_a"].as_str()] == a
                        && r["depth_a"].parse::<f64>().unwrap() >= 2.0 / 3.0
                })
                .collect();
            assert!(!rows.is_empty(), "{a} {set}");
            let mut per_pair: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
            for r in &rows {
                per_pair
                    .entry((&r["model_a"], &r["model_b"]))
                    .or_default()
                    .push(r["score"].parse().unwrap());
            }
            let means: Vec<f64> = per_pair
                .values()
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
                .collect();
            xs.push(means.iter().sum::<f64>() / means.len() as f64);
            let mut nets: Vec<&str> = per_pair.keys().flat_map(|(x, y)| [*x, *y]).collect();
            nets.sort_unstable();
            nets.dedup();
            ys.push(nets.iter().map(|m| accuracy(m, set)).sum::<f64>() / nets.len() as f64);
        }
        let (mx, my) = (xs.iter().sum::<f64>() / 3.0, ys.iter().sum::<f64>() / 3.0);
        let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>().sqrt();
        let sy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum::<f64>().sqrt();
        let constant = |v: &[f64]| v.iter().all(|&a| a == v[0]);
        if constant(&xs) || constant(&ys) {
            // four training steps can leave a network answering one class on every set: no
            // correlation, and the claim says so instead of a number
            assert!(text.contains(&format!("{a}: not measured")), "{ood}");
            assert!(ood["values"].get(format!("{a}.r")).is_none(), "{ood}");
            continue;
        }
        let got = ood["values"][format!("{a}.r")]
            .as_f64()
            .unwrap_or_else(|| panic!("{a}: {ood}"));
        assert!(
            (cov / (sx * sy) - got).abs() < 1e-9,
            "{a} r: {} vs {got}",
            cov / (sx * sy)
        );
        let p = ood["values"][format!("{a}.p")].as_f64().unwrap();
        assert!([1.0 / 6.0, 2.0 / 6.0, 0.5, 4.0 / 6.0, 5.0 / 6.0, 1.0]
            .iter()
            .any(|q| (q - p).abs() < 1e-12));
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

    // A fourth ResNet seed, paired with the first: its training chain, its extractions and
    // the new pair's nodes, and the table; nothing of the other six networks.
    let seed = "\n[[model]]\nname = \"resnet18_s3\"\narch = \"resnet18\"\nwidth = 8\nseed = 3\n";
    let p = reduced(t.path(), seed, OOD);
    let mut pairs: Vec<[String; 2]> = Vec::new();
    for arch in ["resnet18", "vgg16"] {
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            pairs.push([format!("{arch}_s{a}"), format!("{arch}_s{b}")]);
        }
    }
    pairs.push(["resnet18_s0".into(), "resnet18_s3".into()]);
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "name = \"quick_ci\"",
        &format!("name = \"quick_ci\"\npairs = {pairs:?}"),
    );
    std::fs::write(&p, text).unwrap();
    let planned = would_run(&p, &cache);
    assert!(!planned.is_empty());
    for label in &planned {
        assert!(
            label.contains("resnet18_s3") || label.starts_with("table/"),
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

#[test]
fn ood_sets_are_shown_to_final_checkpoints_unless_asked_for_all() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let p = reduced(t.path(), "", OOD);
    let early_ood = |labels: &[String]| {
        labels
            .iter()
            .filter(|l| l.contains("contrast-0.1") && l.contains("@step0"))
            .count()
    };
    let last = would_run(&p, &cache);
    assert_eq!(early_ood(&last), 0);
    assert!(last
        .iter()
        .any(|l| l.contains("contrast-0.1") && l.contains("@step4")));
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("count = 100", "count = 100\nood_checkpoints = \"all\"");
    std::fs::write(&p, text).unwrap();
    let all = would_run(&p, &cache);
    // one extraction per network, its prepared layers and the scores of its pairs
    assert!(early_ood(&all) > 6, "{}", early_ood(&all));
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("ood_checkpoints = \"all\"", "ood_checkpoints = \"every\"");
    std::fs::write(&p, text).unwrap();
    let out = repflow(&["plan", &s(&p), "--cache", &s(&cache)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stimuli.ood_checkpoints") && err.contains("every"),
        "{err}"
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
