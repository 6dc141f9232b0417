//! The executor seam: the scheduler hands an [`Executor`] nodes whose inputs are done and
//! whose outputs the store lacks ([`Task`]s); the executor runs them somewhere and reports
//! each as a [`Completion`]. The scheduler is the same for every executor.

use std::path::PathBuf;
use std::sync::Arc;

use repflow_cache::{Digest, Key};

use crate::keys::KeyParts;
use crate::node::Node;

/// A node ready to run: its key, recipe already in the store, inputs done.
pub struct Task<C> {
    /// The node's index in the DAG.
    pub index: usize,
    /// Its label.
    pub label: String,
    /// Its key.
    pub key: Key,
    /// What its key is made of.
    pub parts: KeyParts,
    /// Its inputs' keys (hex), in input order.
    pub input_keys: Vec<String>,
    /// Its inputs: (name, output digest), in input order.
    pub inputs: Vec<(String, Digest)>,
    /// The node.
    pub node: Arc<dyn Node<C>>,
}

/// Why a task produced no output.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    /// What went wrong, in one line.
    pub message: String,
    /// The positions of every input whose object was corrupt or missing (they have been
    /// removed from the store; the scheduler recomputes them all in its next pass).
    pub corrupt_inputs: Vec<usize>,
    /// Where the task's log is, when it ran elsewhere.
    pub log: Option<PathBuf>,
}

impl TaskError {
    /// An error with `message` only.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            corrupt_inputs: Vec::new(),
            log: None,
        }
    }
}

/// A task that ended.
pub struct Completion {
    /// The node's index in the DAG.
    pub index: usize,
    /// Its output's digest (the output and its entry are in the store), or why not.
    pub result: Result<Digest, TaskError>,
}

/// Counts an executor reports at the end of a run (zero for the local one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExecutorStats {
    /// Array elements handed to the cluster (resubmissions included); an element runs one
    /// node, or a batch of nodes of one kind.
    pub submitted: usize,
    /// Cluster jobs (arrays) submitted.
    pub arrays: usize,
    /// Nodes resubmitted after their element failed.
    pub retries: usize,
    /// Nodes that ran in a batch with others of their kind ([`crate::Kind::batch`]).
    pub batched: usize,
}

/// Runs tasks somewhere and reports their completions.
pub trait Executor<C> {
    /// Its name, for summaries (`local`, `slurm`).
    fn name(&self) -> &'static str;
    /// Starts `task` (or queues it until the next [`wait`](Executor::wait)).
    fn submit(&mut self, task: Task<C>);
    /// Starts `tasks`, all known at once (so that an executor can batch them).
    fn submit_all(&mut self, tasks: Vec<Task<C>>) {
        for t in tasks {
            self.submit(t);
        }
    }
    /// Waits until at least one submitted task has ended and returns every task that has;
    /// empty only when nothing is in flight.
    fn wait(&mut self) -> Vec<Completion>;
    /// What it did so far.
    fn stats(&self) -> ExecutorStats {
        ExecutorStats::default()
    }
}
