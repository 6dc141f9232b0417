//! MoCo v2's view augmentation (He et al. 2020; Chen et al. 2020), for small grey or colour
//! images with values in [0, 1]: random resized crop, colour jitter, Gaussian blur and
//! horizontal flip, every draw from the caller's seeded generator, so a view is a function of
//! (image, seed, step).
//!
//! Written by hand: the steps follow torchvision's `RandomResizedCrop` (its ten-attempt
//! sampling and centre-crop fallback, bilinear resampling with `align_corners=False`),
//! `ColorJitter` (brightness and contrast factors, in a random order) and MoCo v2's
//! `GaussianBlur`, on `f32` planes; no image crate does these on float tensors with a
//! reproducible generator.

use repflow_kernels::rng::LegacyRandomState;
use serde::{Deserialize, Serialize};

use crate::stimuli::transforms::blur;

/// The parameters of one view. MoCo v2's ImageNet values are scaled to 28-pixel images
/// where they are sizes (the blur's σ); saturation, hue and random greyscale are left out
/// because Fashion-MNIST is grey.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewAugment {
    /// Area fraction of the crop, drawn uniformly (MoCo v2: 0.2 to 1).
    pub crop_scale: (f64, f64),
    /// Aspect ratio of the crop, drawn log-uniformly (3/4 to 4/3).
    pub crop_ratio: (f64, f64),
    /// Probability of the colour jitter (0.8).
    pub jitter_p: f64,
    /// Brightness factor range around 1: a factor in [1 − b, 1 + b] (0.4).
    pub brightness: f64,
    /// Contrast factor range around 1 (0.4).
    pub contrast: f64,
    /// Probability of the Gaussian blur (0.5).
    pub blur_p: f64,
    /// Blur σ in pixels, drawn uniformly (ImageNet's 0.1–2 at 224 px is 0.0125–0.25 at
    /// 28 px, too small to matter; 0.1–1 here).
    pub blur_sigma: (f64, f64),
    /// Probability of a horizontal flip (0.5).
    pub flip_p: f64,
}

