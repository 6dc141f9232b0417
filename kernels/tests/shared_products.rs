//! The cross-products a pair's folds share are computed once: the k test blocks
//! `X_teᵀ Y_te`, with `Xᵀ Y` their sum (the folds partition the rows). A counting backend
//! records the rows of every cross-product the metrics ask for; a second full product, or
//! a fold computing its own copy of the blocks while another computes them (the folds run
//! side by side), shows as more than m rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use faer::{Mat, MatRef};
use repflow_kernels::backend::{self, Backend, Cpu};
use repflow_kernels::rng::LegacyRandomState;
use repflow_kernels::{KernelError, Metric, Pair, PreparedLayer, Settings};

/// The CPU backend, counting the rows of every cross-product.
struct Counting(Arc<AtomicUsize>);

impl Backend for Counting {
    fn name(&self) -> String {
        "counting cpu".into()
    }
    fn gram(&self, a: MatRef<'_, f64>) -> Mat<f64> {
        Cpu.gram(a)
    }
    fn cross(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        self.0.fetch_add(a.nrows(), Ordering::SeqCst);
        Cpu.cross(a, b)
    }
    fn polar(&self, c: MatRef<'_, f64>) -> Result<Mat<f64>, KernelError> {
        Cpu.polar(c)
    }
    fn sym_eigen(&self, s: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>), KernelError> {
        Cpu.sym_eigen(s)
    }
}

fn gaussian(m: usize, n: usize, seed: u32) -> Mat<f64> {
    let mut rng = LegacyRandomState::new(seed);
    let v: Vec<f64> = (0..m * n).map(|_| rng.gauss()).collect();
    Mat::from_fn(m, n, |i, j| v[i * n + j])
}

#[test]
fn every_fold_metric_computes_the_shared_cross_products_once() {
    let rows = Arc::new(AtomicUsize::new(0));
    backend::install(Arc::new(Counting(rows.clone())));
    let m = 300;
    let settings = Settings::default();
    let (x, y) = (gaussian(m, 16, 1), gaussian(m, 16, 2));
    for metric in Metric::ALL {
        let a = PreparedLayer::new(x.as_ref(), &settings).unwrap();
        let b = PreparedLayer::new(y.as_ref(), &settings).unwrap();
        rows.store(0, Ordering::SeqCst);
        Pair::new(&a, &b).unwrap().score(metric).unwrap();
        let used = rows.load(Ordering::SeqCst);
        match metric {
            // no cross-product at all (RSA compares stimulus × stimulus matrices)
            Metric::Rsa => assert_eq!(used, 0, "{metric:?}"),
            // one product over every row (CKA) or the k blocks that partition the rows
            _ => assert_eq!(
                used, m,
                "{metric:?}: cross-products over {used} rows, not {m}"
            ),
        }
    }
}
