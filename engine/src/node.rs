//! The one interface a node kind implements ([`Kind`]), its object-safe form the engine
//! schedules ([`Node`]), the named inputs a node reads ([`Inputs`]) and its error
//! ([`NodeError`]).
//!
//! A node kind is a plain serde struct holding everything the node needs besides its inputs.
//! Its recipe (what `repflow exec-node` rebuilds it from) is that struct's JSON; its key is
//! its kind, version, [`Kind::key_params`] and its inputs' output digests.

use std::any::Any;
use std::path::PathBuf;

use repflow_cache::{Bundle, Digest, MappedBundle};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A node kind: what a domain implements once per kind. `C` is the domain's per-run context
/// (state shared by the nodes of one process, such as loaded prepared layers).
pub trait Kind<C>: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind's name, unique within a registry; part of every key.
    const KIND: &'static str;
    /// The kind's version; bump it when the output changes meaning (it enters every key).
    const VERSION: u32;

    /// The parameters that enter the key: typed and canonical (no file paths, no settings
    /// the output does not depend on).
    fn key_params(&self) -> serde_json::Value;

    /// Files outside the store whose contents enter the key.
    fn external_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Whether a cached output is hashed again before it is trusted (for outputs read after
    /// every run, so that a corrupt one is recomputed instead of failing the run).
    fn verify_when_cached(&self) -> bool {
        false
    }

    /// An upper estimate of the working memory (bytes) the node needs while it runs, given
    /// its inputs (mapped, not read): what a [`crate::MemoryBudget`] reserves for it. 0 (the
    /// default) gives no estimate, and the node is never held back.
    fn memory(&self, _inputs: &Inputs) -> u64 {
        0
    }

    /// Computes the output from the inputs' outputs.
    fn run(&self, ctx: &C, inputs: &Inputs) -> Result<Bundle, NodeError>;

    /// Whether this node may run together with other ready nodes of its kind in one
    /// [`Kind::run_many`] call (nodes with equal [`Batch::key`]s, at most [`Batch::max`]
    /// of them): a GPU then does their heavy operations as one batch. `None` (the
    /// default): it runs alone.
    fn batch(&self, _ctx: &C) -> Option<Batch> {
        None
    }

    /// Runs several nodes of this kind whose batch keys are equal: one output or error per
    /// node, in order. By default each node runs alone.
    fn run_many(ctx: &C, nodes: &[(&Self, &Inputs)]) -> Vec<Result<Bundle, NodeError>>
    where
        Self: Sized,
    {
        nodes.iter().map(|(n, i)| n.run(ctx, i)).collect()
    }
}

/// How a node may be batched with others of its kind ([`Kind::batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Nodes of one kind with equal keys may run together.
    pub key: String,
    /// The most nodes one batch takes.
    pub max: usize,
}

