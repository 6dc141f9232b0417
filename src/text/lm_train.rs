//! Training the byte-level decoders of [`super::gpt`] on WordNet's definitions with the
//! next-token loss: AdamW with linear warm-up and cosine decay, gradients clipped to norm 1, windows drawn from numpy's
//! legacy MT19937 seeded by the run's seed and the step, checkpoints at chosen steps (0 =
//! untrained) with the held-out loss. The same seed and thread count give bit-identical
//! weights, and a run resumed from a checkpoint gives the weights of an uninterrupted one.
//!
//! The text: every WordNet definition (no example sentences: those are the stimuli), each
//! after a `\n`, in file order; every 20th definition is held out for the loss reported at
//! each checkpoint.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use repflow_kernels::rng::LegacyRandomState;
use serde::{Deserialize, Serialize};

use super::gpt::{Gpt, GptConfig, START};
use crate::error::UserError;
use crate::models::optim::{adamw, cosine_lr};
use crate::models::train::TrainState;

/// One held-out definition in this many.
const HELD_OUT_EVERY: usize = 20;
/// Gradients are scaled down to this global norm when larger (nanoGPT's clipping).
const GRAD_CLIP: f64 = 1.0;
/// Windows the held-out loss is measured on (evenly spaced over the held-out text).
const HELD_OUT_WINDOWS: usize = 128;

/// A decoder's training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmRecipe {
    /// The decoder.
    pub model: GptConfig,
    /// Seed of initialisation and window order.
    pub seed: u32,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps to the peak.
    pub warmup: u64,
    /// Weight decay of matrices (AdamW, decoupled); vectors are not decayed.
    pub weight_decay: f64,
    /// Windows per step (each `n_positions + 1` bytes).
    pub batch: usize,
    /// Total optimisation steps (the cosine reaches 0 there).
    pub steps: u64,
}

/// The training and held-out text, as bytes.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Training bytes.
    pub train: Vec<u8>,
    /// Held-out bytes.
    pub held_out: Vec<u8>,
}

impl Corpus {
    /// WordNet's definitions from the wordnet-base `.deb`.
    pub fn wordnet(deb: &Path) -> Result<Corpus, UserError> {
        let (mut train, mut held_out) = (Vec::new(), Vec::new());
        for (i, g) in super::sentences::wordnet_glosses(deb)?.iter().enumerate() {
            let out = if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 {
                &mut held_out
            } else {
                &mut train
            };
            out.push(START as u8);
            out.extend_from_slice(g.definition.as_bytes());
        }
        Ok(Corpus { train, held_out })
    }
}

/// What a checkpoint records besides its weights.
#[derive(Debug, Clone, Copy)]
pub struct LmCheckpoint {
    /// Steps taken.
    pub step: u64,
    /// Mean training loss (nats per byte) since the previous checkpoint (NaN at step 0).
    pub train_loss: f64,
    /// Held-out loss (nats per byte).
    pub held_out_loss: f64,
}

fn ce(e: candle_core::Error) -> UserError {
    UserError::input(format!(
        "language-model training: {}",
        e.to_string().lines().next().unwrap_or_default()
    ))
}

