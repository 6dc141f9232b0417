//! Language-model pipelines: `[[model]]` tables shown the `[sentences]` of the pipeline —
//! `arch = "bert"` (a checkpoint folder: `config.json`, `model.safetensors`,
//! `tokenizer.json`), `arch = "gpt"` with `checkpoint` (a folder `train-lm` wrote), or
//! `arch = "gpt"` with `seed` and `depth` (a decoder trained here by `[lm_training]`, one
//! model per checkpoint, named `<name>@step<N>`). Each model's layers are the embedding
//! output, then every block, at normalised depth.

use std::path::PathBuf;

use super::expand::{Layer, Model};
use super::spec::{LmTrainingSpec, NetworkSpec, PipelineSpec};
use crate::error::UserError;
use crate::nodes::text::{SentenceSet, TextModel};
use crate::ranges;
use crate::stimuli::datasets::default_package;
use crate::text::gpt::GptConfig;
use crate::text::lm_train::LmRecipe;
use crate::text::sentences::WORDNET_DEB;
use crate::text::TokenPooling;

/// Where a comparable language model's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TextSource {
    /// A checkpoint folder (BERT or decoder).
    Checkpoint(TextModel),
    /// A decoder trained here, at one checkpoint of its run.
    Trained {
        /// Its recipe (shape and seed included).
        recipe: LmRecipe,
        /// The checkpoint's step.
        step: u64,
    },
}

/// The language model behind a comparable model.
#[derive(Debug, Clone, PartialEq)]
pub struct TextModelRef {
    /// Its `[[model]]` table's name (trained checkpoints share it).
    pub name: String,
    /// Its weights.
    pub source: TextSource,
}

impl TextModelRef {
    /// The training step of a decoder trained here.
    pub fn trained_step(&self) -> Option<u64> {
        match self.source {
            TextSource::Trained { step, .. } => Some(step),
            TextSource::Checkpoint(_) => None,
        }
    }
}

/// How the decoders of a pipeline are trained.
#[derive(Debug, Clone)]
pub struct LmTrainPlan {
    /// The checkpoint steps, ascending, the last the end of training.
    pub steps: Vec<u64>,
    /// The wordnet-base .deb the text comes from.
    pub package: PathBuf,
}

/// The sentences and pooling of a language-model pipeline.
#[derive(Debug, Clone)]
pub struct TextPlan {
    /// The sentence set.
    pub sentences: SentenceSet,
    /// How tokens are pooled.
    pub pooling: TokenPooling,
    /// Sentences per forward pass.
    pub batch: usize,
    /// The training of decoders with a `seed`, when there are any.
    pub training: Option<LmTrainPlan>,
}

