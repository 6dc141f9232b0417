//! Language models trained here: bit-identical and resumable training, the `[lm_training]`
//! pipeline (Figure 8's figures and claims, incremental reruns) and its bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{repflow, run, s, tempdir, write_pipeline};
use repflow::text::gpt::GptConfig;
use repflow::text::lm_train::{train_lm, Corpus, LmRecipe};

fn recipe(seed: u32) -> LmRecipe {
    LmRecipe {
        model: GptConfig {
            vocab_size: 256,
            n_positions: 16,
            n_embd: 16,
            n_layer: 2,
            n_head: 2,
        },
        seed,
        lr: 3e-3,
        warmup: 2,
        weight_decay: 0.1,
        batch: 4,
        steps: 8,
    }
}

fn corpus() -> Corpus {
    let text = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("\nthe {} of a thing that is {}", i % 7, i % 5).into_bytes())
            .collect()
    };
    Corpus {
        train: text(400),
        held_out: text(40),
    }
}

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn decoder_training_is_bit_identical_resumable_and_learns() {
    let (r, c) = (recipe(3), corpus());
    let mut losses = Vec::new();
    let whole = train_lm(&r, &c, &[0, 8], None, 8, |ck, _| {
        losses.push(ck.held_out_loss);
        Ok(())
    })
    .unwrap();
    let again = train_lm(&r, &c, &[8], None, 8, |_, _| Ok(())).unwrap();
    let half = train_lm(&r, &c, &[4], None, 4, |_, _| Ok(())).unwrap();
    let resumed = train_lm(&r, &c, &[8], Some(half), 8, |_, _| Ok(())).unwrap();
    let other = train_lm(&recipe(4), &c, &[8], None, 8, |_, _| Ok(())).unwrap();
    assert_eq!(whole.step, 8);
    assert!(
        whole.tensors.len() >= 2 + 2 * 12,
        "{} tensors",
        whole.tensors.len()
    );
    for (name, t) in &whole.tensors {
        assert_eq!(
            values(t),
            values(&again.tensors[name]),
            "{name}: not reproducible"
        );
        assert_eq!(
            values(t),
            values(&resumed.tensors[name]),
            "{name}: resuming changed it"
        );
    }
    let w = "transformer.h.0.attn.c_attn.weight";
    assert_ne!(
        values(&whole.tensors[w]),
        values(&other.tensors[w]),
        "the seed is unused"
    );
    // an untrained byte model is near ln 256; eight steps on repetitive text go well below
    assert!((losses[0] - 256f64.ln()).abs() < 0.1, "{losses:?}");
    assert!(losses[1] < losses[0] - 0.3, "{losses:?}");
}

fn wordnet() -> Option<PathBuf> {
    let deb =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/downloads/wordnet-base_3.0-37_all.deb");
    if deb.exists() {
        return Some(deb);
    }
    assert!(std::env::var_os("CI").is_none(), "CI runs `make data`");
    eprintln!("skipped: {} is missing (make data)", deb.display());
    None
}

fn model(name: &str, depth: usize, seed: u32) -> String {
    format!("[[model]]\nname = \"{name}\"\narch = \"gpt\"\ndepth = {depth}\nwidth = 16\nseed = {seed}\n\n")
}

fn pipeline(deb: &Path, models: &str) -> String {
    pipeline_into(deb, models, Path::new("results"))
}

fn pipeline_into(deb: &Path, models: &str, results: &Path) -> String {
    format!(
        r#"name = "lm"
metrics = ["linear", "procrustes", "soft-matching"]
layers = "all"
results = "{results}"

[sentences]
source = "wordnet:40"
package = "{deb}"

[lm_training]
steps = 6
batch = 4
context = 16
heads = 2
checkpoints = [0, 2]
package = "{deb}"

{models}"#,
        deb = s(deb),
        results = s(results)
    )
}

