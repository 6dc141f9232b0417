//! The per-run context repflow's nodes share within one process: prepared layers loaded
//! once per settings, so that the factorisations they compute lazily are shared by every
//! score node that uses them. The engine passes it through without looking inside.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use repflow_cache::{Digest, MappedBundle};
use repflow_kernels::lazy::get_or_compute;
use repflow_kernels::{PreparedLayer, Settings};

use super::prepared;
use crate::error::UserError;

/// One prepared layer, loaded by the first score node that needs it.
type LoadOnce = OnceLock<Result<Arc<PreparedLayer>, String>>;

/// State shared by the nodes of one run in one process.
#[derive(Default)]
pub struct RunContext {
    layers: Mutex<HashMap<(Digest, String), Arc<LoadOnce>>>,
}

impl RunContext {
    /// The prepared layer stored as `bundle` (digest `digest`), for scoring with `settings`;
    /// loaded once per run and settings.
    pub fn prepared(
        &self,
        digest: &Digest,
        bundle: &MappedBundle,
        settings: &Settings,
    ) -> Result<Arc<PreparedLayer>, UserError> {
        let id = (*digest, format!("{settings:?}"));
        let cell = self
            .layers
            .lock()
            .expect("lock")
            .entry(id)
            .or_default()
            .clone();
        // never blocks on another thread's load (see `repflow_kernels::lazy`)
        get_or_compute(&cell, || {
            prepared::load(bundle, settings)
                .map(Arc::new)
                .map_err(|e| e.message)
        })
        .clone()
        .map_err(UserError::input)
    }
}
