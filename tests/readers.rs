//! Property tests of the readers of user files — `.npy`, `.safetensors`, pipeline TOML — on
//! random and mutated bytes: every input gives a correct read or a usage error (exit code
//! 2), never a panic, a hang or an allocation the file's size does not justify.

mod common;

use std::path::Path;

use proptest::prelude::*;
use repflow::matrix_io::{npy_header, read_matrix};

/// A valid `.npy` file of a `rows × cols` f32 or f64 matrix, and its values (row-major).
fn npy_bytes(rows: usize, cols: usize, f32: bool) -> (Vec<u8>, Vec<f64>) {
    let t = common::tempdir();
    let p = t.path().join("a.npy");
    let value = |i: usize, j: usize| (i * 31 + j * 7) as f64 / 8.0 - 3.0;
    common::write_npy(&p, rows, cols, f32, value);
    let values = (0..rows * cols)
        .map(|k| value(k / cols, k % cols))
        .collect();
    (std::fs::read(&p).unwrap(), values)
}

/// A valid `.safetensors` file holding one f32 tensor `x` of shape `rows × cols`.
fn safetensors_bytes(rows: usize, cols: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..rows * cols)
        .flat_map(|k| (k as f32 * 0.25).to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, cols], &data)
            .unwrap();
    safetensors::serialize([("x", view)], None).unwrap()
}

/// Applies `edits` to `bytes`: (position, byte) overwrites, then truncation or extension.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>, extra: &[u8]) -> Vec<u8> {
    for &(pos, b) in edits {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[pos % n] = b;
        }
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes.extend_from_slice(extra);
    bytes
}

/// Reads `bytes` as a file named `name`; checks the outcome is a read or a usage error.
fn read_back(dir: &Path, name: &str, bytes: &[u8]) -> Option<faer::Mat<f64>> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    if name.ends_with(".npy") {
        // The header-only reader (pipelines) agrees with the full reader about validity
        // of the header; both refuse with usage errors.
        if let Err(e) = npy_header(&p) {
            assert_eq!(e.code, 2, "{}", e.message);
        }
    }
    match read_matrix(&p, None) {
        Ok(m) => Some(m),
        Err(e) => {
            assert_eq!(e.code, 2, "{}", e.message);
            assert!(!e.message.is_empty());
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn npy_reads_correctly_or_refuses(
        rows in 0usize..6, cols in 0usize..6, f32 in any::<bool>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<usize>()),
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let t = common::tempdir();
        let (good, values) = npy_bytes(rows, cols, f32);
        let bytes = mutate(good.clone(), &edits, cut, &extra);
        let m = read_back(t.path(), "m.npy", &bytes);
        if bytes == good {
            let m = m.as_ref().expect("a valid file reads");
            prop_assert_eq!(m.shape(), (rows, cols));
            for k in 0..rows * cols {
                prop_assert_eq!(m[(k / cols, k % cols)], values[k]);
            }
        }
        if let Some(m) = m {
            // A read never holds more values than the file has bytes for.
            prop_assert!(m.nrows() * m.ncols() * 4 <= bytes.len());
        }
    }

    #[test]
    fn npy_random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let t = common::tempdir();
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&bytes);
        read_back(t.path(), "r.npy", &b);
        read_back(t.path(), "s.npy", &bytes);
    }

    #[test]
    fn safetensors_reads_correctly_or_refuses(
        rows in 1usize..5, cols in 1usize..5,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<usize>()),
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let t = common::tempdir();
        let good = safetensors_bytes(rows, cols);
        let bytes = mutate(good.clone(), &edits, cut, &extra);
        let m = read_back(t.path(), "m.safetensors", &bytes);
        if bytes == good {
            let m = m.expect("a valid file reads");
            prop_assert_eq!(m.shape(), (rows, cols));
            prop_assert_eq!(m[(rows - 1, cols - 1)], (rows * cols - 1) as f64 * 0.25);
        }
    }

    #[test]
    fn safetensors_random_bytes_are_refused(
        header_len in any::<u64>(), bytes in prop::collection::vec(any::<u8>(), 0..200)
    ) {
        let t = common::tempdir();
        let mut b = header_len.to_le_bytes().to_vec();
        b.extend_from_slice(&bytes);
        read_back(t.path(), "r.safetensors", &b);
    }

    #[test]
    fn pipeline_toml_loads_and_expands_or_refuses(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in prop::option::of(any::<usize>()),
        number in prop_oneof![
            Just("nan".to_string()), Just("inf".to_string()), Just("-inf".to_string()),
            Just("0".to_string()), Just("-1".to_string()), Just("1e308".to_string()),
            Just("18446744073709551615".to_string()), Just("99999999999".to_string()),
            (0u64..100).prop_map(|v| v.to_string()),
        ],
        key in prop_oneof![
            Just("folds"), Just("seed"), Just("alphas"), Just("rotation_seed"),
        ],
    ) {
        let t = common::tempdir();
        common::write_model(&t.path().join("data"), "a", 1, 20, &[3, 4]);
        common::write_model(&t.path().join("data"), "b", 2, 20, &[3]);
        let value = if key == "alphas" { format!("[{number}]") } else { number };
        let text = format!(
            "name = \"p\"\nmodels = [\"a\", \"b\"]\nlayers = \"all\"\nmetrics = [\"cka\", \"linear:rotated\"]\n\
             [source]\ndir = \"data\"\n[options]\n{key} = {value}\n"
        );
        let valid = match key {
            "folds" => value.parse::<usize>().is_ok_and(|k| (2..=20).contains(&k)),
            // (a TOML integer is an i64)
            "alphas" => {
                let inner = value.trim_matches(['[', ']']);
                (inner.parse::<i64>().is_ok() || inner.contains('e'))
                    && inner.parse::<f64>().is_ok_and(|a| a.is_finite() && a >= 0.0)
            }
            _ => value.parse::<u32>().is_ok(),
        };
        let original = text.clone().into_bytes();
        let bytes = mutate(text.into_bytes(), &edits, cut, &[]);
        let p = t.path().join("p.toml");
        std::fs::write(&p, &bytes).unwrap();
        match repflow::pipeline::load(&p).and_then(repflow::pipeline::expand) {
            Ok(plan) => prop_assert!(plan.settings.folds.k >= 2 && plan.settings.folds.k <= 20),
            Err(e) => {
                prop_assert_eq!(e.code, 2, "{}", e.message);
                prop_assert!(!(bytes == original && valid), "a valid pipeline was refused: {}", e.message);
            }
        }
    }
}
