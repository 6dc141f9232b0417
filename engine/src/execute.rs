//! Executing one task in this process: read its inputs from the store (verified), run the
//! node with panics caught, store its output and entry. The local executor and a cluster
//! worker (`repflow exec-node`) both come here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use repflow_cache::{now, Bundle, CacheError, Digest, Entry, Key, MappedBundle, Store};

use crate::budget::MemoryBudget;
use crate::executor::{Task, TaskError};
use crate::keys::KeyParts;
use crate::node::{Input, Inputs, Node, NodeError};

/// Runs `task` against `store` with the per-run context `ctx`, within `budget` when there is
/// one (it waits for room, or fails when the node alone exceeds it); returns its output's
/// digest.
pub fn execute<C>(
    store: &Store,
    ctx: &C,
    task: &Task<C>,
    budget: Option<&MemoryBudget>,
) -> Result<Digest, TaskError> {
    let inputs = match map_inputs(task, |d| store.get(d)) {
        Ok(inputs) => inputs,
        Err(bad) => {
            // Never use a corrupt output: drop it so that the scheduler recomputes it.
            for (position, _) in &bad {
                store.remove_object(&task.inputs[*position].1);
            }
            return Err(TaskError {
                message: format!(
                    "{}; recomputing",
                    bad.iter()
                        .map(|(_, why)| why.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                corrupt_inputs: bad.into_iter().map(|(position, _)| position).collect(),
                log: None,
            });
        }
    };
    let _reservation = match budget {
        Some(b) => Some(
            b.reserve(task.node.memory(&inputs))
                .map_err(TaskError::new)?,
        ),
        None => None,
    };
    let t = Instant::now();
    let bundle = run_guarded(task.node.as_ref(), ctx, &inputs).map_err(TaskError::new)?;
    commit(
        store,
        &task.key,
        &task.parts,
        task.input_keys.clone(),
        &bundle,
        t.elapsed().as_secs_f64(),
    )
    .map_err(|e| TaskError::new(e.to_string()))
}

/// `task`'s inputs, each mapped by `map` (the store's `get`, or `peek` for an estimate); on
/// failure, the position of every input that could not be mapped, and why. Every input is
/// tried, so that all the corrupt ones are recomputed in one pass.
pub(crate) fn map_inputs<C>(
    task: &Task<C>,
    map: impl Fn(&Digest) -> Result<MappedBundle, CacheError>,
) -> Result<Inputs, Vec<(usize, String)>> {
    let mut items = Vec::with_capacity(task.inputs.len());
    let mut bad = Vec::new();
    for (position, (name, digest)) in task.inputs.iter().enumerate() {
        match map(digest) {
            Ok(bundle) => items.push(Input {
                name: name.clone(),
                digest: *digest,
                bundle,
            }),
            Err(e) => bad.push((position, format!("input `{name}`: {e}"))),
        }
    }
    if bad.is_empty() {
        Ok(Inputs::new(items))
    } else {
        Err(bad)
    }
}

/// Runs a node, catching panics so that one node's bug fails that node only.
fn run_guarded<C>(node: &dyn Node<C>, ctx: &C, inputs: &Inputs) -> Result<Bundle, String> {
    match catch_unwind(AssertUnwindSafe(|| node.run(ctx, inputs))) {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(NodeError { message })) => Err(message),
        Err(p) => Err(format!(
            "internal error (please report): {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Stores a computed output, then its entry; returns the output's digest.
pub fn commit(
    store: &Store,
    key: &Key,
    parts: &KeyParts,
    input_keys: Vec<String>,
    bundle: &Bundle,
    seconds: f64,
) -> Result<Digest, CacheError> {
    let bytes = bundle.to_bytes();
    let digest = store.put(&bytes)?;
    let entry = Entry {
        key: key.hex(),
        kind: parts.kind.clone(),
        version: parts.version,
        params: parts.params.clone(),
        inputs: input_keys,
        object: digest.hex(),
        size: bytes.len() as u64,
        seconds,
        created: now(),
    };
    store.put_entry(key, &entry)?;
    Ok(digest)
}
