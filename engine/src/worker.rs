//! The worker side of every remote executor: given only the store and a key, rebuild the
//! node from its recipe, check that the recipe still reproduces its key, and execute it.

use repflow_cache::{Digest, Key, Store};

use crate::execute::execute;
use crate::executor::Task;
use crate::files::FileDigests;
use crate::keys::KeyParts;
use crate::registry::Registry;

/// What a worker did with a key.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerOutcome {
    /// The store already had its output.
    AlreadyDone(Digest),
    /// It executed the node (its label) and stored the output.
    Executed(String, Digest),
}

/// Executes the node stored under `key` unless its output exists. Errors name the key and
/// say what is wrong: no recipe, a recipe that does not decode, an input that is not in the
/// store, a file that changed since the run planned the node, or a recipe that no longer
/// reproduces its key.
pub fn execute_key<C>(
    store: &Store,
    registry: &Registry<C>,
    ctx: &C,
    key: &Key,
) -> Result<WorkerOutcome, String>
where
    C: 'static,
{
    if let Some((entry, _)) = store.lookup(key) {
        return entry
            .object
            .parse()
            .map(WorkerOutcome::AlreadyDone)
            .map_err(|e| format!("entry {}: {e}", key.short()));
    }
    let recipe = store.recipe(key).ok_or_else(|| {
        format!(
            "the store has no recipe for key {}; `repflow run` records recipes of the nodes it schedules",
            key.short()
        )
    })?;
    let at = |msg: String| format!("{} ({}): {msg}", recipe.label, key.short());
    let node = registry
        .decode(&recipe.kind, recipe.version, recipe.spec.clone())
        .map_err(at)?;
    if recipe.input_names.len() != recipe.inputs.len() {
        return Err(at("the recipe names none of its inputs (written by an older repflow); run the pipeline again to rewrite it".into()));
    }
    let mut inputs = Vec::with_capacity(recipe.inputs.len());
    let mut key_inputs = Vec::new();
    for (k, name) in recipe.inputs.iter().zip(&recipe.input_names) {
        let ik: Key = k.parse().map_err(at)?;
        let entry = store.entry(&ik).ok_or_else(|| {
            at(format!(
                "input `{name}` ({}) is not in the store; execute it first",
                ik.short()
            ))
        })?;
        let d: Digest = entry.object.parse().map_err(at)?;
        key_inputs.push((k.clone(), d.hex()));
        inputs.push((name.clone(), d));
    }
    let files = FileDigests::load(store.root());
    for (path, expected) in &recipe.files {
        let now = files.digest(std::path::Path::new(path)).map_err(at)?;
        if now.hex() != *expected {
            return Err(at(format!(
                "`{path}` changed since the run planned this node; run the pipeline again"
            )));
        }
        key_inputs.push((format!("file:{path}"), expected.clone()));
    }
    let parts = KeyParts {
        kind: node.kind().into(),
        version: node.version(),
        params: node.key_params(),
        inputs: key_inputs,
    };
    if parts.key() != *key {
        return Err(at(
            "the recipe does not reproduce its key (its parameters or inputs differ); run the pipeline again".into(),
        ));
    }
    let task = Task {
        index: 0,
        label: recipe.label.clone(),
        key: *key,
        parts,
        input_keys: recipe.inputs.clone(),
        inputs,
        node,
    };
    let digest = execute(store, ctx, &task, None).map_err(|e| at(e.message))?;
    Ok(WorkerOutcome::Executed(recipe.label, digest))
}
