//! `source`: one layer's activations read from a `.npy` or `.safetensors` file.
//! Keyed by the file's content (and its stimuli file's), not its path.

use std::path::PathBuf;

use repflow_cache::Bundle;
use repflow_engine::{Inputs, Kind, NodeError};
use serde::{Deserialize, Serialize};

use super::RunContext;
use crate::error::UserError;
use crate::matrix_io::read_matrix;

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

/// No inputs; the activation file (and stimulus-id file) enter the key by content.
impl Kind<RunContext> for Source {
    const KIND: &'static str = "source";
    const VERSION: u32 = 1;

    /// The tensor name (file contents enter as inputs).
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "tensor": self.tensor })
    }

    fn external_files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.file.clone()];
        f.extend(self.stimuli.clone());
        f
    }

    fn run(&self, _: &RunContext, _: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.read()?)
    }
}

impl Source {
    /// Reads the matrix: array `x` (stimuli × units, column-major, f64).
    pub fn read(&self) -> Result<Bundle, UserError> {
        let x = read_matrix(&self.file, self.tensor.as_deref())?;
        let (m, n) = x.shape();
        let data: Vec<f64> = (0..n)
            .flat_map(|j| x.col(j).iter().copied().collect::<Vec<_>>())
            .collect();
        let meta = serde_json::json!({ "rows": m, "cols": n }).to_string();
        Ok(Bundle::meta(meta).with_array("x", &[m, n], data))
    }
}
