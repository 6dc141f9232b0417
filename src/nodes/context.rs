//! The per-run context repflow's nodes share within one process: prepared layers loaded
//! once per settings, so that the factorisations they compute lazily are shared by every
//! score node that uses them. The engine passes it through without looking inside, and
//! evicts layers from it under a memory budget ([`Evict`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use repflow_cache::{Digest, MappedBundle};
use repflow_engine::Evict;
use repflow_kernels::lazy::Lazy;
use repflow_kernels::{PreparedLayer, Settings};

use super::prepared;
use crate::error::UserError;

/// One prepared layer, loaded by the first score node that needs it.
type LoadOnce = Lazy<Result<Arc<PreparedLayer>, String>>;

/// The cached layers, each with the tick of its last use.
#[derive(Default)]
struct Layers {
    cells: HashMap<(Digest, String), (Arc<LoadOnce>, u64)>,
    clock: u64,
}

/// State shared by the nodes of one run in one process.
#[derive(Default)]
pub struct RunContext {
    layers: Mutex<Layers>,
    score_batch: usize,
}

impl RunContext {
    /// The same context letting up to `pairs` ready Procrustes score nodes run as one batch
    /// (`Pair::score_many`; 0 or 1: each alone).
    pub fn with_score_batch(mut self, pairs: usize) -> Self {
        self.score_batch = pairs;
        self
    }

    /// The most score nodes one batch takes (at most 1: no batching).
    pub fn score_batch(&self) -> usize {
        self.score_batch
    }

    /// The prepared layer stored as `bundle` (digest `digest`), for scoring with `settings`;
    /// loaded once per run and settings (again after an eviction).
    pub fn prepared(
        &self,
        digest: &Digest,
        bundle: &MappedBundle,
        settings: &Settings,
    ) -> Result<Arc<PreparedLayer>, UserError> {
        let id = (*digest, format!("{settings:?}"));
        let cell = {
            let mut layers = self.layers.lock().expect("lock");
            layers.clock += 1;
            let tick = layers.clock;
            let entry = layers.cells.entry(id).or_default();
            entry.1 = tick;
            entry.0.clone()
        };
        // a second task thread waits for the first's load (see `repflow_kernels::lazy`)
        cell.get_or_compute(|| {
            prepared::load(bundle, settings)
                .map(Arc::new)
                .map_err(|e| e.message)
        })
        .clone()
        .map_err(UserError::input)
    }
}

/// The bytes a loaded layer holds now (0 while it loads or when it failed).
fn held(cell: &LoadOnce) -> u64 {
    match cell.get() {
        Some(Ok(layer)) => layer.heap_bytes(),
        _ => 0,
    }
}

/// Under `repflow run --max-memory`, prepared layers (with the factorisations they keep) are
/// what a run holds between nodes: evicted least recently used first. A node still using an
/// evicted layer keeps its own reference; the memory is freed when it ends.
impl Evict for RunContext {
    fn held_bytes(&self) -> u64 {
        let layers = self.layers.lock().expect("lock");
        layers.cells.values().map(|(cell, _)| held(cell)).sum()
    }

    fn evict_to(&self, bytes: u64) {
        let mut layers = self.layers.lock().expect("lock");
        let mut loaded: Vec<(u64, (Digest, String), u64)> = layers
            .cells
            .iter()
            .map(|(id, (cell, tick))| (*tick, id.clone(), held(cell)))
            .filter(|(_, _, b)| *b > 0)
            .collect();
        let mut total: u64 = loaded.iter().map(|(_, _, b)| b).sum();
        loaded.sort_by_key(|(tick, _, _)| *tick);
        for (_, id, b) in loaded {
            if total <= bytes {
                break;
            }
            layers.cells.remove(&id);
            total -= b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use repflow_cache::{Bundle, Store};
    use repflow_kernels::Folds;

    /// Layers are evicted oldest use first, down to the bytes asked for; an evicted layer
    /// loads again when asked for.
    #[test]
    fn eviction_drops_the_least_recently_used_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let settings = Settings::default();
        let node = prepared::Prepared {
            model: "m".into(),
            layer: "l".into(),
            array: "x".into(),
            rotation: None,
        };
        let (m, n) = (40, 6);
        let stored: Vec<(Digest, MappedBundle)> = (0..3u32)
            .map(|seed| {
                let x: Vec<f64> = (0..m * n)
                    .map(|i| ((i as u32 * 7919 + seed * 104_729) % 97) as f64)
                    .collect();
                let source = Bundle::meta("{}".into()).with_array("x", &[m, n], x);
                let source = store.get(&store.put(&source.to_bytes()).unwrap()).unwrap();
                let folds = Folds::new(m, settings.folds).unwrap();
                let bundle = node.prepare(&source, folds).unwrap();
                let digest = store.put(&bundle.to_bytes()).unwrap();
                (digest, store.get(&digest).unwrap())
            })
            .collect();
        let ctx = RunContext::default();
        let load = |i: usize| ctx.prepared(&stored[i].0, &stored[i].1, &settings).unwrap();
        let sizes: Vec<u64> = (0..3).map(|i| load(i).heap_bytes()).collect();
        assert_eq!(ctx.held_bytes(), sizes.iter().sum::<u64>());
        load(0); // layer 0 is now the most recently used, layer 1 the least
        ctx.evict_to(sizes[0] + sizes[2]);
        let cached = |i: usize| {
            let id = (stored[i].0, format!("{settings:?}"));
            ctx.layers.lock().unwrap().cells.contains_key(&id)
        };
        assert!(!cached(1) && cached(0) && cached(2));
        ctx.evict_to(0);
        assert_eq!(ctx.held_bytes(), 0);
        assert_eq!(load(1).heap_bytes(), sizes[1], "loads again");
    }
}