/// Expands the `[[model]]` language models and `[sentences]` of `spec`.
pub fn expand_language(spec: &PipelineSpec) -> Result<(Vec<Model>, TextPlan), UserError> {
    let file = spec.path.display().to_string();
    let st = spec.sentences.clone().expect("a [sentences] table");
    if spec.stimuli.is_some() || spec.source.is_some() || !spec.models.is_empty() {
        return Err(UserError::input(format!(
            "{file}: `[sentences]` (language models) cannot be mixed with `[stimuli]`, `[source]` or `models`"
        )));
    }
    if spec.training.is_some() {
        return Err(UserError::input(format!(
            "{file}: `[training]` trains image networks; language models are trained by `[lm_training]`"
        )));
    }
    let pooling = TokenPooling::parse(&st.reduce)
        .map_err(|e| e.prefixed(&format!("{file}: `sentences.reduce`: ")))?;
    if st.batch == 0 {
        return Err(UserError::input(format!(
            "{file}: `sentences.batch` is 0; it must be at least 1"
        )));
    }
    let sentences = SentenceSet::parse(
        &st.source,
        &spec.base_dir(),
        st.package.as_ref().map(|p| spec.base_dir().join(p)),
    )
    .map_err(|e| e.prefixed(&format!("{file}: `sentences.source` is `{}`: ", st.source)))?;
    let rows = sentences.count()?;
    if spec.model.is_empty() {
        return Err(UserError::input(format!(
            "{file}: `[sentences]` is given but no `[[model]]`"
        )));
    }
    if pooling == TokenPooling::Cls {
        if let Some(m) = spec.model.iter().find(|m| m.arch == "gpt") {
            return Err(UserError::input(format!(
                "{file}: `sentences.reduce` is `cls`, but model `{}` is a causal decoder, whose first token's state is the same for every sentence",
                m.name
            ))
            .hint("use `mean` or `last` with decoders"));
        }
    }
    let trains = spec.model.iter().any(|m| m.seed.is_some());
    let training = match (&spec.lm_training, trains) {
        (Some(t), true) => Some(train_plan(spec, t)?),
        (None, true) => {
            return Err(UserError::input(format!(
                "{file}: a `[[model]]` has a `seed` (a decoder trained here) but there is no `[lm_training]` table"
            ))
            .hint("add `[lm_training]` (steps, checkpoints, …), or give the model a `checkpoint`"))
        }
        (Some(_), false) => {
            return Err(UserError::input(format!(
                "{file}: `[lm_training]` is given but no `[[model]]` has a `seed` to train"
            )))
        }
        (None, false) => None,
    };
    let mut models: Vec<Model> = Vec::new();
    for m in &spec.model {
        if spec.model.iter().filter(|x| x.name == m.name).count() > 1 {
            return Err(UserError::input(format!(
                "{file}: two `[[model]]` tables are named `{}`",
                m.name
            )));
        }
        let at = format!("{file}: model `{}`", m.name);
        let checkpoint = m.checkpoint.as_ref().map(|c| spec.base_dir().join(c));
        match (m.arch.as_str(), checkpoint, m.seed) {
            ("bert", Some(dir), None) => {
                let config = crate::text::bert::read_config(&dir.join("config.json"))?;
                let layers = layers(
                    "embeddings",
                    "encoder.layer",
                    config.num_hidden_layers,
                    rows,
                    config.hidden_size,
                );
                let source = TextSource::Checkpoint(TextModel::Bert { checkpoint: dir });
                models.push(model(&m.name, &m.name, layers, source));
            }
            ("gpt", Some(dir), None) => {
                let config = GptConfig::read(&dir.join("config.json"))?;
                let layers = gpt_layers(&config, rows);
                let source = TextSource::Checkpoint(TextModel::Gpt { checkpoint: dir });
                models.push(model(&m.name, &m.name, layers, source));
            }
            ("gpt", None, Some(seed)) => {
                let (t, plan) = (
                    spec.lm_training.as_ref().expect("checked above"),
                    training.as_ref().expect("checked above"),
                );
                let recipe = recipe(&at, m, t, seed)?;
                for &step in &plan.steps {
                    let layers = gpt_layers(&recipe.model, rows);
                    let source = TextSource::Trained {
                        recipe: recipe.clone(),
                        step,
                    };
                    let name = format!("{}@step{step}", m.name);
                    models.push(model(&name, &m.name, layers, source));
                }
            }
            ("bert" | "gpt", Some(_), Some(_)) => {
                return Err(UserError::input(format!(
                    "{at} has both `checkpoint` and `seed`; give one"
                ))
                .hint("`checkpoint`: a folder to import; `seed` (with `depth`): a decoder trained here"))
            }
            ("bert", None, _) => {
                return Err(UserError::input(format!(
                    "{at} needs `checkpoint`, a folder with config.json, model.safetensors and tokenizer.json"
                ))
                .hint("BERT-family models are imported, not trained here"))
            }
            ("gpt", None, None) => {
                return Err(UserError::input(format!(
                    "{at} needs `checkpoint` (a folder `repflow train-lm` wrote) or `seed` and `depth` (trained here)"
                )))
            }
            (other, _, _) => {
                return Err(UserError::input(format!(
                    "{at} has arch `{other}`; a `[sentences]` pipeline takes language models (`arch = \"bert\"` or `\"gpt\"`)"
                )))
            }
        }
    }
    Ok((
        models,
        TextPlan {
            sentences,
            pooling,
            batch: st.batch,
            training,
        },
    ))
}

