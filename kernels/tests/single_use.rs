//! A layer marked single-use (`repflow score` without statistics) computes each fold's ridge
//! factorisation where it is used and drops it: the linear score, its folds and its chosen
//! α are bit-identical to those of layers that keep their factorisations.

mod common;

use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};

#[test]
fn single_use_layers_score_linear_exactly_as_kept_ones() {
    let settings = Settings::default();
    // shared signal plus noise, unequal widths, and more units than train rows in one
    for (m, nx, ny) in [(200, 12, 7), (60, 70, 9)] {
        let z = common::gaussian(m, 4, 1);
        let mix = |n: usize, seed: u32| {
            let w = common::gaussian(4, n, seed);
            let noise = common::gaussian(m, n, seed + 10);
            &z * &w + noise
        };
        let (x, y) = (mix(nx, 2), mix(ny, 3));
        let kept = (
            PreparedLayer::new(x.as_ref(), &settings).unwrap(),
            PreparedLayer::new(y.as_ref(), &settings).unwrap(),
        );
        let once = (
            PreparedLayer::new(x.as_ref(), &settings)
                .unwrap()
                .single_use(),
            PreparedLayer::new(y.as_ref(), &settings)
                .unwrap()
                .single_use(),
        );
        let a = Pair::new(&kept.0, &kept.1)
            .unwrap()
            .score(Metric::Linear)
            .unwrap();
        let b = Pair::new(&once.0, &once.1)
            .unwrap()
            .score(Metric::Linear)
            .unwrap();
        assert_eq!(a.score.to_bits(), b.score.to_bits(), "{m}x{nx}/{ny}");
        assert_eq!(a.x_to_y, b.x_to_y);
        assert_eq!(a.y_to_x, b.y_to_x);
        assert_eq!(a.alphas, b.alphas);
    }
}
