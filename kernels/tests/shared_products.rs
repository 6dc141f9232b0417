//! What a pair's folds share is computed once, before the folds run side by side: the k
//! test blocks `X_teᵀ Y_te` with `Xᵀ Y` their sum (the folds partition the rows), each
//! layer's Gram, fold statistics, ridge factorisations and ranks. A fold finding a shared
//! value missing computes its own copy (`lazy` never blocks), so a value first asked for
//! inside the folds is computed once per fold thread. A counting backend records the heavy
//! operations; a duplicate shows as more rows or more decompositions than the count below.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use faer::{Mat, MatRef};
use repflow_kernels::backend::{self, Backend, Cpu};
use repflow_kernels::{Corr, DimMatch, KernelError, Metric, Pair, PreparedLayer, Settings};

/// Counts of the backend's heavy operations.
#[derive(Default)]
struct Counts {
    cross_rows: AtomicUsize,
    gram_rows: AtomicUsize,
    eigens: AtomicUsize,
    polars: AtomicUsize,
}

impl Counts {
    fn take(&self) -> [usize; 4] {
        [
            self.cross_rows.swap(0, Ordering::SeqCst),
            self.gram_rows.swap(0, Ordering::SeqCst),
            self.eigens.swap(0, Ordering::SeqCst),
            self.polars.swap(0, Ordering::SeqCst),
        ]
    }
}

/// The CPU backend, counting.
struct Counting(Arc<Counts>);

impl Backend for Counting {
    fn name(&self) -> String {
        "counting cpu".into()
    }
    fn gram(&self, a: MatRef<'_, f64>) -> Mat<f64> {
        self.0.gram_rows.fetch_add(a.nrows(), Ordering::SeqCst);
        Cpu.gram(a)
    }
    fn cross(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        self.0.cross_rows.fetch_add(a.nrows(), Ordering::SeqCst);
        Cpu.cross(a, b)
    }
    fn polar(&self, c: MatRef<'_, f64>) -> Result<Mat<f64>, KernelError> {
        self.0.polars.fetch_add(1, Ordering::SeqCst);
        Cpu.polar(c)
    }
    fn sym_eigen(&self, s: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>), KernelError> {
        self.0.eigens.fetch_add(1, Ordering::SeqCst);
        Cpu.sym_eigen(s)
    }
}

#[test]
fn every_metric_computes_what_its_folds_share_once() {
    let counts = Arc::new(Counts::default());
    backend::install(Arc::new(Counting(counts.clone())));
    let (m, k) = (300, 5);
    let x = common::gaussian(m, 16, 1);
    let pearson = Settings::default();
    let spearman = Settings {
        corr: Corr::Spearman,
        ..Settings::default()
    };
    let pca = Settings {
        dim_match: DimMatch::Pca,
        ..Settings::default()
    };
    // [cross-product rows, Gram rows, eigendecompositions, polar factors]
    let cases: [(&str, Metric, &Settings, usize, [usize; 4]); 11] = [
        // each layer: its Gram over all rows + its k test blocks' Grams, one ZᵀZ per fold
        ("linear", Metric::Linear, &pearson, 16, [m, 4 * m, 2 * k, 0]),
        ("procrustes", Metric::Procrustes, &pearson, 16, [m, 0, 0, k]),
        // the wider layer's Gram and test-block Grams, one PCA per fold
        (
            "procrustes pca",
            Metric::Procrustes,
            &pca,
            9,
            [m, 2 * m, k, k],
        ),
        (
            "permutation",
            Metric::Permutation,
            &pearson,
            16,
            [m, 0, 0, 0],
        ),
        (
            "soft-matching",
            Metric::SoftMatching,
            &pearson,
            9,
            [m, 0, 0, 0],
        ),
        ("cka", Metric::Cka, &pearson, 9, [m, 2 * m, 0, 0]),
        ("rsa", Metric::Rsa, &pearson, 9, [0, 0, 0, 0]),
        // Spearman matchings correlate ranks, no shared product
        (
            "permutation spearman",
            Metric::Permutation,
            &spearman,
            16,
            [0; 4],
        ),
        (
            "soft-matching spearman",
            Metric::SoftMatching,
            &spearman,
            9,
            [0; 4],
        ),
        (
            "linear spearman",
            Metric::Linear,
            &spearman,
            9,
            [m, 4 * m, 2 * k, 0],
        ),
        (
            "procrustes spearman",
            Metric::Procrustes,
            &spearman,
            16,
            [m, 0, 0, k],
        ),
    ];
    for (name, metric, settings, ny, expected) in cases {
        let y = common::gaussian(m, ny, 2);
        let a = PreparedLayer::new(x.as_ref(), settings).unwrap();
        let b = PreparedLayer::new(y.as_ref(), settings).unwrap();
        counts.take();
        Pair::new(&a, &b).unwrap().score(metric).unwrap();
        assert_eq!(
            counts.take(),
            expected,
            "{name}: [cross rows, Gram rows, eigendecompositions, polar factors]"
        );
    }
}
