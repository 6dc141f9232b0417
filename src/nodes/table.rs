//! `table`: the tidy score table of a pipeline (one row per layer pair and metric).

use repflow_cache::Bundle;
use repflow_engine::{Inputs, Kind, NodeError};
use serde::{Deserialize, Serialize};

use super::RunContext;
use crate::error::UserError;
use crate::results_set::write_if_changed;

/// One row's identity: which layers, which metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowLabel {
    /// First model.
    pub model_a: String,
    /// Second model.
    pub model_b: String,
    /// First layer.
    pub layer_a: String,
    /// Second layer.
    pub layer_b: String,
    /// First layer's normalised depth.
    pub depth_a: f64,
    /// Second layer's normalised depth.
    pub depth_b: f64,
    /// Metric.
    pub metric: String,
    /// The out-of-distribution stimulus set the pair was scored on (empty: the base set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stimuli: String,
}

impl RowLabel {
    /// The table's row for this label and its score object (as `repflow score --json`
    /// prints it): labels, score, fold scores, widths; a failed score keeps its `error`.
    pub fn row(&self, v: &serde_json::Value) -> serde_json::Value {
        let mut row = serde_json::json!({
            "model_a": self.model_a, "model_b": self.model_b,
            "layer_a": self.layer_a, "layer_b": self.layer_b,
            "depth_a": self.depth_a, "depth_b": self.depth_b,
            "metric": self.metric, "corr": v["corr"], "score": v["score"], "std": v["std"],
            "folds": v["fold_scores"], "n_units_a": v["n_units_x"], "n_units_b": v["n_units_y"],
            "nan_units": v["nan_units"],
            "stimuli": if self.stimuli.is_empty() { "base" } else { self.stimuli.as_str() },
        });
        if let Some(e) = v.get("error") {
            row["error"] = e.clone();
        }
        // the shift search: the shift each fold chose, and the score without one
        if let Some(shifts) = v.get("shifts") {
            row["shifts"] = shifts.clone();
            row["unshifted"] = v["unshifted"]["score"].clone();
        }
        row
    }
}

/// The table of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// The pipeline's name.
    pub pipeline: String,
    /// One label per input score node, in input order.
    pub rows: Vec<RowLabel>,
    /// For each `statistic` input, in input order, the row it tests.
    #[serde(default)]
    pub statistics: Vec<usize>,
}

/// Inputs: one `score` per row, in row order, then one `statistic` per test.
impl Kind<RunContext> for Table {
    const KIND: &'static str = "table";
    const VERSION: u32 = 1;

    /// The row labels.
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "pipeline": self.pipeline, "rows": self.rows, "statistics": self.statistics })
    }

    /// The table is read after every run: a corrupt one is recomputed, not trusted.
    fn verify_when_cached(&self) -> bool {
        true
    }

    /// Joins labels and score objects: metadata `{"rows": [...]}` (tidy rows).
    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let scores = inputs.all("score").count();
        if scores != self.rows.len() {
            return Err(NodeError::new(format!(
                "the table has {} rows but {scores} score inputs",
                self.rows.len()
            )));
        }
        let mut rows = Vec::with_capacity(self.rows.len());
        for (label, s) in self.rows.iter().zip(inputs.all("score").map(|i| &i.bundle)) {
            let v: serde_json::Value = serde_json::from_str(s.meta())
                .map_err(|e| UserError::input(format!("corrupt score object: {e}")))?;
            rows.push(label.row(&v));
        }
        let tests: Vec<_> = inputs.all("statistic").collect();
        if tests.len() != self.statistics.len() {
            return Err(NodeError::new(format!(
                "the table lists {} statistics but has {} statistic inputs",
                self.statistics.len(),
                tests.len()
            )));
        }
        for (&row, t) in self.statistics.iter().zip(tests) {
            let v: serde_json::Value = serde_json::from_str(t.bundle.meta())
                .map_err(|e| UserError::input(format!("corrupt statistic object: {e}")))?;
            let r = rows
                .get_mut(row)
                .ok_or_else(|| NodeError::new("a statistic of no row"))?;
            for field in ["null", "bootstrap", "rotation_null"] {
                if !v[field].is_null() {
                    r[field] = v[field].clone();
                }
            }
            if let Some(mean) = v["null"]["mean"].as_f64() {
                r["chance_corrected"] = (r["score"].as_f64().unwrap_or(f64::NAN) - mean).into();
            }
        }
        Ok(Bundle::meta(
            serde_json::json!({ "pipeline": self.pipeline, "rows": rows }).to_string(),
        ))
    }
}

