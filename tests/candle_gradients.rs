//! The patched gradient accumulation of the vendored candle-core (`vendor/README.md`): the
//! first gradient reaching a node is stored as it is, later ones are added (or subtracted).
//! Every case has a node reached by several edges, so a gradient stored without the later
//! terms, or a stored gradient shared between two nodes and then changed, gives a wrong value.

use candle_core::{Device, Result, Tensor, Var};

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_vec1::<f64>()
}

/// d/dx (x·x + x) = 2x + 1: three edges into x.
#[test]
fn fan_in_adds_every_edge() -> Result<()> {
    let x = Var::new(&[1.5f64, -2.0, 0.0], &Device::Cpu)?;
    let y = ((x.as_tensor() * x.as_tensor())? + x.as_tensor())?;
    let grads = y.sum_all()?.backward()?;
    assert_eq!(values(grads.get(&x).expect("dx"))?, vec![4.0, -3.0, 1.0]);
    Ok(())
}

/// y = (a − b) + 2b: b's first gradient is −1 (the subtraction), its second +2.
#[test]
fn subtraction_then_addition() -> Result<()> {
    let a = Var::new(&[1.0f64, 2.0], &Device::Cpu)?;
    let b = Var::new(&[3.0f64, -4.0], &Device::Cpu)?;
    let y = ((a.as_tensor() - b.as_tensor())? + (b.as_tensor() * 2.0)?)?;
    let grads = y.sum_all()?.backward()?;
    assert_eq!(values(grads.get(&a).expect("da"))?, vec![1.0, 1.0]);
    assert_eq!(values(grads.get(&b).expect("db"))?, vec![1.0, 1.0]);
    // only the subtraction: the stored first gradient is the negation
    let y = (a.as_tensor() - b.as_tensor())?;
    let grads = y.sum_all()?.backward()?;
    assert_eq!(values(grads.get(&b).expect("db"))?, vec![-1.0, -1.0]);
    Ok(())
}

/// z = a + b hands both the same gradient; a then gets 3 more through w = z + 3a, and b must
/// keep 1 (the two nodes' gradients are separate tensors).
#[test]
fn shared_first_gradient_stays_separate() -> Result<()> {
    let a = Var::new(&[1.0f64, 1.0], &Device::Cpu)?;
    let b = Var::new(&[2.0f64, 2.0], &Device::Cpu)?;
    let z = (a.as_tensor() + b.as_tensor())?;
    let w = (&z + (a.as_tensor() * 3.0)?)?;
    let grads = (w * Tensor::new(&[1.0f64, 10.0], &Device::Cpu)?)?
        .sum_all()?
        .backward()?;
    assert_eq!(values(grads.get(&a).expect("da"))?, vec![4.0, 40.0]);
    assert_eq!(values(grads.get(&b).expect("db"))?, vec![1.0, 10.0]);
    Ok(())
}

/// A broadcast gradient (the sum over a broadcast dimension) reaching a node first.
#[test]
fn broadcast_gradient_is_summed() -> Result<()> {
    let x = Var::new(&[1.0f64, 2.0], &Device::Cpu)?;
    let y = x.as_tensor().broadcast_as((3, 2))?;
    let grads = (y * 2.0)?.sum_all()?.backward()?;
    assert_eq!(values(grads.get(&x).expect("dx"))?, vec![6.0, 6.0]);
    Ok(())
}
