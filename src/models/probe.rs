//! Accuracy of a network trained without labels: a linear probe (multinomial logistic
//! regression on the frozen backbone's pooled features) and a weighted k-nearest-neighbour
//! classifier (Wu et al. 2018's k-NN monitor, as MoCo's reference code reports it), both fitted
//! on a fixed subset of the training set and evaluated on the test set.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::optim::adamw;
use super::Network;
use crate::error::UserError;
use crate::stimuli::Images;

/// How the probe and the k-NN classifier are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// The first `images` training images are the probe's training set and the k-NN bank.
    pub images: usize,
    /// Full-batch Adam steps of the logistic regression (from zero weights, on features
    /// standardised with the probe set's mean and standard deviation).
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// L2 penalty on the weights (decoupled, AdamW-style).
    pub weight_decay: f64,
    /// Neighbours of the k-NN classifier (cosine similarity).
    pub k: usize,
    /// Temperature of the neighbours' vote weights `exp(similarity / t)`.
    pub knn_temperature: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            images: 5000,
            steps: 300,
            lr: 0.05,
            weight_decay: 1e-4,
            k: 20,
            knn_temperature: 0.07,
        }
    }
}

fn ce(e: candle_core::Error) -> UserError {
    UserError::input(format!(
        "linear probe: {}",
        e.to_string().lines().next().unwrap_or_default()
    ))
}

/// The pooled backbone features of the first `count` images in evaluation mode (rows =
/// images), normalising pixels with `(mean, std)`.
pub fn features(
    net: &Network,
    images: &Images,
    count: usize,
    (mean, std): (f32, f32),
) -> Result<Tensor, UserError> {
    let count = count.min(images.n);
    let len = images.image_len();
    let mut parts = Vec::new();
    for start in (0..count).step_by(500) {
        let end = (start + 500).min(count);
        let data: Vec<f32> = images.data[start * len..end * len]
            .iter()
            .map(|v| (v - mean) / std)
            .collect();
        let xs = Tensor::from_vec(
            data,
            (end - start, images.c, images.h, images.w),
            &Device::Cpu,
        )
        .map_err(ce)?;
        parts.push(net.features(&xs, false).map_err(ce)?.detach());
    }
    if parts.is_empty() {
        return Err(UserError::input("linear probe: no images"));
    }
    Tensor::cat(&parts, 0).map_err(ce)
}

/// A fitted linear probe: `softmax(((x − mean) / scale) · Wᵀ + b)`.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Feature means of the probe set.
    pub mean: Tensor,
    /// Feature standard deviations (1 where a feature is constant).
    pub scale: Tensor,
    /// Weights, classes × features.
    pub weight: Tensor,
    /// Biases, one per class.
    pub bias: Tensor,
}

impl Probe {
    /// Fits the probe to `features` (rows) with `labels` in `0..classes`.
    pub fn fit(
        features: &Tensor,
        labels: &[u32],
        classes: usize,
        cfg: &ProbeConfig,
    ) -> Result<Probe, UserError> {
        let (n, d) = features.dims2().map_err(ce)?;
        let mean = features.mean_keepdim(0).map_err(ce)?;
        let centred = features.broadcast_sub(&mean).map_err(ce)?;
        let var = centred.sqr().and_then(|v| v.mean_keepdim(0)).map_err(ce)?;
        let std: Vec<f32> = var
            .flatten_all()
            .and_then(|v| v.to_vec1::<f32>())
            .map_err(ce)?
            .into_iter()
            .map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 })
            .collect();
        let scale = Tensor::from_vec(std, (1, d), &Device::Cpu).map_err(ce)?;
        let x = centred.broadcast_div(&scale).map_err(ce)?;
        let y = Tensor::from_vec(labels.to_vec(), n, &Device::Cpu).map_err(ce)?;
        let w = Var::zeros((classes, d), DType::F32, &Device::Cpu).map_err(ce)?;
        let b = Var::zeros(classes, DType::F32, &Device::Cpu).map_err(ce)?;
        let zeros = |t: &Var| t.as_tensor().zeros_like().map_err(ce);
        let mut moments = [(zeros(&w)?, zeros(&w)?), (zeros(&b)?, zeros(&b)?)];
        for t in 0..cfg.steps {
            let logits = x
                .matmul(&w.as_tensor().t().map_err(ce)?)
                .and_then(|l| l.broadcast_add(b.as_tensor()))
                .map_err(ce)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y).map_err(ce)?;
            let grads = loss.backward().map_err(ce)?;
            for (k, (var, decay)) in [(&w, cfg.weight_decay), (&b, 0.0)].into_iter().enumerate() {
                let g = grads
                    .get(var.as_tensor())
                    .ok_or_else(|| crate::models::optim::no_gradient("probe"))?;
                let (new, m) = adamw(
                    &var.as_tensor().detach(),
                    &g.detach(),
                    &moments[k],
                    t as u64 + 1,
                    cfg.lr,
                    decay,
                )
                .map_err(ce)?;
                moments[k] = m;
                var.set(&new).map_err(ce)?;
            }
        }
        Ok(Probe {
            mean: mean.squeeze(0).map_err(ce)?,
            scale: scale.squeeze(0).map_err(ce)?,
            weight: w.as_tensor().detach(),
            bias: b.as_tensor().detach(),
        })
    }

    /// The predicted class of each row of `features`.
    pub fn predict(&self, features: &Tensor) -> Result<Vec<u32>, UserError> {
        features
            .broadcast_sub(&self.mean)
            .and_then(|x| x.broadcast_div(&self.scale))
            .and_then(|x| x.matmul(&self.weight.t()?))
            .and_then(|l| l.broadcast_add(&self.bias))
            .and_then(|l| l.argmax(1))
            .and_then(|p| p.to_vec1::<u32>())
            .map_err(ce)
    }

    /// The probe as tensors under `probe.{mean,scale,weight,bias}`.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        [
            ("probe.mean", &self.mean),
            ("probe.scale", &self.scale),
            ("probe.weight", &self.weight),
            ("probe.bias", &self.bias),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect()
    }

    /// The probe from the tensors [`Probe::tensors`] wrote, when they are all there.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> Option<Probe> {
        let get = |k: &str| tensors.get(k).cloned();
        Some(Probe {
            mean: get("probe.mean")?,
            scale: get("probe.scale")?,
            weight: get("probe.weight")?,
            bias: get("probe.bias")?,
        })
    }
}

