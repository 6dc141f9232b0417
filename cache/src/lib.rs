//! # repflow-cache
//!
//! repflow's content-addressed store. It knows keys, bytes and metadata — nothing of
//! metrics, models or pipelines.
//!
//! - An **object** is an immutable file named by the blake3 digest of its bytes
//!   (`objects/ab/cdef…`), written atomically (temporary file, fsync, rename) and verified
//!   against its name whenever it is read: a corrupt object is reported, never returned.
//! - An **entry** maps a node [`Key`] to the digest of the object it produced, with
//!   metadata (kind, parameters, input keys, size, compute time, creation time); entries are
//!   written atomically after their object, so a killed run never leaves an entry that
//!   claims an incomplete result.
//! - A **recipe** records how to recompute a key (kind, version, parameters, input keys),
//!   so that a separate process given only the store and a key can execute the node.
//! - A [`Bundle`] is the object format: JSON metadata plus named f64 arrays in an rkyv
//!   archive, read through a memory map with no copy of the array data.
//!
//! The store lives under `<dir>/v2/` (`FORMAT` in `store.rs`); the version changes whenever the
//! layout does.

mod bundle;
mod digest;
mod entry;
mod store;

pub use bundle::{Bundle, MappedArray, MappedBundle, Slice, Values};
pub use digest::{Digest, Key, KeyBuilder};
pub use entry::{Entry, Recipe};
pub use store::{now, process_alive, temp_path_in, CacheError, GcReport, Store, VerifyReport};
