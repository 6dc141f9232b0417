//! The local executor: tasks run on `jobs` threads of this process as soon as they are
//! submitted (no level barriers: a node starts when its own inputs are done).
//!
//! The task threads are plain threads, not rayon workers: a node's own parallel work goes
//! to rayon's pool, where a worker waiting in a join can only pick up parallel work, never a
//! whole other node (nodes picked up inside joins nest on one stack without bound and
//! overflowed it in the reduced audit).
//!
//! A thread taking a task whose kind batches ([`crate::Kind::batch`]) takes with it the
//! queued tasks of the same kind and batch key, up to the batch's size, and runs them in one
//! [`execute_many`] call.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use repflow_cache::Store;

use crate::budget::MemoryBudget;
use crate::execute::{execute, execute_many};
use crate::executor::{Completion, Executor, ExecutorStats, Task};
use crate::node::Batch;

/// Stack of each task thread: networks and decompositions recurse deeply.
const STACK_BYTES: usize = 64 << 20;

/// A queued task and how it may be batched (kind and key), decided when it was submitted.
struct Queued<C> {
    task: Task<C>,
    batch: Option<(&'static str, Batch)>,
}

/// The tasks not yet taken, and whether more may come.
struct Queue<C> {
    tasks: VecDeque<Queued<C>>,
    open: bool,
}

type Shared<C> = Arc<(Mutex<Queue<C>>, Condvar)>;

/// Runs tasks on `jobs` threads of this process.
pub struct Local<C> {
    queue: Shared<C>,
    ctx: Arc<C>,
    receiver: Receiver<(Completion, bool)>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
    batched: usize,
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
        let queue: Shared<C> = Arc::new((
            Mutex::new(Queue {
                tasks: VecDeque::new(),
                open: true,
            }),
            Condvar::new(),
        ));
        let (sender, receiver) = channel();
        let threads = (0..jobs.max(1))
            .map(|i| {
                let (queue, sender) = (queue.clone(), sender.clone());
                let (store, ctx, budget) = (store.clone(), ctx.clone(), budget.clone());
                std::thread::Builder::new()
                    .name(format!("repflow-task-{i}"))
                    .stack_size(STACK_BYTES)
                    .spawn(move || {
                        while let Some(tasks) = take(&queue) {
                            let batched = tasks.len() > 1;
                            let results = if batched {
                                execute_many(&store, &*ctx, &tasks, budget.as_deref())
                            } else {
                                vec![execute(&store, &*ctx, &tasks[0], budget.as_deref())]
                            };
                            for (task, result) in tasks.iter().zip(results) {
                                let c = Completion {
                                    index: task.index,
                                    result,
                                };
                                // the receiver outlives every task of the run
                                let _ = sender.send((c, batched));
                            }
                        }
                    })
                    .expect("a task thread starts")
            })
            .collect();
        Local {
            queue,
            ctx,
            receiver,
            threads,
            in_flight: 0,
            batched: 0,
        }
    }

    /// Tasks submitted and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Completions that have arrived, without waiting.
    pub fn ready(&mut self) -> Vec<Completion> {
        let out: Vec<(Completion, bool)> = self.receiver.try_iter().collect();
        self.in_flight -= out.len();
        self.batched += out.iter().filter(|(_, b)| *b).count();
        out.into_iter().map(|(c, _)| c).collect()
    }

    /// How `task` may be batched in this run: its kind and [`Batch`] when its kind batches
    /// more than one node at a time.
    pub fn batch_of(&self, task: &Task<C>) -> Option<(&'static str, Batch)> {
        task.node
            .batch(&self.ctx)
            .filter(|b| b.max > 1)
            .map(|b| (task.node.kind(), b))
    }

    fn queued(&self, task: Task<C>) -> Queued<C> {
        let batch = self.batch_of(&task);
        Queued { task, batch }
    }
}

/// The next task and, when its kind batches, the queued tasks of its kind and batch key
/// (up to the batch's size); `None` once the queue is closed and empty.
fn take<C>(queue: &Shared<C>) -> Option<Vec<Task<C>>> {
    let (lock, ready) = &**queue;
    let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(first) = q.tasks.pop_front() {
            let Some((kind, batch)) = first.batch else {
                return Some(vec![first.task]);
            };
            let mut tasks = vec![first.task];
            let mut rest = VecDeque::with_capacity(q.tasks.len());
            for queued in q.tasks.drain(..) {
                let same = tasks.len() < batch.max
                    && queued
                        .batch
                        .as_ref()
                        .is_some_and(|(k, b)| *k == kind && b.key == batch.key);
                if same {
                    tasks.push(queued.task);
                } else {
                    rest.push_back(queued);
                }
            }
            q.tasks = rest;
            return Some(tasks);
        }
        if !q.open {
            return None;
        }
        q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
    }
}

impl<C: Send + Sync + 'static> Executor<C> for Local<C> {
    fn name(&self) -> &'static str {
        "local"
    }

    fn submit(&mut self, task: Task<C>) {
        self.submit_all(vec![task]);
    }

    fn submit_all(&mut self, tasks: Vec<Task<C>>) {
        if tasks.is_empty() {
            return;
        }
        self.in_flight += tasks.len();
        let queued: Vec<Queued<C>> = tasks.into_iter().map(|t| self.queued(t)).collect();
        let (lock, ready) = &*self.queue;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .tasks
            .extend(queued);
        ready.notify_all();
    }

    fn wait(&mut self) -> Vec<Completion> {
        if self.in_flight == 0 {
            return Vec::new();
        }
        let (first, batched) = self.receiver.recv().expect("tasks report back");
        self.in_flight -= 1;
        self.batched += usize::from(batched);
        let mut out = vec![first];
        out.extend(self.ready());
        out
    }

    fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            batched: self.batched,
            ..ExecutorStats::default()
        }
    }
}

impl<C> Drop for Local<C> {
    fn drop(&mut self) {
        // closing the queue ends every thread once the tasks queued are done
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).open = false;
        ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