fn model(name: &str, table: &str, layers: Vec<Layer>, source: TextSource) -> Model {
    Model {
        name: name.to_string(),
        layers,
        stimuli: None,
        network: None,
        text: Some(TextModelRef {
            name: table.to_string(),
            source,
        }),
        condition: None,
    }
}

/// The embedding output `first`, then `blocks` layers `<prefix>.<l>`, each rows × width.
fn layers(first: &str, prefix: &str, blocks: usize, rows: usize, width: usize) -> Vec<Layer> {
    std::iter::once(first.to_string())
        .chain((0..blocks).map(|l| format!("{prefix}.{l}")))
        .enumerate()
        .map(|(i, name)| Layer {
            name,
            depth: super::layer_pairs::normalised_depth(i, blocks + 1),
            file: Default::default(),
            tensor: None,
            shape: (rows, width),
        })
        .collect()
}

fn gpt_layers(c: &GptConfig, rows: usize) -> Vec<Layer> {
    layers(
        "transformer.wte+wpe",
        "transformer.h",
        c.n_layer,
        rows,
        c.n_embd,
    )
}

/// Checks `[lm_training]` and lists its checkpoints.
fn train_plan(spec: &PipelineSpec, t: &LmTrainingSpec) -> Result<LmTrainPlan, UserError> {
    let file = spec.path.display();
    let key = |k: &str| format!("{file}: `lm_training.{k}`");
    for (k, v) in [
        ("steps", t.steps as usize),
        ("batch", t.batch),
        ("heads", t.heads),
    ] {
        ranges::at_least_one(&key(k), v).map_err(UserError::input)?;
    }
    if t.steps > 10_000_000 {
        return Err(UserError::input(format!(
            "{} is {}; at most 10000000",
            key("steps"),
            t.steps
        )));
    }
    ranges::LEARNING_RATE
        .check(&key("lr"), t.lr)
        .map_err(UserError::input)?;
    ranges::WEIGHT_DECAY
        .check(&key("weight_decay"), t.weight_decay)
        .map_err(UserError::input)?;
    if let Some(&c) = t.checkpoints.iter().find(|&&c| c > t.steps) {
        return Err(UserError::input(format!(
            "{} lists step {c}, after the last step ({})",
            key("checkpoints"),
            t.steps
        ))
        .hint("checkpoints are steps from 0 to `lm_training.steps`"));
    }
    let mut steps = t.checkpoints.clone();
    steps.push(t.steps);
    steps.sort_unstable();
    steps.dedup();
    let package = t
        .package
        .as_ref()
        .map(|p| spec.base_dir().join(p))
        .unwrap_or_else(|| default_package(WORDNET_DEB));
    Ok(LmTrainPlan { steps, package })
}

/// The recipe of model table `m` (seed `seed`) under `[lm_training]`.
fn recipe(at: &str, m: &NetworkSpec, t: &LmTrainingSpec, seed: u32) -> Result<LmRecipe, UserError> {
    let Some(depth) = m.depth else {
        return Err(UserError::input(format!(
            "{at} is a decoder trained here but has no `depth` (its number of blocks)"
        ))
        .hint("e.g. depth = 4"));
    };
    let model = GptConfig {
        vocab_size: 256,
        n_positions: t.context,
        n_embd: m.width,
        n_layer: depth,
        n_head: t.heads,
    };
    model.check(&format!(
        "{at} (`width`, `depth`, `lm_training.heads`, `lm_training.context`)"
    ))?;
    if m.optimizer.is_some() || m.imagenet_stem || m.lr.is_some() || m.weight_decay.is_some() {
        return Err(UserError::input(format!(
            "{at}: `optimizer`, `lr`, `weight_decay` and `imagenet_stem` are image-network keys; a decoder's recipe is `[lm_training]`"
        )));
    }
    Ok(LmRecipe {
        model,
        seed,
        lr: t.lr,
        warmup: t.warmup,
        weight_decay: t.weight_decay,
        batch: t.batch,
        steps: t.steps,
    })
}