/// `items` cut into the groups that run together: an item whose batch (`batch`: its kind
/// and [`Batch`], `None` when it runs alone) has `max > 1` joins the first open group of
/// its kind and key until that group holds `max`; every other item is a group of its own.
/// Groups keep their items' order and come in the order of their first items. Executors
/// that receive many tasks at once (Slurm's array elements, a worker's keys) group with it.
pub fn group_batches<T>(
    items: Vec<T>,
    batch: impl Fn(&T) -> Option<(&'static str, Batch)>,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    // per group: its kind, key and size limit, while it can take more
    let mut open: Vec<Option<(&'static str, Batch)>> = Vec::new();
    for item in items {
        let Some((kind, b)) = batch(&item).filter(|(_, b)| b.max > 1) else {
            groups.push(vec![item]);
            open.push(None);
            continue;
        };
        let at = open.iter().position(|o| {
            o.as_ref()
                .is_some_and(|(k, o)| *k == kind && o.key == b.key)
        });
        match at {
            Some(g) => {
                groups[g].push(item);
                if groups[g].len() >= b.max {
                    open[g] = None;
                }
            }
            None => {
                groups.push(vec![item]);
                open.push(Some((kind, b)));
            }
        }
    }
    groups
}

/// A node as the engine holds it: any [`Kind`], behind a pointer.
pub trait Node<C>: Send + Sync {
    /// The kind's name.
    fn kind(&self) -> &'static str;
    /// The kind's version.
    fn version(&self) -> u32;
    /// Key parameters.
    fn key_params(&self) -> serde_json::Value;
    /// Files whose contents enter the key.
    fn external_files(&self) -> Vec<PathBuf>;
    /// See [`Kind::verify_when_cached`].
    fn verify_when_cached(&self) -> bool;
    /// The node's recipe: the JSON its kind decodes from.
    fn recipe(&self) -> serde_json::Value;
    /// See [`Kind::memory`].
    fn memory(&self, inputs: &Inputs) -> u64;
    /// Computes the output.
    fn run(&self, ctx: &C, inputs: &Inputs) -> Result<Bundle, NodeError>;
    /// See [`Kind::batch`].
    fn batch(&self, ctx: &C) -> Option<Batch>;
    /// Runs `batch` — nodes of this node's kind with equal batch keys, with their inputs —
    /// through [`Kind::run_many`]; one result per node, in order.
    fn run_many(
        &self,
        ctx: &C,
        batch: &[(&dyn Node<C>, &Inputs)],
    ) -> Vec<Result<Bundle, NodeError>>;
    /// The node as `Any`, so that the domain can read its own kinds back.
    fn as_any(&self) -> &dyn Any;
}

impl<C, T: Kind<C>> Node<C> for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn version(&self) -> u32 {
        T::VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        Kind::key_params(self)
    }
    fn external_files(&self) -> Vec<PathBuf> {
        Kind::external_files(self)
    }
    fn verify_when_cached(&self) -> bool {
        Kind::verify_when_cached(self)
    }
    fn recipe(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("node kinds serialise to JSON")
    }
    fn memory(&self, inputs: &Inputs) -> u64 {
        Kind::memory(self, inputs)
    }
    fn run(&self, ctx: &C, inputs: &Inputs) -> Result<Bundle, NodeError> {
        Kind::run(self, ctx, inputs)
    }
    fn batch(&self, ctx: &C) -> Option<Batch> {
        Kind::batch(self, ctx)
    }
    fn run_many(
        &self,
        ctx: &C,
        batch: &[(&dyn Node<C>, &Inputs)],
    ) -> Vec<Result<Bundle, NodeError>> {
        let typed: Option<Vec<(&T, &Inputs)>> = batch
            .iter()
            .map(|(n, i)| n.as_any().downcast_ref::<T>().map(|t| (t, *i)))
            .collect();
        match typed {
            Some(nodes) => T::run_many(ctx, &nodes),
            // not all of this kind (the engine batches one kind only): each alone
            None => batch.iter().map(|(n, i)| n.run(ctx, i)).collect(),
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Why a node could not compute its output: one line for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    /// What went wrong.
    pub message: String,
}

impl NodeError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One input of a node: its name, its output's digest and its output.
pub struct Input {
    /// The name the node reads it by.
    pub name: String,
    /// Its output's digest.
    pub digest: Digest,
    /// Its output, memory-mapped and verified.
    pub bundle: MappedBundle,
}

/// A node's inputs, by name (a name may repeat: a table reads all its `score` inputs).
pub struct Inputs {
    items: Vec<Input>,
}

impl Inputs {
    /// Inputs in the node's input order.
    pub fn new(items: Vec<Input>) -> Self {
        Inputs { items }
    }

    /// The input called `name`; an error when the node has none.
    pub fn get(&self, name: &str) -> Result<&Input, NodeError> {
        self.optional(name)
            .ok_or_else(|| NodeError::new(format!("the node has no input `{name}`")))
    }

    /// The output of the input called `name`.
    pub fn bundle(&self, name: &str) -> Result<&MappedBundle, NodeError> {
        self.get(name).map(|i| &i.bundle)
    }

    /// The input called `name`, if the node has one.
    pub fn optional(&self, name: &str) -> Option<&Input> {
        self.items.iter().find(|i| i.name == name)
    }

    /// Every input called `name`, in input order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Input> + 'a {
        self.items.iter().filter(move |i| i.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(key: &str, max: usize) -> Option<(&'static str, Batch)> {
        Some((
            "k",
            Batch {
                key: key.into(),
                max,
            },
        ))
    }

    #[test]
    fn groups_hold_one_kind_and_key_up_to_the_batch_size_in_order() {
        // (name, batch key or none, max)
        let items = vec![
            ("a1", Some("a"), 3),
            ("b1", Some("b"), 3),
            ("solo", None, 0),
            ("a2", Some("a"), 3),
            ("a3", Some("a"), 3),
            ("a4", Some("a"), 3),
            ("one", Some("c"), 1),
            ("b2", Some("b"), 3),
        ];
        let groups = group_batches(items, |(_, key, max)| key.and_then(|k| batch(k, *max)));
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|(n, _, _)| *n).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["a1", "a2", "a3"],
                vec!["b1", "b2"],
                vec!["solo"],
                vec!["a4"],
                vec!["one"],
            ]
        );
        // another kind with the same key is another group
        let mixed = group_batches(vec![0, 1, 2], |i| {
            Some((
                if *i == 1 { "other" } else { "k" },
                Batch {
                    key: "same".into(),
                    max: 4,
                },
            ))
        });
        assert_eq!(mixed, vec![vec![0, 2], vec![1]]);
    }
}
