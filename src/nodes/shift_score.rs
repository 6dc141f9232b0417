//! `shift-score`: the spatial-shift search ([`repflow_kernels::shift`]) on one pair of layers'
//! full maps — cross-validated Procrustes after the best circular shift of the second layer.

use repflow_cache::{Bundle, MappedBundle};
use repflow_engine::{Inputs, Kind, NodeError};
use repflow_kernels::shift::{score, Maps, ShiftScore};
use repflow_kernels::{KernelError, Named, Settings};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::folds::{self, fold_params};
use super::RunContext;
use crate::error::UserError;

/// The metric's name in pipelines and tables.
pub const NAME: &str = "procrustes-shift";

/// The shift search on a layer pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShiftScoreNode {
    /// The metric settings (the correlation and the fold split enter the key).
    #[serde(with = "super::score::settings_serde")]
    pub settings: Settings,
    /// First model and layer.
    pub a: (String, String),
    /// Second model and layer.
    pub b: (String, String),
}

/// Inputs: `x_maps` and `y_maps` (full-maps `extract` outputs holding the layers), `folds`.
impl Kind<RunContext> for ShiftScoreNode {
    const KIND: &'static str = "shift-score";
    const VERSION: u32 = 1;

    /// The layers (the inputs hold every layer of a network), the correlation, the folds.
    fn key_params(&self) -> serde_json::Value {
        json!({
            "metric": NAME, "layer_x": self.a.1, "layer_y": self.b.1,
            "corr": self.settings.corr.name(), "folds": fold_params(&self.settings.folds),
        })
    }

    /// The score object (`repflow score --json`'s fields, plus `shifts`, `unshifted` and
    /// `grid`); layers the search cannot compare (different grids, token outputs) get a
    /// null score with the reason in `error`.
    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let split = folds::read(inputs.bundle("folds")?.meta())?;
        let x = inputs.bundle("x_maps")?;
        let y = inputs.bundle("y_maps")?;
        let (ax, ay) = (array(x, &self.a)?, array(y, &self.b)?);
        let (vx, vy) = (ax.to_f32(), ay.to_f32());
        let result = Maps::new(&vx, ax.shape())
            .map_err(|e| e.context(&format!("{}/{}", self.a.0, self.a.1)))
            .and_then(|mx| {
                let my = Maps::new(&vy, ay.shape())
                    .map_err(|e| e.context(&format!("{}/{}", self.b.0, self.b.1)))?;
                Ok((mx.shape(), score(&mx, &my, &split, self.settings.corr)?))
            });
        let value = match result {
            Ok((shape, s)) => to_json(&s, shape, &self.settings),
            Err(KernelError::Invalid(why)) => json!({
                "metric": NAME, "score": null, "error": why, "corr": self.settings.corr.name(),
                "folds": self.settings.folds.k, "seed": self.settings.folds.shuffle_seed,
            }),
            Err(e) => return Err(UserError::from(e).into()),
        };
        Ok(Bundle::meta(value.to_string()))
    }
}

fn array(
    maps: &MappedBundle,
    (model, layer): &(String, String),
) -> Result<repflow_cache::MappedArray, UserError> {
    maps.array(layer).ok_or_else(|| {
        UserError::input(format!(
            "corrupt full-maps object of `{model}`: no layer `{layer}`"
        ))
    })
}

/// A shift-search score as the JSON object the table reads.
pub fn to_json(s: &ShiftScore, shape: [usize; 4], settings: &Settings) -> serde_json::Value {
    let direction = crate::score_json::folds_json;
    json!({
        "metric": NAME,
        "score": s.score,
        "std": s.std,
        "fold_scores": s.fold_scores,
        "x_to_y": direction(&s.x_to_y),
        "y_to_x": direction(&s.y_to_x),
        "n_units_x": s.n_units_x,
        "n_units_y": s.n_units_y,
        "dropped_x": s.dropped_x.len(),
        "dropped_y": s.dropped_y.len(),
        "dropped_x_units": s.dropped_x,
        "dropped_y_units": s.dropped_y,
        "nan_units": s.nan_units,
        "n_stimuli": shape[0],
        "corr": settings.corr.name(),
        "folds": settings.folds.k,
        "seed": settings.folds.shuffle_seed,
        "angular_distance": { "mean": repflow_kernels::stats::mean(&s.angular_distance), "fold_values": s.angular_distance },
        "grid": [shape[2], shape[3]],
        "shifts": s.shifts.iter().map(|&(dy, dx)| json!([dy, dx])).collect::<Vec<_>>(),
        "unshifted": direction(&s.unshifted),
    })
}
