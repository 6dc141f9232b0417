//! Training: SGD with momentum and weight decay (or AdamW) on a cosine schedule, random
//! crop and flip, checkpoints at chosen steps (step 0 = untrained). Deterministic: weights
//! are initialised and batches drawn from numpy's legacy MT19937 seeded by the run's seed.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use repflow_kernels::rng::LegacyRandomState;
use serde::{Deserialize, Serialize};

use super::optim::{adamw, cosine_lr, sgd};
use super::{ModelConfig, Network, Taps};
use crate::error::UserError;
use crate::stimuli::Images;

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with (PyTorch-style) momentum and L2 weight decay.
    Sgd,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// What the network is trained to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Classify: cross-entropy against the labels.
    #[default]
    Supervised,
    /// Momentum Contrast without labels ([`super::moco`]); the model has a projection head
    /// whose output dimension is its `num_classes`.
    Moco(super::moco::MocoConfig),
}

impl Objective {
    /// Whether this is the supervised objective (left out of recipe keys, so that the keys
    /// of supervised runs are those from before objectives existed).
    pub fn is_supervised(&self) -> bool {
        matches!(self, Objective::Supervised)
    }
}

/// A training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub model: ModelConfig,
    /// Seed of initialisation, batch order and augmentation.
    pub seed: u32,
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Peak learning rate (cosine decay to 0 over the run).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Batch size.
    pub batch: usize,
    /// Total optimisation steps.
    pub steps: u64,
    /// Random crop (2-pixel zero padding) and horizontal flip.
    pub augment: bool,
    /// Input normalisation (mean, std).
    pub normalize: (f32, f32),
    /// Steps after which to save a checkpoint (0 = before training).
    pub checkpoints: Vec<u64>,
    /// The objective (supervised unless stated).
    #[serde(default, skip_serializing_if = "Objective::is_supervised")]
    pub objective: Objective,
}

/// A saved checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Optimisation steps taken.
    pub step: u64,
    /// Epochs (fractional).
    pub epoch: f64,
    /// Mean training loss since the previous checkpoint (NaN at step 0).
    pub train_loss: f64,
    /// Accuracy on the test set (for a network trained without labels, its linear probe's).
    pub test_accuracy: f64,
    /// Accuracy of the k-NN classifier on the test set (networks trained without labels).
    pub knn_accuracy: Option<f64>,
    /// Weights and batch-norm statistics with torchvision names.
    pub tensors: HashMap<String, Tensor>,
}

pub(super) fn ce(e: candle_core::Error) -> UserError {
    UserError::input(format!(
        "training: {}",
        e.to_string().lines().next().unwrap_or_default()
    ))
}

