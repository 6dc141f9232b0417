//! The DAG: nodes with labels and named inputs, checked with petgraph (no cycles, no
//! dangling inputs) and kept in a topological order.

use std::sync::Arc;

use petgraph::algo::toposort;
use petgraph::graph::DiGraph;

use crate::node::Node;

/// One node of the DAG.
pub struct DagNode<C> {
    /// Its name within the pipeline, e.g. `score/linear/net_a/conv1~net_b/conv1`.
    pub label: String,
    /// What it computes.
    pub node: Arc<dyn Node<C>>,
    /// Its inputs: (name the node reads it by, index of the input node), in input order.
    pub inputs: Vec<(String, usize)>,
}

/// A graph of nodes in a topological order.
pub struct Dag<C> {
    /// The nodes.
    pub nodes: Vec<DagNode<C>>,
    /// A topological order (inputs first).
    pub order: Vec<usize>,
    /// For each node, the nodes that read it.
    pub dependents: Vec<Vec<usize>>,
}

/// A graph that is not a DAG.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphError(pub String);

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<C> Dag<C> {
    /// Checks `nodes` into a DAG, refusing dangling inputs and cycles.
    pub fn new(nodes: Vec<DagNode<C>>) -> Result<Dag<C>, GraphError> {
        let mut g = DiGraph::<usize, ()>::with_capacity(nodes.len(), nodes.len() * 2);
        let idx: Vec<_> = (0..nodes.len()).map(|i| g.add_node(i)).collect();
        let mut dependents = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for (_, input) in &n.inputs {
                let from = *idx.get(*input).ok_or_else(|| {
                    GraphError(format!(
                        "node `{}` has an input that is not in the graph",
                        n.label
                    ))
                })?;
                g.add_edge(from, idx[i], ());
                dependents[*input].push(i);
            }
        }
        let order = toposort(&g, None)
            .map_err(|c| {
                GraphError(format!(
                    "the graph has a cycle through `{}`",
                    nodes[g[c.node_id()]].label
                ))
            })?
            .into_iter()
            .map(|n| g[n])
            .collect();
        Ok(Dag {
            nodes,
            order,
            dependents,
        })
    }
}