/// A JSON value as one CSV field: a string quoted where it holds a comma, quote or line
/// break, null as an empty field, numbers as JSON writes them.
pub fn csv_field(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if s.contains([',', '"', '\n']) => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Writes a table's rows as `scores.csv` and `scores.json` in `dir`; returns the CSV path.
pub fn write_results(meta: &str, dir: &std::path::Path) -> Result<std::path::PathBuf, UserError> {
    let v: serde_json::Value = serde_json::from_str(meta)
        .map_err(|e| UserError::input(format!("corrupt table object: {e}")))?;
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let k = rows
        .iter()
        .filter_map(|r| r["folds"].as_array().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut csv =
        String::from("model_a,model_b,layer_a,layer_b,depth_a,depth_b,metric,corr,score,std");
    for f in 0..k {
        csv.push_str(&format!(",fold_{}", f + 1));
    }
    csv.push_str(",n_units_a,n_units_b,nan_units,stimuli");
    // Statistics' columns, when `[statistics]` ran any: (column, field, key).
    let stat_columns: Vec<(&str, &str, &str)> = [
        ("null_mean", "null", "mean"),
        ("null_q95", "null", "quantiles"),
        ("p_value", "null", "p_value"),
        ("ci_low", "bootstrap", "low"),
        ("ci_high", "bootstrap", "high"),
        ("rotation_null_mean", "rotation_null", "mean"),
        ("rotation_p_value", "rotation_null", "p_value"),
    ]
    .into_iter()
    .filter(|(_, f, _)| rows.iter().any(|r| r[*f].is_object()))
    .collect();
    let with_null = stat_columns.iter().any(|c| c.1 == "null");
    for (c, _, _) in &stat_columns {
        csv.push_str(&format!(",{c}"));
    }
    if with_null {
        csv.push_str(",chance_corrected");
    }
    csv.push('\n');
    let field = csv_field;
    for r in &rows {
        let mut line: Vec<String> = [
            "model_a", "model_b", "layer_a", "layer_b", "depth_a", "depth_b", "metric", "corr",
            "score", "std",
        ]
        .iter()
        .map(|c| field(&r[*c]))
        .collect();
        let folds = r["folds"].as_array().cloned().unwrap_or_default();
        for f in 0..k {
            line.push(folds.get(f).map(field).unwrap_or_default());
        }
        for c in ["n_units_a", "n_units_b", "nan_units", "stimuli"] {
            line.push(field(&r[c]));
        }
        for (_, f, key) in &stat_columns {
            let v = if *key == "quantiles" {
                &r[*f][*key]["0.95"]
            } else {
                &r[*f][*key]
            };
            line.push(field(v));
        }
        if with_null {
            line.push(field(&r["chance_corrected"]));
        }
        csv.push_str(&line.join(","));
        csv.push('\n');
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| UserError::input(format!("cannot create `{}`: {e}", dir.display())))?;
    let csv_path = dir.join("scores.csv");
    write_if_changed(&csv_path, csv.as_bytes())?;
    write_if_changed(
        &dir.join("scores.json"),
        serde_json::to_string_pretty(&rows)
            .expect("rows serialise")
            .as_bytes(),
    )?;
    Ok(csv_path)
}