#[test]
fn a_language_pipeline_trains_compares_reports_and_reruns_only_what_is_new() {
    let Some(deb) = wordnet() else { return };
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let two = model("a_s0", 3, 0) + &model("a_s1", 3, 1) + &model("b_s0", 5, 0);
    let results = dir.path().join("results");
    let p = write_pipeline(
        &dir.path().join("lm.toml"),
        &pipeline_into(&deb, &two, &results),
    );
    let out = run(&p, &cache, &[]);
    assert_eq!(out["failed"], 0, "{out}");
    let models = std::fs::read_to_string(results.join("models.csv")).unwrap();
    assert!(models.starts_with("model,network,arch,stimuli"), "{models}");
    let row = models
        .lines()
        .find(|l| l.starts_with("a_s0@step6,"))
        .expect(&models);
    let f: Vec<&str> = row.split(',').collect();
    assert_eq!((f[2], f[3], f[5]), ("gpt-3", "sentences", "6"), "{row}");
    let loss: f64 = f[9].parse().expect(row);
    assert!(loss > 1.0 && loss < 5.6, "{row}");
    for fig in [
        "fig8a_layers",
        "fig8b_map_gpt-3",
        "fig8c_map_across",
        "fig8d_training",
    ] {
        assert!(
            results.join(format!("figures/{fig}.svg")).exists(),
            "{fig} missing"
        );
    }
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("claims.json")).unwrap())
            .unwrap();
    let ids: Vec<&str> = claims
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["metric-order", "relative-depth", "emerges-early"]);
    for c in claims.as_array().unwrap() {
        assert!(c["holds"].is_boolean(), "{c}");
    }
    let scores = std::fs::read_to_string(results.join("scores.csv")).unwrap();
    // all layer pairs of a_s0 × b_s0 (4 × 6) at each of the three steps, three metrics
    let across = scores
        .lines()
        .filter(|l| l.starts_with("a_s0@step") && l.split(',').nth(1).unwrap().starts_with("b_s0@"))
        .count();
    assert_eq!(across, 3 * 24 * 3);
    // nothing to redo; then a third seed trains only its own chain and scores its pairs
    assert_eq!(run(&p, &cache, &[])["executed"], 0);
    let three = two + &model("a_s2", 3, 2);
    write_pipeline(&p, &pipeline_into(&deb, &three, &results));
    let out = run(&p, &cache, &[]);
    assert_eq!(out["failed"], 0, "{out}");
    // new: 3 lm-train + 3 embed + 3 × 4 prepared + scores of a_s2 with a_s0, a_s1, b_s0
    // (16 + 16 + 24 layer pairs, 3 steps, 3 metrics) + the table
    assert_eq!(
        out["executed"],
        3 + 3 + 12 + 3 * 3 * (16 + 16 + 24) + 1,
        "{out}"
    );
}

fn without_training(text: &str) -> String {
    let a = text.find("[lm_training]").unwrap();
    let b = a + text[a..].find("\n\n").unwrap();
    format!("{}{}", &text[..a], &text[b..])
}

