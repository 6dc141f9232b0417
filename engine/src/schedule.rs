//! The scheduler: walks the DAG as its nodes' inputs complete (no level barriers), computes
//! each node's key from its inputs' output digests, reuses what the store has, hands the
//! rest to an [`Executor`], and keeps going past failures.
//!
//! Decide (key, lookup, recipe) → execute (the executor, anywhere) → commit (the executor
//! stores output and entry; the scheduler only records digests). Decisions for every node
//! that became ready together are made in parallel. Two nodes with one key (two models of a
//! pipeline with the same recipe and seed) are computed once: the second waits for the first
//! and takes its output as cached.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use repflow_cache::{Digest, Key, Recipe, Store};

use crate::dag::Dag;
use crate::executor::{Completion, Executor, ExecutorStats, Task};
use crate::files::FileDigests;
use crate::heartbeat::Heartbeat;
use crate::keys::KeyParts;

/// Why a node failed: its kind, key (when known), what went wrong and where its log is.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The node's kind.
    pub kind: String,
    /// Its key (hex), when its inputs were known.
    pub key: Option<String>,
    /// What went wrong.
    pub message: String,
    /// Its log, when it ran on a cluster.
    pub log: Option<PathBuf>,
}

/// What happened to a node (or, when planning, what will).
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Its output was in the store.
    Cached,
    /// It was computed.
    Executed,
    /// It failed.
    Failed(Failure),
    /// An input failed, so it could not run.
    Blocked,
    /// Planning: it will run (never built, or built with another key).
    WillRun,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Labels containing any of these are recomputed even when cached.
    pub force: Vec<String>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// The result of a run or plan.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Each node's state.
    pub states: Vec<State>,
    /// Each node's key parts, when its inputs were known.
    pub parts: Vec<Option<KeyParts>>,
    /// Each node's key (of `parts`), when its inputs were known.
    pub keys: Vec<Option<Key>>,
    /// Each node's output digest, when known.
    pub digests: Vec<Option<Digest>>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The executor's name.
    pub executor: &'static str,
    /// What the executor did.
    pub stats: ExecutorStats,
}

impl Outcome {
    /// Number of nodes whose state satisfies `f`.
    pub fn count(&self, f: impl Fn(&State) -> bool) -> usize {
        self.states.iter().filter(|s| f(s)).count()
    }
}

/// Runs the DAG against the store, executing what it lacks with `executor`.
pub fn run<C>(
    dag: &Dag<C>,
    store: &Store,
    executor: &mut dyn Executor<C>,
    opts: &RunOptions,
) -> Outcome {
    let start = Instant::now();
    let files = FileDigests::load(store.root());
    let mut merged: Option<Outcome> = None;
    // Corrupt inputs found while executing are removed; the next pass recomputes them (and
    // finds any corrupt input of theirs: at most one pass per level of the DAG).
    for _ in 0..dag.nodes.len().max(1) + 1 {
        let (outcome, retry) = pass(dag, store, Some(&mut *executor), opts, &files);
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
    files.save();
    let keys: Vec<Key> = outcome.keys.iter().flatten().copied().collect();
    let _ = store.record_use(&keys);
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome.executor = executor.name();
    outcome.stats = executor.stats();
    outcome
}

/// Every node's state against the store, executing and writing nothing.
pub fn plan<C>(dag: &Dag<C>, store: &Store) -> Outcome {
    let start = Instant::now();
    let files = FileDigests::load(store.root());
    let (mut outcome, _) = pass(dag, store, None, &RunOptions::default(), &files);
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome
}

/// What the scheduler decided for a ready node.
enum Decision {
    /// Its output is in the store.
    Cached(KeyParts, Key, Digest),
    /// It must run; its recipe (with these input keys) is in the store.
    Run(KeyParts, Key, Vec<String>),
    /// Planning only: it would run.
    WouldRun(Option<(KeyParts, Key)>),
    /// It cannot run.
    Stop(State, Option<(KeyParts, Key)>),
}

/// The mutable state of one pass.
struct Pass {
    out: Outcome,
    waiting: Vec<usize>,
    ready: Vec<usize>,
    /// Nodes handed to the executor (for the heartbeat's running kinds).
    submitted: Vec<bool>,
    /// Nodes waiting for a node in flight with the same key, by that node.
    followers: HashMap<usize, Vec<usize>>,
    /// The node in flight for each key being computed.
    computing: HashMap<Key, usize>,
    heartbeat: Heartbeat,
}

impl Pass {
    /// Records node `i`'s end and makes its dependents ready when it was their last input.
    fn finish<C>(
        &mut self,
        dag: &Dag<C>,
        i: usize,
        state: State,
        digest: Option<Digest>,
        bar: &ProgressBar,
    ) {
        if state == State::Executed {
            bar.set_message(dag.nodes[i].label.clone());
        }
        bar.inc(1);
        let ran = self.submitted[i].then(|| dag.nodes[i].node.kind());
        self.heartbeat.finished(ran, state == State::Executed);
        self.out.states[i] = state;
        self.out.digests[i] = digest;
        for &d in &dag.dependents[i] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                self.ready.push(d);
            }
        }
    }
}

