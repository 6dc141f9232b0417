//! The out-of-distribution battery: deterministic image transforms with their level as a
//! parameter, modelled on the model-vs-human parametric sets (Geirhos et al.).
//!
//! Images are `c × h × w` in `[0, 1]`. Random transforms (noise, phase scrambling,
//! eidolon-like displacement) draw from numpy's legacy MT19937 seeded with `seed + image
//! index`, so a set is reproducible image by image. Outputs stay in `[0, 1]` (clipped where
//! a transform can leave it) except high-pass and phase scrambling, whose defining property
//! (removed low frequencies; an unchanged amplitude spectrum) clipping would break.

use repflow_kernels::rng::LegacyRandomState;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};

use super::Images;
use crate::error::UserError;

/// One transform at one level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transform", rename_all = "kebab-case")]
pub enum Transform {
    /// `f·(x − mean) + mean` per image: the standard deviation times `factor` (0 < factor ≤ 1).
    Contrast {
        /// Contrast factor.
        factor: f32,
    },
    /// Gaussian blur with standard deviation `sigma` pixels (mirror padding).
    LowPass {
        /// Blur standard deviation, pixels.
        sigma: f32,
    },
    /// `x − blur(x) + mean(x)`: low frequencies removed, mean kept.
    HighPass {
        /// Blur standard deviation, pixels.
        sigma: f32,
    },
    /// Uniform noise in `[−width, width]` added, then clipped to `[0, 1]`.
    UniformNoise {
        /// Half-width of the noise.
        width: f32,
    },
    /// Fourier phases shifted by uniform noise in `[−degrees, degrees]` (Hermitian, so the
    /// image stays real); the amplitude spectrum is unchanged.
    PhaseScrambling {
        /// Largest phase shift, degrees.
        degrees: f32,
    },
    /// Every image's amplitude spectrum set to the set's mean amplitude spectrum (phases kept).
    PowerEqualisation,
    /// Rotation by a multiple of 90 degrees (square images).
    Rotation {
        /// 0, 90, 180, 270 or 360.
        degrees: u32,
    },
    /// Eidolon-like random displacement: a smooth random field of standard deviation `reach`
    /// pixels, smoother with higher `coherence` (0..1), warps the image (bilinear).
    Eidolon {
        /// Displacement scale, pixels.
        reach: f32,
        /// Spatial coherence of the field, 0..1.
        coherence: f32,
    },
    /// Sobel edge map: dark edges on white.
    Edge,
    /// Filled silhouette: black where the object is (grey level above 0.1), white elsewhere.
    Silhouette,
    /// `1 − x`.
    Inversion,
    /// Colour images to luminance (0.299 R + 0.587 G + 0.114 B) on all channels.
    Greyscale,
    /// Colour images with opponent colours (`2·luminance − x`, clipped): hue inverted, luminance kept.
    FalseColour,
}

impl Transform {
    /// The set's name with its level, e.g. `contrast-0.1`.
    pub fn name(&self) -> String {
        match self {
            Transform::Contrast { factor } => format!("contrast-{factor}"),
            Transform::LowPass { sigma } => format!("low-pass-{sigma}"),
            Transform::HighPass { sigma } => format!("high-pass-{sigma}"),
            Transform::UniformNoise { width } => format!("uniform-noise-{width}"),
            Transform::PhaseScrambling { degrees } => format!("phase-scrambling-{degrees}"),
            Transform::PowerEqualisation => "power-equalisation".into(),
            Transform::Rotation { degrees } => format!("rotation-{degrees}"),
            Transform::Eidolon { reach, coherence } => format!("eidolon-{reach}-{coherence}"),
            Transform::Edge => "edge".into(),
            Transform::Silhouette => "silhouette".into(),
            Transform::Inversion => "inversion".into(),
            Transform::Greyscale => "greyscale".into(),
            Transform::FalseColour => "false-colour".into(),
        }
    }

