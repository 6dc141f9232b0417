//! Procrustes' held path — a backend that holds the layers computes each fold's Pearson
//! correlations from the raw test blocks without handing predictions back, and the angular
//! distance comes from the fold's block and moments — gives the CPU path's numbers to
//! rounding. A CPU backend that plays a GPU holding the layers checks it here, so that the
//! arithmetic is right before a device ever runs it. (Its own process: the backend is
//! process-wide.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use faer::MatRef;
use repflow_kernels::backend::{self, Backend, Cpu};
use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};

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

#[test]
fn the_held_path_gives_the_cpu_paths_numbers() {
    let settings = Settings::default();
    let m = 300;
    let shared = common::gaussian(m, 5, 7);
    // widths equal and unequal (zero padding both ways), far-off means, a dead unit
    let layers: Vec<PreparedLayer> = [(8, 1, 0.0), (8, 2, 50.0), (13, 3, -3.0), (4, 4, 1e3)]
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
            PreparedLayer::new(x.as_ref(), &settings).unwrap()
        })
        .collect();
    let pairs: Vec<(usize, usize)> = (0..4).flat_map(|a| (0..4).map(move |b| (a, b))).collect();
    let score = |(a, b): (usize, usize)| {
        Pair::new(&layers[a], &layers[b])
            .unwrap()
            .score(Metric::Procrustes)
            .unwrap()
    };
    let cpu: Vec<_> = pairs.iter().map(|&p| score(p)).collect();
    let holding = Arc::new(Holding::default());
    backend::install(holding.clone());
    for (&p, want) in pairs.iter().zip(&cpu) {
        let got = score(p);
        let close = |u: &[f64], v: &[f64], what: &str| {
            for (a, b) in u.iter().zip(v) {
                assert!((a - b).abs() <= 1e-12, "{p:?} {what}: {a} vs {b}");
            }
        };
        close(
            got.x_to_y.as_ref().unwrap(),
            want.x_to_y.as_ref().unwrap(),
            "x→y",
        );
        close(
            got.y_to_x.as_ref().unwrap(),
            want.y_to_x.as_ref().unwrap(),
            "y→x",
        );
        // angles compared by their cosines: at a cosine of 1 (a layer with itself) acos
        // turns a rounding of 1e-16 into 1e-8 in either path
        let cosines = |s: &repflow_kernels::Score| -> Vec<f64> {
            s.angular_distance
                .as_ref()
                .unwrap()
                .iter()
                .map(|a| a.cos())
                .collect()
        };
        close(&cosines(&got), &cosines(want), "angular distance's cosine");
        assert_eq!(got.nan_units, want.nan_units, "{p:?}");
    }
    // the held path was taken (two directions × 5 folds × 16 pairs), and every hold ended
    assert_eq!(holding.answered.load(Ordering::SeqCst), 2 * 5 * pairs.len());
    assert!(holding.held.lock().unwrap().is_empty());
    // many pairs at once hold each layer once and give the same numbers
    let many: Vec<Pair<'_>> = pairs
        .iter()
        .map(|&(a, b)| Pair::new(&layers[a], &layers[b]).unwrap())
        .collect();
    for (got, want) in Pair::score_many(&many, Metric::Procrustes).iter().zip(&cpu) {
        let got = got.as_ref().unwrap();
        assert!((got.score - want.score).abs() <= 1e-12);
    }
    assert!(holding.held.lock().unwrap().is_empty());
}
