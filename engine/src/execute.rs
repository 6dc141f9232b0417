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
    let inputs = read_inputs(store, task)?;
    let _reservation = match budget {
        Some(b) => Some(
            b.reserve(task.node.memory(&inputs))
                .map_err(TaskError::new)?,
        ),
        None => None,
    };
    let t = Instant::now();
    let bundle = run_guarded(task.node.as_ref(), ctx, &inputs).map_err(TaskError::new)?;
    store_output(store, task, &bundle, t.elapsed().as_secs_f64())
}

/// Stores `task`'s output and entry ([`commit`]); the task's error when that fails.
fn store_output<C>(
    store: &Store,
    task: &Task<C>,
    bundle: &Bundle,
    seconds: f64,
) -> Result<Digest, TaskError> {
    commit(
        store,
        &task.key,
        &task.parts,
        task.input_keys.clone(),
        bundle,
        seconds,
    )
    .map_err(|e| TaskError::new(e.to_string()))
}

/// `task`'s inputs from the store, verified; an input found corrupt or missing is removed
/// (never used: the scheduler recomputes it) and the task fails saying so.
fn read_inputs<C>(store: &Store, task: &Task<C>) -> Result<Inputs, TaskError> {
    map_inputs(task, |d| store.get(d)).map_err(|bad| {
        for (position, _) in &bad {
            store.remove_object(&task.inputs[*position].1);
        }
        TaskError {
            message: format!(
                "{}; recomputing",
                bad.iter()
                    .map(|(_, why)| why.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            corrupt_inputs: bad.into_iter().map(|(position, _)| position).collect(),
            log: None,
        }
    })
}

/// Runs `tasks` — nodes of one kind with equal batch keys ([`crate::Batch`]) — together
/// through the kind's `run_many`, and stores each output as [`execute`] does; one result per
/// task, in order. A task whose inputs cannot be read fails alone; where the batch's memory
/// estimates together exceed `budget`, or `run_many` panics, each task runs alone instead.
/// Each entry records the batch's time divided among its nodes.
pub fn execute_many<C>(
    store: &Store,
    ctx: &C,
    tasks: &[Task<C>],
    budget: Option<&MemoryBudget>,
) -> Vec<Result<Digest, TaskError>> {
    let read: Vec<Result<Inputs, TaskError>> =
        tasks.iter().map(|t| read_inputs(store, t)).collect();
    let ready: Vec<usize> = (0..tasks.len()).filter(|&i| read[i].is_ok()).collect();
    let inputs = |i: usize| read[i].as_ref().expect("read");
    let alone = || -> Vec<Result<Digest, TaskError>> {
        tasks
            .iter()
            .map(|t| execute(store, ctx, t, budget))
            .collect()
    };
    let bytes: u64 = ready.iter().map(|&i| tasks[i].node.memory(inputs(i))).sum();
    let _reservation = match budget {
        Some(b) if bytes > b.limit() => return alone(),
        Some(b) => match b.reserve(bytes) {
            Ok(r) => Some(r),
            Err(_) => return alone(),
        },
        None => None,
    };
    let Some(&first) = ready.first() else {
        return alone();
    };
    let t = Instant::now();
    let batch: Vec<(&dyn Node<C>, &Inputs)> = ready
        .iter()
        .map(|&i| (tasks[i].node.as_ref(), inputs(i)))
        .collect();
    let outputs = match catch_unwind(AssertUnwindSafe(|| tasks[first].node.run_many(ctx, &batch))) {
        Ok(outputs) if outputs.len() == ready.len() => outputs,
        // a bug in one node fails that node only: run each alone
        _ => {
            drop(_reservation);
            return alone();
        }
    };
    let seconds = t.elapsed().as_secs_f64() / ready.len() as f64;
    // the outputs belong, in order, to the tasks whose inputs were read
    let mut outputs = outputs.into_iter();
    read.into_iter()
        .zip(tasks)
        .map(|(r, task)| {
            r?;
            let bundle = outputs
                .next()
                .expect("an output per task read")
                .map_err(|e| TaskError::new(e.message))?;
            store_output(store, task, &bundle, seconds)
        })
        .collect()
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
