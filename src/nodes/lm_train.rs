//! `lm-train`: one checkpoint of a byte-level decoder's training run on WordNet's
//! definitions, resumed from the previous checkpoint's node, with its held-out loss.

use std::path::PathBuf;

use repflow_cache::{Bundle, MappedBundle};
use repflow_engine::{Inputs, Kind, NodeError};
use serde::{Deserialize, Serialize};

use super::network::{names, tensors_from_bundle, tensors_to_bundle};
use super::RunContext;
use crate::error::UserError;
use crate::models::train::TrainState;
use crate::text::lm_train::{train_lm, Corpus, LmRecipe};

/// One checkpoint of a decoder's training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmTrain {
    /// The recipe.
    pub recipe: LmRecipe,
    /// The checkpoint's step.
    pub step: u64,
    /// The wordnet-base .deb the text comes from (enters the key by content).
    pub package: PathBuf,
}

/// Input: `previous` (the previous checkpoint) unless this is the first. Output: the weights
/// (`w:` arrays) and Adam moments (`opt:` arrays), with metadata `{step, train_loss,
/// held_out_loss, weights, optimizer}`.
impl Kind<RunContext> for LmTrain {
    const KIND: &'static str = "lm-train";
    const VERSION: u32 = 1;

    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "recipe": self.recipe, "step": self.step })
    }

    fn external_files(&self) -> Vec<PathBuf> {
        vec![self.package.clone()]
    }

    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.train(inputs.optional("previous").map(|i| &i.bundle))?)
    }
}

impl LmTrain {
    /// Trains up to `step`, from the previous checkpoint's output when given.
    pub fn train(&self, previous: Option<&MappedBundle>) -> Result<Bundle, UserError> {
        let corpus = Corpus::wordnet(&self.package)?;
        let start = match previous {
            Some(p) => {
                let meta: serde_json::Value = serde_json::from_str(p.meta())
                    .map_err(|e| UserError::input(format!("corrupt lm-train object: {e}")))?;
                Some(TrainState {
                    step: meta["step"].as_u64().unwrap_or(0),
                    tensors: tensors_from_bundle(p, "w:", &names(p, "weights")?)?,
                    optimizer: tensors_from_bundle(p, "opt:", &names(p, "optimizer")?)?,
                })
            }
            None => None,
        };
        let mut record = None;
        let state = train_lm(
            &self.recipe,
            &corpus,
            &[self.step],
            start,
            self.step,
            |ck, _| {
                record = Some(ck);
                Ok(())
            },
        )?;
        let ck = record.expect("the node's step is a checkpoint");
        let mut w: Vec<&String> = state.tensors.keys().collect();
        w.sort();
        let mut o: Vec<&String> = state.optimizer.keys().collect();
        o.sort();
        let finite = |x: f64| x.is_finite().then_some(x);
        let meta = serde_json::json!({
            "step": self.step, "train_loss": finite(ck.train_loss),
            "held_out_loss": finite(ck.held_out_loss), "weights": w, "optimizer": o,
        });
        let b = tensors_to_bundle(Bundle::meta(meta.to_string()), "w:", &state.tensors)?;
        tensors_to_bundle(b, "opt:", &state.optimizer)
    }
}
