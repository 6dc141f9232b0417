//! Helpers shared by the integration tests: a fresh folder per test, `.npy` writing, and
//! running the `repflow` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes a 2-D little-endian `.npy` file (f32 when `f32`, else f64), row-major.
pub fn write_npy(
    path: &Path,
    rows: usize,
    cols: usize,
    f32: bool,
    value: impl Fn(usize, usize) -> f64,
) {
    let descr = if f32 { "<f4" } else { "<f8" };
    let mut bytes = npy_header(descr, &format!("({rows}, {cols})"));
    for i in 0..rows {
        for j in 0..cols {
            let v = value(i, j);
            if f32 {
                bytes.extend_from_slice(&(v as f32).to_le_bytes());
            } else {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A version-1 `.npy` preamble and header for dtype `descr` (`<f4`, `<f8`) and a shape
/// written as numpy writes it (`(3, 4)`), padded to 64 bytes; the data follow.
pub fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// A deterministic pseudo-random activation value of model `seed`, layer width `n`.
pub fn activation(seed: u64, i: usize, j: usize) -> f64 {
    // Shared latent signal (depends on the stimulus) plus unit- and model-specific parts.
    let latent = ((i as f64) * 0.37).sin() + ((i * i % 17) as f64) * 0.05;
    let h = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add((j as u64 + 1) * 1442695040888963407)
        .wrapping_add(seed * 0x9E3779B97F4A7C15);
    let noise = ((h >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
    (latent * ((j % 5) as f64 - 2.0) + noise).max(0.0) + 0.01 * j as f64 * noise
}

/// Writes `model`'s layers (`widths`) with `rows` stimuli into `dir/<model>/layer<k>.npy`.
pub fn write_model(dir: &Path, model: &str, seed: u64, rows: usize, widths: &[usize]) {
    for (k, &w) in widths.iter().enumerate() {
        write_npy(
            &dir.join(model).join(format!("layer{}.npy", k + 1)),
            rows,
            w,
            true,
            |i, j| activation(seed * 31 + k as u64, i, j),
        );
    }
}

/// A fresh folder for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Runs `repflow` with `args`.
pub fn repflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repflow"))
        .args(args)
        .output()
        .expect("repflow runs")
}

/// Runs `repflow run PIPELINE --cache CACHE --json` and returns its summary.
pub fn run(pipeline: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "run",
        pipeline.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = repflow(&args);
    assert!(
        out.status.code().is_some(),
        "killed? stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The path as a string.
pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Writes a pipeline file.
pub fn write_pipeline(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// `repflow plan PIPELINE --cache CACHE --json`.
pub fn plan(pipeline: &Path, cache: &Path) -> serde_json::Value {
    let out = repflow(&["plan", &s(pipeline), "--cache", &s(cache), "--json"]);
    serde_json::from_slice(&out.stdout).expect("plan prints JSON")
}

/// A field of the node labelled `label` in a plan.
pub fn node(plan: &serde_json::Value, label: &str, field: &str) -> String {
    let n = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == label)
        .unwrap_or_else(|| panic!("no node {label}"));
    n[field].as_str().unwrap().to_string()
}

/// The rows of a CSV file with a header line, as column name → value (no quoting: repflow's
/// tables have none).
pub fn csv_rows(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
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
