//! The worker side of every remote executor: given only the store and a key, rebuild the
//! node from its recipe, check that the recipe still reproduces its key, and execute it.

use repflow_cache::{Digest, Key, Store};

use crate::execute::{execute, execute_many};
use crate::executor::Task;
use crate::files::FileDigests;
use crate::keys::KeyParts;
use crate::node::group_batches;
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
    execute_keys(store, registry, ctx, std::slice::from_ref(key), None)
        .pop()
        .expect("one outcome per key")
}

/// [`execute_key`] for each of `keys` (one Slurm array element may hold several): nodes of
/// one kind whose batches ([`crate::Kind::batch`] under `ctx`) match run together through
/// one [`execute_many`], the others alone. With `memory` (the bytes the nodes may use
/// together: a cluster job's allocation, [`crate::slurm::job_memory`]), a batch whose
/// [`crate::Kind::memory`] estimates add up to more is cut into consecutive batches that fit
/// (a node alone always runs). One outcome per key, in order; a key that fails fails alone.
pub fn execute_keys<C>(
    store: &Store,
    registry: &Registry<C>,
    ctx: &C,
    keys: &[Key],
    memory: Option<u64>,
) -> Vec<Result<WorkerOutcome, String>>
where
    C: 'static,
{
    let mut outcomes: Vec<Option<Result<WorkerOutcome, String>>> = Vec::new();
    let mut tasks = Vec::new();
    for (at, key) in keys.iter().enumerate() {
        match rebuild(store, registry, key) {
            Ok(Rebuilt::Done(d)) => outcomes.push(Some(Ok(WorkerOutcome::AlreadyDone(d)))),
            Ok(Rebuilt::Task(task)) => {
                outcomes.push(None);
                tasks.push((at, *task));
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }
    let groups = group_batches(tasks, |(_, task)| {
        task.node.batch(ctx).map(|b| (task.node.kind(), b))
    });
    let groups = groups.into_iter().flat_map(|g| match memory {
        Some(limit) if g.len() > 1 => within(store, g, limit),
        _ => vec![g],
    });
    for group in groups {
        let (ats, group): (Vec<usize>, Vec<Task<C>>) = group.into_iter().unzip();
        let results = if group.len() > 1 {
            execute_many(store, ctx, &group, None)
        } else {
            vec![execute(store, ctx, &group[0], None)]
        };
        for ((at, task), result) in ats.into_iter().zip(group).zip(results) {
            outcomes[at] = Some(
                result
                    .map(|d| WorkerOutcome::Executed(task.label.clone(), d))
                    .map_err(|e| format!("{} ({}): {}", task.label, task.key.short(), e.message)),
            );
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every key executed or refused"))
        .collect()
}

/// `group` cut into consecutive runs whose memory estimates (inputs mapped without their
/// digest check: an estimate reads shapes only) add up to at most `limit`; a node whose
/// estimate alone exceeds it, or whose inputs cannot be mapped, is a run of its own.
fn within<C>(
    store: &Store,
    group: Vec<(usize, Task<C>)>,
    limit: u64,
) -> Vec<Vec<(usize, Task<C>)>> {
    let mut runs: Vec<Vec<(usize, Task<C>)>> = Vec::new();
    let mut used = 0u64;
    for (at, task) in group {
        let bytes = crate::execute::map_inputs(&task, |d| store.peek(d))
            .map(|inputs| task.node.memory(&inputs))
            .unwrap_or(u64::MAX);
        match runs.last_mut() {
            Some(run) if used.saturating_add(bytes) <= limit => {
                run.push((at, task));
                used += bytes;
            }
            _ => {
                runs.push(vec![(at, task)]);
                used = bytes;
            }
        }
    }
    runs
}

/// What a worker finds under a key: an output already stored, or the node to execute.
enum Rebuilt<C> {
    Done(Digest),
    Task(Box<Task<C>>),
}

/// The node stored under `key`, rebuilt from its recipe and checked (see [`execute_key`]),
/// or its output when the store already has it.
fn rebuild<C>(store: &Store, registry: &Registry<C>, key: &Key) -> Result<Rebuilt<C>, String>
where
    C: 'static,
{
    if let Some((entry, _)) = store.lookup(key) {
        return entry
            .object
            .parse()
            .map(Rebuilt::Done)
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
    Ok(Rebuilt::Task(Box::new(Task {
        index: 0,
        label: recipe.label.clone(),
        key: *key,
        parts,
        input_keys: recipe.inputs.clone(),
        inputs,
        node,
    })))
}
