//! A pipeline's DAG: the expanded [`Plan`] turned into engine nodes — source (or images →
//! training → extraction) → prepared (with folds) → score (and its `[statistics]` tests) →
//! table.

use std::collections::BTreeMap;
use std::sync::Arc;

use repflow_engine::{Dag, DagNode, Kind};

use crate::error::UserError;
use crate::nodes::folds::FoldsNode;
use crate::nodes::images::{ImageSet, TransformNode};
use crate::nodes::lm_train::LmTrain;
use crate::nodes::network::{Extract, Train, Weights};
use crate::nodes::prepared::Prepared;
use crate::nodes::reduce::Reduce;
use crate::nodes::score::ScoreNode;
use crate::nodes::shift_score::ShiftScoreNode;
use crate::nodes::source::Source;
use crate::nodes::statistic::{StatisticNode, Test};
use crate::nodes::table::{RowLabel, Table};
use crate::nodes::text::{Embed, TextModel};
use crate::nodes::RunContext;
use crate::pipeline::language::TextSource;
use crate::pipeline::networks::Origin;
use crate::pipeline::spec::MetricChoice;
use crate::pipeline::{LayerPair, Plan};
use crate::text::lm_train::LmRecipe;
use repflow_kernels::Metric;

/// A pipeline's DAG and the index of its table node.
pub struct PipelineDag {
    /// The DAG.
    pub dag: Dag<RunContext>,
    /// The index of the table node.
    pub table: usize,
}

/// Builds the DAG of an expanded pipeline.
pub fn build(plan: &Plan) -> Result<PipelineDag, UserError> {
    let mut b = Builder {
        plan,
        nodes: Vec::new(),
        folds: BTreeMap::new(),
        prepared: BTreeMap::new(),
        extracts: BTreeMap::new(),
        reduced: BTreeMap::new(),
        embeds: BTreeMap::new(),
        sentences: None,
        stimuli: BTreeMap::new(),
        chains: BTreeMap::new(),
        lm_chains: BTreeMap::new(),
        image_sets: BTreeMap::new(),
    };
    let mut scores = Vec::new();
    let mut rows = Vec::new();
    let mut stats = Vec::new();
    let tests = tests_of(plan)?;
    for p in &plan.pairs {
        let (ma, mb) = (&plan.models[p.model_a], &plan.models[p.model_b]);
        let (la, lb) = (&ma.layers[p.layer_a], &mb.layers[p.layer_b]);
        for metric in &plan.metrics {
            let label = format!(
                "score/{}/{}/{}~{}/{}",
                metric.name(),
                ma.label(),
                la.name,
                mb.label(),
                lb.name
            );
            let row_label = RowLabel {
                model_a: ma.name.clone(),
                model_b: mb.name.clone(),
                layer_a: la.name.clone(),
                layer_b: lb.name.clone(),
                depth_a: la.depth,
                depth_b: lb.depth,
                metric: metric.name(),
                stimuli: ma.condition.clone().unwrap_or_default(),
            };
            if metric.shift {
                let node = ShiftScoreNode {
                    settings: plan.settings.clone(),
                    a: (ma.name.clone(), la.name.clone()),
                    b: (mb.name.clone(), lb.name.clone()),
                };
                // with a shift metric the plan keeps maps: the extractions hold them
                let inputs = [
                    ("x_maps", b.extract(p.model_a)),
                    ("y_maps", b.extract(p.model_b)),
                    ("folds", b.folds(la.shape.0)),
                ];
                scores.push(b.push(label, node, &inputs));
                rows.push(row_label);
                continue;
            }
            let x = b.prepared(p.model_a, p.layer_a, metric.rotated);
            let y = b.prepared(p.model_b, p.layer_b, false);
            let node = ScoreNode {
                metric: metric.metric,
                settings: plan.settings.clone(),
                a: (ma.name.clone(), la.name.clone()),
                b: (mb.name.clone(), lb.name.clone()),
            };
            let row = rows.len();
            if tested(plan, p, metric) {
                for &(test, n, seed, level) in &tests {
                    let basis = matches!(metric.metric, Metric::Permutation | Metric::SoftMatching);
                    let applies = match test {
                        Test::Null => true,
                        Test::Bootstrap => metric.metric != Metric::Rsa,
                        Test::Rotation => basis && !metric.rotated,
                    };
                    if !applies {
                        continue;
                    }
                    let node = StatisticNode {
                        metric: metric.metric,
                        settings: plan.settings.clone(),
                        test,
                        n,
                        seed,
                        level,
                    };
                    let stat_label =
                        format!("statistic/{}{}", test.field(), &label["score".len()..]);
                    stats.push((row, b.push(stat_label, node, &[("x", x), ("y", y)])));
                }
            }
            scores.push(b.push(label, node, &[("x", x), ("y", y)]));
            rows.push(row_label);
        }
    }
    let mut inputs: Vec<(&str, usize)> = scores.iter().map(|&s| ("score", s)).collect();
    inputs.extend(stats.iter().map(|&(_, s)| ("statistic", s)));
    let table = b.push(
        format!("table/{}", plan.spec.name()),
        Table {
            pipeline: plan.spec.name(),
            rows,
            statistics: stats.iter().map(|&(row, _)| row).collect(),
        },
        &inputs,
    );
    let dag = Dag::new(b.nodes).map_err(|e| UserError::input(e.0))?;
    Ok(PipelineDag { dag, table })
}

