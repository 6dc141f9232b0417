//! What a prepared layer reports holding grows with what has been computed on it, and each
//! metric's memory estimate covers what two layers hold after scoring with it (their data,
//! and the fold statistics, factorisations, ranks or RDMs they keep for the next pair).

mod common;

use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};

#[test]
fn estimates_cover_what_scored_layers_hold() {
    let settings = Settings::default();
    for (m, nx, ny) in [(300, 24, 24), (120, 150, 40)] {
        let (x, y) = (common::gaussian(m, nx, 1), common::gaussian(m, ny, 2));
        for metric in Metric::ALL {
            if metric == Metric::Permutation && nx != ny {
                continue;
            }
            let a = PreparedLayer::new(x.as_ref(), &settings).unwrap();
            let b = PreparedLayer::new(y.as_ref(), &settings).unwrap();
            let before = a.heap_bytes() + b.heap_bytes();
            assert!(before >= 8 * (m * (nx + ny)) as u64, "the data count");
            Pair::new(&a, &b).unwrap().score(metric).unwrap();
            let after = a.heap_bytes() + b.heap_bytes();
            let estimate = metric.working_bytes(m, nx, ny);
            assert!(
                after <= estimate,
                "{metric:?} m={m} n=({nx},{ny}): layers hold {after} bytes, estimate {estimate}"
            );
            if matches!(metric, Metric::Linear | Metric::Rsa) {
                assert!(after > before, "{metric:?} keeps what it computed");
            }
        }
    }
}
