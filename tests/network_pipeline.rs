//! Pipelines of networks: trained here (checkpoint chains, resumed when a checkpoint is
//! added) or imported, shown a Fashion-MNIST stimulus set, extracted and compared — all DAG
//! nodes in the store. Needs `make data`.

mod common;

use common::*;

fn pipeline(dir: &std::path::Path, checkpoints: &str) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let deb =
        format!("{root}/data/downloads/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb");
    write_pipeline(
        &dir.join("net.toml"),
        &format!(
            r#"name = "net"
results = "{results}"
metrics = ["cka"]

[stimuli]
count = 120
package = "{deb}"
transform = "contrast:0.5"

[training]
package = "{deb}"
epochs = 1
batch = 64
train_limit = 256
test_limit = 100
checkpoints = [{checkpoints}]

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

[[model]]
name = "imported"
arch = "resnet18"
width = 4
checkpoint = "{root}/tests/fixtures/models/resnet18-small.safetensors"
"#,
            results = s(&dir.join("results"))
        ),
    )
}

#[test]
fn trained_and_imported_networks_are_compared_and_reruns_reuse_everything() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let p = pipeline(t.path(), "\"0\", \"end\"");
    let first = run(&p, &cache, &[]);
    assert_eq!(first["failed"], 0, "{first}");
    let csv = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    for name in ["a@step0", "a@step4", "b@step4", "imported"] {
        assert!(csv.contains(name), "{name} missing from the table");
    }
    // 5 models; checkpoints pair at the same step (a@0~b@0, a@4~b@4) and each with the
    // imported network: 6 pairs × 21 matched layers, one metric.
    assert_eq!(csv.lines().count(), 1 + 6 * 21);
    assert!(!csv.contains("a@step0,b@step4") && !csv.contains("a@step0,a@step4"));
    assert_eq!(run(&p, &cache, &[])["executed"], 0);
    // Per network: accuracy on the (contrast-reduced) stimuli, and the checkpoint's record.
    let models = std::fs::read_to_string(t.path().join("results/models.csv")).unwrap();
    assert!(models.starts_with(
        "model,network,arch,stimuli,accuracy_on_stimuli,step,epoch,train_loss,test_accuracy,held_out_loss,objective,knn_accuracy\n"
    ));
    assert_eq!(models.lines().count(), 1 + 5);
    let a4 = models.lines().find(|l| l.starts_with("a@step4,")).unwrap();
    let fields: Vec<&str> = a4.split(',').collect();
    assert!(
        fields[1] == "a"
            && fields[2] == "resnet18"
            && fields[3] == "base"
            && fields[4].parse::<f64>().unwrap() >= 0.0
            && fields[8].parse::<f64>().unwrap() > 0.0
            && fields[10] == "supervised"
            && fields[11].is_empty(),
        "{a4}"
    );

    // A checkpoint between the two: the new step-2 nodes train from step 0, step 4 retrains
    // from step 2 to the same weights, so nothing downstream of step 4 reruns.
    let p = pipeline(t.path(), "\"0\", \"2\", \"end\"");
    let plan: serde_json::Value =
        serde_json::from_slice(&repflow(&["plan", &s(&p), "--cache", &s(&cache), "--json"]).stdout)
            .unwrap();
    let would_run = plan["stale"].as_u64().unwrap() + plan["missing"].as_u64().unwrap();
    let second = run(&p, &cache, &[]);
    assert_eq!(second["failed"], 0);
    assert!(
        second["executed"].as_u64().unwrap() < would_run,
        "early cutoff: {second} vs {would_run} planned"
    );
    let state = |label: &str| -> String {
        plan["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == label)
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("extract/a@step0"), "cached");
    assert_eq!(state("train/a/step2"), "missing");
}

