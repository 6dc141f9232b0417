//! Kind names to decoders: how a process given only a recipe (a Slurm worker running
//! `repflow exec-node`) rebuilds the node it names.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::node::{Kind, Node};

type Decoder<C> = fn(serde_json::Value) -> Result<Arc<dyn Node<C>>, serde_json::Error>;

/// Every node kind a domain knows, by name.
pub struct Registry<C> {
    kinds: BTreeMap<&'static str, (u32, Decoder<C>)>,
}

impl<C: 'static> Default for Registry<C> {
    fn default() -> Self {
        Registry {
            kinds: BTreeMap::new(),
        }
    }
}

impl<C: 'static> Registry<C> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds kind `T`.
    ///
    /// # Panics
    /// When another kind already has `T`'s name (a programming error, caught by any test).
    pub fn with<T: Kind<C>>(mut self) -> Self {
        fn decode<C, T: Kind<C>>(
            v: serde_json::Value,
        ) -> Result<Arc<dyn Node<C>>, serde_json::Error> {
            serde_json::from_value::<T>(v).map(|t| Arc::new(t) as Arc<dyn Node<C>>)
        }
        let previous = self.kinds.insert(T::KIND, (T::VERSION, decode::<C, T>));
        assert!(
            previous.is_none(),
            "two node kinds are called `{}`",
            T::KIND
        );
        self
    }

    /// Rebuilds a node of `kind` at `version` from its recipe; an error (never a default)
    /// when the kind is unknown, its version differs from this build's, or the recipe does
    /// not decode.
    pub fn decode(
        &self,
        kind: &str,
        version: u32,
        recipe: serde_json::Value,
    ) -> Result<Arc<dyn Node<C>>, String> {
        let (v, decode) = self.kinds.get(kind).ok_or_else(|| {
            format!(
                "unknown node kind `{kind}`; this build knows {}",
                self.kinds.keys().copied().collect::<Vec<_>>().join(", ")
            )
        })?;
        if *v != version {
            return Err(format!(
                "the recipe is for `{kind}` version {version} but this build has version {v}; run it with the build that wrote it"
            ));
        }
        decode(recipe).map_err(|e| format!("the recipe of a `{kind}` node does not decode: {e}"))
    }

    /// The registered kind names.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}