    /// Parses `name[:level[:level]]`, e.g. `contrast:0.1`, `rotation:90`, `eidolon:4:0.3`, `edge`.
    pub fn parse(spec: &str) -> Result<Transform, UserError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let level = |i: usize| -> Result<f32, UserError> {
            parts
                .get(i)
                .and_then(|v| v.parse::<f32>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    UserError::input(format!(
                        "transform `{spec}` needs a finite numeric level after `{}:`",
                        parts[0]
                    ))
                })
        };
        let t = match parts[0] {
            "contrast" => Transform::Contrast { factor: level(1)? },
            "low-pass" => Transform::LowPass { sigma: level(1)? },
            "high-pass" => Transform::HighPass { sigma: level(1)? },
            "uniform-noise" => Transform::UniformNoise { width: level(1)? },
            "phase-scrambling" => Transform::PhaseScrambling { degrees: level(1)? },
            "power-equalisation" => Transform::PowerEqualisation,
            "rotation" => Transform::Rotation {
                degrees: parts.get(1).and_then(|v| v.parse::<u32>().ok()).ok_or_else(|| {
                    UserError::input(format!(
                        "transform `{spec}` needs 0, 90, 180, 270 or 360 degrees after `rotation:`"
                    ))
                })?,
            },
            "eidolon" => Transform::Eidolon { reach: level(1)?, coherence: level(2)? },
            "edge" => Transform::Edge,
            "silhouette" => Transform::Silhouette,
            "inversion" => Transform::Inversion,
            "greyscale" => Transform::Greyscale,
            "false-colour" => Transform::FalseColour,
            other => {
                return Err(UserError::input(format!("unknown transform `{other}`")).hint(
                    "one of contrast:F, low-pass:SIGMA, high-pass:SIGMA, uniform-noise:W, phase-scrambling:DEG, power-equalisation, \
                     rotation:DEG, eidolon:REACH:COHERENCE, edge, silhouette, inversion, greyscale, false-colour",
                ))
            }
        };
        t.check_levels()?;
        Ok(t)
    }

    /// Checks the transform's levels are in range (when it is parsed, so that a pipeline's
    /// bad level is refused when it is loaded).
    fn check_levels(&self) -> Result<(), UserError> {
        let bad = |msg: String| {
            Err(UserError::input(format!(
                "transform {}: {msg}",
                self.name()
            )))
        };
        match *self {
            Transform::Contrast { factor } if !(factor > 0.0 && factor <= 1.0) => {
                bad(format!("factor {factor} must be in (0, 1]"))
            }
            Transform::LowPass { sigma } | Transform::HighPass { sigma }
                if !(0.0..=1000.0).contains(&sigma) =>
            {
                bad(format!("sigma {sigma} must be between 0 and 1000 pixels"))
            }
            Transform::UniformNoise { width } if !(0.0..=10.0).contains(&width) => {
                bad(format!("width {width} must be between 0 and 10"))
            }
            Transform::PhaseScrambling { degrees } if !(0.0..=180.0).contains(&degrees) => {
                bad(format!("{degrees} degrees must be between 0 and 180"))
            }
            Transform::Eidolon { reach, coherence }
                if !(0.0..=1000.0).contains(&reach) || !(0.0..=1.0).contains(&coherence) =>
            {
                bad(format!(
                    "reach {reach} must be between 0 and 1000 pixels and coherence {coherence} between 0 and 1"
                ))
            }
            Transform::Rotation { degrees } if degrees % 90 != 0 || degrees > 360 => {
                bad(format!("{degrees} is not 0, 90, 180, 270 or 360"))
            }
            _ => Ok(()),
        }
    }

    /// Applies the transform to every image.
    pub fn apply(&self, images: &Images, seed: u32) -> Result<Images, UserError> {
        let mut out = images.clone();
        let (c, h, w) = (images.c, images.h, images.w);
        let bad = |msg: String| Err(UserError::input(format!("{}: {msg}", self.name())));
        match *self {
            Transform::Rotation { degrees } if h != w && degrees % 180 != 0 => {
                return bad(format!(
                    "images are {h}x{w}; 90 and 270 degrees need square images"
                ))
            }
            Transform::Greyscale | Transform::FalseColour if c != 3 => {
                return bad(format!("needs colour images (3 channels), these have {c}"))
            }
            _ => {}
        }
        if *self == Transform::PowerEqualisation {
            power_equalise(&mut out);
            return Ok(out);
        }
        for i in 0..images.n {
            let img = out.image_mut(i);
            let rng_seed = seed.wrapping_add(i as u32);
            match *self {
                Transform::Contrast { factor } => {
                    let mean = img.iter().map(|&v| v as f64).sum::<f64>() / img.len() as f64;
                    img.iter_mut()
                        .for_each(|v| *v = (factor as f64 * (*v as f64 - mean) + mean) as f32);
                }
                Transform::LowPass { sigma } => {
                    per_channel(img, c, h, w, |p| blur(p, h, w, sigma as f64))
                }
                Transform::HighPass { sigma } => per_channel(img, c, h, w, |p| {
                    let b = blur(p, h, w, sigma as f64);
                    let mean = p.iter().sum::<f64>() / p.len() as f64;
                    p.iter().zip(&b).map(|(x, y)| x - y + mean).collect()
                }),
                Transform::UniformNoise { width } => {
                    let mut rng = LegacyRandomState::new(rng_seed);
                    img.iter_mut().for_each(|v| {
                        *v = (*v + width * (2.0 * rng.next_f64() as f32 - 1.0)).clamp(0.0, 1.0)
                    });
                }
                Transform::PhaseScrambling { degrees } => {
                    let phases = hermitian_noise(h, w, (degrees as f64).to_radians(), rng_seed);
                    per_channel(img, c, h, w, |p| {
                        let mut f = fft2(p, h, w, false);
                        for (z, &phi) in f.iter_mut().zip(&phases) {
                            *z *= Complex::from_polar(1.0, phi);
                        }
                        fft2_inverse_real(f, h, w)
                    })
                }
                Transform::Rotation { degrees } => rotate(img, c, h, w, degrees),
                Transform::Eidolon { reach, coherence } => {
                    eidolon(img, c, h, w, reach as f64, coherence as f64, rng_seed)
                }
                Transform::Edge => edges(img, c, h, w),
                Transform::Silhouette => {
                    let grey = luminance(img, c, h * w);
                    for ch in 0..c {
                        for p in 0..h * w {
                            img[ch * h * w + p] = if grey[p] > 0.1 { 0.0 } else { 1.0 };
                        }
                    }
                }
                Transform::Inversion => img.iter_mut().for_each(|v| *v = 1.0 - *v),
                Transform::Greyscale => {
                    let grey = luminance(img, c, h * w);
                    for ch in 0..c {
                        img[ch * h * w..(ch + 1) * h * w].copy_from_slice(&grey);
                    }
                }
                Transform::FalseColour => {
                    let grey = luminance(img, c, h * w);
                    for ch in 0..c {
                        for p in 0..h * w {
                            let v = &mut img[ch * h * w + p];
                            *v = (2.0 * grey[p] - *v).clamp(0.0, 1.0);
                        }
                    }
                }
                Transform::PowerEqualisation => unreachable!("handled above"),
            }
        }
        let suffix = self.name();
        out.ids = images
            .ids
            .iter()
            .map(|id| format!("{id}@{suffix}"))
            .collect();
        Ok(out)
    }
}