#[test]
fn networks_need_a_seed_or_a_checkpoint() {
    let t = tempdir();
    let p = write_pipeline(
        &t.path().join("bad.toml"),
        "metrics = [\"cka\"]\n[stimuli]\ncount = 10\n[[model]]\nname = \"x\"\narch = \"resnet18\"\n",
    );
    let out = repflow(&["run", &s(&p), "--cache", &s(&t.path().join("cache"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly one of `seed`"));
}

#[test]
fn an_image_folder_is_a_stimulus_set_keyed_by_its_contents() {
    let t = tempdir();
    let root = env!("CARGO_MANIFEST_DIR");
    for (class, shade) in [("bags", 60u8), ("shoes", 180u8)] {
        std::fs::create_dir_all(t.path().join("imgs").join(class)).unwrap();
        for k in 0..6u32 {
            let img = image::GrayImage::from_fn(36, 32, |x, y| {
                image::Luma([shade.wrapping_add(((x * 7 + y * 3 + k * 11) % 50) as u8)])
            });
            img.save(t.path().join("imgs").join(class).join(format!("{k}.png")))
                .unwrap();
        }
    }
    let p = write_pipeline(
        &t.path().join("folder.toml"),
        &format!(
            "name = \"folder\"\nresults = \"{}\"\nmetrics = [\"cka\"]\n\n[stimuli]\ndataset = \"folder\"\nfolder = \"imgs\"\n\n\
             [[model]]\nname = \"one\"\narch = \"resnet18\"\nwidth = 4\ncheckpoint = \"{root}/tests/fixtures/models/resnet18-small.safetensors\"\n\n\
             [[model]]\nname = \"vgg\"\narch = \"vgg16-bn\"\nwidth = 4\ncheckpoint = \"{root}/tests/fixtures/models/vgg16-bn-small.safetensors\"\n",
            s(&t.path().join("results"))
        ),
    );
    let cache = t.path().join("cache");
    let first = run(&p, &cache, &[]);
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(run(&p, &cache, &[])["executed"], 0);
    // A changed image changes the folder's key: the set and everything after it rerun.
    let img = image::GrayImage::from_fn(36, 32, |x, _| image::Luma([(x * 5) as u8]));
    img.save(t.path().join("imgs/shoes/0.png")).unwrap();
    let after = run(&p, &cache, &[]);
    assert!(after["executed"].as_u64().unwrap() > 2, "{after}");
}

fn ood_pipeline(dir: &std::path::Path, ood: &str) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let downloads = format!("{root}/data/downloads");
    write_pipeline(
        &dir.join("ood.toml"),
        &format!(
            r#"name = "ood"
results = "{results}"
metrics = ["cka"]

[stimuli]
count = 60
package = "{downloads}/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
ood = [{ood}]

[[model]]
name = "resnet"
arch = "resnet18"
width = 4
checkpoint = "{root}/tests/fixtures/models/resnet18-small.safetensors"

[[model]]
name = "vgg"
arch = "vgg16-bn"
width = 4
checkpoint = "{root}/tests/fixtures/models/vgg16-bn-small.safetensors"
"#,
            results = s(&dir.join("results"))
        ),
    )
}

#[test]
fn every_network_is_scored_on_each_ood_set_with_its_accuracy_there() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let p = ood_pipeline(t.path(), r#""contrast:0.1", "mnist5k""#);
    let first = run(&p, &cache, &[]);
    assert_eq!(first["failed"], 0, "{first}");
    let csv = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|c| *c == "stimuli").unwrap();
    let count = |set: &str| {
        csv.lines()
            .skip(1)
            .filter(|l| l.split(',').nth(col) == Some(set))
            .count()
    };
    // One pair (resnet~vgg) per set, matched layers of the ResNet (21), never across sets.
    for set in ["base", "contrast-0.1", "mnist5k"] {
        assert_eq!(count(set), 21, "{set}");
    }
    assert_eq!(csv.lines().count(), 1 + 3 * 21);
    let models = std::fs::read_to_string(t.path().join("results/models.csv")).unwrap();
    let sets: Vec<(String, String, String)> = models
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].into(), f[3].into(), f[4].into())
        })
        .collect();
    assert_eq!(sets.len(), 2 * 3, "{models}");
    for (model, set, acc) in &sets {
        if set == "mnist5k" {
            // digits are not Fashion-MNIST's classes: no accuracy
            assert_eq!(acc, "", "{model} on {set}");
        } else {
            let acc: f64 = acc.parse().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{model} on {set}: {acc}");
        }
    }

    // Adding a set runs only that set's nodes: its transform, 2 extractions, the prepared
    // layers (21 of the ResNet, the 16 of the VGG they match), 21 scores and the table. (The
    // mnist5k set comes from `data/downloads`, relative to the working directory: the crate root.)
    let p = ood_pipeline(t.path(), r#""contrast:0.1", "mnist5k", "rotation:90""#);
    let plan: serde_json::Value =
        serde_json::from_slice(&repflow(&["plan", &s(&p), "--cache", &s(&cache), "--json"]).stdout)
            .unwrap();
    let would_run = plan["stale"].as_u64().unwrap() + plan["missing"].as_u64().unwrap();
    let second = run(&p, &cache, &[]);
    assert_eq!(second["failed"], 0);
    let expected = 1 + 2 + (21 + 16) + 21 + 1;
    assert_eq!(second["executed"], expected, "{second}");
    assert_eq!(would_run, expected as u64);
}

#[test]
fn an_unknown_ood_set_is_an_error_naming_the_key() {
    let t = tempdir();
    let p = ood_pipeline(t.path(), r#""contrast:0.1", "blurr:2""#);
    let out = repflow(&["run", &s(&p), "--cache", &s(&t.path().join("cache"))]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stimuli.ood") && err.contains("blurr:2"),
        "{err}"
    );
}
