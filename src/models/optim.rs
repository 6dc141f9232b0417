//! Optimiser updates shared by every training loop (image networks and language models):
//! SGD with PyTorch-style momentum and L2 weight decay, AdamW with decoupled weight decay,
//! and the cosine learning-rate schedule. One parameter at a time, on detached tensors.

use candle_core::{Result, Tensor};

use crate::error::UserError;

/// AdamW's β₁, β₂ and ε (PyTorch's defaults).
pub const ADAM: (f64, f64, f64) = (0.9, 0.999, 1e-8);

/// The cosine schedule: `peak` at step 0, decaying to 0 at `steps`.
pub fn cosine_lr(peak: f64, step: u64, steps: u64) -> f64 {
    0.5 * peak * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos())
}

/// One SGD step of weight `w` with gradient `g`: returns the new weight and velocity.
pub fn sgd(
    w: &Tensor,
    g: &Tensor,
    velocity: Option<&Tensor>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
) -> Result<(Tensor, Tensor)> {
    let g = (g + (w * weight_decay)?)?;
    let v = match velocity {
        Some(v) => ((v * momentum)? + &g)?,
        None => g,
    };
    let new = (w - (&v * lr)?)?;
    Ok((new, v.detach()))
}

/// AdamW step `t` (counting from 1) of weight `w` with gradient `g` and moments `(m, v)`:
/// returns the new weight and moments.
pub fn adamw(
    w: &Tensor,
    g: &Tensor,
    (m, v): &(Tensor, Tensor),
    t: u64,
    lr: f64,
    weight_decay: f64,
) -> Result<(Tensor, (Tensor, Tensor))> {
    let (b1, b2, eps) = ADAM;
    let t = t as i32;
    let m = ((m * b1)? + (g * (1.0 - b1))?)?;
    let v = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
    let mh = (&m / (1.0 - b1.powi(t)))?;
    let vh = (&v / (1.0 - b2.powi(t)))?;
    let upd = (mh / (vh.sqrt()? + eps)?)?;
    let new = ((w * (1.0 - lr * weight_decay))? - (upd * lr)?)?;
    Ok((new, (m.detach(), v.detach())))
}

/// The error for a trainable parameter that received no gradient: a forward-only op cut the
/// graph, and training would silently leave the parameter at its initial value.
pub fn no_gradient(name: &str) -> UserError {
    UserError {
        message: format!("training: parameter `{name}` received no gradient"),
        hint: Some("a forward-only op cuts the graph before it; this is a bug in repflow".into()),
        code: crate::error::EXIT_FAILURE,
    }
}
