//! Networks as DAG nodes: `weights` (a checkpoint file imported as it is), `train` (one
//! checkpoint of a training run, resumed from the previous checkpoint's node) and `extract`
//! (every layer's activations of one network on one stimulus set).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use repflow_cache::{Bundle, MappedBundle};
use repflow_engine::{Inputs, Kind, NodeError};
use serde::{Deserialize, Serialize};

use super::images::from_bundle;
use super::RunContext;
use crate::error::UserError;
use crate::models::extract::{extract, LayerActivations, Reduction};
use crate::models::memory::Footprint;
use crate::models::probe::{fraction_correct, Probe};
use crate::models::train::{train_until, TrainConfig, TrainState};
use crate::models::{ModelConfig, Network};

fn ce(e: impl std::fmt::Display) -> UserError {
    UserError::input(e.to_string().lines().next().unwrap_or_default().to_string())
}

/// Tensors as bundle arrays (`prefix` + name), with their shapes.
pub(crate) fn tensors_to_bundle(
    mut b: Bundle,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
) -> Result<Bundle, UserError> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for n in names {
        let t = &tensors[n];
        let data: Vec<f32> = t
            .flatten_all()
            .and_then(|f| f.to_dtype(DType::F32))
            .and_then(|f| f.to_vec1())
            .map_err(ce)?;
        b = b.with_f32_array(&format!("{prefix}{n}"), t.dims(), data);
    }
    Ok(b)
}

/// Tensors back from the bundle arrays whose names start with `prefix`.
pub(crate) fn tensors_from_bundle(
    b: &MappedBundle,
    prefix: &str,
    names: &[String],
) -> Result<HashMap<String, Tensor>, UserError> {
    let mut out = HashMap::new();
    for n in names {
        let a = b
            .array(&format!("{prefix}{n}"))
            .ok_or_else(|| ce(format!("corrupt weights object: no `{n}`")))?;
        let v: Vec<f32> = a.to_f32().into_owned();
        out.insert(
            n.clone(),
            Tensor::from_vec(v, a.shape(), &Device::Cpu).map_err(ce)?,
        );
    }
    Ok(out)
}

/// The weight names recorded in a weights bundle's metadata.
pub(crate) fn names(b: &MappedBundle, key: &str) -> Result<Vec<String>, UserError> {
    let meta: serde_json::Value = serde_json::from_str(b.meta()).map_err(ce)?;
    serde_json::from_value(meta[key].clone()).map_err(ce)
}

/// A checkpoint file used as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// The `.safetensors` file (torchvision names; a `module.` prefix is stripped).
    pub file: PathBuf,
}

/// No inputs; the file enters the key by content.
impl Kind<RunContext> for Weights {
    const KIND: &'static str = "weights";
    const VERSION: u32 = 1;

    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn external_files(&self) -> Vec<PathBuf> {
        vec![self.file.clone()]
    }

    fn run(&self, _: &RunContext, _: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.read()?)
    }
}

impl Weights {
    /// Reads the weights.
    pub fn read(&self) -> Result<Bundle, UserError> {
        let tensors: HashMap<String, Tensor> = crate::models::checkpoint::read(&self.file)?;
        let mut keys: Vec<&String> = tensors.keys().collect();
        keys.sort();
        let meta = serde_json::json!({ "weights": keys });
        tensors_to_bundle(Bundle::meta(meta.to_string()), "w:", &tensors)
    }
}

/// Images per forward pass when extracting.
const EXTRACT_BATCH: usize = 256;

/// The `[n, c, h, w]` shape of the image set an input holds, if it holds one.
fn image_shape(inputs: &Inputs, name: &str) -> Option<[usize; 4]> {
    let a = inputs.bundle(name).ok()?.array("images")?;
    <[usize; 4]>::try_from(a.shape()).ok()
}

/// One checkpoint of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Train {
    /// The recipe (its `checkpoints` list is ignored: this node is one checkpoint).
    pub recipe: TrainConfig,
    /// The checkpoint's step.
    pub step: u64,
}

/// Inputs: `train_set`, `test_set`, and `previous` (the previous checkpoint) unless this
/// is the first. Version 2: im2col convolution, fused batch norm, torch's max-pool gradient.
/// Version 3: the ViT's layer norms and softmax pass gradients (before, only its head trained).
/// Version 4: direct products for stride-1 convolutions on planes 14 pixels wide or more, on
/// CPUs with AVX-512 (last-bit differences).
impl Kind<RunContext> for Train {
    const KIND: &'static str = "train";
    const VERSION: u32 = 4;