/// The fraction of `predicted` equal to `labels`.
pub fn fraction_correct(predicted: &[u32], labels: &[u32]) -> f64 {
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    correct as f64 / labels.len().max(1) as f64
}

/// Accuracy of the weighted k-NN classifier: each test row votes for the classes of its `k`
/// most cosine-similar bank rows with weights `exp(similarity / temperature)`.
pub fn knn_accuracy(
    bank: &Tensor,
    bank_labels: &[u32],
    test: &Tensor,
    test_labels: &[u32],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<f64, UserError> {
    let unit = |t: &Tensor| -> Result<Tensor, UserError> {
        let norm = t
            .sqr()
            .and_then(|s| s.sum_keepdim(1))
            .and_then(|s| s.sqrt())
            .and_then(|s| s.clamp(1e-12, f64::INFINITY))
            .map_err(ce)?;
        t.broadcast_div(&norm).map_err(ce)
    };
    let (bank, test) = (unit(bank)?, unit(test)?);
    let bank_t = bank.t().map_err(ce)?;
    let k = cfg.k.min(bank_labels.len()).max(1);
    let mut predicted = Vec::with_capacity(test_labels.len());
    let rows = test.dims2().map_err(ce)?.0;
    for start in (0..rows).step_by(1000) {
        let len = 1000.min(rows - start);
        let sims: Vec<Vec<f32>> = test
            .narrow(0, start, len)
            .and_then(|t| t.matmul(&bank_t))
            .and_then(|s| s.to_vec2())
            .map_err(ce)?;
        for row in sims {
            let mut order: Vec<usize> = (0..row.len()).collect();
            // ties broken by bank index: deterministic
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let mut votes = vec![0.0f64; classes];
            for &j in &order[..k] {
                votes[bank_labels[j] as usize] += (row[j] as f64 / cfg.knn_temperature).exp();
            }
            let best = (0..classes)
                .max_by(|&a, &b| votes[a].total_cmp(&votes[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            predicted.push(best as u32);
        }
    }
    Ok(fraction_correct(&predicted, test_labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_separates_linearly_separable_classes() {
        // three clusters on the axes of a 4-d space
        let mut data = Vec::new();
        let mut labels = Vec::new();
        let mut rng = repflow_kernels::rng::LegacyRandomState::new(1);
        for i in 0..300 {
            let class = i % 3;
            for j in 0..4 {
                let centre = if j == class { 3.0 } else { 0.0 };
                data.push((centre + rng.gauss() * 0.5) as f32);
            }
            labels.push(class as u32);
        }
        let x = Tensor::from_vec(data, (300, 4), &Device::Cpu).unwrap();
        let probe = Probe::fit(&x, &labels, 3, &ProbeConfig::default()).unwrap();
        let acc = fraction_correct(&probe.predict(&x).unwrap(), &labels);
        assert!(acc > 0.97, "{acc}");
        let knn = knn_accuracy(&x, &labels, &x, &labels, 3, &ProbeConfig::default()).unwrap();
        assert!(knn > 0.97, "{knn}");
        let round = Probe::from_tensors(&probe.tensors()).unwrap();
        assert_eq!(round.predict(&x).unwrap(), probe.predict(&x).unwrap());
    }

    #[test]
    fn knn_with_one_neighbour_recovers_the_bank_labels() {
        let x = Tensor::from_vec(
            vec![1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0],
            (4, 2),
            &Device::Cpu,
        )
        .unwrap();
        let labels = [0, 1, 2, 3];
        let cfg = ProbeConfig {
            k: 1,
            ..ProbeConfig::default()
        };
        assert_eq!(
            knn_accuracy(&x, &labels, &x, &labels, 4, &cfg).unwrap(),
            1.0
        );
    }
}