fn pass<C>(
    dag: &Dag<C>,
    store: &Store,
    mut executor: Option<&mut dyn Executor<C>>,
    opts: &RunOptions,
    files: &FileDigests,
) -> (Outcome, bool) {
    let n = dag.nodes.len();
    let execute = executor.is_some();
    let mut p = Pass {
        out: Outcome {
            states: vec![State::WillRun; n],
            parts: vec![None; n],
            keys: vec![None; n],
            digests: vec![None; n],
            seconds: 0.0,
            executor: "none",
            stats: ExecutorStats::default(),
        },
        waiting: dag.nodes.iter().map(|d| d.inputs.len()).collect(),
        ready: dag
            .order
            .iter()
            .copied()
            .filter(|&i| dag.nodes[i].inputs.is_empty())
            .collect(),
        submitted: vec![false; n],
        followers: HashMap::new(),
        computing: HashMap::new(),
        // a log line every 10 s where no progress bar can be drawn
        heartbeat: Heartbeat::start(
            opts.progress && execute && !std::io::stderr().is_terminal(),
            n,
            Duration::from_secs(10),
        ),
    };
    let bar = if opts.progress && execute {
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
    let mut in_flight = 0usize;
    let mut retry = false;
    loop {
        if !p.ready.is_empty() {
            let batch = std::mem::take(&mut p.ready);
            // submitted together, so that an executor can batch nodes of one kind
            let mut tasks = Vec::new();
            let decisions: Vec<(usize, Decision)> = batch
                .par_iter()
                .map(|&i| (i, decide(dag, i, &p, store, files, opts, execute)))
                .collect();
            for (i, d) in decisions {
                match d {
                    Decision::Cached(parts, key, digest) => {
                        p.out.keys[i] = Some(key);
                        p.out.parts[i] = Some(parts);
                        p.finish(dag, i, State::Cached, Some(digest), &bar);
                    }
                    Decision::WouldRun(keyed) => {
                        (p.out.parts[i], p.out.keys[i]) = keyed.unzip();
                        p.finish(dag, i, State::WillRun, None, &bar);
                    }
                    Decision::Stop(state, keyed) => {
                        (p.out.parts[i], p.out.keys[i]) = keyed.unzip();
                        p.finish(dag, i, state, None, &bar);
                    }
                    Decision::Run(parts, key, _) if p.computing.contains_key(&key) => {
                        // the same key is in flight: wait for it rather than compute it twice
                        p.out.keys[i] = Some(key);
                        p.out.parts[i] = Some(parts);
                        p.followers.entry(p.computing[&key]).or_default().push(i);
                    }
                    Decision::Run(parts, key, input_keys) => {
                        let node = &dag.nodes[i];
                        let task = Task {
                            index: i,
                            label: node.label.clone(),
                            key,
                            parts: parts.clone(),
                            input_keys,
                            inputs: node
                                .inputs
                                .iter()
                                .map(|(name, j)| {
                                    (name.clone(), p.out.digests[*j].expect("inputs are done"))
                                })
                                .collect(),
                            node: node.node.clone(),
                        };
                        p.out.keys[i] = Some(key);
                        p.out.parts[i] = Some(parts);
                        p.submitted[i] = true;
                        p.computing.insert(key, i);
                        p.heartbeat.started(node.node.kind());
                        in_flight += 1;
                        tasks.push(task);
                    }
                }
            }
            if !tasks.is_empty() {
                executor
                    .as_mut()
                    .expect("runs have an executor")
                    .submit_all(tasks);
            }
            continue;
        }
        if in_flight == 0 {
            break;
        }
        let completions: Vec<Completion> = executor.as_mut().expect("runs have an executor").wait();
        assert!(
            !completions.is_empty(),
            "an executor with tasks in flight reported nothing"
        );
        for c in completions {
            in_flight -= 1;
            let i = c.index;
            if let Some(key) = p.out.keys[i] {
                p.computing.remove(&key);
            }
            let followers = p.followers.remove(&i).unwrap_or_default();
            match c.result {
                Ok(digest) => {
                    p.finish(dag, i, State::Executed, Some(digest), &bar);
                    for f in followers {
                        p.finish(dag, f, State::Cached, Some(digest), &bar);
                    }
                }
                Err(e) => {
                    for &pos in &e.corrupt_inputs {
                        let j = dag.nodes[i].inputs[pos].1;
                        if let Some(k) = p.out.keys[j] {
                            store.remove_entry(&k);
                        }
                        retry = true;
                    }
                    let failure = Failure {
                        kind: dag.nodes[i].node.kind().to_string(),
                        key: p.out.keys[i].map(|k| k.hex()),
                        message: e.message,
                        log: e.log,
                    };
                    for f in followers {
                        p.finish(dag, f, State::Failed(failure.clone()), None, &bar);
                    }
                    p.finish(dag, i, State::Failed(failure), None, &bar);
                }
            }
        }
    }
    bar.finish_and_clear();
    (p.out, retry)
}

/// The keys (hex) of node `i`'s inputs, in input order.
fn input_keys<C>(dag: &Dag<C>, i: usize, keys: &[Option<Key>]) -> Vec<String> {
    dag.nodes[i]
        .inputs
        .iter()
        .map(|(_, j)| keys[*j].map(|k| k.hex()).unwrap_or_default())
        .collect()
}

fn decide<C>(
    dag: &Dag<C>,
    i: usize,
    p: &Pass,
    store: &Store,
    files: &FileDigests,
    opts: &RunOptions,
    execute: bool,
) -> Decision {
    let entry = &dag.nodes[i];
    let node = entry.node.as_ref();
    let mut inputs = Vec::with_capacity(entry.inputs.len());
    for (_, j) in &entry.inputs {
        match p.out.digests[*j] {
            Some(d) => inputs.push((dag.nodes[*j].label.clone(), d.hex())),
            None if execute => return Decision::Stop(State::Blocked, None),
            None => return Decision::WouldRun(None),
        }
    }
    let mut file_digests = Vec::new();
    for f in node.external_files() {
        match files.digest(&f) {
            Ok(d) => file_digests.push((f.display().to_string(), d.hex())),
            Err(message) => {
                let failure = Failure {
                    kind: node.kind().to_string(),
                    key: None,
                    message,
                    log: None,
                };
                return Decision::Stop(State::Failed(failure), None);
            }
        }
    }
    inputs.extend(
        file_digests
            .iter()
            .map(|(f, d)| (format!("file:{f}"), d.clone())),
    );
    let parts = KeyParts {
        kind: node.kind().into(),
        version: node.version(),
        params: node.key_params(),
        inputs,
    };
    let key = parts.key();
    let forced = opts.force.iter().any(|f| entry.label.contains(f.as_str()));
    if !forced {
        let cached = if node.verify_when_cached() {
            store
                .lookup(&key)
                .and_then(|(e, _)| e.object.parse::<Digest>().ok())
        } else {
            store
                .entry(&key)
                .and_then(|e| e.object.parse::<Digest>().ok())
                .filter(|d| store.has_object(d))
        };
        if let Some(d) = cached {
            return Decision::Cached(parts, key, d);
        }
    }
    if !execute {
        return Decision::WouldRun(Some((parts, key)));
    }
    let inputs = input_keys(dag, i, &p.out.keys);
    let recipe = Recipe {
        key: key.hex(),
        kind: parts.kind.clone(),
        version: parts.version,
        params: parts.params.clone(),
        inputs: inputs.clone(),
        input_names: entry.inputs.iter().map(|(n, _)| n.clone()).collect(),
        files: file_digests,
        label: entry.label.clone(),
        spec: node.recipe(),
    };
    if let Err(e) = store.put_recipe(&key, &recipe) {
        let failure = Failure {
            kind: parts.kind.clone(),
            key: Some(key.hex()),
            message: e.to_string(),
            log: None,
        };
        return Decision::Stop(State::Failed(failure), Some((parts, key)));
    }
    Decision::Run(parts, key, inputs)
}
