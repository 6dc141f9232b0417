//! The local executor: tasks run on `jobs` threads of this process as soon as they are
//! submitted (no level barriers: a node starts when its own inputs are done).
//!
//! The task threads are plain threads, not rayon workers: a node's own parallel work goes
//! to rayon's pool, where a worker waiting in a join can only pick up parallel work, never a
//! whole other node (nodes picked up inside joins nest on one stack without bound and
//! overflowed it in the reduced audit).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use repflow_cache::Store;

use crate::budget::MemoryBudget;
use crate::execute::execute;
use crate::executor::{Completion, Executor, Task};

/// Stack of each task thread: networks and decompositions recurse deeply.
const STACK_BYTES: usize = 64 << 20;

/// Runs tasks on `jobs` threads of this process.
pub struct Local<C> {
    tasks: Option<Sender<Task<C>>>,
    receiver: Receiver<Completion>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
}

impl<C: Send + Sync + 'static> Local<C> {
    /// An executor with `jobs` task threads, writing to `store`, sharing `ctx`.
    pub fn new(jobs: usize, store: Arc<Store>, ctx: Arc<C>) -> Self {
        Self::with_budget(jobs, store, ctx, None)
    }

    /// [`Local::new`], its nodes admitted within `budget` when there is one.
    pub fn with_budget(
        jobs: usize,
        store: Arc<Store>,
        ctx: Arc<C>,
        budget: Option<Arc<MemoryBudget>>,
    ) -> Self {
        let (tasks, queue) = channel::<Task<C>>();
        let queue = Arc::new(Mutex::new(queue));
        let (sender, receiver) = channel();
        let threads = (0..jobs.max(1))
            .map(|i| {
                let (queue, sender) = (queue.clone(), sender.clone());
                let (store, ctx, budget) = (store.clone(), ctx.clone(), budget.clone());
                std::thread::Builder::new()
                    .name(format!("repflow-task-{i}"))
                    .stack_size(STACK_BYTES)
                    .spawn(move || loop {
                        // the lock is held only while taking a task
                        let next = queue.lock().expect("task queue").recv();
                        let Ok(task) = next else { break };
                        let result = execute(&store, &*ctx, &task, budget.as_deref());
                        // the receiver outlives every task of the run
                        let _ = sender.send(Completion {
                            index: task.index,
                            result,
                        });
                    })
                    .expect("a task thread starts")
            })
            .collect();
        Local {
            tasks: Some(tasks),
            receiver,
            threads,
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
        self.in_flight += 1;
        self.tasks
            .as_ref()
            .expect("open until dropped")
            .send(task)
            .expect("task threads run until the executor is dropped");
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

impl<C> Drop for Local<C> {
    fn drop(&mut self) {
        // closing the queue ends every thread once its task is done
        self.tasks = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