/// A test `[statistics]` asks for: (test, draws, seed, confidence level).
type PlannedTest = (Test, usize, u32, Option<f64>);

/// The tests `[statistics]` asks for.
fn tests_of(plan: &Plan) -> Result<Vec<PlannedTest>, UserError> {
    let st = &plan.spec.statistics;
    let mut out = Vec::new();
    if st.null > 0 {
        out.push((Test::Null, st.null, st.null_seed, None));
    }
    if st.bootstrap > 0 {
        out.push((
            Test::Bootstrap,
            st.bootstrap,
            st.bootstrap_seed,
            Some(st.ci),
        ));
    }
    if st.rotations > 0 {
        if (st.rotation_seed as u64) + (st.rotations as u64) > u32::MAX as u64 + 1 {
            return Err(UserError::input(format!(
                "{}: `statistics.rotation_seed` + `statistics.rotations` passes 2^32",
                plan.spec.path.display()
            )));
        }
        out.push((Test::Rotation, st.rotations, st.rotation_seed, None));
    }
    Ok(out)
}

/// Whether `[statistics]` tests the score of `metric` on pair `p`: a listed metric (all when
/// none are listed), on the base set unless `sets = "all"`, between final checkpoints unless
/// `checkpoints = "all"`.
fn tested(plan: &Plan, p: &LayerPair, metric: &MetricChoice) -> bool {
    let st = &plan.spec.statistics;
    if !st.metrics.is_empty() && !st.metrics.iter().any(|m| *m == metric.name()) {
        return false;
    }
    let models = [&plan.models[p.model_a], &plan.models[p.model_b]];
    if st.sets == "base" && models.iter().any(|m| m.condition.is_some()) {
        return false;
    }
    if st.checkpoints == "last" {
        let last = |name: &str| {
            plan.models
                .iter()
                .filter_map(|m| m.trained())
                .filter(|(n, _)| *n == name)
                .map(|(_, step)| step)
                .max()
        };
        for m in models {
            if let Some((name, step)) = m.trained() {
                if Some(step) != last(name) {
                    return false;
                }
            }
        }
    }
    true
}

/// Creates each shared node once while the DAG of a plan is built.
struct Builder<'p> {
    plan: &'p Plan,
    nodes: Vec<DagNode<RunContext>>,
    folds: BTreeMap<usize, usize>,
    prepared: BTreeMap<(usize, usize, bool), usize>,
    extracts: BTreeMap<usize, usize>,
    reduced: BTreeMap<usize, usize>,
    embeds: BTreeMap<usize, usize>,
    sentences: Option<usize>,
    stimuli: BTreeMap<Option<String>, usize>,
    chains: BTreeMap<String, Vec<(u64, usize)>>,
    lm_chains: BTreeMap<String, Vec<(u64, usize)>>,
    image_sets: BTreeMap<String, usize>,
}