/// The default battery: 11 transformed sets at several levels (with the far shift to MNIST,
/// 12 sets). Greyscale and false colour join for colour inputs.
pub fn battery() -> Vec<Transform> {
    let mut b = Vec::new();
    b.extend([0.5, 0.2, 0.1, 0.05].map(|factor| Transform::Contrast { factor }));
    b.extend([1.0, 2.0, 3.0].map(|sigma| Transform::LowPass { sigma }));
    b.extend([3.0, 1.5, 1.0].map(|sigma| Transform::HighPass { sigma }));
    b.extend([0.1, 0.2, 0.35, 0.6].map(|width| Transform::UniformNoise { width }));
    b.extend([30.0, 90.0, 150.0].map(|degrees| Transform::PhaseScrambling { degrees }));
    b.push(Transform::PowerEqualisation);
    b.extend([90, 180, 270].map(|degrees| Transform::Rotation { degrees }));
    b.extend(
        [(2.0, 1.0), (4.0, 1.0), (4.0, 0.3)]
            .map(|(reach, coherence)| Transform::Eidolon { reach, coherence }),
    );
    b.extend([Transform::Edge, Transform::Silhouette, Transform::Inversion]);
    b
}

fn per_channel(img: &mut [f32], c: usize, h: usize, w: usize, f: impl Fn(&[f64]) -> Vec<f64>) {
    for ch in 0..c {
        let plane = &mut img[ch * h * w..(ch + 1) * h * w];
        let p: Vec<f64> = plane.iter().map(|&v| v as f64).collect();
        for (v, r) in plane.iter_mut().zip(f(&p)) {
            *v = r as f32;
        }
    }
}

