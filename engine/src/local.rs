//! The local executor: tasks run on a rayon pool of this process as soon as they are
//! submitted (no level barriers: a node starts when its own inputs are done).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use repflow_cache::Store;

use crate::execute::execute;
use crate::executor::{Completion, Executor, Task};

/// Runs tasks on `jobs` threads of this process.
pub struct Local<C> {
    pool: rayon::ThreadPool,
    store: Arc<Store>,
    ctx: Arc<C>,
    sender: Sender<Completion>,
    receiver: Receiver<Completion>,
    in_flight: usize,
}

impl<C: Send + Sync + 'static> Local<C> {
    /// An executor with `jobs` worker threads, writing to `store`, sharing `ctx`.
    pub fn new(jobs: usize, store: Arc<Store>, ctx: Arc<C>) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .thread_name(|i| format!("repflow-worker-{i}"))
            .build()
            .expect("a thread pool starts");
        let (sender, receiver) = channel();
        Local {
            pool,
            store,
            ctx,
            sender,
            receiver,
            in_flight: 0,
        }
    }

    /// Tasks submitted and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Completions that have arrived, without waiting.
    pub fn ready(&mut self) -> Vec<Completion> {
        let out: Vec<Completion> = self.receiver.try_iter().collect();
        self.in_flight -= out.len();
        out
    }
}

impl<C: Send + Sync + 'static> Executor<C> for Local<C> {
    fn name(&self) -> &'static str {
        "local"
    }

    fn submit(&mut self, task: Task<C>) {
        let (store, ctx, sender) = (self.store.clone(), self.ctx.clone(), self.sender.clone());
        self.in_flight += 1;
        self.pool.spawn(move || {
            let result = execute(&store, &*ctx, &task);
            // the receiver outlives every task of the run
            let _ = sender.send(Completion {
                index: task.index,
                result,
            });
        });
    }

    fn wait(&mut self) -> Vec<Completion> {
        if self.in_flight == 0 {
            return Vec::new();
        }
        let first = self.receiver.recv().expect("tasks report back");
        self.in_flight -= 1;
        let mut out = vec![first];
        out.extend(self.ready());
        out
    }
}