/// Sets every parameter from the seeded generator, as torchvision initialises: conv weights
/// Kaiming-normal (fan out), batch norm 1 and 0, linear layers uniform in ±1/√fan_in; the
/// ViT's [CLS] token 0 and position embedding normal with std 0.02.
pub(super) fn initialise(varmap: &VarMap, seed: u32) -> candle_core::Result<()> {
    let mut rng = LegacyRandomState::new(seed);
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let shape = var.as_tensor().dims().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("class_token") {
            vec![0.0; n]
        } else if name.ends_with("pos_embedding") {
            (0..n).map(|_| (rng.gauss() * 0.02) as f32).collect()
        } else if name.ends_with("running_var") {
            vec![1.0; n]
        } else if name.ends_with("running_mean")
            || (name.ends_with("bias") && shape.len() == 1 && !is_linear(name, &data))
        {
            vec![0.0; n]
        } else if shape.len() == 4 {
            let std = (2.0 / (shape[0] * shape[2] * shape[3]) as f64).sqrt();
            (0..n).map(|_| (rng.gauss() * std) as f32).collect()
        } else if shape.len() == 1 && name.ends_with("weight") {
            vec![1.0; n]
        } else {
            // linear weight (out × in) or linear bias: U(−1/√fan_in, 1/√fan_in)
            let fan_in = if shape.len() == 2 {
                shape[1]
            } else {
                linear_fan_in(name, &data)
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n)
                .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                .collect()
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

fn is_linear(bias_name: &str, data: &HashMap<String, Var>) -> bool {
    let w = format!("{}weight", bias_name.trim_end_matches("bias"));
    data.get(&w).is_some_and(|v| v.as_tensor().rank() == 2)
}

fn linear_fan_in(bias_name: &str, data: &HashMap<String, Var>) -> usize {
    let w = format!("{}weight", bias_name.trim_end_matches("bias"));
    data.get(&w).map(|v| v.as_tensor().dims()[1]).unwrap_or(1)
}

/// One batch as a tensor, with augmentation.
fn batch(
    images: &Images,
    idx: &[usize],
    cfg: &TrainConfig,
    rng: &mut LegacyRandomState,
    train: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (c, h, w) = (images.c, images.h, images.w);
    let mut data = Vec::with_capacity(idx.len() * c * h * w);
    let (mean, std) = cfg.normalize;
    for &i in idx {
        let img = images.image(i);
        let (dy, dx, flip) = if train && cfg.augment {
            (
                rng.interval(4) as isize - 2,
                rng.interval(4) as isize - 2,
                rng.next_f64() < 0.5,
            )
        } else {
            (0, 0, false)
        };
        for ch in 0..c {
            for y in 0..h as isize {
                for x in 0..w as isize {
                    let sx = if flip { w as isize - 1 - x } else { x } + dx;
                    let sy = y + dy;
                    let v = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        img[ch * h * w + sy as usize * w + sx as usize]
                    } else {
                        0.0
                    };
                    data.push((v - mean) / std);
                }
            }
        }
    }
    let xs = Tensor::from_vec(data, (idx.len(), c, h, w), &Device::Cpu)?;
    let ys = Tensor::from_vec(
        idx.iter().map(|&i| images.labels[i]).collect::<Vec<u32>>(),
        idx.len(),
        &Device::Cpu,
    )?;
    Ok((xs, ys))
}

/// Accuracy of `net` on `images` (evaluation mode).
pub fn accuracy(net: &Network, images: &Images, cfg: &TrainConfig) -> Result<f64, UserError> {
    let mut correct = 0usize;
    let mut rng = LegacyRandomState::new(0);
    for start in (0..images.n).step_by(500) {
        let idx: Vec<usize> = (start..(start + 500).min(images.n)).collect();
        let (xs, ys) = batch(images, &idx, cfg, &mut rng, false).map_err(ce)?;
        let pred = net
            .forward(&xs, false, &mut Taps::off())
            .and_then(|l| l.argmax(1))
            .map_err(ce)?;
        let eq = pred
            .eq(&ys)
            .and_then(|e| e.to_dtype(DType::F32))
            .and_then(|e| e.sum_all())
            .and_then(|s| s.to_scalar::<f32>())
            .map_err(ce)?;
        correct += eq as usize;
    }
    Ok(correct as f64 / images.n.max(1) as f64)
}

/// The network's weights and batch-norm statistics under torchvision names.
pub fn state_dict(varmap: &VarMap, net: &Network) -> HashMap<String, Tensor> {
    let mut out: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    for (prefix, bn) in net.batch_norms() {
        out.insert(format!("{prefix}.running_mean"), bn.running_mean().detach());
        out.insert(format!("{prefix}.running_var"), bn.running_var().detach());
    }
    out
}

/// Everything needed to continue training exactly: weights, batch-norm statistics and the
/// optimiser's state after `step` steps. (Batch order and augmentation are functions of the
/// seed and the step, so no generator state is needed.)
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Steps taken.
    pub step: u64,
    /// Weights and batch-norm statistics (torchvision names).
    pub tensors: HashMap<String, Tensor>,
    /// Optimiser state: `momentum.<name>`, or `adam_m.<name>` and `adam_v.<name>`.
    pub optimizer: HashMap<String, Tensor>,
}

/// Which training images each step takes: epoch `e`'s order is a shuffle seeded by the
/// seed and `e`, cut into batches; each step's augmentation draws from a generator seeded by
/// the seed and the step. So a step's batch is a function of (seed, step): resuming needs
/// no generator state.
pub(super) struct Batches {
    n: usize,
    batch: usize,
    seed: u32,
    order: Vec<usize>,
    epoch: Option<u64>,
}

impl Batches {
    /// Batches of `batch` of `n` images for runs seeded by `seed`.
    pub(super) fn new(n: usize, batch: usize, seed: u32) -> Batches {
        Batches {
            n,
            batch,
            seed,
            order: Vec::new(),
            epoch: None,
        }
    }

