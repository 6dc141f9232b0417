//! The scheduler: visits the DAG level by level (independent nodes in parallel), computes
//! each node's key from its inputs' output digests, reuses what the store has, executes
//! the rest, and keeps going past failures.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use repflow_cache::{now, Bundle, CacheError, Digest, Entry, Key, MappedBundle, Recipe, Store};
use repflow_kernels::PreparedLayer;

use super::files::FileDigests;
use super::keys::KeyParts;
use super::Dag;
use crate::error::UserError;
use crate::nodes::{folds, prepared, NodeSpec};

/// What happened to a node (or, when planning, what will).
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Its output was in the store.
    Cached,
    /// It was computed.
    Executed,
    /// It failed; the message says why.
    Failed(String),
    /// An input failed, so it could not run.
    Blocked,
    /// Planning: it will run (never built, or built with another key).
    WillRun,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads.
    pub jobs: usize,
    /// Labels containing any of these are recomputed even when cached.
    pub force: Vec<String>,
    /// `false` to only plan (nothing is executed or written).
    pub execute: bool,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

/// The result of a run or plan.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Each node's state.
    pub states: Vec<State>,
    /// Each node's key parts, when its inputs were known.
    pub parts: Vec<Option<KeyParts>>,
    /// Each node's output digest, when known.
    pub digests: Vec<Option<Digest>>,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl Outcome {
    /// Number of nodes in `state`.
    pub fn count(&self, f: impl Fn(&State) -> bool) -> usize {
        self.states.iter().filter(|s| f(s)).count()
    }
}

/// Prepared layers loaded during a run, each once per settings, so that the factorisations
/// they compute lazily are shared by every score node that uses them.
#[derive(Default)]
pub struct Loaded {
    layers: Mutex<HashMap<String, Arc<LoadOnce>>>,
}

/// One prepared layer, loaded by the first score node that needs it.
type LoadOnce = OnceLock<Result<Arc<PreparedLayer>, String>>;

impl Loaded {
    fn prepared(
        &self,
        digest: &Digest,
        bundle: &MappedBundle,
        settings: &repflow_kernels::Settings,
    ) -> Result<Arc<PreparedLayer>, UserError> {
        let id = format!("{}{:?}", digest.hex(), settings);
        let cell = self
            .layers
            .lock()
            .expect("lock")
            .entry(id)
            .or_default()
            .clone();
        cell.get_or_init(|| {
            prepared::load(bundle, settings)
                .map(Arc::new)
                .map_err(|e| e.message)
        })
        .clone()
        .map_err(UserError::input)
    }
}

/// Computes a node's output from its inputs' outputs.
pub fn execute(
    spec: &NodeSpec,
    inputs: &[(Digest, MappedBundle)],
    loaded: &Loaded,
) -> Result<Bundle, UserError> {
    match spec {
        NodeSpec::Source(s) => s.run(),
        NodeSpec::Folds(f) => f.run(),
        NodeSpec::Prepared(p) => p.run(&inputs[0].1, folds::read(inputs[1].1.meta())?),
        NodeSpec::Score(s) => {
            let a = loaded.prepared(&inputs[0].0, &inputs[0].1, &s.settings)?;
            let b = loaded.prepared(&inputs[1].0, &inputs[1].1, &s.settings)?;
            s.run(&a, &b)
        }
        NodeSpec::Table(t) => t.run(&inputs.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>()),
        NodeSpec::Images(i) => i.run(),
        NodeSpec::Transform(t) => t.run(&inputs[0].1),
        NodeSpec::Weights(w) => w.run(),
        NodeSpec::Train(t) => t.run(&inputs[0].1, &inputs[1].1, inputs.get(2).map(|(_, b)| b)),
        NodeSpec::Extract(e) => e.run(&inputs[0].1, &inputs[1].1),
    }
}

