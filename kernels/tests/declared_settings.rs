//! A metric reads only the settings it declares (`Metric::reads`), so a score's cache key,
//! built from that declaration, can never miss one: changing any undeclared setting leaves
//! every score bit-identical; and each declared one changes some score.

use faer::Mat;
use repflow_kernels::{
    Corr, DimMatch, HsicEstimator, Metric, Named, Pair, PreparedLayer, Setting, Settings,
    TestZscore,
};

/// `settings` with `s` set to a value other than its default.
fn changed(s: Setting) -> Settings {
    let mut t = Settings::default();
    match s {
        Setting::Corr => t.corr = Corr::Spearman,
        Setting::TestZscore => t.test_zscore = TestZscore::Own,
        Setting::Alphas => t.alphas = vec![1e3],
        Setting::DimMatch => t.dim_match = DimMatch::Pca,
        Setting::Hsic => t.hsic = HsicEstimator::Unbiased,
        Setting::RsaCompare => t.rsa_compare = Corr::Pearson,
    }
    t
}

const ALL: [Setting; 6] = [
    Setting::Corr,
    Setting::TestZscore,
    Setting::Alphas,
    Setting::DimMatch,
    Setting::Hsic,
    Setting::RsaCompare,
];

fn score(metric: Metric, settings: &Settings, ny: usize) -> Vec<u64> {
    let x = Mat::from_fn(60, 5, |i, j| {
        ((i * 7 + j * 3) % 11) as f64 + (i as f64 * 0.3 + j as f64).sin()
    });
    let y = Mat::from_fn(60, ny, |i, j| {
        ((i * 5 + j * 2) % 13) as f64 * 0.1
            + (i as f64 * 0.2).cos() * (j as f64 + 1.0)
            + (i * i % 7) as f64 * 0.3
    });
    let a = PreparedLayer::new(x.as_ref(), settings).unwrap();
    let b = PreparedLayer::new(y.as_ref(), settings).unwrap();
    let s = Pair::new(&a, &b).unwrap().score(metric).unwrap();
    std::iter::once(s.score)
        .chain(s.fold_scores)
        .map(f64::to_bits)
        .collect()
}

#[test]
fn undeclared_settings_change_no_score() {
    for metric in Metric::ALL {
        // equal widths for permutation, unequal (so dim_match matters) for the others
        let ny = if metric == Metric::Permutation { 5 } else { 7 };
        let base = score(metric, &Settings::default(), ny);
        for s in ALL {
            let after = score(metric, &changed(s), ny);
            if !metric.reads().contains(&s) {
                assert_eq!(
                    base,
                    after,
                    "{} changed with undeclared `{}`",
                    metric.name(),
                    s.name()
                );
            }
        }
    }
}

#[test]
fn declared_settings_change_some_score() {
    for metric in Metric::ALL {
        let ny = if metric == Metric::Permutation { 5 } else { 7 };
        let base = score(metric, &Settings::default(), ny);
        for &s in metric.reads() {
            assert_ne!(
                base,
                score(metric, &changed(s), ny),
                "{} ignores declared `{}`",
                metric.name(),
                s.name()
            );
        }
    }
}

#[test]
fn names_round_trip() {
    fn check<T: Named + std::fmt::Debug>() {
        for &c in T::CHOICES {
            assert_eq!(T::from_name(c.name()), Some(c));
        }
        assert_eq!(T::from_name("no-such-choice"), None);
    }
    check::<Metric>();
    check::<Corr>();
    check::<TestZscore>();
    check::<DimMatch>();
    check::<HsicEstimator>();
}