    /// Steps in one epoch (the last batch may be short).
    pub(super) fn steps_per_epoch(&self) -> u64 {
        self.n.div_ceil(self.batch) as u64
    }

    /// The image indices of step `step`, and the generator of its augmentation.
    pub(super) fn step(&mut self, step: u64) -> (&[usize], LegacyRandomState) {
        let per = self.steps_per_epoch();
        let epoch = step / per;
        if self.epoch != Some(epoch) {
            self.order = (0..self.n).collect();
            LegacyRandomState::new(
                self.seed
                    .wrapping_add(1)
                    .wrapping_add((epoch as u32).wrapping_mul(7919)),
            )
            .shuffle(&mut self.order);
            self.epoch = Some(epoch);
        }
        let pos = (step % per) as usize * self.batch;
        let rng = LegacyRandomState::new(self.seed ^ (step as u32).wrapping_mul(2_654_435_761));
        (&self.order[pos..(pos + self.batch).min(self.n)], rng)
    }
}

/// Trains from scratch, calling `on_checkpoint` at every checkpoint step.
pub fn train(
    cfg: &TrainConfig,
    train_set: &Images,
    test_set: &Images,
    on_checkpoint: impl FnMut(Checkpoint, &TrainState) -> Result<(), UserError>,
) -> Result<TrainState, UserError> {
    let until = cfg
        .checkpoints
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .min(cfg.steps);
    train_until(cfg, train_set, test_set, None, until, on_checkpoint)
}

/// Trains from `start` (from scratch when `None`) up to step `until`, calling `on_checkpoint`
/// at every checkpoint step after the start (and at step 0 from scratch). Resuming from a
/// saved state gives exactly the weights of an uninterrupted run.
pub fn train_until(
    cfg: &TrainConfig,
    train_set: &Images,
    test_set: &Images,
    start: Option<TrainState>,
    until: u64,
    mut on_checkpoint: impl FnMut(Checkpoint, &TrainState) -> Result<(), UserError>,
) -> Result<TrainState, UserError> {
    if let Objective::Moco(moco) = &cfg.objective {
        let (train, test) = (train_set, test_set);
        return super::moco::train_until(cfg, moco, train, test, start, until, on_checkpoint);
    }
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let first = start.as_ref().map(|s| s.step).unwrap_or(0);
    if let Some(s) = &start {
        // Variables present before the network is built are used as they are (batch norm
        // copies its running statistics from them at construction).
        let mut data = varmap.data().lock().expect("varmap lock");
        for (k, t) in &s.tensors {
            data.insert(k.clone(), Var::from_tensor(t).map_err(ce)?);
        }
    }
    let net = Network::new(
        &cfg.model,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )
    .map_err(ce)?;
    if start.is_none() {
        initialise(&varmap, cfg.seed).map_err(ce)?;
    }
    let saved = start.map(|s| s.optimizer).unwrap_or_default();
    let mut opt = Optimiser::new(&varmap, cfg, &saved, |_| true)?;
    let state = |step: u64, opt: &Optimiser| -> TrainState {
        TrainState {
            step,
            tensors: state_dict(&varmap, &net),
            optimizer: opt.state(),
        }
    };
    let mut batches = Batches::new(train_set.n, cfg.batch, cfg.seed);
    let steps_per_epoch = batches.steps_per_epoch();
    let (mut loss_sum, mut loss_count) = (0.0, 0usize);
    for step in first..=until {
        if cfg.checkpoints.contains(&step) && (step > first || first == 0) {
            let st = state(step, &opt);
            let ck = Checkpoint {
                step,
                epoch: step as f64 / steps_per_epoch as f64,
                train_loss: if loss_count > 0 {
                    loss_sum / loss_count as f64
                } else {
                    f64::NAN
                },
                test_accuracy: accuracy(&net, test_set, cfg)?,
                knn_accuracy: None,
                tensors: st.tensors.clone(),
            };
            on_checkpoint(ck, &st)?;
            loss_sum = 0.0;
            loss_count = 0;
        }
        if step == until {
            break;
        }
        let (idx, mut rng) = batches.step(step);
        let (xs, ys) = batch(train_set, idx, cfg, &mut rng, true).map_err(ce)?;
        let logits = net.forward(&xs, true, &mut Taps::off()).map_err(ce)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &ys).map_err(ce)?;
        let value = loss.to_scalar::<f32>().map_err(ce)? as f64;
        if !value.is_finite() {
            // Never checkpoint NaN weights as if they were a trained network.
            return Err(UserError {
                message: format!(
                    "training diverged: the loss is {value} at step {step} (lr {}, {:?})",
                    cfg.lr, cfg.optimizer
                ),
                hint: Some(
                    "lower the learning rate (--lr, `training.lr` or the model's `lr`)".into(),
                ),
                code: crate::error::EXIT_FAILURE,
            });
        }
        loss_sum += value;
        loss_count += 1;
        let grads = loss.backward().map_err(ce)?;
        opt.step(&grads, cosine_lr(cfg.lr, step, cfg.steps), step)?;
    }
    Ok(state(until, &opt))
}

