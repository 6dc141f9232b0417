//! `reduce`: one network's full layer outputs (an `extract` node with `maps`) reduced to one
//! row per stimulus, with the same arithmetic as reducing during the forward pass
//! ([`crate::models::extract::reduce`]), so the numbers are bit-identical either way and a
//! new reduction reruns this node, not the network.

use candle_core::{Device, Tensor};
use repflow_cache::{Bundle, MappedBundle};
use repflow_engine::{Inputs, Kind, NodeError};
use repflow_kernels::maps::{self, MapShape};
use serde::{Deserialize, Serialize};

use super::network::reduced_bundle;
use super::RunContext;
use crate::error::UserError;
use crate::models::extract::{reduce, LayerActivations, Reduction};

/// A reduction of stored full maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reduce {
    /// How conv (and token) outputs become one row per stimulus.
    pub reduction: Reduction,
}

fn corrupt(what: String) -> UserError {
    UserError::input(format!("corrupt full-maps object: {what}"))
}

/// The layer names a maps bundle lists.
pub fn layer_names(maps: &MappedBundle) -> Result<Vec<String>, UserError> {
    let meta: serde_json::Value =
        serde_json::from_str(maps.meta()).map_err(|e| corrupt(e.to_string()))?;
    serde_json::from_value(meta["layers"].clone()).map_err(|e| corrupt(e.to_string()))
}

/// Input: `maps` (an `extract` output with full maps). Output: the same bundle a reducing
/// `extract` writes. Version 2: pools in one order of arithmetic on every CPU and device
/// (`repflow_kernels::maps`; see `extract`'s version 6).
impl Kind<RunContext> for Reduce {
    const KIND: &'static str = "reduce";
    const VERSION: u32 = 2;

    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "reduction": self.reduction })
    }

    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.reduce(inputs.bundle("maps")?)?)
    }
}

impl Reduce {
    /// Reduces every layer of `maps`.
    pub fn reduce(&self, maps: &MappedBundle) -> Result<Bundle, UserError> {
        let mut layers = Vec::new();
        for name in layer_names(maps)? {
            let a = maps
                .array(&name)
                .ok_or_else(|| corrupt(format!("no array `{name}`")))?;
            // pools straight from the stored maps (no tensor copy of a layer's maps)
            if let (Some(how), &[n, c, h, w]) = (self.reduction.pool(), a.shape()) {
                let data = maps::reduce_maps(&a.to_f32(), MapShape { n, c, h, w }, how)
                    .map_err(|e| corrupt(format!("`{name}`: {e}")))?;
                layers.push(LayerActivations {
                    name,
                    shape: vec![n, c],
                    data,
                });
                continue;
            }
            let t = Tensor::from_slice(&a.to_f32(), a.shape(), &Device::Cpu)
                .map_err(|e| corrupt(format!("`{name}`: {e}")))?;
            let r = reduce(&t, self.reduction, &name)?;
            let data = r
                .flatten_all()
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(|e| corrupt(format!("`{name}`: {e}")))?;
            layers.push(LayerActivations {
                name,
                shape: r.dims().to_vec(),
                data,
            });
        }
        Ok(reduced_bundle(maps.meta().to_string(), layers))
    }
}
