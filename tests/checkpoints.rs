//! torch.save checkpoints (`.pt`) are read wherever `.safetensors` are: the same weights give
//! the same activations; a pickled model object, a truncated file and a non-zip file are
//! refused with what to do instead. Fixtures: `scripts/torch_save.py` (torch's zip format,
//! written without torch). Needs `make data` (mnist5k stimuli).

use std::path::Path;
use std::process::Output;

fn extract(checkpoint: &Path, out: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_repflow"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "extract",
            "--arch",
            "resnet18",
            "--width",
            "4",
            "--checkpoint",
        ])
        .arg(checkpoint)
        .args([
            "--stimuli",
            "mnist5k",
            "--limit",
            "16",
            "--layers",
            "conv1,fc",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap()
}

fn models() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

#[test]
fn a_torch_state_dict_under_state_dict_with_module_names_gives_the_same_activations() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("st"), t.path().join("pt"));
    let st = extract(&models().join("resnet18-small.safetensors"), &a);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let pt = extract(&models().join("resnet18-small.pt"), &b);
    assert!(
        pt.status.success(),
        "{}",
        String::from_utf8_lossy(&pt.stderr)
    );
    for layer in ["conv1.npy", "fc.npy"] {
        assert_eq!(
            std::fs::read(a.join(layer)).unwrap(),
            std::fs::read(b.join(layer)).unwrap(),
            "{layer}"
        );
    }
    // the reader itself: every tensor of the safetensors file, names stripped of `module.`
    let from_pt = repflow::models::checkpoint::read(&models().join("resnet18-small.pt")).unwrap();
    let from_st =
        repflow::models::checkpoint::read(&models().join("resnet18-small.safetensors")).unwrap();
    assert_eq!(from_pt.len(), from_st.len());
    for (k, v) in &from_st {
        let w = &from_pt[k];
        assert_eq!(v.dims(), w.dims(), "{k}");
        let (v, w) = (
            v.flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap(),
            w.flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap(),
        );
        assert_eq!(
            v.to_vec1::<f64>().unwrap(),
            w.to_vec1::<f64>().unwrap(),
            "{k}"
        );
    }
}

fn refused(checkpoint: &Path, wants: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let out = extract(checkpoint, &t.path().join("o"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for w in wants {
        assert!(err.contains(w), "{w} not in: {err}");
    }
    assert!(!t.path().join("o").exists());
}

#[test]
fn pickles_of_code_truncated_and_foreign_files_are_refused() {
    // torch.save(model): the model's class, no state dict
    refused(
        &models().join("model-object.pt"),
        &["holds no tensors", "model.state_dict()"],
    );
    let t = tempfile::tempdir().unwrap();
    // a truncated zip
    let bytes = std::fs::read(models().join("resnet18-small.pt")).unwrap();
    let cut = t.path().join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(&cut, &["cut.pt"]);
    // the legacy (non-zip) format, or anything else
    let legacy = t.path().join("legacy.pth");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0alZ\xa0\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    refused(&legacy, &["not a torch.save zip file", "legacy.pth"]);
    let other = t.path().join("weights.ckpt");
    std::fs::write(&other, b"x").unwrap();
    refused(&other, &["expected .safetensors, .pt or .pth"]);
}

#[test]
fn a_pipeline_imports_a_pt_checkpoint_as_it_does_a_safetensors_one() {
    let t = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let p = t.path().join("pt.toml");
    std::fs::write(
        &p,
        format!(
            r#"name = "pt"
results = "{results}"
metrics = ["cka"]

[stimuli]
count = 40
package = "{root}/data/downloads/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"

[[model]]
name = "from_pt"
arch = "resnet18"
width = 4
checkpoint = "{root}/tests/fixtures/models/resnet18-small.pt"

[[model]]
name = "from_safetensors"
arch = "resnet18"
width = 4
checkpoint = "{root}/tests/fixtures/models/resnet18-small.safetensors"
"#,
            results = t.path().join("results").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_repflow"))
        .current_dir(root)
        .args(["run"])
        .arg(&p)
        .arg("--cache")
        .arg(t.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    let mut rows = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        // the same weights: identical activations, so every layer pair's CKA is 1
        let score: f64 = f[8].parse().unwrap();
        assert!((score - 1.0).abs() < 1e-12, "{line}");
        rows += 1;
    }
    assert_eq!(rows, 21);
}