/// The trainable parameters (every variable but batch-norm statistics, sorted by name) and
/// the optimiser's per-parameter state: SGD velocities or AdamW moments.
pub(super) struct Optimiser {
    trainable: Vec<(String, Var)>,
    velocity: Vec<Option<Tensor>>,
    adam: Vec<(Tensor, Tensor)>,
    optimizer: Optimizer,
    momentum: f64,
    weight_decay: f64,
}

impl Optimiser {
    /// Collects the variables of `varmap` that `include` accepts, restoring their state from
    /// `saved` (`momentum.<name>`, `adam_m.<name>`, `adam_v.<name>`) when present.
    pub(super) fn new(
        varmap: &VarMap,
        cfg: &TrainConfig,
        saved: &HashMap<String, Tensor>,
        include: impl Fn(&str) -> bool,
    ) -> Result<Self, UserError> {
        let trainable: Vec<(String, Var)> = {
            let data = varmap.data().lock().expect("varmap lock");
            let mut v: Vec<(String, Var)> = data
                .iter()
                .filter(|(k, _)| {
                    !k.ends_with("running_mean") && !k.ends_with("running_var") && include(k)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let velocity = trainable
            .iter()
            .map(|(k, _)| saved.get(&format!("momentum.{k}")).cloned())
            .collect();
        let mut adam = Vec::new();
        if cfg.optimizer == Optimizer::Adamw {
            for (k, v) in &trainable {
                let z = v.as_tensor().zeros_like().map_err(ce)?;
                let m = saved
                    .get(&format!("adam_m.{k}"))
                    .cloned()
                    .unwrap_or_else(|| z.clone());
                let s = saved.get(&format!("adam_v.{k}")).cloned().unwrap_or(z);
                adam.push((m, s));
            }
        }
        Ok(Optimiser {
            trainable,
            velocity,
            adam,
            optimizer: cfg.optimizer,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
        })
    }

    /// The optimiser state by name, as [`TrainState::optimizer`] holds it.
    pub(super) fn state(&self) -> HashMap<String, Tensor> {
        let mut optimizer = HashMap::new();
        for (i, (k, _)) in self.trainable.iter().enumerate() {
            if let Some(v) = self.velocity.get(i).and_then(|v| v.as_ref()) {
                optimizer.insert(format!("momentum.{k}"), v.clone());
            }
            if let Some((m, s)) = self.adam.get(i) {
                optimizer.insert(format!("adam_m.{k}"), m.clone());
                optimizer.insert(format!("adam_v.{k}"), s.clone());
            }
        }
        optimizer
    }

    /// One update of every parameter at learning rate `lr` (optimisation step `step`,
    /// counting from 0). Every parameter is on the loss's path: a missing gradient is a cut
    /// graph, an error.
    pub(super) fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        step: u64,
    ) -> Result<(), UserError> {
        for (k, (name, var)) in self.trainable.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                return Err(crate::models::optim::no_gradient(name));
            };
            let w = var.as_tensor().detach();
            let g = g.detach();
            let new = match self.optimizer {
                Optimizer::Sgd => {
                    let (new, v) = sgd(
                        &w,
                        &g,
                        self.velocity[k].as_ref(),
                        lr,
                        self.momentum,
                        self.weight_decay,
                    )
                    .map_err(ce)?;
                    self.velocity[k] = Some(v);
                    new
                }
                Optimizer::Adamw => {
                    let (new, moments) =
                        adamw(&w, &g, &self.adam[k], step + 1, lr, self.weight_decay)
                            .map_err(ce)?;
                    self.adam[k] = moments;
                    new
                }
            };
            var.set(&new).map_err(ce)?;
        }
        Ok(())
    }
}