impl Builder<'_> {
    fn push<K: Kind<RunContext>>(
        &mut self,
        label: String,
        node: K,
        inputs: &[(&str, usize)],
    ) -> usize {
        self.nodes.push(DagNode {
            label,
            node: Arc::new(node),
            inputs: inputs.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
        });
        self.nodes.len() - 1
    }

    fn folds(&mut self, n_rows: usize) -> usize {
        if let Some(&f) = self.folds.get(&n_rows) {
            return f;
        }
        let node = FoldsNode {
            n_rows,
            k: self.plan.settings.folds.k,
            shuffle_seed: self.plan.settings.folds.shuffle_seed,
        };
        let f = self.push(format!("folds/m{n_rows}"), node, &[]);
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
        let (input, array) = match (&model.network, &model.text) {
            (None, Some(_)) => (self.embed(m), layer.name.clone()),
            (None, None) => {
                let node = Source {
                    model: model.name.clone(),
                    layer: layer.name.clone(),
                    file: layer.file.clone(),
                    tensor: layer.tensor.clone(),
                    stimuli: model.stimuli.as_ref().map(|(p, _)| p.clone()),
                };
                let label = format!("source/{}/{}", model.name, layer.name);
                (self.push(label, node, &[]), "x".to_string())
            }
            (Some(_), _) => (self.activations(m), layer.name.clone()),
        };
        let node = Prepared {
            model: model.name.clone(),
            layer: layer.name.clone(),
            array,
            rotation: rotated.then_some(self.plan.spec.options.rotation_seed),
        };
        let suffix = if rotated { ":rotated" } else { "" };
        let i = self.push(
            format!("prepared/{}/{}{suffix}", model.label(), layer.name),
            node,
            &[("matrix", input), ("folds", f)],
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
        if let Some(&i) = self.image_sets.get(&label) {
            return i;
        }
        let i = self.push(label.clone(), set.clone(), &[]);
        self.image_sets.insert(label, i);
        i
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
                TransformNode { transform: t, seed },
                &[("images", s)],
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
            let mut inputs = vec![("train_set", tr), ("test_set", te)];
            inputs.extend(previous.map(|p| ("previous", p)));
            let node = Train {
                recipe: recipe.clone(),
                step,
            };
            let i = self.push(format!("train/{name}/step{step}"), node, &inputs);
            chain.push((step, i));
            previous = Some(i);
        }
        self.chains.insert(name.to_string(), chain.clone());
        chain
    }

    /// The node embedding the pipeline's sentences with language model `m`.
    fn embed(&mut self, m: usize) -> usize {
        if let Some(&e) = self.embeds.get(&m) {
            return e;
        }
        let plan = self.plan.text.as_ref().expect("language plan");
        let sentences = match self.sentences {
            Some(s) => s,
            None => {
                let s = self.push("sentences".into(), plan.sentences.clone(), &[]);
                self.sentences = Some(s);
                s
            }
        };
        let model = &self.plan.models[m];
        let text = model.text.as_ref().expect("language model");
        let mut inputs = vec![("sentences", sentences)];
        let model_node = match &text.source {
            TextSource::Checkpoint(t) => t.clone(),
            TextSource::Trained { recipe, step } => {
                let chain = self.lm_chain(&text.name, recipe);
                let (_, w) = *chain
                    .iter()
                    .find(|(s, _)| s == step)
                    .expect("every checkpoint is in the chain");
                inputs.push(("weights", w));
                TextModel::Trained {
                    config: recipe.model,
                }
            }
        };
        let node = Embed {
            model: model_node,
            pooling: plan.pooling,
            batch: plan.batch,
        };
        let e = self.push(format!("embed/{}", model.name), node, &inputs);
        self.embeds.insert(m, e);
        e
    }

    /// The training chain of decoder `name`: one `lm-train` node per checkpoint, each
    /// resuming from the previous one.
    fn lm_chain(&mut self, name: &str, recipe: &LmRecipe) -> Vec<(u64, usize)> {
        if let Some(c) = self.lm_chains.get(name) {
            return c.clone();
        }
        let tp = self
            .plan
            .text
            .as_ref()
            .and_then(|t| t.training.clone())
            .expect("trained decoders have a training plan");
        let mut chain = Vec::new();
        let mut previous: Option<usize> = None;
        for &step in &tp.steps {
            let inputs: Vec<(&str, usize)> =
                previous.map(|p| ("previous", p)).into_iter().collect();
            let node = LmTrain {
                recipe: recipe.clone(),
                step,
                package: tp.package.clone(),
            };
            let i = self.push(format!("lm-train/{name}/step{step}"), node, &inputs);
            chain.push((step, i));
            previous = Some(i);
        }
        self.lm_chains.insert(name.to_string(), chain.clone());
        chain
    }

    /// The node holding network model `m`'s reduced activations: its extraction, or with
    /// `maps` the reduction of its full maps.
    fn activations(&mut self, m: usize) -> usize {
        let plan = self.plan.networks.as_ref().expect("network-based plan");
        if !plan.maps {
            return self.extract(m);
        }
        if let Some(&r) = self.reduced.get(&m) {
            return r;
        }
        let node = Reduce {
            reduction: plan.reduction,
        };
        let maps = self.extract(m);
        let r = self.push(
            format!("reduce/{}", self.plan.models[m].label()),
            node,
            &[("maps", maps)],
        );
        self.reduced.insert(m, r);
        r
    }

    /// The extraction node of network model `m` (full maps when the plan keeps them).
    fn extract(&mut self, m: usize) -> usize {
        if let Some(&e) = self.extracts.get(&m) {
            return e;
        }
        let model = &self.plan.models[m];
        let net = model.network.clone().expect("network model");
        let weights = match &net.origin {
            Origin::Imported(file) => self.push(
                format!("weights/{}", net.name),
                Weights { file: file.clone() },
                &[],
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
        let node = Extract {
            model: net.model,
            reduction: plan.reduction,
            normalize: plan.normalize,
            maps: plan.maps,
        };
        let e = self.push(
            format!("extract/{}", model.label()),
            node,
            &[("weights", weights), ("stimuli", stimuli)],
        );
        self.extracts.insert(m, e);
        e
    }
}
