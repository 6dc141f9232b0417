//! The self-supervised audit, `pipelines/ssl.toml`, reduced for CI (256 training images, two
//! steps, 100 stimuli, two OOD sets, a small queue and probe; the same networks, objectives,
//! metrics and report): MoCo networks train as pipeline nodes, `models.csv` records each
//! checkpoint's probe and k-NN accuracy, supervised and MoCo networks are compared layer by
//! layer by name, the claims table is complete and agrees with the score table (the rotation
//! effect in percent included). Needs `make data`.

mod common;

use std::collections::BTreeMap;

use common::*;

#[test]
fn the_reduced_ssl_audit_trains_moco_and_reports_consistent_claims() {
    let t = tempdir();
    let root = env!("CARGO_MANIFEST_DIR");
    let p = write_pipeline(
        &t.path().join("ssl_ci.toml"),
        &format!(
            r#"include = "{root}/pipelines/ssl.toml"
name = "ssl_ci"
results = "{results}"

[stimuli]
count = 100
ood = ["contrast:0.1", "rotation:90"]

[training]
epochs = 1
train_limit = 256
test_limit = 200
checkpoints = ["0", "1", "end"]

[training.moco]
queue = 256

[training.moco.probe]
images = 256
steps = 50

[statistics]
null = 9
rotations = 9
"#,
            results = s(&t.path().join("results"))
        ),
    );
    let cache = t.path().join("cache");
    let first = run(&p, &cache, &[]);
    assert_eq!(first["failed"], 0, "{first}");
    let results = t.path().join("results");

    // models.csv: MoCo checkpoints with their probe and k-NN accuracies, their own family
    let models = csv_rows(&results.join("models.csv"));
    let moco: Vec<_> = models
        .iter()
        .filter(|m| m["network"].starts_with("moco_"))
        .collect();
    assert!(!moco.is_empty());
    for m in &moco {
        assert_eq!(m["arch"], "resnet18-moco", "{m:?}");
        assert_eq!(m["objective"], "moco", "{m:?}");
        let acc: f64 = m["accuracy_on_stimuli"]
            .parse()
            .expect("a probe accuracy on every set");
        assert!((0.0..=1.0).contains(&acc), "{m:?}");
        if m["stimuli"] == "base" {
            let top1: f64 = m["test_accuracy"].parse().unwrap();
            let knn: f64 = m["knn_accuracy"].parse().unwrap();
            // ten classes: an untrained network's features already classify far above 10%
            assert!(top1 > 0.3 && knn > 0.3, "{m:?}");
        }
    }
    let sup = models
        .iter()
        .find(|m| m["network"] == "supervised_s0")
        .unwrap();
    assert_eq!(
        (sup["arch"].as_str(), sup["objective"].as_str()),
        ("resnet18", "supervised")
    );
    assert!(sup["knn_accuracy"].is_empty());

    // the layers of a MoCo network end with the projection head, compared between MoCo
    // seeds; supervised against MoCo pairs the layers both have, by name
    let scores = csv_rows(&results.join("scores.csv"));
    let cross: Vec<_> = scores
        .iter()
        .filter(|r| {
            r["model_a"].starts_with("supervised_s0") && r["model_b"].starts_with("moco_s0")
        })
        .collect();
    assert!(!cross.is_empty());
    assert!(cross
        .iter()
        .all(|r| r["layer_a"] == r["layer_b"] && !r["layer_a"].starts_with("fc")));
    let convs = cross
        .iter()
        .filter(|r| {
            r["metric"] == "procrustes"
                && r["stimuli"] == "base"
                && r["model_a"] == "supervised_s0@step2"
        })
        .count();
    assert_eq!(convs, 20, "every conv layer of ResNet-18, by name");
    assert!(scores
        .iter()
        .any(|r| r["layer_a"] == "fc.2" && r["model_a"].starts_with("moco_s0")));

    // claims: every claim present, each measured; the MoCo family's metric order and
    // rotation effect agree with scores.csv
    let claims: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(results.join("claims.json")).unwrap()).unwrap();
    assert_eq!(claims.len(), 10);
    for c in &claims {
        assert!(!c["measured"].as_str().unwrap().is_empty(), "{c}");
    }
    let final_step = moco
        .iter()
        .filter_map(|m| m["step"].parse::<u64>().ok())
        .max()
        .unwrap();
    let layer_mean = |metric: &str| {
        let mut by_layer: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in scores.iter().filter(|r| {
            r["metric"] == metric
                && r["stimuli"] == "base"
                && r["model_a"] == format!("moco_s0@step{final_step}")
                && r["model_b"] == format!("moco_s1@step{final_step}")
        }) {
            by_layer
                .entry(r["depth_a"].clone())
                .or_default()
                .push(r["score"].parse().unwrap());
        }
        assert!(!by_layer.is_empty(), "{metric}");
        let means: Vec<f64> = by_layer
            .values()
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
            .collect();
        means.iter().sum::<f64>() / means.len() as f64
    };
    let order = &claims.iter().find(|c| c["id"] == "metric-order").unwrap()["values"];
    for metric in ["linear", "procrustes", "permutation"] {
        let got = order[format!("resnet18-moco.{metric}")].as_f64().unwrap();
        assert!((layer_mean(metric) - got).abs() < 1e-9, "{metric}");
    }
    let rotation = &claims.iter().find(|c| c["id"] == "rotation-cnn").unwrap()["values"];
    let (native, rotated) = (layer_mean("permutation"), layer_mean("permutation:rotated"));
    let percent = rotation["resnet18-moco.rotation_drop_percent"]
        .as_f64()
        .unwrap();
    assert!(
        (percent - 100.0 * (native - rotated) / native).abs() < 1e-9,
        "{percent}"
    );
    assert!(rotation["resnet18-moco.rotation_null_drop_percent"].is_f64());

    // Figure 6's panels and the cross-objective figure are drawn under their own names; the
    // supervised network has no seed pair, so Figures 1 and 3–5 are not; a rerun does nothing
    for f in [
        "fig6a_depth",
        "fig6b_ood",
        "fig6c_training",
        "fig6d_rotation",
        "fig6e_objectives",
    ] {
        assert!(
            results.join("figures").join(format!("{f}.svg")).exists(),
            "{f}"
        );
    }
    for f in ["fig1_depth", "fig3_rotation", "fig4_training", "fig5_ood"] {
        assert!(
            !results.join("figures").join(format!("{f}.svg")).exists(),
            "{f}"
        );
    }
    let page = std::fs::read_to_string(results.join("report.html")).unwrap();
    for title in [
        "Figure 6A",
        "Figure 6B",
        "Figure 6C",
        "Figure 6D",
        "Figure 6E",
    ] {
        assert!(page.contains(title), "{title}");
    }
    assert_eq!(run(&p, &cache, &[])["executed"], 0);
}

