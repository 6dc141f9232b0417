//! `folds`: the cross-validation split of m stimuli (scikit-learn's KFold).

use repflow_cache::Bundle;
use repflow_engine::{Inputs, Kind, NodeError};
use repflow_kernels::{FoldSpec, Folds};
use serde::{Deserialize, Serialize};

use super::RunContext;
use crate::error::UserError;

/// A fold split of `n_rows` stimuli.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldsNode {
    /// Number of stimuli.
    pub n_rows: usize,
    /// Number of folds.
    pub k: usize,
    /// Shuffle seed (`None`: unshuffled).
    pub shuffle_seed: Option<u32>,
}

impl FoldsNode {
    /// The fold specification.
    pub fn spec(&self) -> FoldSpec {
        FoldSpec {
            k: self.k,
            shuffle_seed: self.shuffle_seed,
        }
    }

    /// The split: metadata `{"n_rows", "test": [[rows of fold 0], ...]}`.
    pub fn split(&self) -> Result<Bundle, UserError> {
        let folds = Folds::new(self.n_rows, self.spec())?;
        let test: Vec<&[usize]> = (0..folds.k()).map(|f| folds.test(f)).collect();
        Ok(Bundle::meta(
            serde_json::json!({ "n_rows": self.n_rows, "test": test }).to_string(),
        ))
    }
}

/// No inputs.
impl Kind<RunContext> for FoldsNode {
    const KIND: &'static str = "folds";
    const VERSION: u32 = 1;

    fn key_params(&self) -> serde_json::Value {
        let mut p = fold_params(&self.spec());
        p["n_rows"] = self.n_rows.into();
        p
    }

    fn run(&self, _: &RunContext, _: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.split()?)
    }
}

/// The canonical JSON of a fold specification (in folds' and scores' keys).
pub fn fold_params(f: &FoldSpec) -> serde_json::Value {
    serde_json::json!({ "k": f.k, "shuffle_seed": f.shuffle_seed })
}

/// Reads a split back from its output's metadata.
pub fn read(meta: &str) -> Result<Folds, UserError> {
    let v: serde_json::Value = serde_json::from_str(meta)
        .map_err(|e| UserError::input(format!("corrupt folds object: {e}")))?;
    let n = v["n_rows"].as_u64().unwrap_or(0) as usize;
    let test: Vec<Vec<usize>> = serde_json::from_value(v["test"].clone())
        .map_err(|e| UserError::input(format!("corrupt folds object: {e}")))?;
    Ok(Folds::from_test_rows(n, test)?)
}
