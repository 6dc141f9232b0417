//! Scoring many pairs at once ([`Pair::score_many`]) gives each pair's numbers bit for bit
//! and hands the backend its work in batches: Procrustes asks for every fold of every pair's
//! map in one `polar_many` call (one batched SVD launch on a GPU), and each pair's k fold
//! blocks are one `cross_many` call. A backend that records its calls checks both.

mod common;

use std::sync::{Arc, Mutex};

use faer::{Mat, MatRef};
use repflow_kernels::backend::{self, Backend, Cpu};
use repflow_kernels::{
    Corr, DimMatch, FoldSpec, KernelError, Metric, Pair, PreparedLayer, Settings,
};

/// The CPU backend, recording the length of every batched call.
#[derive(Default)]
struct Recording {
    polar_many: Mutex<Vec<usize>>,
    cross_many: Mutex<Vec<usize>>,
}

impl Backend for Recording {
    fn name(&self) -> String {
        "recording cpu".into()
    }
    common::cpu_required_methods!();
    fn cross_many(&self, blocks: &[(MatRef<'_, f64>, MatRef<'_, f64>)]) -> Vec<Mat<f64>> {
        self.cross_many.lock().unwrap().push(blocks.len());
        Cpu.cross_many(blocks)
    }
    fn polar_many(&self, cs: &[MatRef<'_, f64>]) -> Vec<Result<Mat<f64>, KernelError>> {
        self.polar_many.lock().unwrap().push(cs.len());
        Cpu.polar_many(cs)
    }
}

/// Layers of several widths, one with a dead unit, under `settings`.
fn layers(settings: &Settings) -> Vec<PreparedLayer> {
    let m = 240;
    let shared = common::gaussian(m, 6, 7);
    [(5, 1), (12, 2), (12, 3), (20, 4)]
        .iter()
        .map(|&(n, seed)| {
            let mix = common::gaussian(6, n, seed + 10);
            let mut x = &shared * &mix + common::gaussian(m, n, seed);
            if seed == 3 {
                for i in 0..m {
                    x[(i, 0)] = 1.5; // a dead unit
                }
            }
            PreparedLayer::new(x.as_ref(), settings).unwrap()
        })
        .collect()
}

#[test]
fn many_pairs_score_as_each_alone_with_one_batched_polar_call() {
    let recording = Arc::new(Recording::default());
    backend::install(recording.clone());
    let settings = [
        Settings::default(),
        Settings {
            corr: Corr::Spearman,
            ..Settings::default()
        },
        Settings {
            dim_match: DimMatch::Pca,
            ..Settings::default()
        },
        Settings {
            folds: FoldSpec {
                k: 3,
                shuffle_seed: None,
            },
            ..Settings::default()
        },
    ];
    for settings in &settings {
        let ls = layers(settings);
        // every ordered pair, both directions of unequal widths, a layer with itself
        let index: Vec<(usize, usize)> = (0..ls.len())
            .flat_map(|i| (0..ls.len()).map(move |j| (i, j)))
            .collect();
        let alone: Vec<_> = index
            .iter()
            .map(|&(i, j)| Pair::new(&ls[i], &ls[j]).unwrap().score(Metric::Procrustes))
            .collect();
        recording.polar_many.lock().unwrap().clear();
        recording.cross_many.lock().unwrap().clear();
        let pairs: Vec<Pair<'_>> = index
            .iter()
            .map(|&(i, j)| Pair::new(&ls[i], &ls[j]).unwrap())
            .collect();
        let many = Pair::score_many(&pairs, Metric::Procrustes);
        assert_eq!(many.len(), alone.len());
        for ((a, b), ij) in alone.iter().zip(&many).zip(&index) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert_eq!(a, b, "pair {ij:?} under {settings:?}");
            assert_eq!(a.score.to_bits(), b.score.to_bits());
        }
        let k = settings.folds.k;
        assert_eq!(
            *recording.polar_many.lock().unwrap(),
            vec![index.len() * k],
            "one polar_many call for every fold of every pair"
        );
        assert_eq!(
            *recording.cross_many.lock().unwrap(),
            vec![k; index.len()],
            "one cross_many call of k blocks per pair"
        );
    }
}

#[test]
fn other_metrics_score_many_pairs_as_each_alone() {
    let settings = Settings::default();
    let ls = layers(&settings);
    for metric in [Metric::Linear, Metric::Permutation, Metric::Cka] {
        let pairs: Vec<Pair<'_>> = [(0, 1), (2, 3), (3, 3)]
            .iter()
            .map(|&(i, j)| Pair::new(&ls[i], &ls[j]).unwrap())
            .collect();
        let many = Pair::score_many(&pairs, metric);
        for ((i, j), b) in [(0, 1), (2, 3), (3, 3)].into_iter().zip(many) {
            // an error (permutation on unequal widths) is the same error
            let a = Pair::new(&ls[i], &ls[j]).unwrap().score(metric);
            assert_eq!(a, b, "{metric:?} pair ({i}, {j})");
        }
    }
}

#[test]
fn no_pairs_is_no_scores() {
    assert!(Pair::score_many(&[], Metric::Procrustes).is_empty());
    assert!(Pair::score_many(&[], Metric::Linear).is_empty());
}