    /// The recipe (without its checkpoint list) and the step.
    fn key_params(&self) -> serde_json::Value {
        let mut r = serde_json::to_value(&self.recipe).expect("recipes serialise");
        r.as_object_mut()
            .expect("recipe is an object")
            .remove("checkpoints");
        serde_json::json!({ "recipe": r, "step": self.step })
    }

    /// The network's footprint at the batch size, with both image sets (0 when an input is
    /// not an image set, which the run then reports).
    fn memory(&self, inputs: &Inputs) -> u64 {
        let (Some(train), Some(test)) = (
            image_shape(inputs, "train_set"),
            image_shape(inputs, "test_set"),
        ) else {
            return 0;
        };
        let [_, c, h, w] = train;
        let encoders = if self.recipe.objective.is_supervised() {
            1
        } else {
            2
        };
        Footprint::of(&self.recipe.model, (c, h, w)).map_or(0, |f| {
            f.training_bytes(
                self.recipe.batch,
                train.iter().product::<usize>() + test.iter().product::<usize>(),
                encoders,
            )
        })
    }

    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.train(
            inputs.bundle("train_set")?,
            inputs.bundle("test_set")?,
            inputs.optional("previous").map(|i| &i.bundle),
        )?)
    }
}

impl Train {
    /// Trains up to `step`, from the previous checkpoint's output when given. Inputs: train
    /// set, test set, previous checkpoint (optional).
    pub fn train(
        &self,
        train_set: &MappedBundle,
        test_set: &MappedBundle,
        previous: Option<&MappedBundle>,
    ) -> Result<Bundle, UserError> {
        let (train_images, test_images) = (from_bundle(train_set)?, from_bundle(test_set)?);
        let start = match previous {
            Some(p) => {
                let meta: serde_json::Value = serde_json::from_str(p.meta()).map_err(ce)?;
                Some(TrainState {
                    step: meta["step"].as_u64().unwrap_or(0),
                    tensors: tensors_from_bundle(p, "w:", &names(p, "weights")?)?,
                    optimizer: tensors_from_bundle(p, "opt:", &names(p, "optimizer")?)?,
                })
            }
            None => None,
        };
        let mut recipe = self.recipe.clone();
        recipe.checkpoints = vec![self.step];
        let mut record = None;
        let state = train_until(
            &recipe,
            &train_images,
            &test_images,
            start,
            self.step,
            |ck, _| {
                record = Some((ck.test_accuracy, ck.train_loss, ck.epoch, ck.knn_accuracy));
                Ok(())
            },
        )?;
        let (acc, loss, epoch, knn) = record.unwrap_or((f64::NAN, f64::NAN, 0.0, None));
        let mut w: Vec<&String> = state.tensors.keys().collect();
        w.sort();
        let mut o: Vec<&String> = state.optimizer.keys().collect();
        o.sort();
        let meta = serde_json::json!({
            "step": self.step, "epoch": epoch, "test_accuracy": acc,
            "train_loss": if loss.is_nan() { None } else { Some(loss) }, "knn_accuracy": knn,
            "objective": if self.recipe.objective.is_supervised() { "supervised" } else { "moco" },
            "weights": w, "optimizer": o,
        });
        let b = tensors_to_bundle(Bundle::meta(meta.to_string()), "w:", &state.tensors)?;
        tensors_to_bundle(b, "opt:", &state.optimizer)
    }
}

/// Every layer's activations of one network on one stimulus set: reduced to one row per
/// stimulus, or (`maps`) the full outputs, reduced later by [`super::reduce::Reduce`] nodes
/// so that changing the reduction does not rerun the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extract {
    /// The network.
    pub model: ModelConfig,
    /// How conv outputs are reduced (unused with `maps`).
    pub reduction: Reduction,
    /// Input normalisation (mean, std).
    pub normalize: (f32, f32),
    /// Keep every layer's full output (stimuli × channels × height × width, row-major).
    #[serde(default)]
    pub maps: bool,
}

/// Inputs: `weights` (a `weights` or `train` output), `stimuli`. Version 3: im2col
/// convolution. Version 4: the ViT's layer norm in primitives (last-bit differences).
/// Version 5: direct products for stride-1 convolutions (see `train`'s version 4), and a NaN
/// through batch norm without ReLU stays NaN (it became −∞). Version 6: feature maps pooled
/// in one order of arithmetic on every CPU and device (`repflow_kernels::maps`: candle's mean
/// summed in a SIMD-width-dependent order and multiplied by a rounded 1/n; the CUDA kernels
/// give the same bits).
impl Kind<RunContext> for Extract {
    const KIND: &'static str = "extract";
    const VERSION: u32 = 6;

