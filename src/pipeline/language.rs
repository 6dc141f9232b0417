//! Language-model pipelines: `[[model]]` tables with `arch = "bert"` (a checkpoint folder:
//! `config.json`, `model.safetensors`, `tokenizer.json`) shown the `[sentences]` of the
//! pipeline; each model's layers are the embedding output, then every encoder layer, at
//! normalised depth.

use super::expand::{Layer, Model};
use super::spec::PipelineSpec;
use crate::error::UserError;
use crate::nodes::text::SentenceSet;
use crate::text::TokenPooling;

/// A language model behind a comparable model.
#[derive(Debug, Clone, PartialEq)]
pub struct TextModelRef {
    /// The checkpoint folder.
    pub checkpoint: std::path::PathBuf,
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
    let mut models = Vec::new();
    for m in &spec.model {
        if m.arch != "bert" {
            return Err(UserError::input(format!(
                "{file}: model `{}` has arch `{}`; a `[sentences]` pipeline takes language models (`arch = \"bert\"`)",
                m.name, m.arch
            )));
        }
        if m.seed.is_some() {
            return Err(UserError::input(format!(
                "{file}: model `{}` has a `seed`, but language models are imported from checkpoints; training them here is not built yet",
                m.name
            ))
            .hint("give `checkpoint`, a BERT checkpoint folder"));
        }
        let Some(checkpoint) = m.checkpoint.as_ref().map(|c| spec.base_dir().join(c)) else {
            return Err(UserError::input(format!(
                "{file}: model `{}` needs `checkpoint`, a folder with config.json, model.safetensors and tokenizer.json",
                m.name
            )));
        };
        if models.iter().any(|x: &Model| x.name == m.name) {
            return Err(UserError::input(format!(
                "{file}: two `[[model]]` tables are named `{}`",
                m.name
            )));
        }
        let config = crate::text::bert::read_config(&checkpoint.join("config.json"))?;
        let count = config.num_hidden_layers + 1;
        let layers = std::iter::once("embeddings".to_string())
            .chain((0..config.num_hidden_layers).map(|l| format!("encoder.layer.{l}")))
            .enumerate()
            .map(|(i, name)| Layer {
                name,
                depth: super::layer_pairs::normalised_depth(i, count),
                file: Default::default(),
                tensor: None,
                shape: (rows, config.hidden_size),
            })
            .collect();
        models.push(Model {
            name: m.name.clone(),
            layers,
            stimuli: None,
            network: None,
            text: Some(TextModelRef { checkpoint }),
            condition: None,
        });
    }
    Ok((
        models,
        TextPlan {
            sentences,
            pooling,
            batch: st.batch,
        },
    ))
}
