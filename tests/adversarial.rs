//! Hostile input and faults, by class, several members each: scale (every metric gives the
//! same score at any representable scale), where results go (pipeline names), non-finite and
//! out-of-range numbers, header lies, special files, broken pipes, empty inputs, corrupt
//! objects (forced repair, several corrupt inputs at once), stale temporary files, stores
//! that must not be created, and `cache gc --keep P` racing a run of P.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts `repflow plan PIPELINE` is refused (exit 2, within a minute) with every needle.
fn plan_refused(pipeline: &Path, needles: &[&str]) {
    refused(
        &repflow_within(&["plan", pipeline.to_str().unwrap()], 60),
        needles,
    );
}

/// Asserts exit 2 with every needle in stderr, and no panic.
fn refused(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

/// Runs `repflow args` with a deadline: a hang fails the test instead of blocking it.
fn repflow_within(args: &[&str], seconds: u64) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_repflow"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(seconds) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`repflow {}` hung; stderr: {}",
                args.join(" "),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `repflow extract` of the 4-wide ResNet-18 with `checkpoint`, `stimuli` and `out`, and
/// `extra` flags, with a deadline.
fn extract(checkpoint: &str, stimuli: &str, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "extract",
        "--arch",
        "resnet18",
        "--width",
        "4",
        "--checkpoint",
        checkpoint,
        "--stimuli",
        stimuli,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    repflow_within(&args, 60)
}

/// Scores of `repflow score x y --metric all --json extra`, by metric (None: failed).
fn scores(x: &Path, y: &Path, extra: &[&str]) -> Vec<(String, Option<f64>)> {
    let mut args = vec!["score", x.to_str().unwrap(), y.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = repflow(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}); stderr: {}", stderr(&out)));
    let list = match v {
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    list.iter()
        .map(|o| {
            (
                o["metric"].as_str().unwrap().to_string(),
                o["score"].as_f64(),
            )
        })
        .collect()
}

/// Two related 60 × 8 matrices (equal widths, so permutation is scored too).
fn pair_values() -> (Vec<f64>, Vec<f64>) {
    let x: Vec<f64> = (0..60 * 8)
        .map(|p| activation(1, p / 8, p % 8) - 0.2)
        .collect();
    let y: Vec<f64> = (0..60 * 8)
        .map(|p| {
            let (i, j) = (p / 8, p % 8);
            0.7 * x[i * 8 + (j + 3) % 8] + 0.3 * activation(2, i, j)
        })
        .collect();
    (x, y)
}

fn save(path: &Path, rows: usize, cols: usize, values: &[f64]) -> PathBuf {
    write_npy(path, rows, cols, false, |i, j| values[i * cols + j]);
    path.to_path_buf()
}

#[test]
fn every_metric_gives_the_same_score_at_any_representable_scale() {
    let t = tempdir();
    let (x, y) = pair_values();
    let yp = save(&t.path().join("y.npy"), 60, 8, &y);
    let xp = save(&t.path().join("x.npy"), 60, 8, &x);
    for extra in [&[][..], &["--hsic", "unbiased", "--rotate-x", "3"][..]] {
        let base = scores(&xp, &yp, extra);
        assert_eq!(base.len(), 6, "{base:?}");
        assert!(
            base.iter().all(|(_, s)| s.is_some_and(f64::is_finite)),
            "{base:?}"
        );
        // Powers of two scale exactly: the scores are bit-identical.
        for e in [-1000i32, -600, -300, -100, 100, 300, 600, 1000, 1020] {
            let f = 2f64.powi(e / 2) * 2f64.powi(e - e / 2);
            let scaled: Vec<f64> = x.iter().map(|v| v * f).collect();
            assert!(scaled.iter().all(|v| v.is_finite()));
            let p = save(&t.path().join(format!("x2_{e}.npy")), 60, 8, &scaled);
            assert_eq!(scores(&p, &yp, extra), base, "x × 2^{e}, {extra:?}");
            // Both matrices scaled (Y at the opposite scale).
            let ys: Vec<f64> = y.iter().map(|v| v / f).collect();
            if ys
                .iter()
                .all(|v| v.is_finite() && (*v == 0.0 || v.abs() > f64::MIN_POSITIVE))
            {
                let q = save(&t.path().join(format!("y2_{e}.npy")), 60, 8, &ys);
                assert_eq!(scores(&p, &q, extra), base, "x × 2^{e}, y / 2^{e}");
            }
        }
        // Decimal scales round each value: the scores agree to rounding.
        for e in [-300i32, -200, -100, -50, 50, 100, 160, 200, 300] {
            let f = 10f64.powi(e);
            let scaled: Vec<f64> = x.iter().map(|v| v * f).collect();
            let p = save(&t.path().join(format!("x10_{e}.npy")), 60, 8, &scaled);
            for ((m, a), (_, b)) in scores(&p, &yp, extra).iter().zip(&base) {
                let (a, b) = (a.unwrap(), b.unwrap());
                assert!((a - b).abs() < 1e-9, "{m} at x × 1e{e}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn subnormal_inputs_score_like_their_normal_counterparts() {
    let t = tempdir();
    let (x, y) = pair_values();
    // Small integers, exactly representable both as themselves and as subnormal multiples
    // of the smallest subnormal 2^-1074.
    let ints: Vec<f64> = x.iter().map(|v| (v * 1000.0).round()).collect();
    let tiny = 2f64.powi(-1074);
    let sub: Vec<f64> = ints.iter().map(|v| v * tiny).collect();
    assert!(
        sub.iter().all(|v| *v == 0.0 || !v.is_normal()),
        "all subnormal"
    );
    let yp = save(&t.path().join("y.npy"), 60, 8, &y);
    let a = save(&t.path().join("ints.npy"), 60, 8, &ints);
    let b = save(&t.path().join("sub.npy"), 60, 8, &sub);
    assert_eq!(scores(&a, &yp, &[]), scores(&b, &yp, &[]));
}

#[test]
fn a_metric_that_cannot_proceed_fails_alone_and_the_others_still_print() {
    let t = tempdir();
    let (x, y) = pair_values();
    let xp = save(&t.path().join("x.npy"), 3, 8, &x[..24]);
    let yp = save(&t.path().join("y.npy"), 3, 8, &y[..24]);
    let args = [
        "score",
        xp.to_str().unwrap(),
        yp.to_str().unwrap(),
        "--json",
        "--folds",
        "3",
        "--hsic",
        "unbiased",
    ];
    let out = repflow(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cka = v
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["metric"] == "cka")
        .unwrap();
    assert!(cka["score"].is_null());
    assert!(
        cka["error"]
            .as_str()
            .unwrap()
            .contains("at least 4 stimuli"),
        "{cka}"
    );
    let rest = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["metric"] != "cka");
    assert_eq!(rest.clone().count(), 5);
    assert!(rest
        .clone()
        .all(|o| o["score"].is_number() || o["error"].is_string()));
    assert_ne!(out.status.code(), Some(0), "a failed metric is not success");
    // The table says so too.
    let out = repflow(
        &args[..3]
            .iter()
            .chain(&args[4..])
            .copied()
            .collect::<Vec<_>>(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cka") && text.contains("at least 4 stimuli"),
        "{text}"
    );
    assert!(text.contains("procrustes"), "{text}");
    // Alone, it is a usage error naming the problem.
    let out = repflow(&[&args[..], &["--metric", "cka"]].concat());
    refused(&out, &["at least 4 stimuli"]);
}

/// A pipeline over two small models at `dir/file`: `head` goes before, `tail` after the keys.
fn data_pipeline(dir: &Path, file: &str, head: &str, tail: &str) -> PathBuf {
    write_model(&dir.join("data"), "a", 1, 40, &[5]);
    write_model(&dir.join("data"), "b", 2, 40, &[6]);
    write_pipeline(
        &dir.join(file),
        &format!("{head}\nmodels = [\"a\", \"b\"]\nmetrics = [\"cka\"]\n\n[source]\ndir = \"data\"\n{tail}\n"),
    )
}

#[test]
fn pipeline_names_that_are_not_identifiers_are_refused_before_anything_is_written() {
    let t = tempdir();
    let work = t.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let cache = t.path().join("cache");
    for name in [
        "../../escaped",
        "/tmp/abs",
        "..",
        "",
        "a/b",
        ".hidden",
        "x\\\\y",
        "tab\\there",
    ] {
        let p = data_pipeline(t.path(), "p.toml", &format!("name = \"{name}\""), "");
        let out = Command::new(env!("CARGO_BIN_EXE_repflow"))
            .current_dir(&work)
            .args([
                "run",
                p.to_str().unwrap(),
                "--cache",
                cache.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        refused(&out, &["`name`", "letters, digits"]);
        assert!(!work.join("results").exists(), "{name}: nothing written");
        assert!(!cache.exists(), "{name}: no store opened");
        assert!(!t.path().join("escaped").exists());
    }
    // Without `name`, a file name that is not an identifier needs one.
    let p = data_pipeline(t.path(), ".odd.toml", "", "");
    refused(
        &repflow(&["plan", p.to_str().unwrap()]),
        &["file name", "set `name"],
    );
}

#[test]
fn non_finite_and_out_of_range_numbers_are_refused_naming_the_option() {
    let t = tempdir();
    let out = s(&t.path().join("o"));
    for (flag, value) in [
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--lr", "-0.1"),
        ("--lr", "0"),
        ("--epochs", "inf"),
        ("--epochs", "nan"),
        ("--epochs", "0"),
        ("--momentum", "1.5"),
        ("--momentum", "nan"),
        ("--weight-decay", "-1"),
        ("--batch", "0"),
        ("--width", "0"),
        ("--train-limit", "0"),
        ("--test-limit", "0"),
    ] {
        let arg = format!("{flag}={value}");
        let o = repflow(&["train", "--arch", "resnet18", "--out", &out, &arg]);
        refused(&o, &[flag]);
    }
    assert!(!t.path().join("o").exists(), "nothing trained");
    let ck = "tests/fixtures/models/resnet18-small.safetensors";
    for (flag, value) in [
        ("--limit", "0"),
        ("--batch", "0"),
        ("--resize", "0"),
        ("--normalize", "0,nan"),
    ] {
        let arg = format!("{flag}={value}");
        let o = extract(ck, "mnist5k", &out, &[&arg]);
        refused(&o, &[flag]);
    }
    let (x, y) = pair_values();
    let xp = s(&save(&t.path().join("x.npy"), 60, 8, &x));
    let yp = s(&save(&t.path().join("y.npy"), 60, 8, &y));
    for (flag, value) in [
        ("--alphas", "1,nan"),
        ("--alphas", "-1"),
        ("--alphas", "inf"),
    ] {
        refused(
            &repflow(&["score", &xp, &yp, &format!("{flag}={value}")]),
            &[flag],
        );
    }
    for (flag, value) in [("--jobs", "0"), ("--slurm-array-max", "0")] {
        refused(
            &repflow(&["run", "pipelines/example.toml", &format!("{flag}={value}")]),
            &[flag],
        );
    }
}

/// A network pipeline (nothing is trained: `plan` only expands it).
fn network_pipeline(
    dir: &Path,
    training: &str,
    stimuli: &str,
    model: &str,
    options: &str,
) -> PathBuf {
    write_pipeline(
        &dir.join("net.toml"),
        &format!(
            "name = \"net\"\nmetrics = [\"cka\"]\n\n[[model]]\nname = \"r\"\narch = \"resnet18\"\nseed = 0\n{model}\n\n\
             [stimuli]\ndataset = \"fashion-mnist\"\ncount = 100\n{stimuli}\n\n[training]\nepochs = 0.01\n{training}\n\n[options]\n{options}\n"
        ),
    )
}

#[test]
fn bad_pipeline_numbers_are_refused_when_it_is_loaded_naming_the_key() {
    let t = tempdir();
    let cases: [(&str, &str, &str, &str, &[&str]); 12] = [
        ("lr = nan", "", "", "", &["`training.lr`", "finite"]),
        ("lr = inf", "", "", "", &["`training.lr`"]),
        (
            "momentum = 1.0",
            "",
            "",
            "",
            &["`training.momentum`", "[0, 1)"],
        ),
        (
            "weight_decay = -1.0",
            "",
            "",
            "",
            &["`training.weight_decay`"],
        ),
        ("batch = 0", "", "", "", &["`training.batch`", "at least 1"]),
        ("train_limit = 0", "", "", "", &["`training.train_limit`"]),
        ("", "", "width = 0", "", &["width", "at least 1"]),
        ("", "", "lr = -1e-3", "", &["model[0].lr"]),
        ("", "", "classes = 0", "", &["classes"]),
        ("", "resize = 0", "", "", &["`stimuli.resize`"]),
        (
            "",
            "",
            "",
            "folds = 100000",
            &["`options.folds`", "100 stimuli"],
        ),
        ("", "", "", "alphas = [1.0, nan]", &["`options.alphas`"]),
    ];
    for (training, stimuli, model, options, needles) in cases {
        let p = network_pipeline(t.path(), training, stimuli, model, options);
        plan_refused(&p, needles);
    }
    // Transform levels of the out-of-distribution battery.
    for ood in [
        "low-pass:inf",
        "low-pass:nan",
        "rotation:-90",
        "contrast:nan",
        "eidolon:inf:0.3",
        "uniform-noise:1e30",
    ] {
        let p = network_pipeline(t.path(), "", &format!("ood = [\"{ood}\"]"), "", "");
        plan_refused(&p, &["transform"]);
    }
    // `epochs = inf` replaces the pipeline's finite value.
    let p = write_pipeline(
        &t.path().join("inf.toml"),
        "name = \"net\"\nmetrics = [\"cka\"]\n[[model]]\nname = \"r\"\narch = \"resnet18\"\nseed = 0\n[stimuli]\ncount = 10\n[training]\nepochs = inf\n",
    );
    plan_refused(&p, &["`training.epochs`"]);
    let p = write_pipeline(
        &t.path().join("zero.toml"),
        "name = \"net\"\nmetrics = [\"cka\"]\n[[model]]\nname = \"r\"\narch = \"resnet18\"\nseed = 0\n[stimuli]\ncount = 0\n",
    );
    plan_refused(&p, &["`stimuli.count`"]);
    // Files with fewer stimuli than folds are refused at plan time too.
    let p = data_pipeline(
        t.path(),
        "few.toml",
        "name = \"few\"",
        "[options]\nfolds = 41",
    );
    refused(
        &repflow(&["plan", p.to_str().unwrap()]),
        &["40 stimuli", "`options.folds`"],
    );
}

/// A `.npy` header claiming `shape` of f64 over `data_bytes` bytes of data.
fn lying_npy(path: &Path, shape: &str, data_bytes: usize) -> String {
    let mut bytes = npy_header("<f8", shape);
    bytes.extend(std::iter::repeat_n(0x3f, data_bytes));
    std::fs::write(path, bytes).unwrap();
    s(path)
}

#[test]
fn npy_headers_that_lie_about_their_shape_are_refused_before_allocating() {
    let t = tempdir();
    let (_, y) = pair_values();
    let yp = s(&save(&t.path().join("y.npy"), 60, 8, &y));
    for (i, (shape, data)) in [
        ("(4294967296, 4294967296)", 480 * 8),
        ("(4611686018427387904, 4)", 480 * 8),
        ("(60, 9)", 480 * 8),
        ("(60, 8)", 480 * 8 - 3),
        ("(60, 8)", 480 * 8 + 8),
        ("(18446744073709551615,)", 64),
    ]
    .into_iter()
    .enumerate()
    {
        let x = lying_npy(&t.path().join(format!("lie{i}.npy")), shape, data);
        refused(
            &repflow_within(&["score", &x, &yp], 30),
            &[&format!("lie{i}.npy")],
        );
    }
    // In a pipeline the header alone is read (at plan time): the lie is caught there.
    let dir = t.path().join("data");
    write_model(&dir, "a", 1, 40, &[5]);
    write_model(&dir, "b", 2, 40, &[5]);
    lying_npy(&dir.join("b/layer1.npy"), "(4294967296, 5)", 40 * 5 * 8);
    let p = write_pipeline(
        &t.path().join("p.toml"),
        "name = \"p\"\nmodels = [\"a\", \"b\"]\nmetrics = [\"cka\"]\n[source]\ndir = \"data\"\n",
    );
    refused(
        &repflow_within(&["plan", &s(&p)], 30),
        &["layer1.npy", "header says shape"],
    );
}

#[test]
fn special_files_as_inputs_are_refused_instead_of_blocking_or_filling_memory() {
    let t = tempdir();
    let (_, y) = pair_values();
    let yp = s(&save(&t.path().join("y.npy"), 60, 8, &y));
    let fifo = t.path().join("fifo.npy");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let zero = t.path().join("zero.npy");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let urandom = t.path().join("urandom.safetensors");
    std::os::unix::fs::symlink("/dev/urandom", &urandom).unwrap();
    let folder = t.path().join("folder.npy");
    std::fs::create_dir(&folder).unwrap();
    for bad in [&fifo, &zero, &urandom, &folder] {
        let o = repflow_within(&["score", &s(bad), &yp], 30);
        refused(&o, &[&s(bad), "regular file"]);
    }
    // A FIFO as the pipeline file, and as a layer file of a pipeline.
    let pipe_toml = t.path().join("p.toml");
    assert!(Command::new("mkfifo")
        .arg(&pipe_toml)
        .status()
        .unwrap()
        .success());
    refused(
        &repflow_within(&["plan", &s(&pipe_toml)], 30),
        &["regular file"],
    );
    refused(
        &repflow_within(&["run", &s(&pipe_toml)], 30),
        &["regular file"],
    );
    let dir = t.path().join("data");
    write_model(&dir, "a", 1, 40, &[5]);
    write_model(&dir, "b", 2, 40, &[5]);
    std::fs::remove_file(dir.join("b/layer1.npy")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(dir.join("b/layer1.npy"))
        .status()
        .unwrap()
        .success());
    let p = write_pipeline(
        &t.path().join("q.toml"),
        "name = \"q\"\nmodels = [\"a\", \"b\"]\nmetrics = [\"cka\"]\n[source]\ndir = \"data\"\n",
    );
    refused(
        &repflow_within(&["plan", &s(&p)], 30),
        &["layer1.npy", "regular file"],
    );
    // ... and as extraction stimuli and checkpoint.
    let ck = "tests/fixtures/models/resnet18-small.safetensors";
    let out = s(&t.path().join("out"));
    let o = extract(ck, &s(&fifo), &out, &[]);
    refused(&o, &["regular file"]);
    let o = extract(&s(&zero), "mnist5k", &out, &[]);
    refused(&o, &["regular file"]);
}

#[test]
fn a_closed_pipe_ends_listing_commands_quietly() {
    let t = tempdir();
    let dir = t.path().join("data");
    // Enough nodes that the listings outgrow a pipe's buffer (64 KiB).
    for (m, seed) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 6)] {
        write_model(&dir, m, seed, 12, &[3; 8]);
    }
    let p = write_pipeline(
        &t.path().join("p.toml"),
        &format!(
            "name = \"p\"\nresults = \"{}\"\nmodels = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\nlayers = \"all\"\nmetrics = [\"cka\", \"rsa\"]\n[options]\nfolds = 2\n[source]\ndir = \"data\"\n",
            s(&t.path().join("results"))
        ),
    );
    let cache = s(&t.path().join("cache"));
    run(&p, Path::new(&cache), &[]);
    for args in [
        vec!["plan", p.to_str().unwrap(), "--cache", &cache],
        vec!["cache", "ls", "--cache", &cache],
        vec!["cache", "du", "--cache", &cache],
    ] {
        // Reading one line, then closing the pipe, as `| head -1` does.
        let mut child = Command::new(env!("CARGO_BIN_EXE_repflow"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.is_empty());
        let out = child.wait_with_output().unwrap();
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            out.status.code().is_none_or(|c| c == 0),
            "{args:?}: {:?}",
            out.status
        );
    }
}

#[test]
fn empty_inputs_are_refused_instead_of_writing_empty_results() {
    let t = tempdir();
    let ck = "tests/fixtures/models/resnet18-small.safetensors";
    let out = t.path().join("out");
    let empty = t.path().join("empty.npy");
    lying_npy(&empty, "(0, 28, 28)", 0);
    let o = extract(ck, &s(&empty), &s(&out), &[]);
    refused(&o, &["no images"]);
    assert!(!out.exists());
    let (_, y) = pair_values();
    let yp = s(&save(&t.path().join("y.npy"), 60, 8, &y));
    let no_rows = lying_npy(&t.path().join("rows0.npy"), "(0, 8)", 0);
    refused(&repflow(&["score", &no_rows, &yp]), &[]);
    let no_cols = lying_npy(&t.path().join("cols0.npy"), "(60, 0)", 0);
    refused(&repflow(&["score", &no_cols, &yp]), &["0 columns"]);
}

#[test]
fn extraction_reads_image_arrays_of_every_documented_shape() {
    let t = tempdir();
    let ck = "tests/fixtures/models/resnet18-small.safetensors";
    let pixel = |i: usize, p: usize| ((i * 7 + p * 13) % 255) as f64 / 255.0;
    let write = |name: &str, shape: &str| {
        let path = t.path().join(name);
        let mut bytes = npy_header("<f4", shape);
        for i in 0..6 {
            for p in 0..784 {
                bytes.extend_from_slice(&(pixel(i, p) as f32).to_le_bytes());
            }
        }
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let mut results = Vec::new();
    for (name, shape) in [
        ("nhw.npy", "(6, 28, 28)"),
        ("nchw.npy", "(6, 1, 28, 28)"),
        ("flat.npy", "(6, 784)"),
    ] {
        let x = write(name, shape);
        let out = t.path().join(format!("out-{name}"));
        let o = extract(ck, &s(&x), &s(&out), &["--layers", "fc"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        results.push(std::fs::read(out.join("fc.npy")).unwrap());
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "same images, same activations"
    );
    let bad = write("bad.npy", "(6, 2, 28, 14)");
    let o = extract(ck, &s(&bad), &s(&t.path().join("o")), &[]);
    refused(&o, &["N × C × H × W"]);
}

/// The objects of entries of `kind` in the store at `cache`.
fn objects_of(cache: &Path, kind: &str) -> Vec<PathBuf> {
    let out = repflow(&["cache", "ls", "--cache", &s(cache)]);
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(kind))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    keys.iter()
        .map(|k| {
            let show = repflow(&["cache", "show", k, "--cache", &s(cache)]);
            let text = String::from_utf8_lossy(&show.stdout).into_owned();
            let v: serde_json::Value =
                serde_json::from_str(text.split("\nrecipe:").next().unwrap()).unwrap();
            let o = v["object"].as_str().unwrap();
            cache.join("v2/objects").join(&o[..2]).join(&o[2..])
        })
        .collect()
}

/// Flips one byte in the middle of `path`, keeping its size.
fn corrupt(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

fn three_models(dir: &Path) -> PathBuf {
    for (m, seed) in [("a", 1), ("b", 2), ("c", 3)] {
        write_model(&dir.join("data"), m, seed, 50, &[5, 6]);
    }
    write_pipeline(
        &dir.join("p.toml"),
        &format!(
            "name = \"p\"\nresults = \"{}\"\nmodels = [\"a\", \"b\", \"c\"]\nmetrics = [\"cka\", \"linear\"]\n[source]\ndir = \"data\"\n",
            s(&dir.join("results"))
        ),
    )
}

#[test]
fn corrupt_objects_are_all_repaired_in_one_run() {
    let t = tempdir();
    let p = three_models(t.path());
    let cache = t.path().join("cache");
    assert_eq!(run(&p, &cache, &[])["failed"], 0);
    // A forced run replaces a corrupt object of the same size.
    let sources = objects_of(&cache, "source");
    assert_eq!(sources.len(), 6);
    corrupt(&sources[0]);
    let forced = run(&p, &cache, &["--force", "source/"]);
    assert_eq!(forced["failed"], 0, "{forced}");
    let v = repflow(&["cache", "verify", "--cache", &s(&cache)]);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(" 0 corrupt objects"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // Every input of the score nodes corrupt at once (6 prepared layers, 2 per score node):
    // one run recomputes them all.
    let prepared = objects_of(&cache, "prepared");
    assert_eq!(prepared.len(), 6);
    prepared.iter().for_each(|o| corrupt(o));
    let again = run(&p, &cache, &["--force", "score/"]);
    assert_eq!(again["failed"], 0, "{again}");
    let v = repflow(&["cache", "verify", "--cache", &s(&cache)]);
    assert!(String::from_utf8_lossy(&v.stdout).contains(" 0 corrupt objects"));
    assert_eq!(run(&p, &cache, &[])["executed"], 0);
}

#[test]
fn temporary_files_of_processes_that_are_gone_are_removed() {
    let t = tempdir();
    let p = three_models(t.path());
    let cache = t.path().join("cache");
    run(&p, &cache, &[]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let tmp = cache.join("v2/tmp");
    let stale = tmp.join(format!("w.{dead}@{}~abc-0", host.trim()));
    let live = tmp.join(format!("w.{}@{}~abc-0", std::process::id(), host.trim()));
    let other_host = tmp.join(format!("w.{dead}@elsewhere~abc-0"));
    for f in [&stale, &live, &other_host] {
        std::fs::write(f, b"").unwrap();
    }
    let old_style = cache.join("v2/file-digests.tmp12345");
    std::fs::write(&old_style, b"{").unwrap();
    run(&p, &cache, &[]);
    assert!(
        !stale.exists(),
        "a dead process's temporary file goes at the start of a run"
    );
    assert!(
        live.exists() && other_host.exists(),
        "a live or another host's one stays"
    );
    let gc = repflow(&["cache", "gc", "--keep", &s(&p), "--cache", &s(&cache)]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "gc clears tmp/"
    );
    assert!(!old_style.exists());
}

#[test]
fn reading_commands_create_no_store() {
    let t = tempdir();
    let missing = t.path().join("nowhere/store");
    for args in [vec!["cache", "ls"], vec!["cache", "du"]] {
        let o = repflow(&[&args[..], &["--cache", &s(&missing)]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("no store"));
    }
    let p = three_models(t.path());
    let o = repflow(&["plan", &s(&p), "--cache", &s(&missing)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!t.path().join("nowhere").exists());
}

#[test]
fn a_store_that_cannot_be_written_can_still_be_listed_and_planned() {
    let t = tempdir();
    let p = three_models(t.path());
    let cache = t.path().join("cache");
    run(&p, &cache, &[]);
    let listed = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).lines().count();
    let entries = listed(&repflow(&["cache", "ls", "--cache", &s(&cache)]));
    assert!(entries > 20);
    // Read-only to the process: as root, it runs as `nobody` over root's 0755 folders;
    // otherwise the store's folders lose their write permission.
    use std::os::unix::fs::PermissionsExt;
    let root = unsafe { libc::geteuid() } == 0;
    let walk = |mode: u32| {
        for e in walkdir(&cache) {
            if e.is_dir() {
                std::fs::set_permissions(&e, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    };
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if !root {
        walk(0o555);
    }
    let as_reader = |args: &[&str]| {
        let mut c = if root {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_repflow"),
            ]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_repflow"))
        };
        c.args(args).output().unwrap()
    };
    let ls = as_reader(&["cache", "ls", "--cache", &s(&cache)]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert_eq!(listed(&ls), entries, "every entry listed");
    let du = as_reader(&["cache", "du", "--cache", &s(&cache)]);
    assert!(du.status.success(), "{}", stderr(&du));
    let plan = as_reader(&["plan", &s(&p), "--cache", &s(&cache), "--json"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert!(v.to_string().contains("cached"), "{v}");
    // Writing commands say why they cannot.
    let run = as_reader(&["run", &s(&p), "--cache", &s(&cache), "--force", "table"]);
    assert_ne!(run.status.code(), Some(0));
    assert!(!stderr(&run).contains("panicked"), "{}", stderr(&run));
    if !root {
        walk(0o755);
    }
}

/// Every folder and file below `dir`, `dir` included.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let more: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.extend(more);
        }
        i += 1;
    }
    out
}

#[test]
fn gc_keeping_a_pipeline_while_it_runs_keeps_everything_the_run_writes() {
    let t = tempdir();
    let dir = t.path().join("data");
    for (m, seed) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        write_model(&dir, m, seed, 300, &[40, 40, 40, 40]);
    }
    let p = write_pipeline(
        &t.path().join("p.toml"),
        &format!(
            "name = \"p\"\nresults = \"{}\"\nmodels = [\"a\", \"b\", \"c\", \"d\"]\nlayers = \"all\"\nmetrics = [\"linear\", \"procrustes\", \"soft-matching\", \"cka\", \"rsa\"]\n[source]\ndir = \"data\"\n",
            s(&t.path().join("results"))
        ),
    );
    let cache = t.path().join("cache");
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(&cache);
        let runner = Command::new(env!("CARGO_BIN_EXE_repflow"))
            .args(["run", &s(&p), "--cache", &s(&cache), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // gc starts once the run holds the store.
        let lock = cache.join("v2/lock");
        while !lock.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let gc = repflow(&["cache", "gc", "--keep", &s(&p), "--cache", &s(&cache)]);
        assert!(gc.status.success(), "{}", stderr(&gc));
        let out = runner.wait_with_output().unwrap();
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["failed"], 0);
        let after = run(&p, &cache, &[]);
        assert_eq!(
            after["executed"], 0,
            "gc removed entries of the run it kept: {after}"
        );
    }
}
