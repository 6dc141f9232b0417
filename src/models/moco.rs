//! Momentum Contrast (MoCo v2; He et al. 2020, Chen et al. 2020) as a training objective of
//! the image networks: a query encoder trained by SGD and a key encoder that follows it as an
//! exponential moving average, a 2-layer MLP projection head, a queue of past keys as
//! negatives and the InfoNCE loss. One step, as MoCo's reference code takes it:
//!
//! 1. two views of each image of the batch ([`super::augment`]);
//! 2. the key encoder moves towards the query encoder: `θk ← m·θk + (1 − m)·θq`;
//! 3. `q = normalise(f_q(view 1))`, `k = normalise(f_k(view 2))` (no gradient);
//! 4. logits `[q·k, q·queue] / τ` with the positive first, cross-entropy against class 0,
//!    one SGD step of the query encoder;
//! 5. the keys enter the queue, replacing its oldest entries.
//!
//! On one device there is no shuffled batch norm (MoCo's remedy, across GPUs, for batch
//! statistics that leak which key belongs to which query); the key encoder normalises its
//! own batch, as single-GPU reimplementations do. The accuracy of each checkpoint is a linear
//! probe and a k-NN classifier ([`super::probe`]).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use repflow_kernels::rng::LegacyRandomState;
use serde::{Deserialize, Serialize};

use super::augment::{view, ViewAugment};
use super::optim::cosine_lr;
use super::probe::{features, fraction_correct, knn_accuracy, Probe, ProbeConfig};
use super::train::{
    ce, initialise, state_dict, Batches, Checkpoint, Optimiser, TrainConfig, TrainState,
};
use super::{Network, Taps};
use crate::error::UserError;
use crate::stimuli::Images;

/// MoCo's hyper-parameters. The projection's dimension is the model's `num_classes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    /// Keys in the queue of negatives (MoCo: 65,536 for ImageNet; 4,096 here).
    pub queue: usize,
    /// Momentum of the key encoder (0.99 here: MoCo's 0.999 is tuned to 5,000 steps per
    /// epoch, a short run needs a key encoder that keeps up).
    pub momentum: f64,
    /// Temperature τ of the InfoNCE logits (MoCo v2: 0.2).
    pub temperature: f64,
    /// The views.
    pub augment: ViewAugment,
    /// The linear probe and k-NN classifier of each checkpoint.
    pub probe: ProbeConfig,
}

impl Default for MocoConfig {
    fn default() -> Self {
        MocoConfig {
            queue: 4096,
            momentum: 0.99,
            temperature: 0.2,
            augment: ViewAugment::default(),
            probe: ProbeConfig::default(),
        }
    }
}

/// The queue of negatives: `len` keys of `dim` values, a ring whose oldest entry is at `ptr`.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Keys, row by row.
    pub keys: Vec<f32>,
    /// Values per key.
    pub dim: usize,
    /// The next row to overwrite (the oldest key).
    pub ptr: usize,
}

impl Queue {
    /// A queue of `len` random unit vectors (MoCo starts from normalised Gaussian noise).
    pub fn random(len: usize, dim: usize, seed: u32) -> Queue {
        let mut rng = LegacyRandomState::new(seed ^ 0x6d6f_636f);
        let mut keys: Vec<f32> = (0..len * dim).map(|_| rng.gauss() as f32).collect();
        for row in keys.chunks_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
        Queue { keys, dim, ptr: 0 }
    }

    /// Keys in the queue.
    pub fn len(&self) -> usize {
        self.keys.len() / self.dim
    }

    /// Whether the queue holds no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Replaces the oldest keys with `batch` (rows of `dim` values), wrapping around.
    pub fn enqueue(&mut self, batch: &[f32]) {
        let len = self.len();
        for row in batch.chunks(self.dim) {
            let at = self.ptr * self.dim;
            self.keys[at..at + self.dim].copy_from_slice(row);
            self.ptr = (self.ptr + 1) % len;
        }
    }

    /// The queue as a `len × dim` tensor.
    pub fn tensor(&self) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.keys.clone(), (self.len(), self.dim), &Device::Cpu)
    }
}

/// Rows scaled to unit length (`F.normalize(dim=1)`).
fn normalise(t: &Tensor) -> candle_core::Result<Tensor> {
    let norm = t
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    t.broadcast_div(&norm)
}