#[test]
fn bad_language_pipelines_are_refused_naming_the_key() {
    let Some(deb) = wordnet() else { return };
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let cases = [
        (
            pipeline(
                &deb,
                "[[model]]\nname = \"x\"\narch = \"gpt\"\nwidth = 16\nseed = 0\n",
            ),
            "has no `depth`",
        ),
        (
            pipeline(&deb, &model("x", 2, 0))
                .replace("checkpoints = [0, 2]", "checkpoints = [0, 9]"),
            "`lm_training.checkpoints` lists step 9",
        ),
        (
            pipeline(&deb, &model("x", 2, 0)).replace("heads = 2", "heads = 3"),
            "not valid",
        ),
        (
            pipeline(&deb, &model("x", 2, 0)).replace("steps = 6", "steps = 0"),
            "`lm_training.steps` is 0",
        ),
        (
            without_training(&pipeline(&deb, &model("x", 2, 0))),
            "there is no `[lm_training]` table",
        ),
        (
            pipeline(&deb, &model("x", 2, 0)).replace(
                "source = \"wordnet:40\"",
                "source = \"wordnet:40\"\nreduce = \"cls\"",
            ),
            "causal decoder",
        ),
    ];
    for (text, want) in cases {
        let p = write_pipeline(&dir.path().join("bad.toml"), &text);
        let out = repflow(&["run", &s(&p), "--cache", &s(&cache)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "expected `{want}` in: {err}");
    }
}

#[test]
fn a_decoder_checkpoint_with_a_mis_shaped_tensor_is_refused_naming_it() {
    let Some(deb) = wordnet() else { return };
    let dir = tempdir();
    let ck = dir.path().join("ck");
    let out = repflow(&[
        "train-lm",
        "--out",
        &s(&ck),
        "--layers",
        "1",
        "--width",
        "16",
        "--heads",
        "2",
        "--context",
        "16",
        "--batch",
        "2",
        "--steps",
        "2",
        "--data",
        &s(&deb),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let step = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.safetensors").exists())
        .expect("a checkpoint folder");
    let text = dir.path().join("s.txt");
    std::fs::write(&text, "a first sentence\nand another one\n").unwrap();
    let emb = dir.path().join("emb");
    let ok = repflow(&[
        "extract",
        "--arch",
        "gpt",
        "--checkpoint",
        &s(&step),
        "--sentences",
        &s(&text),
        "--out",
        &s(&emb),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let layers = std::fs::read_to_string(emb.join("layers.txt")).unwrap();
    assert_eq!(
        layers.lines().collect::<Vec<_>>(),
        ["transformer.wte+wpe", "transformer.h.0"]
    );
    // a config that says two blocks: block 1's tensors are missing
    let cfg = step.join("config.json");
    let c = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"n_layer\": 1", "\"n_layer\": 2");
    std::fs::write(&cfg, c).unwrap();
    let bad = repflow(&[
        "extract",
        "--arch",
        "gpt",
        "--checkpoint",
        &s(&step),
        "--sentences",
        &s(&text),
        "--out",
        &s(&emb),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("transformer.h.1"), "{err}");
    // a width that does not match the tensors
    let c = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"n_layer\": 2", "\"n_layer\": 1")
        .replace("\"n_embd\": 16", "\"n_embd\": 32");
    std::fs::write(&cfg, c).unwrap();
    let bad = repflow(&[
        "extract",
        "--arch",
        "gpt",
        "--checkpoint",
        &s(&step),
        "--sentences",
        &s(&text),
        "--out",
        &s(&emb),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("shape"), "{err}");
}

/// The decoder's forward pass against an independent numpy implementation
/// (`scripts/gpt_fixture.py`, float64 from the same float32 weights): every hidden state,
/// the logits and the loss, to 1e-4.
#[test]
fn the_decoder_matches_the_numpy_reference() {
    use candle_core::{Device, Tensor};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt-tiny");
    let gpt = repflow::text::gpt::Gpt::load(&dir).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(want["ids"].clone()).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let flat: Vec<u32> = ids.concat();
    let ids = Tensor::from_vec(flat, (b, t), &Device::Cpu).unwrap();
    let close = |got: &Tensor, want: &serde_json::Value, what: &str| {
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter())
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{what}");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs() / (1.0 + w.abs()))
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "{what}: worst difference {worst}");
    };
    let states = gpt.states(&ids).unwrap();
    assert_eq!(states.len(), 3);
    for (l, s) in states.iter().enumerate() {
        close(s, &want["states"][l], &format!("state {l}"));
    }
    close(
        &gpt.logits(states.last().unwrap()).unwrap(),
        &want["logits"],
        "logits",
    );
    let loss = gpt.loss(&ids).unwrap().to_scalar::<f32>().unwrap() as f64;
    let want_loss = want["loss"].as_f64().unwrap();
    assert!(
        (loss - want_loss).abs() < 1e-4,
        "loss {loss} vs {want_loss}"
    );
}