/// Runs `execute` catching panics, so that one node's bug fails that node only.
fn execute_guarded(
    spec: &NodeSpec,
    inputs: &[(Digest, MappedBundle)],
    loaded: &Loaded,
) -> Result<Bundle, String> {
    match catch_unwind(AssertUnwindSafe(|| execute(spec, inputs, loaded))) {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(e.message),
        Err(p) => Err(format!(
            "internal error (please report): {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Stores a computed output and its entry; returns the output's digest.
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

struct Visit {
    state: State,
    parts: Option<KeyParts>,
    digest: Option<Digest>,
    /// An input's object was corrupt and has been removed: another pass recomputes it.
    retry: bool,
}

/// Runs (or plans) the DAG against the store.
pub fn run(dag: &Dag, store: &Store, opts: &RunOptions) -> Outcome {
    let start = Instant::now();
    let files = FileDigests::load(store.root());
    let loaded = Loaded::default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .build()
        .expect("thread pool");
    let mut merged: Option<Outcome> = None;
    // A corrupt input found while executing is removed; the next pass recomputes it.
    for _ in 0..3 {
        let (outcome, retry) = pool.install(|| pass(dag, store, opts, &files, &loaded));
        merged = Some(match merged {
            None => outcome,
            Some(prev) => {
                let mut o = outcome;
                for (s, p) in o.states.iter_mut().zip(prev.states) {
                    if *s == State::Cached && p == State::Executed {
                        *s = State::Executed;
                    }
                }
                o
            }
        });
        if !retry {
            break;
        }
    }
    let mut outcome = merged.expect("at least one pass");
    if opts.execute {
        files.save();
        let keys: Vec<Key> = outcome.parts.iter().flatten().map(KeyParts::key).collect();
        let _ = store.record_use(&keys);
    }
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome
}

fn pass(
    dag: &Dag,
    store: &Store,
    opts: &RunOptions,
    files: &FileDigests,
    loaded: &Loaded,
) -> (Outcome, bool) {
    let n = dag.nodes.len();
    let mut level = vec![0usize; n];
    for &i in &dag.order {
        level[i] = dag.nodes[i]
            .inputs
            .iter()
            .map(|&j| level[j] + 1)
            .max()
            .unwrap_or(0);
    }
    let max_level = level.iter().copied().max().unwrap_or(0);
    let mut out = Outcome {
        states: vec![State::WillRun; n],
        parts: vec![None; n],
        digests: vec![None; n],
        seconds: 0.0,
    };
    let mut retry = false;
    let bar = if opts.progress && opts.execute {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} nodes {msg}",
        )
        .expect("valid template"),
    );
    for l in 0..=max_level {
        let ids: Vec<usize> = dag
            .order
            .iter()
            .copied()
            .filter(|&i| level[i] == l)
            .collect();
        let visits: Vec<(usize, Visit)> = ids
            .par_iter()
            .map(|&i| {
                let v = visit(dag, i, &out, store, opts, files, loaded);
                bar.inc(1);
                if v.state == State::Executed {
                    bar.set_message(dag.nodes[i].label.clone());
                }
                (i, v)
            })
            .collect();
        for (i, v) in visits {
            out.states[i] = v.state;
            out.parts[i] = v.parts;
            out.digests[i] = v.digest;
            retry |= v.retry;
        }
    }
    bar.finish_and_clear();
    (out, retry)
}

fn visit(
    dag: &Dag,
    i: usize,
    done: &Outcome,
    store: &Store,
    opts: &RunOptions,
    files: &FileDigests,
    loaded: &Loaded,
) -> Visit {
    let node = &dag.nodes[i];
    let blocked = |state| Visit {
        state,
        parts: None,
        digest: None,
        retry: false,
    };
    let mut inputs = Vec::with_capacity(node.inputs.len());
    for &j in &node.inputs {
        match done.digests[j] {
            Some(d) => inputs.push((dag.nodes[j].label.clone(), d.hex())),
            None => {
                return blocked(if opts.execute {
                    State::Blocked
                } else {
                    State::WillRun
                })
            }
        }
    }
    for f in node.spec.external_files() {
        match files.digest(&f) {
            Ok(d) => inputs.push((format!("file:{}", f.display()), d.hex())),
            Err(e) => return blocked(State::Failed(e.message)),
        }
    }
    let parts = KeyParts {
        kind: node.spec.kind().into(),
        version: node.spec.version(),
        params: node.spec.key_params(),
        inputs,
    };
    let key = parts.key();
    let forced = opts.force.iter().any(|p| node.label.contains(p.as_str()));
    if !forced && i == dag.table {
        // The table is read after every run: verify its bytes now, so that a corrupt one is
        // recomputed instead of failing the run.
        if let Some((entry, _)) = store.lookup(&key) {
            if let Ok(d) = entry.object.parse::<Digest>() {
                return Visit {
                    state: State::Cached,
                    parts: Some(parts),
                    digest: Some(d),
                    retry: false,
                };
            }
        }
    } else if !forced {
        if let Some(entry) = store.entry(&key) {
            if let Ok(d) = entry.object.parse::<Digest>() {
                if store.has_object(&d) {
                    return Visit {
                        state: State::Cached,
                        parts: Some(parts),
                        digest: Some(d),
                        retry: false,
                    };
                }
            }
        }
    }
    if !opts.execute {
        return Visit {
            state: State::WillRun,
            parts: Some(parts),
            digest: None,
            retry: false,
        };
    }
    let input_keys: Vec<String> = node
        .inputs
        .iter()
        .map(|&j| {
            done.parts[j]
                .as_ref()
                .map(|p| p.key().hex())
                .unwrap_or_default()
        })
        .collect();
    let recipe = Recipe {
        key: key.hex(),
        kind: parts.kind.clone(),
        version: parts.version,
        params: parts.params.clone(),
        inputs: input_keys.clone(),
        label: node.label.clone(),
        spec: serde_json::to_value(&node.spec).expect("node specs serialise"),
    };
    let fail = |msg: String, parts: KeyParts, retry: bool| Visit {
        state: State::Failed(msg),
        parts: Some(parts),
        digest: None,
        retry,
    };
    if let Err(e) = store.put_recipe(&key, &recipe) {
        return fail(e.to_string(), parts, false);
    }
    let mut bundles = Vec::with_capacity(node.inputs.len());
    for &j in &node.inputs {
        let d = done.digests[j].expect("checked above");
        match store.get(&d) {
            Ok(b) => bundles.push((d, b)),
            Err(e) => {
                // Never use a corrupt output: drop it so that the next pass recomputes it.
                store.remove_object(&d);
                if let Some(p) = &done.parts[j] {
                    store.remove_entry(&p.key());
                }
                return fail(
                    format!("input `{}`: {e}; recomputing it", dag.nodes[j].label),
                    parts,
                    true,
                );
            }
        }
    }
    let t = Instant::now();
    match execute_guarded(&node.spec, &bundles, loaded) {
        Ok(bundle) => match commit(
            store,
            &key,
            &parts,
            input_keys,
            &bundle,
            t.elapsed().as_secs_f64(),
        ) {
            Ok(d) => Visit {
                state: State::Executed,
                parts: Some(parts),
                digest: Some(d),
                retry: false,
            },
            Err(e) => fail(e.to_string(), parts, false),
        },
        Err(msg) => fail(msg, parts, false),
    }
}
