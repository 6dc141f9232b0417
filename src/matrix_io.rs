//! Reading activation matrices (stimuli × units) from `.npy` and `.safetensors` files.

use std::path::Path;

use faer::Mat;
use npyz::{DType, NpyFile, Order, TypeChar};
use safetensors::{Dtype, SafeTensors};

use crate::error::UserError;

/// Reads a 2-D float32 or float64 matrix from `path` (`.npy`, or `.safetensors` with
/// `key` naming the tensor when the file holds several), as f64, checking every value is finite.
pub fn read_matrix(path: &Path, key: Option<&str>) -> Result<Mat<f64>, UserError> {
    let shown = path.display();
    let bytes =
        std::fs::read(path).map_err(|e| UserError::input(format!("cannot read `{shown}`: {e}")))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let (shape, values) = match ext {
        "npy" => read_npy(&bytes, path)?,
        "safetensors" => read_safetensors(&bytes, path, key)?,
        _ => {
            return Err(UserError::input(format!(
                "`{shown}` is neither a .npy nor a .safetensors file"
            ))
            .hint("save activations with numpy.save (.npy) or safetensors (.safetensors)"))
        }
    };
    let (m, n) = match shape.as_slice() {
        [m, n] => (*m, *n),
        other => {
            return Err(UserError::input(format!(
                "`{shown}` holds a {}-D array of shape {:?}; expected 2-D (stimuli × units)",
                other.len(),
                other
            ))
            .hint("reshape it to (n_stimuli, n_units), e.g. x.reshape(len(x), -1) in numpy"))
        }
    };
    if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
        return Err(UserError::input(format!(
            "`{shown}` has a non-finite value ({}) at row {}, column {}",
            values[pos],
            pos / n,
            pos % n
        ))
        .hint("remove or impute NaN/infinite activations before scoring"));
    }
    // values are row-major here
    Ok(Mat::from_fn(m, n, |i, j| values[i * n + j]))
}

/// Shape and row-major values of a `.npy` array.
fn read_npy(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<f64>), UserError> {
    let shown = path.display();
    let npy = NpyFile::new(bytes)
        .map_err(|e| UserError::input(format!("`{shown}` is not a valid .npy file: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let order = npy.order();
    let size = match npy.dtype() {
        DType::Plain(ts) if ts.type_char() == TypeChar::Float => ts.size_field(),
        other => {
            return Err(UserError::input(format!(
                "`{shown}` has dtype {}; expected float32 or float64",
                other.descr()
            ))
            .hint("convert with x.astype(numpy.float32) before saving"))
        }
    };
    let read_err =
        |e: std::io::Error| UserError::input(format!("`{shown}`: cannot read data: {e}"));
    let values: Vec<f64> = match size {
        4 => npy
            .into_vec::<f32>()
            .map_err(read_err)?
            .into_iter()
            .map(f64::from)
            .collect(),
        8 => npy.into_vec::<f64>().map_err(read_err)?,
        _ => {
            return Err(UserError::input(format!(
                "`{shown}` has a float{} dtype; expected float32 or float64",
                size * 8
            ))
            .hint("convert with x.astype(numpy.float32) before saving"))
        }
    };
    if order == Order::Fortran && shape.len() == 2 {
        let (m, n) = (shape[0], shape[1]);
        let row_major = (0..m * n).map(|p| values[(p % n) * m + p / n]).collect();
        return Ok((shape, row_major));
    }
    Ok((shape, values))
}

/// Shape and row-major values of one tensor of a `.safetensors` file.
fn read_safetensors(
    bytes: &[u8],
    path: &Path,
    key: Option<&str>,
) -> Result<(Vec<usize>, Vec<f64>), UserError> {
    let shown = path.display();
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        UserError::input(format!("`{shown}` is not a valid .safetensors file: {e}"))
    })?;
    let mut names: Vec<&str> = st.names().into_iter().collect();
    names.sort_unstable();
    let name = match key {
        Some(k) => k,
        None if names.len() == 1 => names[0],
        None => {
            return Err(UserError::input(format!(
                "`{shown}` holds {} tensors; say which one to use",
                names.len()
            ))
            .hint(format!(
                "pass --x-key/--y-key with one of: {}",
                names.join(", ")
            )))
        }
    };
    let view = st.tensor(name).map_err(|_| {
        UserError::input(format!("`{shown}` has no tensor named `{name}`"))
            .hint(format!("tensors in the file: {}", names.join(", ")))
    })?;
    let data = view.data();
    let values: Vec<f64> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => {
            return Err(UserError::input(format!(
                "tensor `{name}` in `{shown}` has dtype {other:?}; expected F32 or F64"
            ))
            .hint("convert with tensor.float() before saving"))
        }
    };
    Ok((view.shape().to_vec(), values))
}
