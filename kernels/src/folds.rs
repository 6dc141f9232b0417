//! K-fold splits identical to scikit-learn's `KFold(n_splits, shuffle, random_state)`.

use crate::rng::LegacyRandomState;
use crate::KernelError;

/// How rows are split into folds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldSpec {
    /// Number of folds `k` (at least 2).
    pub k: usize,
    /// `Some(seed)`: shuffle rows with numpy's `RandomState(seed)` first; `None`: keep row order.
    pub shuffle_seed: Option<u32>,
}

impl Default for FoldSpec {
    /// scikit-learn's `KFold(5, shuffle=True, random_state=42)`.
    fn default() -> Self {
        Self {
            k: 5,
            shuffle_seed: Some(42),
        }
    }
}

/// The test rows of each fold; the train rows of a fold are all the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folds {
    n_rows: usize,
    test: Vec<Vec<usize>>,
}

impl Folds {
    /// Splits `0..n_rows` as `KFold(spec.k, shuffle, random_state=seed)`: rows are shuffled
    /// (Fisher-Yates from numpy's legacy MT19937), then cut into contiguous blocks, the first
    /// `n_rows % k` of them one row longer.
    pub fn new(n_rows: usize, spec: FoldSpec) -> Result<Self, KernelError> {
        if spec.k < 2 {
            return Err(KernelError::Invalid(format!(
                "folds must be at least 2, got {}",
                spec.k
            )));
        }
        if n_rows < spec.k {
            return Err(KernelError::Invalid(format!(
                "{n_rows} stimuli (rows) are fewer than the {} folds; use fewer folds or more stimuli",
                spec.k
            )));
        }
        let mut order: Vec<usize> = (0..n_rows).collect();
        if let Some(seed) = spec.shuffle_seed {
            LegacyRandomState::new(seed).shuffle(&mut order);
        }
        let mut test = Vec::with_capacity(spec.k);
        let mut start = 0;
        for f in 0..spec.k {
            let size = n_rows / spec.k + usize::from(f < n_rows % spec.k);
            let mut block = order[start..start + size].to_vec();
            // scikit-learn returns each fold's indices through a boolean mask: ascending.
            block.sort_unstable();
            test.push(block);
            start += size;
        }
        Ok(Self { n_rows, test })
    }

    /// Rebuilds folds from their test rows, which must partition `0..n_rows`.
    pub fn from_test_rows(n_rows: usize, test: Vec<Vec<usize>>) -> Result<Self, KernelError> {
        let mut seen = vec![false; n_rows];
        for &i in test.iter().flatten() {
            if i >= n_rows || seen[i] {
                return Err(KernelError::Invalid(format!(
                    "fold rows do not partition 0..{n_rows}"
                )));
            }
            seen[i] = true;
        }
        if test.len() < 2 || seen.iter().any(|s| !s) {
            return Err(KernelError::Invalid(format!(
                "fold rows do not partition 0..{n_rows}"
            )));
        }
        Ok(Self { n_rows, test })
    }

    /// Number of folds.
    pub fn k(&self) -> usize {
        self.test.len()
    }

    /// Number of rows split.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Test rows of fold `f`, ascending (scikit-learn's order).
    pub fn test(&self, f: usize) -> &[usize] {
        &self.test[f]
    }

    /// Train rows of fold `f`, ascending (scikit-learn's order).
    pub fn train(&self, f: usize) -> Vec<usize> {
        let mut is_test = vec![false; self.n_rows];
        for &i in &self.test[f] {
            is_test[i] = true;
        }
        (0..self.n_rows).filter(|&i| !is_test[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshuffled_blocks_are_contiguous_and_first_ones_longer() {
        let folds = Folds::new(
            7,
            FoldSpec {
                k: 3,
                shuffle_seed: None,
            },
        )
        .unwrap();
        assert_eq!(folds.test(0), &[0, 1, 2]);
        assert_eq!(folds.test(1), &[3, 4]);
        assert_eq!(folds.test(2), &[5, 6]);
        assert_eq!(folds.train(1), vec![0, 1, 2, 5, 6]);
    }

    #[test]
    fn too_few_rows_is_an_error() {
        assert!(Folds::new(4, FoldSpec::default()).is_err());
    }
}
