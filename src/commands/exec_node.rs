//! `repflow exec-node KEY`: execute one node given only the store and its key — what a
//! cluster worker (one Slurm task per node) runs.

use std::time::Instant;

use repflow_cache::Digest;

use crate::cli::ExecNodeArgs;
use crate::dag::keys::KeyParts;
use crate::dag::run::{commit, execute, Loaded};
use crate::error::UserError;
use crate::nodes::NodeSpec;

/// Executes the node whose recipe is stored under `args.key`, unless its output exists.
pub fn run(args: &ExecNodeArgs) -> Result<(), UserError> {
    let store = super::open_store(&args.store.dir())?;
    let key: Digest = args.key.parse().map_err(UserError::input)?;
    if store.lookup(&key).is_some() {
        println!("{} is already in the store", key.short());
        return Ok(());
    }
    let recipe = store.recipe(&key).ok_or_else(|| {
        UserError::input(format!("the store has no recipe for key {}", key.short()))
            .hint("`repflow run` records recipes of the nodes it schedules")
    })?;
    let spec: NodeSpec = serde_json::from_value(recipe.spec.clone())
        .map_err(|e| UserError::input(format!("unreadable recipe: {e}")))?;
    let mut inputs = Vec::new();
    let mut parts_inputs = Vec::new();
    for k in &recipe.inputs {
        let ik: Digest = k.parse().map_err(UserError::input)?;
        let (entry, bundle) = store.lookup(&ik).ok_or_else(|| {
            UserError::input(format!(
                "input {} of {} is not in the store; execute it first",
                ik.short(),
                recipe.label
            ))
        })?;
        let d: Digest = entry.object.parse().map_err(UserError::input)?;
        parts_inputs.push((k.clone(), d.hex()));
        inputs.push((d, bundle));
    }
    let parts = KeyParts {
        kind: recipe.kind.clone(),
        version: recipe.version,
        params: recipe.params.clone(),
        inputs: parts_inputs,
    };
    let t = Instant::now();
    let bundle = execute(&spec, &inputs, &Loaded::default())?;
    commit(
        &store,
        &key,
        &parts,
        recipe.inputs.clone(),
        &bundle,
        t.elapsed().as_secs_f64(),
    )
    .map_err(|e| UserError::input(e.to_string()))?;
    println!("executed {} ({})", recipe.label, key.short());
    Ok(())
}