/// The two views of each image of `idx`, normalised for the network.
fn views(
    images: &Images,
    idx: &[usize],
    cfg: &TrainConfig,
    aug: &ViewAugment,
    rng: &mut LegacyRandomState,
) -> candle_core::Result<(Tensor, Tensor)> {
    let shape = (images.c, images.h, images.w);
    let (mean, std) = cfg.normalize;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &i in idx {
        for out in [&mut a, &mut b] {
            out.extend(
                view(images.image(i), shape, aug, rng)
                    .into_iter()
                    .map(|v| (v - mean) / std),
            );
        }
    }
    let dims = (idx.len(), images.c, images.h, images.w);
    Ok((
        Tensor::from_vec(a, dims, &Device::Cpu)?,
        Tensor::from_vec(b, dims, &Device::Cpu)?,
    ))
}

/// The key encoder's parameters (not its batch-norm statistics) moved towards the query
/// encoder's: `θk ← m·θk + (1 − m)·θq`.
pub fn momentum_update(key: &VarMap, query: &VarMap, m: f64) -> candle_core::Result<()> {
    let q = query.data().lock().expect("varmap lock");
    let k = key.data().lock().expect("varmap lock");
    for (name, kv) in k.iter() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let qv = &q[name];
        kv.set(&((kv.as_tensor() * m)? + (qv.as_tensor() * (1.0 - m))?)?)?;
    }
    Ok(())
}

/// The probe's and the k-NN classifier's accuracies of `net` (and the fitted probe).
fn evaluate(
    net: &Network,
    cfg: &TrainConfig,
    moco: &MocoConfig,
    train_set: &Images,
    test_set: &Images,
) -> Result<(f64, f64, Probe), UserError> {
    let n = moco.probe.images.min(train_set.n);
    let classes = train_set
        .labels
        .iter()
        .chain(&test_set.labels)
        .max()
        .map_or(1, |m| *m as usize + 1);
    let bank = features(net, train_set, n, cfg.normalize)?;
    let test = features(net, test_set, test_set.n, cfg.normalize)?;
    let probe = Probe::fit(&bank, &train_set.labels[..n], classes, &moco.probe)?;
    let top1 = fraction_correct(&probe.predict(&test)?, &test_set.labels);
    let knn = knn_accuracy(
        &bank,
        &train_set.labels[..n],
        &test,
        &test_set.labels,
        classes,
        &moco.probe,
    )?;
    Ok((top1, knn, probe))
}

