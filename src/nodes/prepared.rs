//! `prepared`: a layer prepared for scoring (dead units dropped, centred, rows in fold
//! order, fold statistics). Shared by every pair the layer takes part in; read back from
//! the store without copying its data.

use std::sync::Arc;

use faer::MatRef;
use repflow_cache::{Bundle, MappedArray, MappedBundle};
use repflow_engine::{Inputs, Kind, NodeError};
use repflow_kernels::{DataBuffer, FoldStats, Folds, LayerParts, PreparedLayer, Settings};
use serde::{Deserialize, Serialize};

use super::{folds, RunContext};
use crate::error::UserError;

/// A prepared layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    /// The model.
    pub model: String,
    /// The layer.
    pub layer: String,
    /// The input's array holding the matrix: `x` for a source file, the layer's name for an
    /// extraction.
    #[serde(default = "default_array")]
    pub array: String,
    /// Rotate the matrix by the Haar-random rotation of this seed first (the privileged-basis
    /// test: a rotated copy of a layer, compared with the native one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<u32>,
}

fn default_array() -> String {
    "x".into()
}

/// A memory-mapped array as the kernels' data buffer.
struct MappedData(MappedArray);

impl DataBuffer for MappedData {
    fn as_slice(&self) -> &[f64] {
        // `load` only wraps f64 arrays
        self.0.as_f64().unwrap_or(&[])
    }
}

fn corrupt(what: &str) -> UserError {
    UserError::input(format!("corrupt prepared-layer object: {what}"))
}

/// Inputs: `matrix` (a source or extraction output holding the array), `folds`.
impl Kind<RunContext> for Prepared {
    const KIND: &'static str = "prepared";
    const VERSION: u32 = 2;

    /// Which array of the input (nothing more for a source file's `x`), and the rotation.
    fn key_params(&self) -> serde_json::Value {
        let mut p = serde_json::json!({});
        if self.array != "x" {
            p["array"] = self.array.clone().into();
        }
        if let Some(seed) = self.rotation {
            p["rotation"] = seed.into();
        }
        p
    }

    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let split = folds::read(inputs.bundle("folds")?.meta())?;
        Ok(self.prepare(inputs.bundle("matrix")?, split)?)
    }
}

impl Prepared {
    /// Prepares the matrix `self.array` of `source` with `folds`.
    pub fn prepare(&self, source: &MappedBundle, folds: Folds) -> Result<Bundle, UserError> {
        let x = source
            .array(&self.array)
            .ok_or_else(|| corrupt(&format!("the input has no matrix `{}`", self.array)))?;
        let (m, n) = (x.shape()[0], x.shape()[1]);
        // activations are stored f32, files' matrices f64: the kernels work in f64
        let values = x.to_f64();
        let xr = MatRef::from_column_major_slice(&values, m, n);
        let rotated = self
            .rotation
            .map(|seed| repflow_kernels::rotation::rotate(xr, seed))
            .transpose()?;
        let xr = rotated.as_ref().map(|r| r.as_ref()).unwrap_or(xr);
        // Only the fold split matters for what is stored; metric settings apply when scoring.
        let layer = PreparedLayer::with_folds(xr, &Settings::default(), folds).map_err(|e| {
            UserError::from(e).prefixed(&format!("{}/{}: ", self.model, self.layer))
        })?;
        let parts = layer.parts();
        let data = layer.data();
        let cols = data.ncols();
        let values: Vec<f64> = (0..cols)
            .flat_map(|j| data.col(j).iter().copied().collect::<Vec<_>>())
            .collect();
        let k = parts.stats.len();
        let stat = |f: fn(&FoldStats) -> &Vec<f64>| {
            parts
                .stats
                .iter()
                .flat_map(|s| f(s).iter().copied())
                .collect::<Vec<f64>>()
        };
        let meta = serde_json::json!({
            "n_rows": parts.n_rows,
            "n_units": cols,
            "n_units_in": parts.n_units_in,
            "dropped": parts.dropped,
            "test_rows": parts.test_rows,
        });
        Ok(Bundle::meta(meta.to_string())
            .with_array("data", &[parts.n_rows, cols], values)
            .with_array("mean", &[cols], parts.mean.clone())
            .with_array("train_mean", &[k, cols], stat(|s| &s.train_mean))
            .with_array("train_std", &[k, cols], stat(|s| &s.train_std))
            .with_array("test_mean", &[k, cols], stat(|s| &s.test_mean))
            .with_array("test_std", &[k, cols], stat(|s| &s.test_std)))
    }
}

/// A stored prepared layer's (stimuli, units), read from its data array's shape.
pub fn shape(bundle: &MappedBundle) -> Option<(usize, usize)> {
    let data = bundle.array("data")?;
    match data.shape() {
        &[m, n] => Some((m, n)),
        _ => None,
    }
}

/// Rebuilds a prepared layer from its stored output, for scoring with `settings`. The data
/// stay in the memory map.
pub fn load(bundle: &MappedBundle, settings: &Settings) -> Result<PreparedLayer, UserError> {
    let meta: serde_json::Value =
        serde_json::from_str(bundle.meta()).map_err(|e| corrupt(&e.to_string()))?;
    let n_units = meta["n_units"]
        .as_u64()
        .ok_or_else(|| corrupt("no n_units"))? as usize;
    let test_rows: Vec<Vec<usize>> =
        serde_json::from_value(meta["test_rows"].clone()).map_err(|e| corrupt(&e.to_string()))?;
    let k = test_rows.len();
    let array = |name: &str| {
        bundle
            .array(name)
            .ok_or_else(|| corrupt(&format!("no array `{name}`")))
    };
    let per_fold = |name: &str| -> Result<Vec<Vec<f64>>, UserError> {
        let a = array(name)?;
        Ok(a.to_f64()
            .chunks(n_units.max(1))
            .take(k)
            .map(<[f64]>::to_vec)
            .collect())
    };
    let (tm, ts, em, es) = (
        per_fold("train_mean")?,
        per_fold("train_std")?,
        per_fold("test_mean")?,
        per_fold("test_std")?,
    );
    let stats = (0..k)
        .map(|f| FoldStats {
            train_mean: tm[f].clone(),
            train_std: ts[f].clone(),
            test_mean: em[f].clone(),
            test_std: es[f].clone(),
        })
        .collect();
    let parts = LayerParts {
        n_rows: meta["n_rows"]
            .as_u64()
            .ok_or_else(|| corrupt("no n_rows"))? as usize,
        n_units_in: meta["n_units_in"]
            .as_u64()
            .ok_or_else(|| corrupt("no n_units_in"))? as usize,
        dropped: serde_json::from_value(meta["dropped"].clone())
            .map_err(|e| corrupt(&e.to_string()))?,
        mean: array("mean")?.to_f64().into_owned(),
        test_rows,
        stats,
    };
    let data = array("data")?;
    if data.as_f64().is_none() {
        return Err(corrupt("`data` is not an f64 array"));
    }
    Ok(PreparedLayer::from_parts(
        parts,
        settings,
        Arc::new(MappedData(data)),
    )?)
}
