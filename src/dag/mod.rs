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
use crate::nodes::images::{ImageSet, TransformNode};
use crate::nodes::network::{Extract, Train, Weights};
use crate::nodes::prepared::Prepared;
use crate::nodes::score::ScoreNode;
use crate::nodes::source::Source;
use crate::nodes::table::{RowLabel, Table};
use crate::nodes::NodeSpec;
use crate::pipeline::networks::Origin;
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

    /// Builds the DAG of an expanded pipeline: source (or images → training → extraction)
    /// → prepared (with folds) → score → table.
    pub fn from_plan(plan: &Plan) -> Result<Dag, UserError> {
        let mut b = Builder {
            plan,
            nodes: Vec::new(),
            folds: BTreeMap::new(),
            prepared: BTreeMap::new(),
            extracts: BTreeMap::new(),
            stimuli: BTreeMap::new(),
            chains: BTreeMap::new(),
        };
        let mut scores = Vec::new();
        let mut rows = Vec::new();
        for p in &plan.pairs {
            let (ma, mb) = (&plan.models[p.model_a], &plan.models[p.model_b]);
            let (la, lb) = (&ma.layers[p.layer_a], &mb.layers[p.layer_b]);
            for metric in &plan.metrics {
                let a = b.prepared(p.model_a, p.layer_a, metric.rotated);
                let bb = b.prepared(p.model_b, p.layer_b, false);
                b.nodes.push(Node {
                    label: format!(
                        "score/{}/{}/{}~{}/{}",
                        metric.name(),
                        ma.label(),
                        la.name,
                        mb.label(),
                        lb.name
                    ),
                    spec: NodeSpec::Score(ScoreNode {
                        metric: metric.metric.name().into(),
                        settings: plan.settings.clone(),
                        a: (ma.name.clone(), la.name.clone()),
                        b: (mb.name.clone(), lb.name.clone()),
                    }),
                    inputs: vec![a, bb],
                });
                scores.push(b.nodes.len() - 1);
                rows.push(RowLabel {
                    model_a: ma.name.clone(),
                    model_b: mb.name.clone(),
                    layer_a: la.name.clone(),
                    layer_b: lb.name.clone(),
                    depth_a: la.depth,
                    depth_b: lb.depth,
                    metric: metric.name(),
                    stimuli: ma.condition.clone().unwrap_or_default(),
                });
            }
        }
        b.nodes.push(Node {
            label: format!("table/{}", plan.spec.name()),
            spec: NodeSpec::Table(Table {
                pipeline: plan.spec.name(),
                rows,
            }),
            inputs: scores,
        });
        let table = b.nodes.len() - 1;
        Dag::new(b.nodes, table)
    }
}

/// Creates each shared node once while the DAG of a plan is built.
struct Builder<'p> {
    plan: &'p Plan,
    nodes: Vec<Node>,
    folds: BTreeMap<usize, usize>,
    prepared: BTreeMap<(usize, usize, bool), usize>,
    extracts: BTreeMap<usize, usize>,
    stimuli: BTreeMap<Option<String>, usize>,
    chains: BTreeMap<String, Vec<(u64, usize)>>,
}

