//! Values computed on first use and shared across threads, without ever blocking.
//!
//! `OnceLock::get_or_init` makes a second thread wait while the first computes. Inside
//! rayon that can deadlock: a thread computing a value with parallel work waits in a join,
//! steals another task that needs the same value, and waits for itself (or two threads wait
//! for each other through stolen tasks). Here a thread that finds the value missing computes
//! it itself; the first to finish stores it and every thread returns that one. The values
//! are pure functions of the layer, so a race costs time, never a different number.

use std::sync::OnceLock;

/// The value in `cell`, computing it with `f` when it is not there yet.
pub fn get_or_compute<T>(cell: &OnceLock<T>, f: impl FnOnce() -> T) -> &T {
    if let Some(v) = cell.get() {
        return v;
    }
    let _ = cell.set(f());
    cell.get().expect("set by this thread or another")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn a_value_needed_inside_its_own_parallel_computation_does_not_deadlock() {
        // Each outer task needs the cell; the cell's computation is itself parallel, so a
        // thread computing it may steal outer tasks that need it (`get_or_init` can hang here).
        let cell: OnceLock<u64> = OnceLock::new();
        let total: u64 = (0..64u64)
            .into_par_iter()
            .map(|i| {
                i + *get_or_compute(&cell, || {
                    (0..10_000u64).into_par_iter().map(|x| x % 3).sum::<u64>()
                })
            })
            .sum();
        let v = (0..10_000u64).map(|x| x % 3).sum::<u64>();
        assert_eq!(total, (0..64).sum::<u64>() + 64 * v);
    }
}
