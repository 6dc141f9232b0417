//! `source`: one layer's activations read from a `.npy` or `.safetensors` file.
//! Keyed by the file's content (and its stimuli file's), not its path.

use std::path::PathBuf;

use repflow_cache::Bundle;
use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::matrix_io::read_matrix;

/// Kind name.
pub const KIND: &str = "source";
/// Kind version.
pub const VERSION: u32 = 1;

/// Where one layer's activations are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The model.
    pub model: String,
    /// The layer.
    pub layer: String,
    /// The activation file.
    pub file: PathBuf,
    /// The tensor within a `.safetensors` file.
    pub tensor: Option<String>,
    /// The stimulus-id file, if any.
    pub stimuli: Option<PathBuf>,
}

impl Source {
    /// Key parameters: the tensor name (file contents enter as inputs).
    pub fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "tensor": self.tensor })
    }

    /// The files whose contents the output depends on.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.file.clone()];
        f.extend(self.stimuli.clone());
        f
    }

    /// Reads the matrix: array `x` (stimuli × units, column-major, f64).
    pub fn run(&self) -> Result<Bundle, UserError> {
        let x = read_matrix(&self.file, self.tensor.as_deref())?;
        let (m, n) = x.shape();
        let data: Vec<f64> = (0..n)
            .flat_map(|j| x.col(j).iter().copied().collect::<Vec<_>>())
            .collect();
        let meta = serde_json::json!({ "rows": m, "cols": n }).to_string();
        Ok(Bundle::meta(meta).with_array("x", &[m, n], data))
    }
}