/// nanoGPT's initialisation from the seeded generator: matrices normal with std 0.02 (the
/// residual projections 0.02/√(2·blocks)), biases 0, norms 1 and 0; in name order.
fn initialise(varmap: &VarMap, cfg: &GptConfig, seed: u32) -> candle_core::Result<()> {
    let mut rng = LegacyRandomState::new(seed);
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let proj_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
    for name in names {
        let var = &data[name];
        let shape = var.as_tensor().dims().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if shape.len() == 2 {
            let std = if name.ends_with("c_proj.weight") {
                proj_std
            } else {
                0.02
            };
            (0..n).map(|_| (rng.gauss() * std) as f32).collect()
        } else if name.ends_with("ln_1.weight")
            || name.ends_with("ln_2.weight")
            || name.ends_with("ln_f.weight")
        {
            vec![1.0; n]
        } else {
            vec![0.0; n]
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

/// Windows of `len` bytes of `text` starting at `starts`, as a batch × len tensor.
fn windows(text: &[u8], starts: &[usize], len: usize) -> candle_core::Result<Tensor> {
    let ids: Vec<u32> = starts
        .iter()
        .flat_map(|&s| text[s..s + len].iter().map(|&b| u32::from(b)))
        .collect();
    Tensor::from_vec(ids, (starts.len(), len), &Device::Cpu)
}

/// The held-out loss (nats per byte) of `net`.
pub fn held_out_loss(net: &Gpt, corpus: &Corpus) -> Result<f64, UserError> {
    let len = net.config.n_positions + 1;
    let span = corpus.held_out.len().saturating_sub(len);
    let starts: Vec<usize> = (0..HELD_OUT_WINDOWS)
        .map(|i| i * span / (HELD_OUT_WINDOWS - 1))
        .collect();
    let mut total = 0.0;
    for chunk in starts.chunks(32) {
        let ids = windows(&corpus.held_out, chunk, len).map_err(ce)?;
        let loss = net
            .loss(&ids)
            .and_then(|l| l.to_scalar::<f32>())
            .map_err(ce)?;
        total += loss as f64 * chunk.len() as f64;
    }
    Ok(total / starts.len() as f64)
}

/// Trains from `start` (from scratch when `None`) up to step `until`, calling `on_checkpoint`
/// at every step of `checkpoints` after the start (and at step 0 from scratch).
pub fn train_lm(
    recipe: &LmRecipe,
    corpus: &Corpus,
    checkpoints: &[u64],
    start: Option<TrainState>,
    until: u64,
    mut on_checkpoint: impl FnMut(LmCheckpoint, &TrainState) -> Result<(), UserError>,
) -> Result<TrainState, UserError> {
    let len = recipe.model.n_positions + 1;
    if corpus.train.len() <= len || corpus.held_out.len() <= len {
        return Err(UserError::input(format!(
            "the training text ({} bytes) or held-out text ({} bytes) is shorter than one window ({len} bytes)",
            corpus.train.len(),
            corpus.held_out.len()
        )));
    }
    if recipe.batch == 0 || recipe.steps == 0 {
        return Err(UserError::input(
            "language-model training needs a batch and steps of at least 1",
        ));
    }
    let varmap = VarMap::new();
    let first = start.as_ref().map(|s| s.step).unwrap_or(0);
    if let Some(s) = &start {
        let mut data = varmap.data().lock().expect("varmap lock");
        for (k, t) in &s.tensors {
            data.insert(k.clone(), Var::from_tensor(t).map_err(ce)?);
        }
    }
    let net = Gpt::new(
        recipe.model,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .map_err(ce)?;
    if start.is_none() {
        initialise(&varmap, &recipe.model, recipe.seed).map_err(ce)?;
    }
    let params: Vec<(String, Var)> = {
        let data = varmap.data().lock().expect("varmap lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let saved = start.map(|s| s.optimizer).unwrap_or_default();
    let mut moments = Vec::new();
    for (k, v) in &params {
        let z = v.as_tensor().zeros_like().map_err(ce)?;
        let m = saved.get(&format!("adam_m.{k}")).cloned();
        let s = saved.get(&format!("adam_v.{k}")).cloned();
        moments.push((m.unwrap_or_else(|| z.clone()), s.unwrap_or(z)));
    }
    let state = |step: u64, moments: &[(Tensor, Tensor)]| -> TrainState {
        let mut optimizer = HashMap::new();
        let mut tensors = HashMap::new();
        for ((k, v), (m, s)) in params.iter().zip(moments) {
            tensors.insert(k.clone(), v.as_tensor().detach());
            optimizer.insert(format!("adam_m.{k}"), m.clone());
            optimizer.insert(format!("adam_v.{k}"), s.clone());
        }
        TrainState {
            step,
            tensors,
            optimizer,
        }
    };
    let (mut loss_sum, mut loss_count) = (0.0, 0usize);
    let span = (corpus.train.len() - len) as u64;
    for step in first..=until {
        if checkpoints.contains(&step) && (step > first || first == 0) {
            let st = state(step, &moments);
            let ck = LmCheckpoint {
                step,
                train_loss: if loss_count > 0 {
                    loss_sum / loss_count as f64
                } else {
                    f64::NAN
                },
                held_out_loss: held_out_loss(&net, corpus)?,
            };
            on_checkpoint(ck, &st)?;
            (loss_sum, loss_count) = (0.0, 0);
        }
        if step == until {
            break;
        }
        let mut rng =
            LegacyRandomState::new(recipe.seed ^ (step as u32).wrapping_mul(2_654_435_761));
        let starts: Vec<usize> = (0..recipe.batch)
            .map(|_| rng.interval(span) as usize)
            .collect();
        let ids = windows(&corpus.train, &starts, len).map_err(ce)?;
        let loss = net.loss(&ids).map_err(ce)?;
        let value = loss.to_scalar::<f32>().map_err(ce)? as f64;
        if !value.is_finite() {
            return Err(UserError {
                message: format!(
                    "language-model training diverged: the loss is {value} at step {step} (lr {})",
                    recipe.lr
                ),
                hint: Some("lower the learning rate (`lm_training.lr`, --lr)".into()),
                code: crate::error::EXIT_FAILURE,
            });
        }
        loss_sum += value;
        loss_count += 1;
        let grads = loss.backward().map_err(ce)?;
        let warm = ((step + 1) as f64 / recipe.warmup.max(1) as f64).min(1.0);
        let lr = warm * cosine_lr(recipe.lr, step, recipe.steps);
        let mut gs = Vec::with_capacity(params.len());
        for (name, var) in &params {
            // every parameter is on the loss's path: a missing gradient is a cut graph
            let Some(g) = grads.get(var.as_tensor()) else {
                return Err(crate::models::optim::no_gradient(name));
            };
            gs.push(g.detach());
        }
        let norm = gs
            .iter()
            .map(|g| g.sqr()?.sum_all()?.to_scalar::<f32>())
            .sum::<candle_core::Result<f32>>()
            .map_err(ce)?
            .sqrt() as f64;
        let scale = if norm > GRAD_CLIP {
            GRAD_CLIP / norm
        } else {
            1.0
        };
        for (k, ((_, var), g)) in params.iter().zip(&gs).enumerate() {
            let g = (g * scale).map_err(ce)?;
            let w = var.as_tensor().detach();
            let decay = if w.rank() == 2 {
                recipe.weight_decay
            } else {
                0.0
            };
            let (new, m) = adamw(&w, &g, &moments[k], step + 1, lr, decay).map_err(ce)?;
            moments[k] = m;
            var.set(&new).map_err(ce)?;
        }
    }
    Ok(state(until, &moments))
}