fn luminance(img: &[f32], c: usize, hw: usize) -> Vec<f32> {
    if c == 3 {
        (0..hw)
            .map(|p| 0.299 * img[p] + 0.587 * img[hw + p] + 0.114 * img[2 * hw + p])
            .collect()
    } else {
        (0..hw)
            .map(|p| (0..c).map(|ch| img[ch * hw + p]).sum::<f32>() / c as f32)
            .collect()
    }
}

/// Mirror index (scipy's `reflect`: `d c b a | a b c d | d c b a`).
fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

/// Separable Gaussian blur, truncated at 4 standard deviations, mirror padding.
pub fn blur(p: &[f64], h: usize, w: usize, sigma: f64) -> Vec<f64> {
    if sigma == 0.0 {
        return p.to_vec();
    }
    let r = (4.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = k.iter().sum();
    let k: Vec<f64> = k.iter().map(|v| v / total).collect();
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = (-r..=r)
                .map(|d| k[(d + r) as usize] * p[y * w + mirror(x as isize + d, w)])
                .sum();
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (-r..=r)
                .map(|d| k[(d + r) as usize] * tmp[mirror(y as isize + d, h) * w + x])
                .sum();
        }
    }
    out
}

/// 2-D FFT of a real (`inverse = false`) plane, row-major.
pub fn fft2(p: &[f64], h: usize, w: usize, inverse: bool) -> Vec<Complex<f64>> {
    let mut data: Vec<Complex<f64>> = p.iter().map(|&v| Complex::new(v, 0.0)).collect();
    fft2_in_place(&mut data, h, w, inverse);
    data
}

fn fft2_in_place(data: &mut [Complex<f64>], h: usize, w: usize, inverse: bool) {
    let mut planner = FftPlanner::<f64>::new();
    let (row, col) = if inverse {
        (planner.plan_fft_inverse(w), planner.plan_fft_inverse(h))
    } else {
        (planner.plan_fft_forward(w), planner.plan_fft_forward(h))
    };
    for r in data.chunks_mut(w) {
        row.process(r);
    }
    let mut column = vec![Complex::new(0.0, 0.0); h];
    for x in 0..w {
        for y in 0..h {
            column[y] = data[y * w + x];
        }
        col.process(&mut column);
        for y in 0..h {
            data[y * w + x] = column[y];
        }
    }
}

/// The real part of the inverse 2-D FFT (normalised).
fn fft2_inverse_real(mut f: Vec<Complex<f64>>, h: usize, w: usize) -> Vec<f64> {
    fft2_in_place(&mut f, h, w, true);
    let n = (h * w) as f64;
    f.iter().map(|z| z.re / n).collect()
}

