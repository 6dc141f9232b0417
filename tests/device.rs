//! `--device`: the device is never part of a key, `cpu` and `auto` agree, and a GPU that
//! cannot be had is a clear error (exit 2) naming where it was asked for.

mod common;

use common::*;

fn pipeline(dir: &std::path::Path, options: &str) -> std::path::PathBuf {
    write_pipeline(
        &dir.join("p.toml"),
        &format!(
            "name = \"t\"\nresults = \"{}\"\nmodels = [\"net_a\", \"net_b\"]\nmetrics = [\"linear\", \"procrustes\"]\n\n[source]\ndir = \"data\"\n{options}",
            s(&dir.join("results"))
        ),
    )
}

#[test]
fn the_device_is_not_part_of_any_key() {
    let t = tempdir();
    for (m, seed) in [("net_a", 1), ("net_b", 2)] {
        write_model(&t.path().join("data"), m, seed, 80, &[5, 7]);
    }
    let cache = t.path().join("cache");
    let first = run(&pipeline(t.path(), ""), &cache, &[]);
    assert!(first["executed"].as_u64().unwrap() > 0, "{first}");
    let again = run(&pipeline(t.path(), ""), &cache, &["--device", "cpu"]);
    assert_eq!(again["executed"], 0, "{again}");
    let option = run(
        &pipeline(t.path(), "\n[options]\ndevice = \"cpu\"\n"),
        &cache,
        &[],
    );
    assert_eq!(option["executed"], 0, "{option}");
}

#[test]
fn cpu_and_auto_give_the_same_scores() {
    let t = tempdir();
    write_model(t.path(), "m", 3, 90, &[6, 8]);
    let (x, y) = (t.path().join("m/layer1.npy"), t.path().join("m/layer2.npy"));
    let score = |device: &str| {
        let out = repflow(&[
            "score",
            &s(&x),
            &s(&y),
            "--metric",
            "all",
            "--json",
            "--device",
            device,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (cpu, auto) = (score("cpu"), score("auto"));
    if repflow_cuda::probe().is_err() {
        assert_eq!(cpu, auto, "auto without a GPU is the CPU");
    } else {
        // with a GPU, auto uses it: the same scores to rounding
        for (a, b) in cpu.as_array().unwrap().iter().zip(auto.as_array().unwrap()) {
            let (a, b) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}

#[test]
fn a_device_that_cannot_be_had_is_a_clear_error() {
    let t = tempdir();
    write_model(t.path(), "m", 4, 40, &[4, 4]);
    let x = s(&t.path().join("m/layer1.npy"));
    let bad = |args: &[&str], env: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_repflow"));
        c.args(args);
        if let Some(v) = env {
            c.env("REPFLOW_DEVICE", v);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = bad(&["score", &x, &x, "--device", "gpu"], None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unknown device `gpu`") && err.contains("cuda:N"),
        "{err}"
    );
    let (code, err) = bad(&["score", &x, &x], Some("cuda:zero"));
    assert_eq!(code, Some(2));
    assert!(err.contains("`cuda:zero` is not a device"), "{err}");
    if repflow_cuda::probe().is_ok() {
        eprintln!("a GPU is present: the no-GPU error cases do not apply here");
        return;
    }
    let (code, err) = bad(&["score", &x, &x, "--device", "cuda"], None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("`cuda` cannot be used") && err.contains("--device cpu"),
        "{err}"
    );
    write_model(&t.path().join("data"), "net_a", 1, 40, &[4]);
    write_model(&t.path().join("data"), "net_b", 2, 40, &[4]);
    let p = pipeline(t.path(), "\n[options]\ndevice = \"cuda:1\"\n");
    let (code, err) = bad(&["run", &s(&p), "--cache", &s(&t.path().join("c"))], None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("p.toml: `options.device`") && err.contains("cuda:1"),
        "{err}"
    );
    // the flag overrides the pipeline
    let (code, err) = bad(
        &[
            "run",
            &s(&p),
            "--cache",
            &s(&t.path().join("c")),
            "--device",
            "cpu",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
}