impl Builder<'_> {
    fn push(&mut self, label: String, spec: NodeSpec, inputs: Vec<usize>) -> usize {
        self.nodes.push(Node {
            label,
            spec,
            inputs,
        });
        self.nodes.len() - 1
    }

    fn folds(&mut self, n_rows: usize) -> usize {
        if let Some(&f) = self.folds.get(&n_rows) {
            return f;
        }
        let spec = NodeSpec::Folds(FoldsNode {
            n_rows,
            k: self.plan.settings.folds.k,
            shuffle_seed: self.plan.settings.folds.shuffle_seed,
        });
        let f = self.push(format!("folds/m{n_rows}"), spec, vec![]);
        self.folds.insert(n_rows, f);
        f
    }

    /// The prepared node of layer `l` of model `m` (Haar-rotated when `rotated`).
    fn prepared(&mut self, m: usize, l: usize, rotated: bool) -> usize {
        if let Some(&i) = self.prepared.get(&(m, l, rotated)) {
            return i;
        }
        let model = &self.plan.models[m];
        let layer = &model.layers[l];
        let f = self.folds(layer.shape.0);
        let (input, array) = match &model.network {
            None => {
                let spec = NodeSpec::Source(Source {
                    model: model.name.clone(),
                    layer: layer.name.clone(),
                    file: layer.file.clone(),
                    tensor: layer.tensor.clone(),
                    stimuli: model.stimuli.as_ref().map(|(p, _)| p.clone()),
                });
                (
                    self.push(
                        format!("source/{}/{}", model.name, layer.name),
                        spec,
                        vec![],
                    ),
                    "x".to_string(),
                )
            }
            Some(_) => (self.extract(m), layer.name.clone()),
        };
        let spec = NodeSpec::Prepared(Prepared {
            model: model.name.clone(),
            layer: layer.name.clone(),
            array,
            rotation: rotated.then_some(self.plan.spec.options.rotation_seed),
        });
        let suffix = if rotated { ":rotated" } else { "" };
        let i = self.push(
            format!("prepared/{}/{}{suffix}", model.label(), layer.name),
            spec,
            vec![input, f],
        );
        self.prepared.insert((m, l, rotated), i);
        i
    }

    /// The node reading `set` (one per distinct set).
    fn image_set(&mut self, set: &ImageSet) -> usize {
        let label = format!(
            "images/{}/{}/{}",
            set.dataset,
            set.split,
            set.count
                .map(|c| c.to_string())
                .unwrap_or_else(|| "all".into())
        );
        if let Some(i) = self.nodes.iter().position(|n| n.label == label) {
            return i;
        }
        self.push(label, NodeSpec::Images(set.clone()), vec![])
    }

    /// The node of stimulus set `name` (`None`: the base set): images, then its transform.
    fn stimuli(&mut self, name: &Option<String>) -> usize {
        if let Some(&s) = self.stimuli.get(name) {
            return s;
        }
        let net = self.plan.networks.as_ref().expect("network-based plan");
        let set = net
            .sets
            .iter()
            .find(|s| &s.name == name)
            .expect("models name existing sets")
            .clone();
        let mut s = self.image_set(&set.images);
        if let Some((t, seed)) = set.transform {
            s = self.push(
                format!("transform/{}/{}", set.images.dataset, t.name()),
                NodeSpec::Transform(TransformNode { transform: t, seed }),
                vec![s],
            );
        }
        self.stimuli.insert(name.clone(), s);
        s
    }

    /// The training chain of network `name`: one node per checkpoint, each resuming from the
    /// previous one.
    fn chain(
        &mut self,
        name: &str,
        model: crate::models::ModelConfig,
        seed: u32,
        own: crate::pipeline::networks::RecipeOverride,
    ) -> Vec<(u64, usize)> {
        if let Some(c) = self.chains.get(name) {
            return c.clone();
        }
        let tp = self
            .plan
            .networks
            .as_ref()
            .and_then(|n| n.training.clone())
            .expect("trained networks have a training plan");
        let tr = self.image_set(&tp.train_set);
        let te = self.image_set(&tp.test_set);
        let mut recipe = tp.recipe.clone();
        recipe.model = model;
        recipe.seed = seed;
        own.apply(&mut recipe);
        let mut chain = Vec::new();
        let mut previous: Option<usize> = None;
        for &step in &tp.steps {
            let mut inputs = vec![tr, te];
            inputs.extend(previous);
            let i = self.push(
                format!("train/{name}/step{step}"),
                NodeSpec::Train(Train {
                    recipe: recipe.clone(),
                    step,
                }),
                inputs,
            );
            chain.push((step, i));
            previous = Some(i);
        }
        self.chains.insert(name.to_string(), chain.clone());
        chain
    }

    /// The extraction node of network model `m`.
    fn extract(&mut self, m: usize) -> usize {
        if let Some(&e) = self.extracts.get(&m) {
            return e;
        }
        let model = &self.plan.models[m];
        let net = model.network.clone().expect("network model");
        let weights = match &net.origin {
            Origin::Imported(file) => self.push(
                format!("weights/{}", net.name),
                NodeSpec::Weights(Weights { file: file.clone() }),
                vec![],
            ),
            Origin::Trained { seed, step } => {
                let chain = self.chain(&net.name, net.model, *seed, net.recipe);
                chain
                    .iter()
                    .find(|(s, _)| s == step)
                    .expect("checkpoint in chain")
                    .1
            }
        };
        let stimuli = self.stimuli(&model.condition);
        let plan = self.plan.networks.as_ref().expect("network-based plan");
        let spec = NodeSpec::Extract(Extract {
            model: net.model,
            reduction: plan.reduction,
            normalize: plan.normalize,
        });
        let e = self.push(
            format!("extract/{}", model.label()),
            spec,
            vec![weights, stimuli],
        );
        self.extracts.insert(m, e);
        e
    }
}
