//! Index entries (what a key produced) and recipes (how to produce it).

use serde::{Deserialize, Serialize};

/// What a node key produced, and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The node key (hex).
    pub key: String,
    /// Node kind.
    pub kind: String,
    /// Node kind version.
    pub version: u32,
    /// Canonical parameters.
    pub params: serde_json::Value,
    /// Input keys (hex), in input order.
    pub inputs: Vec<String>,
    /// Digest of the output object (hex).
    pub object: String,
    /// Size of the output object in bytes.
    pub size: u64,
    /// Seconds the node took to compute.
    pub seconds: f64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

/// How to recompute a key: everything a separate process needs besides the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The node key (hex).
    pub key: String,
    /// Node kind.
    pub kind: String,
    /// Node kind version.
    pub version: u32,
    /// Canonical parameters.
    pub params: serde_json::Value,
    /// Input keys (hex), in input order.
    pub inputs: Vec<String>,
    /// The name the node reads each input by, in input order.
    #[serde(default)]
    pub input_names: Vec<String>,
    /// Files outside the store whose contents enter the key: (path, digest hex).
    #[serde(default)]
    pub files: Vec<(String, String)>,
    /// A human-readable name of the node within its pipeline.
    pub label: String,
    /// The node's full description as its kind reads it, including what lies outside the
    /// store (source file paths); not part of the key.
    pub spec: serde_json::Value,
}
