//! A layer prepared from a row-major view (how `repflow score` reads a C-order `.npy`) is
//! the layer prepared from the same values stored column by column: same dropped units,
//! means, data and scores, at ordinary and extreme scales; a non-finite value is named by
//! its row and column either way.

use faer::{Mat, MatRef};
use repflow_kernels::rng::LegacyRandomState;
use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};

#[test]
fn row_major_and_column_major_views_prepare_identically() {
    let settings = Settings::default();
    let (m, n) = (60, 7);
    for scale in [1.0, 1e-300, 1e300] {
        let mut rng = LegacyRandomState::new(3);
        let mut values: Vec<f64> = (0..m * n).map(|_| rng.gauss() * scale).collect();
        for i in 0..m {
            values[i * n + 2] = 4.0 * scale; // a constant unit, dropped
        }
        let row_major = MatRef::from_row_major_slice(&values, m, n);
        let owned = Mat::from_fn(m, n, |i, j| values[i * n + j]);
        let a = PreparedLayer::new(row_major, &settings).unwrap();
        let b = PreparedLayer::new(owned.as_ref(), &settings).unwrap();
        assert_eq!(a.dropped(), &[2]);
        assert_eq!(a.parts(), b.parts(), "scale {scale}");
        assert_eq!(a.data(), b.data());
        let y = PreparedLayer::new(owned.as_ref(), &settings).unwrap();
        for metric in [Metric::Procrustes, Metric::Cka] {
            let sa = Pair::new(&a, &y).unwrap().score(metric).unwrap().score;
            let sb = Pair::new(&b, &y).unwrap().score(metric).unwrap().score;
            assert_eq!(sa.to_bits(), sb.to_bits(), "{metric:?} at scale {scale}");
        }
    }
    let mut values = vec![1.0; 40];
    values[5] = f64::NAN; // row 1, column 1 of a 10 × 4 row-major matrix
    values[0] = 2.0;
    let e = PreparedLayer::new(MatRef::from_row_major_slice(&values, 10, 4), &settings)
        .err()
        .unwrap();
    assert!(e.to_string().contains("row 1, column 1"), "{e}");
}