impl Default for ViewAugment {
    fn default() -> Self {
        ViewAugment {
            crop_scale: (0.2, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            blur_p: 0.5,
            blur_sigma: (0.1, 1.0),
            flip_p: 0.5,
        }
    }
}

/// A crop box: top, left, height, width, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

fn uniform(rng: &mut LegacyRandomState, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.next_f64()
}

/// torchvision's `RandomResizedCrop.get_params`: ten attempts at a box of the drawn area and
/// aspect ratio that fits, else the largest centred box within the ratio range.
pub fn crop_box(rng: &mut LegacyRandomState, h: usize, w: usize, aug: &ViewAugment) -> CropBox {
    let area = (h * w) as f64;
    let log_ratio = (aug.crop_ratio.0.ln(), aug.crop_ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, aug.crop_scale);
        let ratio = uniform(rng, log_ratio).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = rng.interval((h - ch) as u64) as usize;
            let left = rng.interval((w - cw) as u64) as usize;
            return CropBox {
                top,
                left,
                height: ch,
                width: cw,
            };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < aug.crop_ratio.0 {
        ((w as f64 / aug.crop_ratio.0).round() as usize, w)
    } else if in_ratio > aug.crop_ratio.1 {
        (h, (h as f64 * aug.crop_ratio.1).round() as usize)
    } else {
        (h, w)
    };
    CropBox {
        top: (h - ch) / 2,
        left: (w - cw) / 2,
        height: ch,
        width: cw,
    }
}

/// Resamples the box of one `h × w` plane to `h × w` bilinearly (half-pixel centres, edge
/// clamping: torch's `interpolate(mode="bilinear", align_corners=False)` without
/// antialiasing).
pub fn resize_crop(plane: &[f32], h: usize, w: usize, b: CropBox) -> Vec<f32> {
    let (sy, sx) = (b.height as f64 / h as f64, b.width as f64 / w as f64);
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h {
        let fy = ((y as f64 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy.floor() as usize).min(b.height - 1);
        let y1 = (y0 + 1).min(b.height - 1);
        let ty = fy - y0 as f64;
        for x in 0..w {
            let fx = ((x as f64 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx.floor() as usize).min(b.width - 1);
            let x1 = (x0 + 1).min(b.width - 1);
            let tx = fx - x0 as f64;
            let at = |yy: usize, xx: usize| plane[(b.top + yy) * w + b.left + xx] as f64;
            let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
            let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
            out.push((top * (1.0 - ty) + bottom * ty) as f32);
        }
    }
    out
}

/// One augmented view of `img` (`c × h × w`, values in [0, 1]).
pub fn view(
    img: &[f32],
    (c, h, w): (usize, usize, usize),
    aug: &ViewAugment,
    rng: &mut LegacyRandomState,
) -> Vec<f32> {
    let b = crop_box(rng, h, w, aug);
    let mut out: Vec<f32> = (0..c)
        .flat_map(|ch| resize_crop(&img[ch * h * w..(ch + 1) * h * w], h, w, b))
        .collect();
    if rng.next_f64() < aug.jitter_p {
        let brightness = uniform(rng, (1.0 - aug.brightness, 1.0 + aug.brightness));
        let contrast = uniform(rng, (1.0 - aug.contrast, 1.0 + aug.contrast));
        let brightness_first = rng.next_f64() < 0.5;
        let adjust_brightness = |v: &mut [f32]| {
            v.iter_mut()
                .for_each(|p| *p = (*p as f64 * brightness).clamp(0.0, 1.0) as f32)
        };
        // torchvision's adjust_contrast blends with the mean of the greyscale image
        let adjust_contrast = |v: &mut [f32]| {
            let mean = v.iter().map(|&p| p as f64).sum::<f64>() / v.len() as f64;
            v.iter_mut()
                .for_each(|p| *p = (mean + contrast * (*p as f64 - mean)).clamp(0.0, 1.0) as f32)
        };
        if brightness_first {
            adjust_brightness(&mut out);
            adjust_contrast(&mut out);
        } else {
            adjust_contrast(&mut out);
            adjust_brightness(&mut out);
        }
    }
    if rng.next_f64() < aug.blur_p {
        let sigma = uniform(rng, aug.blur_sigma);
        for ch in 0..c {
            let plane: Vec<f64> = out[ch * h * w..(ch + 1) * h * w]
                .iter()
                .map(|&p| p as f64)
                .collect();
            for (o, v) in out[ch * h * w..(ch + 1) * h * w]
                .iter_mut()
                .zip(blur(&plane, h, w, sigma))
            {
                *o = v as f32;
            }
        }
    }
    if rng.next_f64() < aug.flip_p {
        for ch in 0..c {
            for row in out[ch * h * w..(ch + 1) * h * w].chunks_mut(w) {
                row.reverse();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_box_resamples_to_the_image_itself() {
        let plane: Vec<f32> = (0..28 * 28).map(|i| (i % 17) as f32 / 17.0).collect();
        let b = CropBox {
            top: 0,
            left: 0,
            height: 28,
            width: 28,
        };
        assert_eq!(resize_crop(&plane, 28, 28, b), plane);
    }

    #[test]
    fn crop_boxes_fit_and_have_the_drawn_area() {
        let aug = ViewAugment::default();
        let mut rng = LegacyRandomState::new(3);
        for _ in 0..500 {
            let b = crop_box(&mut rng, 28, 28, &aug);
            assert!(b.top + b.height <= 28 && b.left + b.width <= 28, "{b:?}");
            let frac = (b.height * b.width) as f64 / 784.0;
            // rounding the sides moves the area a little past the drawn range
            assert!((0.15..=1.0).contains(&frac), "{b:?}");
        }
    }

    #[test]
    fn views_are_seeded_in_range_and_differ_between_draws() {
        let img: Vec<f32> = (0..28 * 28).map(|i| ((i * 7) % 29) as f32 / 29.0).collect();
        let aug = ViewAugment::default();
        let a = view(&img, (1, 28, 28), &aug, &mut LegacyRandomState::new(5));
        let b = view(&img, (1, 28, 28), &aug, &mut LegacyRandomState::new(5));
        let c = view(&img, (1, 28, 28), &aug, &mut LegacyRandomState::new(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn a_flip_alone_mirrors_each_row() {
        let img: Vec<f32> = (0..4 * 4).map(|i| i as f32 / 16.0).collect();
        let aug = ViewAugment {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            jitter_p: 0.0,
            blur_p: 0.0,
            flip_p: 1.0,
            ..ViewAugment::default()
        };
        let v = view(&img, (1, 4, 4), &aug, &mut LegacyRandomState::new(0));
        assert_eq!(&v[..4], &[3.0 / 16.0, 2.0 / 16.0, 1.0 / 16.0, 0.0]);
    }
}
