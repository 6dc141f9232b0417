//! A score as the JSON object other tools read: `repflow score --json` prints it, a score
//! node stores it, the table reads it.

use repflow_kernels::{Named, PreparedLayer, Score, Settings};
use serde_json::{json, Value};

/// One direction's (or any fold series') summary: `{score, std, fold_scores}`.
pub fn folds_json(f: &[f64]) -> Value {
    json!({
        "score": repflow_kernels::stats::mean(f),
        "std": repflow_kernels::stats::std(f),
        "fold_scores": f,
    })
}

/// One score as the JSON object other tools read.
pub fn to_json(s: &Score, a: &PreparedLayer, b: &PreparedLayer, settings: &Settings) -> Value {
    let direction = |folds: &Option<Vec<f64>>| folds.as_deref().map(folds_json);
    let mut obj = json!({
        "metric": s.metric.name(),
        "score": s.score,
        "std": s.std,
        "fold_scores": s.fold_scores,
        "x_to_y": direction(&s.x_to_y),
        "y_to_x": direction(&s.y_to_x),
        "n_units_x": a.n_units(),
        "n_units_y": b.n_units(),
        "dropped_x": a.dropped().len(),
        "dropped_y": b.dropped().len(),
        "dropped_x_units": a.dropped(),
        "dropped_y_units": b.dropped(),
        "nan_units": s.nan_units,
        "n_stimuli": a.n_rows(),
        "corr": settings.corr.name(),
        "folds": settings.folds.k,
        "seed": settings.folds.shuffle_seed,
    });
    if let Some(ang) = &s.angular_distance {
        obj["angular_distance"] = json!({
            "mean": repflow_kernels::stats::mean(ang),
            "fold_values": ang,
        });
    }
    if let Some((xy, yx)) = &s.alphas {
        obj["alpha_x_to_y"] = json!(xy);
        obj["alpha_y_to_x"] = json!(yx);
    }
    obj
}

/// A null distribution's JSON object: `{n, seed, mean, std, quantiles, p_value, draws}`
/// (`draws` in order, so a summary over many scores can pool them draw by draw).
pub fn draws_json(d: &repflow_kernels::inference::Draws) -> Value {
    let quantiles: serde_json::Map<String, Value> = d
        .quantiles
        .iter()
        .map(|(p, q)| (p.to_string(), json!(q)))
        .collect();
    json!({
        "n": d.n, "seed": d.seed, "mean": d.mean, "std": d.std,
        "quantiles": quantiles, "p_value": d.p_value, "draws": d.values,
    })
}

/// A bootstrap interval's JSON object: `{b, seed, level, low, high, mean, std, method}`.
pub fn interval_json(i: &repflow_kernels::inference::Interval) -> Value {
    json!({
        "b": i.draws.n, "seed": i.draws.seed, "level": i.level, "low": i.low, "high": i.high,
        "mean": i.draws.mean, "std": i.draws.std,
        "method": "stimulus bootstrap of the held-out evaluation (each fold fitted on its train rows, its test rows resampled), percentile interval",
    })
}
