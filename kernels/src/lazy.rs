//! Values computed on first use and shared across threads ([`Lazy`]).
//!
//! `OnceLock::get_or_init` makes a second thread wait while the first computes. Inside
//! rayon that can deadlock: a thread computing a value with parallel work waits in a join,
//! steals another task that needs the same value, and waits for itself (or two threads wait
//! for each other through stolen tasks). So a rayon worker finding the value missing
//! computes it itself; the first to finish stores it and every thread returns that one. The
//! values are pure functions of their inputs, so a race costs time, never a different
//! number — and code that fans out over folds computes what the folds share first.
//!
//! A plain thread (the engine's task threads, the main thread) waits instead for another
//! plain thread computing the same value: two score nodes that need the same layer's ridge
//! factorisations compute them once. It cannot wait for itself: it is never a rayon worker,
//! so no stolen task runs on its stack, and the values' dependencies form a DAG (a value's
//! computation only asks for the values it reads), so the waits cannot form a cycle.

use std::sync::{Mutex, OnceLock};

/// A value computed once, on first use, by whichever thread needs it first.
#[derive(Debug)]
pub struct Lazy<T> {
    value: OnceLock<T>,
    /// Held by a plain thread while it computes the value.
    computing: Mutex<()>,
}

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Lazy<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            value: OnceLock::new(),
            computing: Mutex::new(()),
        }
    }

    /// A cell holding `value` already.
    pub fn with(value: T) -> Self {
        Self {
            value: OnceLock::from(value),
            computing: Mutex::new(()),
        }
    }

    /// The value, if computed.
    pub fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// The value, computing it with `f` when it is not there yet.
    pub fn get_or_compute(&self, f: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.value.get() {
            return v;
        }
        if rayon::current_thread_index().is_none() {
            let _computing = self.computing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = self.value.get() {
                return v;
            }
            let _ = self.value.set(f());
        } else {
            let _ = self.value.set(f());
        }
        self.value.get().expect("set by this thread or another")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_value_needed_inside_its_own_parallel_computation_does_not_deadlock() {
        // Each outer task needs the cell; the cell's computation is itself parallel, so a
        // thread computing it may steal outer tasks that need it (`get_or_init` can hang here).
        let cell: Lazy<u64> = Lazy::new();
        let total: u64 = (0..64u64)
            .into_par_iter()
            .map(|i| {
                i + *cell
                    .get_or_compute(|| (0..10_000u64).into_par_iter().map(|x| x % 3).sum::<u64>())
            })
            .sum();
        let v = (0..10_000u64).map(|x| x % 3).sum::<u64>();
        assert_eq!(total, (0..64).sum::<u64>() + 64 * v);
    }

    #[test]
    fn plain_threads_compute_a_value_once_even_when_its_computation_is_parallel() {
        let cell: Lazy<u64> = Lazy::new();
        let runs = AtomicUsize::new(0);
        let values: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        *cell.get_or_compute(|| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            (0..1_000u64).into_par_iter().map(|x| x % 7).sum::<u64>()
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let v = (0..1_000u64).map(|x| x % 7).sum::<u64>();
        assert!(values.iter().all(|&x| x == v));
    }
}