/// Trains with MoCo from `start` (from scratch when `None`) up to step `until`, as
/// [`super::train::train_until`] does for the supervised objective: the key encoder's
/// weights and statistics travel in the optimiser state as `key.<name>`, the queue as
/// `moco.queue` and `moco.ptr`, and each checkpoint's probe with the weights as `probe.*`.
pub fn train_until(
    cfg: &TrainConfig,
    moco: &MocoConfig,
    train_set: &Images,
    test_set: &Images,
    start: Option<TrainState>,
    until: u64,
    mut on_checkpoint: impl FnMut(Checkpoint, &TrainState) -> Result<(), UserError>,
) -> Result<TrainState, UserError> {
    let dev = Device::Cpu;
    let (query_map, key_map) = (VarMap::new(), VarMap::new());
    let first = start.as_ref().map(|s| s.step).unwrap_or(0);
    let mut queue = Queue::random(moco.queue.max(1), cfg.model.num_classes, cfg.seed);
    let saved = match start {
        Some(s) => {
            let mut q = query_map.data().lock().expect("varmap lock");
            for (k, t) in s.tensors.iter().filter(|(k, _)| !k.starts_with("probe.")) {
                q.insert(k.clone(), Var::from_tensor(t).map_err(ce)?);
            }
            let mut kd = key_map.data().lock().expect("varmap lock");
            for (k, t) in &s.optimizer {
                if let Some(name) = k.strip_prefix("key.") {
                    kd.insert(name.to_string(), Var::from_tensor(t).map_err(ce)?);
                }
            }
            let stored = s
                .optimizer
                .get("moco.queue")
                .zip(s.optimizer.get("moco.ptr"));
            let Some((keys, ptr)) = stored else {
                return Err(UserError::input("resuming MoCo: the state has no queue"));
            };
            queue.keys = keys.flatten_all().and_then(|k| k.to_vec1()).map_err(ce)?;
            queue.ptr = ptr.to_vec1::<f32>().map_err(ce)?[0] as usize;
            s.optimizer
        }
        None => HashMap::new(),
    };
    let vb = |m: &VarMap| VarBuilder::from_varmap(m, DType::F32, &dev);
    let query = Network::new(&cfg.model, vb(&query_map)).map_err(ce)?;
    let key = Network::new(&cfg.model, vb(&key_map)).map_err(ce)?;
    if first == 0 {
        initialise(&query_map, cfg.seed).map_err(ce)?;
        // the key encoder starts as a copy of the query encoder
        momentum_update(&key_map, &query_map, 0.0).map_err(ce)?;
    }
    let mut opt = Optimiser::new(&query_map, cfg, &saved, |_| true)?;
    let mut probe_tensors = HashMap::new();
    let state = |step: u64, opt: &Optimiser, queue: &Queue, probe: &HashMap<String, Tensor>| {
        let mut optimizer = opt.state();
        for (k, t) in state_dict(&key_map, &key) {
            optimizer.insert(format!("key.{k}"), t);
        }
        let rows = queue.len();
        let keys = Tensor::from_vec(queue.keys.clone(), (rows, queue.dim), &Device::Cpu);
        optimizer.insert("moco.queue".into(), keys.map_err(ce)?);
        let ptr = Tensor::from_vec(vec![queue.ptr as f32], 1, &Device::Cpu).map_err(ce)?;
        optimizer.insert("moco.ptr".into(), ptr);
        let mut tensors = state_dict(&query_map, &query);
        tensors.extend(probe.iter().map(|(k, t)| (k.clone(), t.clone())));
        Ok::<_, UserError>(TrainState {
            step,
            tensors,
            optimizer,
        })
    };
    let mut batches = Batches::new(train_set.n, cfg.batch, cfg.seed);
    let steps_per_epoch = batches.steps_per_epoch();
    let (mut loss_sum, mut loss_count) = (0.0, 0usize);
    let zeros = Tensor::zeros(cfg.batch, DType::U32, &dev).map_err(ce)?;
    for step in first..=until {
        if cfg.checkpoints.contains(&step) && (step > first || first == 0) {
            let (top1, knn, probe) = evaluate(&query, cfg, moco, train_set, test_set)?;
            probe_tensors = probe.tensors();
            let st = state(step, &opt, &queue, &probe_tensors)?;
            let ck = Checkpoint {
                step,
                epoch: step as f64 / steps_per_epoch as f64,
                train_loss: if loss_count > 0 {
                    loss_sum / loss_count as f64
                } else {
                    f64::NAN
                },
                test_accuracy: top1,
                knn_accuracy: Some(knn),
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
        let (xq, xk) = views(train_set, idx, cfg, &moco.augment, &mut rng).map_err(ce)?;
        momentum_update(&key_map, &query_map, moco.momentum).map_err(ce)?;
        let q = query
            .forward(&xq, true, &mut Taps::off())
            .and_then(|q| normalise(&q))
            .map_err(ce)?;
        let k = key
            .forward(&xk, true, &mut Taps::off())
            .and_then(|k| normalise(&k.detach()))
            .map_err(ce)?;
        let t = moco.temperature;
        let logits = (|| {
            let pos = (&q * &k)?.sum_keepdim(1)?;
            let neg = q.matmul(&queue.tensor()?.t()?)?;
            Tensor::cat(&[pos, neg], 1)? / t
        })()
        .map_err(ce)?;
        let loss =
            candle_nn::loss::cross_entropy(&logits, &zeros.narrow(0, 0, idx.len()).map_err(ce)?)
                .map_err(ce)?;
        let value = loss.to_scalar::<f32>().map_err(ce)? as f64;
        if !value.is_finite() {
            return Err(UserError {
                message: format!(
                    "MoCo training diverged: the loss is {value} at step {step} (lr {})",
                    cfg.lr
                ),
                hint: Some("lower the learning rate (`training.lr` or the model's `lr`)".into()),
                code: crate::error::EXIT_FAILURE,
            });
        }
        loss_sum += value;
        loss_count += 1;
        let grads = loss.backward().map_err(ce)?;
        opt.step(&grads, cosine_lr(cfg.lr, step, cfg.steps), step)?;
        queue.enqueue(&k.flatten_all().and_then(|k| k.to_vec1()).map_err(ce)?);
    }
    state(until, &opt, &queue, &probe_tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_replaces_its_oldest_keys_first_and_wraps() {
        let mut q = Queue {
            keys: vec![0.0; 4 * 2],
            dim: 2,
            ptr: 0,
        };
        q.enqueue(&[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        assert_eq!(q.keys, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 0.0, 0.0]);
        assert_eq!(q.ptr, 3);
        q.enqueue(&[4.0, 4.0, 5.0, 5.0]);
        // the slot of the oldest key (1) is overwritten by 5; 2 is now the oldest
        assert_eq!(q.keys, vec![5.0, 5.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
        assert_eq!(q.ptr, 1);
    }

    #[test]
    fn the_random_queue_holds_unit_vectors() {
        let q = Queue::random(16, 8, 0);
        assert_eq!(q.len(), 16);
        for row in q.keys.chunks(8) {
            let n: f32 = row.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
    }
}