    /// The network and normalisation, and the reduction or `maps`.
    fn key_params(&self) -> serde_json::Value {
        let mut p = serde_json::json!({ "model": self.model, "normalize": [self.normalize.0, self.normalize.1] });
        if self.maps {
            p["maps"] = true.into();
        } else {
            p["reduction"] = serde_json::to_value(self.reduction).expect("reductions serialise");
        }
        p
    }

    /// The network's footprint over the stimuli, with the full maps or the reduced rows.
    fn memory(&self, inputs: &Inputs) -> u64 {
        let Some(stimuli) = image_shape(inputs, "stimuli") else {
            return 0;
        };
        let [n, c, h, w] = stimuli;
        Footprint::of(&self.model, (c, h, w)).map_or(0, |f| {
            let out = if self.maps {
                f.recorded_per_image
            } else {
                f.reduced_per_image
            };
            f.extraction_bytes(n, n * c * h * w, EXTRACT_BATCH, out)
        })
    }

    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.extract(inputs.bundle("weights")?, inputs.bundle("stimuli")?)?)
    }
}

impl Extract {
    /// Extracts: one column-major array per layer (stimuli × units), or with `maps` each
    /// layer's full output row-major in its own shape.
    pub fn extract(
        &self,
        weights: &MappedBundle,
        stimuli: &MappedBundle,
    ) -> Result<Bundle, UserError> {
        let tensors = tensors_from_bundle(weights, "w:", &names(weights, "weights")?)?;
        // a network trained without labels carries its linear probe (`probe.*`)
        let probe = Probe::from_tensors(&tensors);
        let net = Network::new(
            &self.model,
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        )
        .map_err(|e| {
            ce(format!(
                "the weights do not fit {:?} at width {}: {e}",
                self.model.arch, self.model.width
            ))
        })?;
        let mut images = from_bundle(stimuli)?;
        let (mean, std) = self.normalize;
        images.data.iter_mut().for_each(|v| *v = (*v - mean) / std);
        let reduction = if self.maps {
            None
        } else {
            Some(self.reduction)
        };
        let layers = extract(&net, &images, &[], reduction, EXTRACT_BATCH)?;
        // The last layer is the classifier: its accuracy on these stimuli (an OOD set's
        // accuracy when they are transformed). A projection head classifies nothing: its
        // network's accuracy is its linear probe's, on the backbone's features.
        let probe_accuracy = match (&probe, self.model.projection) {
            (Some(p), true) => {
                let f = crate::models::probe::features(&net, &images, images.n, (0.0, 1.0))?;
                Some(fraction_correct(&p.predict(&f)?, &images.labels))
            }
            _ => None,
        };
        let accuracy = layers
            .last()
            .filter(|l| !self.model.projection && l.shape == [images.n, self.model.num_classes])
            .map(|l| {
                let units = self.model.num_classes;
                let correct = (0..images.n)
                    .filter(|&i| {
                        let row = &l.data[i * units..(i + 1) * units];
                        let best = (0..units)
                            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                            .unwrap_or(0);
                        best as u32 == images.labels[i]
                    })
                    .count();
                correct as f64 / images.n.max(1) as f64
            })
            .or(probe_accuracy);
        let meta = serde_json::json!({
            "layers": layers.iter().map(|l| &l.name).collect::<Vec<_>>(), "stimuli": images.ids, "accuracy": accuracy,
        });
        if self.maps {
            let mut b = Bundle::meta(meta.to_string());
            for l in layers {
                b = b.with_f32_array(&l.name, &l.shape, l.data);
            }
            Ok(b)
        } else {
            Ok(reduced_bundle(meta.to_string(), layers))
        }
    }
}

/// Reduced layers (stimuli × units, row-major) as the bundle `prepared` nodes read: one
/// column-major array per layer, under `meta`.
pub fn reduced_bundle(meta: String, layers: Vec<LayerActivations>) -> Bundle {
    let mut b = Bundle::meta(meta);
    for l in layers {
        let (n, units) = (l.shape[0], l.shape[1]);
        let col_major: Vec<f32> = (0..units)
            .flat_map(|j| (0..n).map(move |i| (i, j)))
            .map(|(i, j)| l.data[i * units + j])
            .collect();
        b = b.with_f32_array(&l.name, &[n, units], col_major);
    }
    b
}
