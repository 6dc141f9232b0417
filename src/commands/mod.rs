//! One module per command.

pub mod cache;
pub mod exec_node;
pub mod extract;
pub mod extract_text;
pub mod pairs;
pub mod plan;
pub mod run;
pub mod score;
pub mod shift;
pub mod train;
pub mod train_lm;
pub mod why;

use std::path::Path;

use repflow_cache::Store;
use repflow_engine::KeyParts;

use crate::error::UserError;
use crate::pipeline;
use crate::pipeline::graph::PipelineDag;

/// Loads, expands and builds a pipeline's DAG.
pub fn load_dag(path: &Path) -> Result<PipelineDag, UserError> {
    load_plan_and_dag(path).map(|(_, dag)| dag)
}

/// Loads and expands a pipeline, and builds its DAG (for callers that also need the plan).
pub fn load_plan_and_dag(path: &Path) -> Result<(pipeline::Plan, PipelineDag), UserError> {
    let plan = pipeline::expand(pipeline::load(path)?)?;
    let dag = pipeline::graph::build(&plan)?;
    Ok((plan, dag))
}

/// Opens the store in `dir`.
pub fn open_store(dir: &Path) -> Result<Store, UserError> {
    Store::open(dir)
        .map_err(|e| UserError::input(format!("cannot open the store `{}`: {e}", dir.display())))
}

/// Opens the store at `dir` to read it only (listing, planning): nothing is created, and a
/// read-only store works.
pub fn open_store_read_only(dir: &Path) -> Result<Store, UserError> {
    Store::open_read_only(dir)
        .map_err(|e| UserError::input(format!("cannot open the store `{}`: {e}", dir.display())))
}

/// Where a pipeline's last key parts are kept (for `repflow why` and `plan`'s stale state).
fn state_path(store: &Store, pipeline: &Path) -> std::path::PathBuf {
    let abs = std::fs::canonicalize(pipeline).unwrap_or_else(|_| pipeline.to_path_buf());
    let id = repflow_cache::Digest::of(abs.to_string_lossy().as_bytes()).short();
    store.root().join("pipelines").join(format!("{id}.json"))
}

/// The key parts of each node label at the pipeline's last run.
pub fn load_state(store: &Store, pipeline: &Path) -> std::collections::BTreeMap<String, KeyParts> {
    std::fs::read(state_path(store, pipeline))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Saves the key parts of each node label after a run.
pub fn save_state(
    store: &Store,
    pipeline: &Path,
    state: &std::collections::BTreeMap<String, KeyParts>,
) {
    let path = state_path(store, pipeline);
    let _ = std::fs::create_dir_all(path.parent().expect("state files have a folder"));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, serde_json::to_vec(state).expect("state serialises")).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}