/// Uniform phase noise in `[−max, max]` with `φ(−k) = −φ(k)` (zero where `k = −k`).
fn hermitian_noise(h: usize, w: usize, max: f64, seed: u32) -> Vec<f64> {
    let mut rng = LegacyRandomState::new(seed);
    let mut phi = vec![0.0; h * w];
    let mut set = vec![false; h * w];
    for y in 0..h {
        for x in 0..w {
            let (my, mx) = ((h - y) % h, (w - x) % w);
            let (i, j) = (y * w + x, my * w + mx);
            if set[i] {
                continue;
            }
            let v = if i == j {
                0.0
            } else {
                max * (2.0 * rng.next_f64() - 1.0)
            };
            phi[i] = v;
            phi[j] = -v;
            set[i] = true;
            set[j] = true;
        }
    }
    phi
}

fn power_equalise(images: &mut Images) {
    let (c, h, w) = (images.c, images.h, images.w);
    let hw = h * w;
    let mut mean_amp = vec![0.0f64; c * hw];
    let spectra: Vec<Vec<Complex<f64>>> = (0..images.n)
        .flat_map(|i| (0..c).map(move |ch| (i, ch)))
        .map(|(i, ch)| {
            let p: Vec<f64> = images.image(i)[ch * hw..(ch + 1) * hw]
                .iter()
                .map(|&v| v as f64)
                .collect();
            fft2(&p, h, w, false)
        })
        .collect();
    for (k, s) in spectra.iter().enumerate() {
        let ch = k % c;
        for (a, z) in mean_amp[ch * hw..(ch + 1) * hw].iter_mut().zip(s) {
            *a += z.norm() / images.n as f64;
        }
    }
    for (k, s) in spectra.into_iter().enumerate() {
        let (i, ch) = (k / c, k % c);
        let f: Vec<Complex<f64>> = s
            .iter()
            .zip(&mean_amp[ch * hw..(ch + 1) * hw])
            .map(|(z, &a)| {
                if z.norm() > 0.0 {
                    z / z.norm() * a
                } else {
                    Complex::new(a, 0.0)
                }
            })
            .collect();
        let p = fft2_inverse_real(f, h, w);
        for (v, r) in images.image_mut(i)[ch * hw..(ch + 1) * hw]
            .iter_mut()
            .zip(p)
        {
            *v = r as f32;
        }
    }
}

fn rotate(img: &mut [f32], c: usize, h: usize, w: usize, degrees: u32) {
    let src = img.to_vec();
    for ch in 0..c {
        let s = &src[ch * h * w..(ch + 1) * h * w];
        let d = &mut img[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                // Counter-clockwise, as numpy's rot90.
                d[y * w + x] = match degrees % 360 {
                    0 => s[y * w + x],
                    90 => s[x * w + (w - 1 - y)],
                    180 => s[(h - 1 - y) * w + (w - 1 - x)],
                    _ => s[(h - 1 - x) * w + y],
                };
            }
        }
    }
}

fn eidolon(img: &mut [f32], c: usize, h: usize, w: usize, reach: f64, coherence: f64, seed: u32) {
    if reach == 0.0 {
        return;
    }
    let mut rng = LegacyRandomState::new(seed);
    let sigma = 0.5 + coherence.clamp(0.0, 1.0) * h.min(w) as f64 / 6.0;
    let field = |rng: &mut LegacyRandomState| {
        let white: Vec<f64> = (0..h * w).map(|_| rng.gauss()).collect();
        let smooth = blur(&white, h, w, sigma);
        let sd = (smooth.iter().map(|v| v * v).sum::<f64>() / smooth.len() as f64)
            .sqrt()
            .max(1e-12);
        smooth
            .into_iter()
            .map(|v| reach * v / sd)
            .collect::<Vec<f64>>()
    };
    let (dx, dy) = (field(&mut rng), field(&mut rng));
    let src = img.to_vec();
    let at = |plane: &[f32], y: isize, x: isize| {
        plane[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize]
            as f64
    };
    for ch in 0..c {
        let s = &src[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y as f64 + dy[y * w + x], x as f64 + dx[y * w + x]);
                let (y0, x0) = (sy.floor(), sx.floor());
                let (fy, fx) = (sy - y0, sx - x0);
                let (y0, x0) = (y0 as isize, x0 as isize);
                let v = (1.0 - fy) * ((1.0 - fx) * at(s, y0, x0) + fx * at(s, y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(s, y0 + 1, x0) + fx * at(s, y0 + 1, x0 + 1));
                img[ch * h * w + y * w + x] = v as f32;
            }
        }
    }
}