/// Bad MoCo settings are refused before anything runs, naming the key (exit 2).
#[test]
fn bad_moco_settings_are_clear_errors() {
    let t = tempdir();
    let cases = [
        (
            "[[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = 4\nseed = 0\nobjective = \"mocco\"\n",
            "model `a`: objective` is `mocco`",
        ),
        (
            "[training]\nobjective = \"simclr\"\n\n[[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = 4\nseed = 0\n",
            "`training.objective` is `simclr`",
        ),
        (
            "[[model]]\nname = \"v\"\narch = \"vit\"\nwidth = 16\nseed = 0\nobjective = \"moco\"\n",
            "projection head",
        ),
        (
            "[training.moco.augment]\ncrop_scale = [0.8, 0.2]\n\n[[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = 4\nseed = 0\nobjective = \"moco\"\n",
            "`training.moco.augment.crop_scale` is [0.8, 0.2]",
        ),
        (
            "[training.moco]\ntemperature = 0\n\n[[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = 4\nseed = 0\nobjective = \"moco\"\n",
            "`training.moco.temperature` is 0",
        ),
        (
            "[training.moco]\nqueu = 10\n\n[[model]]\nname = \"a\"\narch = \"resnet18\"\nwidth = 4\nseed = 0\nobjective = \"moco\"\n",
            "queu",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let p = write_pipeline(
            &t.path().join(format!("bad{i}.toml")),
            &format!("name = \"bad\"\nmetrics = [\"cka\"]\n\n[stimuli]\ncount = 10\n\n{body}"),
        );
        let o = repflow(&["plan", &s(&p), "--cache", &s(&t.path().join("cache"))]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(want), "case {i}: `{want}` not in: {err}");
    }
}

/// `layers = "named"` between networks that share no layer name is an error naming both.
#[test]
fn named_layers_need_a_shared_name() {
    let t = tempdir();
    let p = write_pipeline(
        &t.path().join("named.toml"),
        "name = \"named\"\nmetrics = [\"cka\"]\nlayers = \"named\"\n\n[stimuli]\ncount = 10\n\n\
         [[model]]\nname = \"r\"\narch = \"resnet18\"\nwidth = 4\nseed = 0\n\n\
         [[model]]\nname = \"v\"\narch = \"vgg16-bn\"\nwidth = 4\nseed = 0\n",
    );
    let o = repflow(&["plan", &s(&p), "--cache", &s(&t.path().join("cache"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("share no layer name") && err.contains("`r@step"),
        "{err}"
    );
}
