//! Cutting a batch of work into consecutive chunks that fit a memory bound, and running
//! chunks that shrink when one does not fit after all: how a GPU backend keeps a batched
//! launch within device memory (never an out-of-memory crash) and how all-pairs scoring
//! bounds host memory.

use std::ops::Range;

/// The host memory one batch of pairs may hold by default (bytes): `repflow pairs`'s
/// `--batch-memory` and a pipeline's batched score nodes.
pub const BATCH_BYTES: u64 = 2 << 30;

/// Consecutive ranges of `0..costs.len()` whose summed costs are at most `bound`, each as
/// long as the bound allows; an item costing more than `bound` alone is a range of its own
/// (whether it can run at all is the caller's question).
pub fn chunks(costs: &[u64], bound: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0, 0u64);
    for (i, &c) in costs.iter().enumerate() {
        let fits = sum.checked_add(c).is_some_and(|s| s <= bound);
        if i > start && !fits {
            out.push(start..i);
            (start, sum) = (i, 0);
        }
        sum = sum.saturating_add(c);
    }
    if start < costs.len() {
        out.push(start..costs.len());
    }
    out
}

/// How one chunk's run ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkError<E> {
    /// The chunk did not fit (device memory): the same items in smaller chunks may.
    TooBig(E),
    /// Anything else: smaller chunks would fail the same way.
    Failed(E),
}

/// Runs `run` on `chunks` in order, collecting its outputs (one per item, in item order).
/// A chunk that is [`ChunkError::TooBig`] is split in two halves and each is retried, down
/// to one item; `shrunk` is called once, with the first error, when that happens (to say
/// so). An error of a single item that does not fit, or any [`ChunkError::Failed`], ends
/// the run with that error.
pub fn run_shrinking<T, E>(
    chunks: Vec<Range<usize>>,
    mut run: impl FnMut(Range<usize>) -> Result<Vec<T>, ChunkError<E>>,
    mut shrunk: impl FnMut(&E),
) -> Result<Vec<T>, E> {
    let mut out = Vec::new();
    let mut said = false;
    // a stack of ranges still to run, the next one on top
    let mut todo: Vec<Range<usize>> = chunks.into_iter().rev().collect();
    while let Some(r) = todo.pop() {
        match run(r.clone()) {
            Ok(v) => {
                assert_eq!(v.len(), r.len(), "one output per item of the chunk");
                out.extend(v);
            }
            Err(ChunkError::TooBig(e)) if r.len() > 1 => {
                if !said {
                    shrunk(&e);
                    said = true;
                }
                let mid = r.start + r.len() / 2;
                todo.push(mid..r.end);
                todo.push(r.start..mid);
            }
            Err(ChunkError::TooBig(e) | ChunkError::Failed(e)) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_within_the_bound_and_cover_every_item_in_order() {
        assert_eq!(chunks(&[], 10), Vec::<Range<usize>>::new());
        assert_eq!(chunks(&[3, 3, 3, 3], 6), vec![0..2, 2..4]);
        assert_eq!(chunks(&[3, 3, 3, 3], 7), vec![0..2, 2..4]);
        assert_eq!(chunks(&[3, 3, 3, 3], 100), vec![0..4]);
        // an item over the bound is alone, and does not swallow its neighbours
        assert_eq!(chunks(&[2, 50, 2, 2], 5), vec![0..1, 1..2, 2..4]);
        assert_eq!(chunks(&[u64::MAX, u64::MAX], u64::MAX), vec![0..1, 1..2]);
        let costs: Vec<u64> = (0..100).map(|i| (i * 37 % 11) as u64).collect();
        let cut = chunks(&costs, 20);
        assert_eq!(cut.first().unwrap().start, 0);
        assert_eq!(cut.last().unwrap().end, 100);
        for w in cut.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &cut {
            let sum: u64 = costs[r.clone()].iter().sum();
            assert!(sum <= 20 || r.len() == 1, "{r:?} sums to {sum}");
        }
    }

    #[test]
    fn a_chunk_that_does_not_fit_is_halved_until_it_does() {
        // "device memory" for 3 items at a time
        let mut runs = Vec::new();
        let mut said = Vec::new();
        let out = run_shrinking(
            std::iter::once(0..10).collect(),
            |r| {
                runs.push(r.clone());
                if r.len() > 3 {
                    Err(ChunkError::TooBig(format!("{} items", r.len())))
                } else {
                    Ok(r.map(|i| i * i).collect())
                }
            },
            |e: &String| said.push(e.clone()),
        )
        .unwrap();
        assert_eq!(out, (0..10).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(said, vec!["10 items".to_string()]);
        for r in &runs {
            assert!(r.len() <= 10);
        }
        assert_eq!(runs[0], 0..10);
        assert_eq!(runs[1], 0..5);
    }

    #[test]
    fn one_item_that_does_not_fit_and_other_failures_are_errors() {
        let too_big = run_shrinking(
            std::iter::once(0..4).collect(),
            |r| -> Result<Vec<usize>, _> { Err(ChunkError::TooBig(r.len())) },
            |_| {},
        );
        assert_eq!(too_big, Err(1));
        let mut calls = 0;
        let failed = run_shrinking(
            vec![0..4, 4..8],
            |r| -> Result<Vec<usize>, _> {
                calls += 1;
                Err(ChunkError::Failed(r.start))
            },
            |_| panic!("not a size problem"),
        );
        assert_eq!((failed, calls), (Err(0), 1));
    }
}