fn edges(img: &mut [f32], c: usize, h: usize, w: usize) {
    let grey: Vec<f64> = luminance(img, c, h * w)
        .into_iter()
        .map(f64::from)
        .collect();
    let g = |y: isize, x: isize| grey[mirror(y, h) * w + mirror(x, w)];
    let mut mag = vec![0.0; h * w];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let gx = (g(y - 1, x + 1) + 2.0 * g(y, x + 1) + g(y + 1, x + 1))
                - (g(y - 1, x - 1) + 2.0 * g(y, x - 1) + g(y + 1, x - 1));
            let gy = (g(y + 1, x - 1) + 2.0 * g(y + 1, x) + g(y + 1, x + 1))
                - (g(y - 1, x - 1) + 2.0 * g(y - 1, x) + g(y - 1, x + 1));
            mag[y as usize * w + x as usize] = (gx * gx + gy * gy).sqrt();
        }
    }
    let max = mag.iter().cloned().fold(0.0, f64::max);
    for ch in 0..c {
        for p in 0..h * w {
            img[ch * h * w + p] = if max > 0.0 {
                (1.0 - mag[p] / max) as f32
            } else {
                1.0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few structured grey test images (a blob, stripes, a gradient, noise).
    fn sample(n: usize, size: usize) -> Images {
        let mut rng = LegacyRandomState::new(7);
        let mut data = Vec::new();
        for i in 0..n {
            for y in 0..size {
                for x in 0..size {
                    let (fy, fx) = (y as f64 / size as f64, x as f64 / size as f64);
                    let v = match i % 4 {
                        0 => (-((fx - 0.5).powi(2) + (fy - 0.4).powi(2)) * 20.0).exp(),
                        1 => 0.5 + 0.4 * (fx * 18.0).sin(),
                        2 => fx * 0.8 + 0.1,
                        _ => rng.next_f64(),
                    };
                    data.push(v as f32);
                }
            }
        }
        Images {
            n,
            c: 1,
            h: size,
            w: size,
            data,
            labels: vec![0; n],
            ids: (0..n).map(|i| format!("t/{i}")).collect(),
        }
    }

    fn std(x: &[f32]) -> f64 {
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn power(img: &[f32], h: usize, w: usize) -> Vec<f64> {
        fft2(
            &img.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            h,
            w,
            false,
        )
        .iter()
        .map(|z| z.norm_sqr())
        .collect()
    }

    /// Radial frequency (cycles per pixel) of FFT bin `i`.
    fn freq(i: usize, h: usize, w: usize) -> f64 {
        let (y, x) = (i / w, i % w);
        let fy = if y <= h / 2 { y } else { h - y } as f64 / h as f64;
        let fx = if x <= w / 2 { x } else { w - x } as f64 / w as f64;
        (fy * fy + fx * fx).sqrt()
    }

    #[test]
    fn contrast_scales_the_standard_deviation_by_its_factor() {
        let imgs = sample(4, 28);
        let out = Transform::Contrast { factor: 0.1 }.apply(&imgs, 0).unwrap();
        for i in 0..4 {
            assert!((std(out.image(i)) - 0.1 * std(imgs.image(i))).abs() < 1e-6);
        }
    }

    #[test]
    fn low_pass_removes_energy_above_the_cutoff() {
        // Images rich in high frequencies: noise, and stripes of period 3 pixels. (Smooth
        // images have too little energy there to measure against the DFT's wrap-around edge.)
        let mut imgs = sample(4, 28);
        let mut rng = LegacyRandomState::new(11);
        for i in 0..4 {
            for (p, v) in imgs.image_mut(i).iter_mut().enumerate() {
                *v = if i % 2 == 0 {
                    rng.next_f64() as f32
                } else {
                    (0.5 + 0.4 * ((p % 28) as f64 * 2.0944).sin()) as f32
                };
            }
        }
        let sigma = 2.0;
        let out = Transform::LowPass {
            sigma: sigma as f32,
        }
        .apply(&imgs, 0)
        .unwrap();
        // A Gaussian of σ pixels keeps exp(−2π²σ²f²) of the power at frequency f: at
        // f ≥ 0.25 cycles/pixel that is below 1e-4.
        let cutoff = 0.25;
        for i in 0..4 {
            let (p0, p1) = (power(imgs.image(i), 28, 28), power(out.image(i), 28, 28));
            let high = |p: &[f64]| {
                (0..p.len())
                    .filter(|&k| freq(k, 28, 28) >= cutoff)
                    .map(|k| p[k])
                    .sum::<f64>()
            };
            if high(&p0) > 1e-9 {
                assert!(
                    high(&p1) < 1e-2 * high(&p0),
                    "image {i}: {} of {}",
                    high(&p1),
                    high(&p0)
                );
            }
        }
    }

    #[test]
    fn high_pass_removes_low_frequencies_and_keeps_the_mean() {
        let imgs = sample(4, 28);
        let out = Transform::HighPass { sigma: 1.5 }.apply(&imgs, 0).unwrap();
        for i in 0..3 {
            let (p0, p1) = (power(imgs.image(i), 28, 28), power(out.image(i), 28, 28));
            let low = |p: &[f64]| {
                (1..p.len())
                    .filter(|&k| freq(k, 28, 28) <= 0.05)
                    .map(|k| p[k])
                    .sum::<f64>()
            };
            assert!(low(&p1) < 0.1 * low(&p0), "image {i}");
            assert!((p1[0] - p0[0]).abs() < 1e-6 * p0[0].max(1.0), "mean kept");
        }
    }

    #[test]
    fn phase_scrambling_keeps_the_power_spectrum() {
        let imgs = sample(4, 28);
        let out = Transform::PhaseScrambling { degrees: 90.0 }
            .apply(&imgs, 3)
            .unwrap();
        for i in 0..4 {
            let (p0, p1) = (power(imgs.image(i), 28, 28), power(out.image(i), 28, 28));
            let scale = p0.iter().cloned().fold(0.0, f64::max);
            for (a, b) in p0.iter().zip(&p1) {
                assert!((a - b).abs() < 1e-6 * scale, "{a} vs {b}");
            }
            assert_ne!(imgs.image(i), out.image(i));
        }
    }

    #[test]
    fn power_equalisation_gives_every_image_the_same_spectrum() {
        let imgs = sample(4, 16);
        let out = Transform::PowerEqualisation.apply(&imgs, 0).unwrap();
        let p0 = power(out.image(0), 16, 16);
        for i in 1..4 {
            for (a, b) in p0.iter().zip(&power(out.image(i), 16, 16)) {
                assert!((a - b).abs() < 1e-6 * a.max(1.0));
            }
        }
    }

    #[test]
    fn rotation_by_360_and_four_quarter_turns_are_the_identity() {
        let imgs = sample(4, 12);
        assert_eq!(
            Transform::Rotation { degrees: 360 }
                .apply(&imgs, 0)
                .unwrap()
                .data,
            imgs.data
        );
        let mut r = imgs.clone();
        for _ in 0..4 {
            r = Transform::Rotation { degrees: 90 }.apply(&r, 0).unwrap();
        }
        assert_eq!(r.data, imgs.data);
        let half = Transform::Rotation { degrees: 180 }
            .apply(&imgs, 0)
            .unwrap();
        let twice = Transform::Rotation { degrees: 90 }
            .apply(
                &Transform::Rotation { degrees: 90 }.apply(&imgs, 0).unwrap(),
                0,
            )
            .unwrap();
        assert_eq!(half.data, twice.data);
        // 90 degrees counter-clockwise, as numpy's rot90: the top-right pixel goes to the top-left.
        let tiny = Images {
            n: 1,
            c: 1,
            h: 2,
            w: 2,
            data: vec![1.0, 2.0, 3.0, 4.0],
            labels: vec![0],
            ids: vec!["a".into()],
        };
        assert_eq!(
            Transform::Rotation { degrees: 90 }
                .apply(&tiny, 0)
                .unwrap()
                .data,
            vec![2.0, 4.0, 1.0, 3.0]
        );
    }

    #[test]
    fn noise_inversion_edges_silhouettes_and_eidolons_behave() {
        let imgs = sample(4, 20);
        let noisy = Transform::UniformNoise { width: 0.2 }
            .apply(&imgs, 1)
            .unwrap();
        assert!(noisy
            .data
            .iter()
            .zip(&imgs.data)
            .all(|(a, b)| (a - b).abs() <= 0.2 + 1e-6 && (0.0..=1.0).contains(a)));
        assert_eq!(
            noisy,
            Transform::UniformNoise { width: 0.2 }
                .apply(&imgs, 1)
                .unwrap(),
            "deterministic"
        );
        let inv = Transform::Inversion
            .apply(&Transform::Inversion.apply(&imgs, 0).unwrap(), 0)
            .unwrap();
        assert!(inv
            .data
            .iter()
            .zip(&imgs.data)
            .all(|(a, b)| (a - b).abs() < 1e-6));
        let flat = Images {
            n: 1,
            c: 1,
            h: 8,
            w: 8,
            data: vec![0.3; 64],
            labels: vec![0],
            ids: vec!["f".into()],
        };
        assert!(
            Transform::Edge
                .apply(&flat, 0)
                .unwrap()
                .data
                .iter()
                .all(|&v| v == 1.0),
            "no edges in a flat image"
        );
        let sil = Transform::Silhouette.apply(&imgs, 0).unwrap();
        assert!(sil.data.iter().all(|&v| v == 0.0 || v == 1.0));
        assert_eq!(
            Transform::Eidolon {
                reach: 0.0,
                coherence: 1.0
            }
            .apply(&imgs, 0)
            .unwrap()
            .data,
            imgs.data
        );
        let warped = Transform::Eidolon {
            reach: 3.0,
            coherence: 0.5,
        }
        .apply(&imgs, 0)
        .unwrap();
        assert_ne!(warped.data, imgs.data);
    }

    #[test]
    fn colour_transforms_keep_luminance_and_refuse_grey_images() {
        let rgb = Images {
            n: 1,
            c: 3,
            h: 1,
            w: 2,
            data: vec![0.9, 0.2, 0.1, 0.5, 0.3, 0.6],
            labels: vec![0],
            ids: vec!["c".into()],
        };
        let grey = Transform::Greyscale.apply(&rgb, 0).unwrap();
        assert_eq!(grey.data[0], grey.data[2]);
        let fc = Transform::FalseColour.apply(&rgb, 0).unwrap();
        let lum = |d: &[f32], p: usize| 0.299 * d[p] + 0.587 * d[2 + p] + 0.114 * d[4 + p];
        assert!((lum(&fc.data, 1) - lum(&rgb.data, 1)).abs() < 1e-6);
        assert!(Transform::Greyscale.apply(&sample(1, 4), 0).is_err());
    }

    #[test]
    fn the_battery_has_twelve_sets_with_the_far_shift() {
        let mut families: Vec<String> = battery()
            .iter()
            .map(|t| t.name().split('-').next().unwrap().to_string())
            .collect();
        families.dedup();
        assert!(families.len() + 1 >= 12, "{families:?}");
    }
}
