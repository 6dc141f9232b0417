//! The held path of Procrustes and linear — a backend that holds the layers computes each
//! fold's Pearson correlations from the raw test blocks without handing predictions back,
//! and Procrustes' angular distance comes from the fold's block and moments — gives the
//! CPU path's numbers to rounding. A CPU backend that plays a GPU holding the layers checks it here, so that the
//! arithmetic is right before a device ever runs it. (Its own process: the backend is
//! process-wide.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use faer::MatRef;
use repflow_kernels::backend::{self, Backend, Cpu};
use repflow_kernels::{Metric, Pair, PreparedLayer, Score, Settings, TestZscore};

/// The CPU, holding layers as a GPU would: `held_correlations` answers only for views into
/// held layers, from the raw blocks it is given.
#[derive(Default)]
struct Holding {
    /// Address ranges of the held layers' data, with how many holds each has.
    held: Mutex<Vec<(usize, usize, usize)>>,
    answered: AtomicUsize,
}

impl Holding {
    fn holds(&self, v: MatRef<'_, f64>) -> bool {
        let at = v.as_ptr() as usize;
        self.held
            .lock()
            .unwrap()
            .iter()
            .any(|&(start, end, _)| (start..end).contains(&at))
    }
}

impl Backend for Holding {
    fn name(&self) -> String {
        "holding cpu".into()
    }
    common::cpu_required_methods!();
    fn hold(&self, layers: &[MatRef<'_, f64>]) {
        let mut held = self.held.lock().unwrap();
        for l in layers {
            let start = l.as_ptr() as usize;
            match held.iter_mut().find(|h| h.0 == start) {
                Some(h) => h.2 += 1,
                None => held.push((start, start + 8 * l.nrows() * l.ncols(), 1)),
            }
        }
    }
    fn release(&self, layers: &[MatRef<'_, f64>]) {
        let mut held = self.held.lock().unwrap();
        for l in layers {
            let start = l.as_ptr() as usize;
            let h = held
                .iter_mut()
                .find(|h| h.0 == start)
                .expect("released once held");
            h.2 -= 1;
        }
        held.retain(|h| h.2 > 0);
    }
    fn held_correlations(
        &self,
        x: MatRef<'_, f64>,
        m: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
    ) -> Option<Vec<f64>> {
        if !(self.holds(x) && self.holds(y)) {
            return None;
        }
        self.answered.fetch_add(1, Ordering::SeqCst);
        let pred = Cpu.product(x, m);
        let (rs, _) = repflow_kernels::stats::paired_column_correlations(pred.as_ref(), y, false);
        // the device's convention: NaN where a column is constant
        Some(
            (0..y.ncols())
                .map(|j| {
                    let constant = |c: &[f64]| c.iter().all(|v| *v == c[0]);
                    let p: Vec<f64> = pred.col(j).iter().copied().collect();
                    let t: Vec<f64> = y.col(j).iter().copied().collect();
                    if constant(&p) || constant(&t) {
                        f64::NAN
                    } else {
                        rs[j]
                    }
                })
                .collect(),
        )
    }
}

/// Four layers under `settings`: equal and unequal widths (zero padding both ways), far-off
/// means, a dead unit.
fn layers(settings: &Settings) -> Vec<PreparedLayer> {
    let m = 300;
    let shared = common::gaussian(m, 5, 7);
    [(8, 1, 0.0), (8, 2, 50.0), (13, 3, -3.0), (4, 4, 1e3)]
        .iter()
        .map(|&(n, seed, offset)| {
            let mut x = &shared * common::gaussian(5, n, seed + 10) + common::gaussian(m, n, seed);
            for i in 0..m {
                for j in 0..n {
                    x[(i, j)] += offset * (j as f64 + 1.0);
                }
                if seed == 3 {
                    x[(i, 0)] = 2.5;
                }
            }
            PreparedLayer::new(x.as_ref(), settings).unwrap()
        })
        .collect()
}

/// Every ordered pair of the four layers.
fn pairs() -> Vec<(usize, usize)> {
    (0..4).flat_map(|a| (0..4).map(move |b| (a, b))).collect()
}

/// Each pair's `metric` score on `layers`, with whatever backend is installed.
fn scores(layers: &[PreparedLayer], metric: Metric) -> Vec<Score> {
    pairs()
        .iter()
        .map(|&(a, b)| {
            Pair::new(&layers[a], &layers[b])
                .unwrap()
                .score(metric)
                .unwrap()
        })
        .collect()
}

/// `got` and `want` agree fold by fold (both directions) to 1e-12, with equal undefined
/// counts; angular distances (Procrustes) by their cosines — at a cosine of 1 (a layer with
/// itself) acos turns a rounding of 1e-16 into 1e-8 in either path.
fn assert_agree(got: &[Score], want: &[Score], what: &str) {
    for ((g, w), p) in got.iter().zip(want).zip(pairs()) {
        let close = |u: &[f64], v: &[f64], part: &str| {
            for (a, b) in u.iter().zip(v) {
                assert!((a - b).abs() <= 1e-12, "{what} {p:?} {part}: {a} vs {b}");
            }
        };
        close(
            g.x_to_y.as_ref().unwrap(),
            w.x_to_y.as_ref().unwrap(),
            "x→y",
        );
        close(
            g.y_to_x.as_ref().unwrap(),
            w.y_to_x.as_ref().unwrap(),
            "y→x",
        );
        let cosines = |s: &Score| -> Vec<f64> {
            let angles = s.angular_distance.as_deref().unwrap_or_default();
            angles.iter().map(|a| a.cos()).collect()
        };
        close(&cosines(g), &cosines(w), "angular distance's cosine");
        assert_eq!(g.nan_units, w.nan_units, "{what} {p:?}");
        assert_eq!(
            g.alphas, w.alphas,
            "{what} {p:?}: the chosen ridge penalties"
        );
    }
}

#[test]
fn the_held_path_gives_the_cpu_paths_numbers() {
    let own = Settings {
        test_zscore: TestZscore::Own,
        ..Settings::default()
    };
    let cases = [
        ("procrustes", Settings::default(), Metric::Procrustes),
        ("linear", Settings::default(), Metric::Linear),
        (
            "linear, test z-scored with its own statistics",
            own,
            Metric::Linear,
        ),
    ];
    let prepared: Vec<Vec<PreparedLayer>> = cases.iter().map(|(_, s, _)| layers(s)).collect();
    // the CPU path first (no backend installed yet), then the held one
    let cpu: Vec<Vec<Score>> = cases
        .iter()
        .zip(&prepared)
        .map(|((_, _, metric), l)| scores(l, *metric))
        .collect();
    let holding = Arc::new(Holding::default());
    backend::install(holding.clone());
    for (((what, _, metric), l), want) in cases.iter().zip(&prepared).zip(&cpu) {
        let before = holding.answered.load(Ordering::SeqCst);
        assert_agree(&scores(l, *metric), want, what);
        // the held path was taken: two directions × 5 folds × 16 pairs; every hold ended
        let answered = holding.answered.load(Ordering::SeqCst) - before;
        assert_eq!(answered, 2 * 5 * pairs().len(), "{what}");
        assert!(holding.held.lock().unwrap().is_empty(), "{what}");
    }
    // many Procrustes pairs at once hold each layer once and give the same numbers
    let l = &prepared[0];
    let many: Vec<Pair<'_>> = pairs()
        .iter()
        .map(|&(a, b)| Pair::new(&l[a], &l[b]).unwrap())
        .collect();
    for (got, want) in Pair::score_many(&many, Metric::Procrustes)
        .iter()
        .zip(&cpu[0])
    {
        let got = got.as_ref().unwrap();
        assert!((got.score - want.score).abs() <= 1e-12);
    }
    assert!(holding.held.lock().unwrap().is_empty());
}
