//! The DAG of a pipeline: nodes with labels and inputs, built from an expanded
//! [`Plan`](crate::pipeline::Plan) and checked with petgraph (no cycles, no dangling
//! inputs); keys ([`keys`]), source-file digests ([`files`]) and the scheduler ([`run`]).

pub mod files;
pub mod keys;
pub mod run;

use std::collections::BTreeMap;

use petgraph::algo::toposort;
use petgraph::graph::DiGraph;

use crate::error::UserError;
use crate::nodes::folds::FoldsNode;
use crate::nodes::prepared::Prepared;
use crate::nodes::score::ScoreNode;
use crate::nodes::source::Source;
use crate::nodes::table::{RowLabel, Table};
use crate::nodes::NodeSpec;
use crate::pipeline::Plan;

/// One node of the DAG.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name within the pipeline, e.g. `score/linear/net_a/conv1~net_b/conv1`.
    pub label: String,
    /// What it computes.
    pub spec: NodeSpec,
    /// Indices of its input nodes, in input order.
    pub inputs: Vec<usize>,
}

/// A pipeline's nodes in a topological order.
#[derive(Debug, Clone)]
pub struct Dag {
    /// The nodes; `order` lists them inputs first.
    pub nodes: Vec<Node>,
    /// A topological order.
    pub order: Vec<usize>,
    /// Index of the table node.
    pub table: usize,
}

impl Dag {
    /// Builds `nodes` into a DAG, refusing dangling inputs and cycles.
    pub fn new(nodes: Vec<Node>, table: usize) -> Result<Dag, UserError> {
        let mut g = DiGraph::<usize, ()>::with_capacity(nodes.len(), nodes.len() * 2);
        let idx: Vec<_> = (0..nodes.len()).map(|i| g.add_node(i)).collect();
        for (i, n) in nodes.iter().enumerate() {
            for &input in &n.inputs {
                let from = *idx.get(input).ok_or_else(|| {
                    UserError::input(format!(
                        "node `{}` has an input that is not in the graph",
                        n.label
                    ))
                })?;
                g.add_edge(from, idx[i], ());
            }
        }
        let order = toposort(&g, None)
            .map_err(|c| {
                UserError::input(format!(
                    "the pipeline's graph has a cycle through `{}`",
                    nodes[g[c.node_id()]].label
                ))
            })?
            .into_iter()
            .map(|n| g[n])
            .collect();
        Ok(Dag {
            nodes,
            order,
            table,
        })
    }

    /// Builds the DAG of an expanded pipeline: source → prepared (with folds) → score → table.
    pub fn from_plan(plan: &Plan) -> Result<Dag, UserError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut folds: BTreeMap<usize, usize> = BTreeMap::new();
        let mut prepared: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        let mut prepared_of = |nodes: &mut Vec<Node>, m: usize, l: usize| -> usize {
            if let Some(&i) = prepared.get(&(m, l)) {
                return i;
            }
            let model = &plan.models[m];
            let layer = &model.layers[l];
            let n_rows = layer.shape.0;
            let f = *folds.entry(n_rows).or_insert_with(|| {
                nodes.push(Node {
                    label: format!("folds/m{n_rows}"),
                    spec: NodeSpec::Folds(FoldsNode {
                        n_rows,
                        k: plan.settings.folds.k,
                        shuffle_seed: plan.settings.folds.shuffle_seed,
                    }),
                    inputs: vec![],
                });
                nodes.len() - 1
            });
            nodes.push(Node {
                label: format!("source/{}/{}", model.name, layer.name),
                spec: NodeSpec::Source(Source {
                    model: model.name.clone(),
                    layer: layer.name.clone(),
                    file: layer.file.clone(),
                    tensor: layer.tensor.clone(),
                    stimuli: model.stimuli.as_ref().map(|(p, _)| p.clone()),
                }),
                inputs: vec![],
            });
            let s = nodes.len() - 1;
            nodes.push(Node {
                label: format!("prepared/{}/{}", model.name, layer.name),
                spec: NodeSpec::Prepared(Prepared {
                    model: model.name.clone(),
                    layer: layer.name.clone(),
                }),
                inputs: vec![s, f],
            });
            prepared.insert((m, l), nodes.len() - 1);
            nodes.len() - 1
        };
        let mut scores = Vec::new();
        let mut rows = Vec::new();
        for p in &plan.pairs {
            let a = prepared_of(&mut nodes, p.model_a, p.layer_a);
            let b = prepared_of(&mut nodes, p.model_b, p.layer_b);
            let (ma, mb) = (&plan.models[p.model_a], &plan.models[p.model_b]);
            let (la, lb) = (&ma.layers[p.layer_a], &mb.layers[p.layer_b]);
            for metric in &plan.metrics {
                nodes.push(Node {
                    label: format!(
                        "score/{}/{}/{}~{}/{}",
                        metric.name(),
                        ma.name,
                        la.name,
                        mb.name,
                        lb.name
                    ),
                    spec: NodeSpec::Score(ScoreNode {
                        metric: metric.name().into(),
                        settings: plan.settings.clone(),
                        a: (ma.name.clone(), la.name.clone()),
                        b: (mb.name.clone(), lb.name.clone()),
                    }),
                    inputs: vec![a, b],
                });
                scores.push(nodes.len() - 1);
                rows.push(RowLabel {
                    model_a: ma.name.clone(),
                    model_b: mb.name.clone(),
                    layer_a: la.name.clone(),
                    layer_b: lb.name.clone(),
                    depth_a: la.depth,
                    depth_b: lb.depth,
                    metric: metric.name().into(),
                });
            }
        }
        nodes.push(Node {
            label: format!("table/{}", plan.spec.name()),
            spec: NodeSpec::Table(Table {
                pipeline: plan.spec.name(),
                rows,
            }),
            inputs: scores,
        });
        let table = nodes.len() - 1;
        Dag::new(nodes, table)
    }
}
