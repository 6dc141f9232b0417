//! `images` and `transform`: stimulus sets as DAG nodes. An `images` node reads a real
//! dataset out of its registry package (keyed by the package's content); a `transform` node
//! applies one out-of-distribution transform to another set.

use std::path::PathBuf;

use repflow_cache::{Bundle, MappedBundle};
use repflow_engine::{Inputs, Kind, NodeError};
use serde::{Deserialize, Serialize};

use super::RunContext;
use crate::error::UserError;
use crate::stimuli::datasets::{fashion_mnist, image_folder, mnist_5k};
use crate::stimuli::transforms::Transform;
use crate::stimuli::Images;

/// A real stimulus set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSet {
    /// `fashion-mnist` or `mnist5k`.
    pub dataset: String,
    /// `train` or `test` (Fashion-MNIST).
    pub split: String,
    /// The first `count` images (all when `None`).
    pub count: Option<usize>,
    /// The package file (.deb, folder, or .whl), or the image folder.
    pub package: PathBuf,
    /// Image folders: shorter side resized to this, then the centre crop.
    #[serde(default)]
    pub resize: Option<(u32, u32)>,
    /// Image folders: keep colour (3 channels).
    #[serde(default)]
    pub colour: bool,
}

/// No inputs; the package (or folder) enters the key by content.
impl Kind<RunContext> for ImageSet {
    const KIND: &'static str = "images";
    const VERSION: u32 = 1;

    fn key_params(&self) -> serde_json::Value {
        let mut p = serde_json::json!({ "dataset": self.dataset, "split": self.split, "count": self.count });
        if self.dataset == "folder" {
            p["resize"] = serde_json::json!(self.resize);
            p["colour"] = self.colour.into();
        }
        p
    }

    fn external_files(&self) -> Vec<PathBuf> {
        vec![self.package.clone()]
    }

    fn run(&self, _: &RunContext, _: &Inputs) -> Result<Bundle, NodeError> {
        Ok(self.read()?)
    }
}

impl ImageSet {
    /// Reads the images.
    pub fn read(&self) -> Result<Bundle, UserError> {
        let images = match self.dataset.as_str() {
            "fashion-mnist" => {
                let (train, test) = fashion_mnist(&self.package)?;
                if self.split == "train" {
                    train
                } else {
                    test
                }
            }
            "mnist5k" => mnist_5k(&self.package)?,
            "folder" => {
                let (resize, crop) = self.resize.unwrap_or((32, 28));
                image_folder(&self.package, resize, crop, self.colour)?
            }
            other => {
                return Err(UserError::input(format!("unknown dataset `{other}`"))
                    .hint("fashion-mnist, mnist5k or folder"))
            }
        };
        Ok(to_bundle(&match self.count {
            Some(k) => images.take(k),
            None => images,
        }))
    }
}

/// One transform of another set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformNode {
    /// The transform and its level.
    pub transform: Transform,
    /// Seed of random transforms.
    pub seed: u32,
}

/// Input: `images`.
impl Kind<RunContext> for TransformNode {
    const KIND: &'static str = "transform";
    const VERSION: u32 = 1;

    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "transform": self.transform, "seed": self.seed })
    }

    fn run(&self, _: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let images = from_bundle(inputs.bundle("images")?)?;
        Ok(to_bundle(&self.transform.apply(&images, self.seed)?))
    }
}

/// Images as a bundle: array `images` (n × c × h × w), metadata ids and labels.
pub fn to_bundle(images: &Images) -> Bundle {
    let meta = serde_json::json!({ "ids": images.ids, "labels": images.labels });
    Bundle::meta(meta.to_string()).with_f32_array(
        "images",
        &[images.n, images.c, images.h, images.w],
        images.data.clone(),
    )
}

/// Images back from a bundle.
pub fn from_bundle(b: &MappedBundle) -> Result<Images, UserError> {
    let bad = |why: &str| UserError::input(format!("corrupt image-set object: {why}"));
    let a = b.array("images").ok_or_else(|| bad("no images"))?;
    let [n, c, h, w] = <[usize; 4]>::try_from(a.shape()).map_err(|_| bad("not 4-D"))?;
    let meta: serde_json::Value =
        serde_json::from_str(b.meta()).map_err(|e| bad(&e.to_string()))?;
    Ok(Images {
        n,
        c,
        h,
        w,
        data: a.to_f32().into_owned(),
        labels: serde_json::from_value(meta["labels"].clone()).map_err(|e| bad(&e.to_string()))?,
        ids: serde_json::from_value(meta["ids"].clone()).map_err(|e| bad(&e.to_string()))?,
    })
}
