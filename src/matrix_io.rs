//! Reading activation matrices (stimuli × units) from `.npy` and `.safetensors` files.

use std::path::Path;

use faer::{Mat, MatRef};
use npyz::{DType, Endianness, NpyFile, Order, TypeChar};
use safetensors::{Dtype, SafeTensors};

use crate::error::UserError;
use crate::input;

/// An N-D float array read from a file, as f64, values row-major (C order).
pub struct Array {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f64>,
}

/// Reads a float32 or float64 array of any rank from `path` (`.npy`, or `.safetensors` with
/// `key` naming the tensor when the file holds several), as f64, checking every value is
/// finite and that the header's shape is what the file holds.
pub fn read_array(path: &Path, key: Option<&str>) -> Result<Array, UserError> {
    let shown = path.display();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "npy" && ext != "safetensors" {
        return Err(UserError::input(format!(
            "`{shown}` is neither a .npy nor a .safetensors file"
        ))
        .hint("save activations with numpy.save (.npy) or safetensors (.safetensors)"));
    }
    let bytes = input::read(path)?;
    let (shape, values) = match ext {
        "npy" => read_npy(&bytes, path)?,
        _ => read_safetensors(&bytes, path, key)?,
    };
    if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
        let at = match unravel(pos, &shape).as_slice() {
            [r, c] => format!("row {r}, column {c}"),
            index => format!("index {index:?}"),
        };
        return Err(non_finite(&shown.to_string(), values[pos], &at));
    }
    Ok(Array { shape, values })
}

fn non_finite(name: &str, value: f64, at: &str) -> UserError {
    UserError::input(format!("`{name}` has a non-finite value ({value}) at {at}"))
        .hint("remove or impute NaN/infinite activations before scoring")
}

/// Checks every value of an in-memory matrix `name` is finite (the first bad one in row
/// order is named, as for files).
pub fn check_finite(name: &str, m: MatRef<'_, f64>) -> Result<(), UserError> {
    // in the storage order first; the row-order search only to name a value
    let finite = if m.row_stride() == 1 {
        (0..m.ncols()).all(|j| m.col(j).iter().all(|v| v.is_finite()))
    } else {
        (0..m.nrows()).all(|i| m.row(i).iter().all(|v| v.is_finite()))
    };
    if finite {
        return Ok(());
    }
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            let v = m[(i, j)];
            if !v.is_finite() {
                return Err(non_finite(name, v, &format!("row {i}, column {j}")));
            }
        }
    }
    Ok(())
}

/// The multi-index of row-major position `pos` in `shape`.
fn unravel(mut pos: usize, shape: &[usize]) -> Vec<usize> {
    let mut at = vec![0; shape.len()];
    for (a, &d) in at.iter_mut().zip(shape).rev() {
        *a = pos % d.max(1);
        pos /= d.max(1);
    }
    at
}

/// Reads a 2-D float32 or float64 matrix (stimuli × units) from `path` ([`read_array`]).
pub fn read_matrix(path: &Path, key: Option<&str>) -> Result<Mat<f64>, UserError> {
    Ok(read_file_matrix(path, key)?.as_ref().to_owned())
}

/// A matrix as its file stores it: float64 values in the file's own order, viewed as a
/// matrix without a transposing copy.
pub struct FileMatrix {
    values: Vec<f64>,
    shape: (usize, usize),
    column_major: bool,
}

impl FileMatrix {
    /// The matrix (stimuli × units).
    pub fn as_ref(&self) -> MatRef<'_, f64> {
        let (m, n) = self.shape;
        if self.column_major {
            MatRef::from_column_major_slice(&self.values, m, n)
        } else {
            MatRef::from_row_major_slice(&self.values, m, n)
        }
    }
}

/// Reads a 2-D float32 or float64 matrix (stimuli × units) from `path` with as few passes
/// over memory as it can: a little-endian float64 `.npy` file's values are read straight
/// into the buffer the matrix views (first touched once, by the read). `repflow score`
/// reads its two layers this way; at n = 256 units a fresh page costs more than the
/// arithmetic on it, so each copy saved shows in the whole command's time.
pub fn read_file_matrix(path: &Path, key: Option<&str>) -> Result<FileMatrix, UserError> {
    if path.extension().and_then(|e| e.to_str()) == Some("npy") {
        if let Some(m) = npy_matrix(path)? {
            return Ok(m);
        }
    }
    let Array { shape, values } = read_array(path, key)?;
    let (m, n) = match shape.as_slice() {
        [m, n] => (*m, *n),
        other => return Err(not_a_matrix(path, other)),
    };
    Ok(FileMatrix {
        values,
        shape: (m, n),
        column_major: false,
    })
}

fn not_a_matrix(path: &Path, shape: &[usize]) -> UserError {
    UserError::input(format!(
        "`{}` holds a {}-D array of shape {:?}; expected 2-D (stimuli × units)",
        path.display(),
        shape.len(),
        shape
    ))
    .hint("reshape it to (n_stimuli, n_units), e.g. x.reshape(len(x), -1) in numpy")
}

/// The common case of [`read_file_matrix`]: a 2-D little-endian float `.npy` file of finite
/// values, read without an intermediate byte buffer for float64. `None` for anything else —
/// another dtype or byte order, or a non-finite value — which the general path reads or
/// refuses with its messages.
fn npy_matrix(path: &Path) -> Result<Option<FileMatrix>, UserError> {
    use std::io::{Read, Seek, SeekFrom};
    let layout = npy_header(path)?;
    let [m, n] = layout.shape[..] else {
        return Err(not_a_matrix(path, &layout.shape));
    };
    if !layout.little_endian {
        return Ok(None);
    }
    let cannot =
        |e: std::io::Error| UserError::input(format!("cannot read `{}`: {e}", path.display()));
    let mut file = input::open(path)?;
    file.seek(SeekFrom::Start(layout.header_len as u64))
        .map_err(cannot)?;
    // the header's shape was checked against the file's size: m·n values follow it
    let values: Vec<f64> = if layout.item_size == 8 {
        let mut values = vec![0.0f64; m * n];
        file.read_exact(bytemuck::cast_slice_mut(&mut values))
            .map_err(cannot)?;
        if cfg!(target_endian = "big") {
            values
                .iter_mut()
                .for_each(|v| *v = f64::from_bits(v.to_bits().swap_bytes()));
        }
        values
    } else {
        let mut bytes = vec![0u8; 4 * m * n];
        file.read_exact(&mut bytes).map_err(cannot)?;
        bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .collect()
    };
    if !values.iter().all(|v| v.is_finite()) {
        return Ok(None);
    }
    Ok(Some(FileMatrix {
        values,
        shape: (m, n),
        column_major: layout.fortran,
    }))
}

/// What a `.npy` header says, checked against the file's size.
pub struct NpyLayout {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Bytes per value (4 or 8: float32 or float64).
    pub item_size: usize,
    /// Whether the values are column-major (`fortran_order`).
    pub fortran: bool,
    /// Whether the values are little-endian (`<` in the dtype, this machine's order).
    pub little_endian: bool,
    /// Length of the preamble and header: the values start here.
    pub header_len: usize,
}

/// Length of the `.npy` preamble and header, from its first bytes (magic, version, length).
fn npy_header_len(prefix: &[u8]) -> Option<usize> {
    if prefix.len() < 10 || &prefix[..6] != b"\x93NUMPY" {
        return None;
    }
    match prefix[6] {
        1 => Some(10 + u16::from_le_bytes([prefix[8], prefix[9]]) as usize),
        2 | 3 if prefix.len() >= 12 => {
            Some(12 + u32::from_le_bytes(prefix[8..12].try_into().ok()?) as usize)
        }
        _ => None,
    }
}

/// Parses the header at the start of `bytes` (which holds at least the whole header) of a
/// `.npy` file of `file_len` bytes, and checks that the shape's values fill the rest of the
/// file exactly (overflow-checked), so a header that lies about its shape is refused before
/// anything is allocated for it.
fn npy_layout(bytes: &[u8], file_len: u64, path: &Path) -> Result<NpyLayout, UserError> {
    let shown = path.display();
    let invalid =
        |why: String| UserError::input(format!("`{shown}` is not a valid .npy file: {why}"));
    let header_len = npy_header_len(bytes)
        .ok_or_else(|| invalid("no NUMPY magic and version at the start".into()))?;
    if header_len as u64 > file_len || header_len > bytes.len() {
        return Err(invalid(format!(
            "the header says it is {header_len} bytes long; the file has {file_len}"
        )));
    }
    let npy = NpyFile::new(&bytes[..header_len]).map_err(|e| invalid(e.to_string()))?;
    let (item_size, little_endian) = match npy.dtype() {
        DType::Plain(ts)
            if ts.type_char() == TypeChar::Float && matches!(ts.size_field(), 4 | 8) =>
        {
            (
                ts.size_field() as usize,
                ts.endianness() == Endianness::Little,
            )
        }
        other => {
            return Err(UserError::input(format!(
                "`{shown}` has dtype {}; expected float32 or float64",
                other.descr()
            ))
            .hint("convert with x.astype(numpy.float32) before saving"))
        }
    };
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| invalid(format!("dimension {d} is too large"))))
        .collect::<Result<_, _>>()?;
    let data_len = file_len - header_len as u64;
    let want = shape
        .iter()
        .try_fold(item_size as u64, |acc, &d| acc.checked_mul(d as u64));
    if want != Some(data_len) {
        return Err(invalid(format!(
            "its header says shape {shape:?} of {item_size}-byte floats ({}), but the file holds {data_len} bytes of data",
            match want {
                Some(w) => format!("{w} bytes"),
                None => "more bytes than any file can hold".into(),
            }
        ))
        .hint("the file is truncated or its header was altered; save it again with numpy.save"));
    }
    Ok(NpyLayout {
        shape,
        item_size,
        fortran: npy.order() == Order::Fortran,
        little_endian,
        header_len,
    })
}

/// The layout of the `.npy` file at `path` from its header alone (checked against its size).
pub fn npy_header(path: &Path) -> Result<NpyLayout, UserError> {
    use std::io::Read;
    let mut file = input::open(path)?;
    let cannot =
        |e: std::io::Error| UserError::input(format!("cannot read `{}`: {e}", path.display()));
    let file_len = file.metadata().map_err(cannot)?.len();
    let mut prefix = [0u8; 12];
    let got = (&mut file).take(12).read(&mut prefix).map_err(cannot)?;
    let header_len = npy_header_len(&prefix[..got])
        .unwrap_or(got)
        .min(file_len as usize);
    let mut head = prefix[..got].to_vec();
    (&mut file)
        .take((header_len.saturating_sub(got)) as u64)
        .read_to_end(&mut head)
        .map_err(cannot)?;
    npy_layout(&head, file_len, path)
}

/// Shape and row-major values of a `.npy` array.
fn read_npy(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<f64>), UserError> {
    let shown = path.display();
    let layout = npy_layout(bytes, bytes.len() as u64, path)?;
    let npy = NpyFile::new(bytes)
        .map_err(|e| UserError::input(format!("`{shown}` is not a valid .npy file: {e}")))?;
    let read_err =
        |e: std::io::Error| UserError::input(format!("`{shown}`: cannot read data: {e}"));
    let values: Vec<f64> = match layout.item_size {
        4 => npy
            .into_vec::<f32>()
            .map_err(read_err)?
            .into_iter()
            .map(f64::from)
            .collect(),
        _ => npy.into_vec::<f64>().map_err(read_err)?,
    };
    let shape = layout.shape;
    if layout.fortran && shape.len() > 1 {
        if shape.len() != 2 {
            return Err(UserError::input(format!(
                "`{shown}` is a {}-D array in Fortran order; only 2-D ones are read in that order",
                shape.len()
            ))
            .hint("save numpy.ascontiguousarray(x) instead"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 `.npy` file of a 2 × 3 array with dtype `descr` in `order`.
    fn npy(
        dir: &Path,
        name: &str,
        descr: &str,
        fortran: bool,
        values: &[f64],
    ) -> std::path::PathBuf {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': (2, 3), }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        for &v in values {
            match descr {
                "<f8" => bytes.extend(v.to_le_bytes()),
                ">f8" => bytes.extend(v.to_be_bytes()),
                "<f4" => bytes.extend((v as f32).to_le_bytes()),
                _ => bytes.extend((v as f32).to_be_bytes()),
            }
        }
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn every_byte_order_and_layout_reads_as_the_same_matrix() {
        let dir = tempfile::tempdir().unwrap();
        // the matrix [[1, 2, 3], [4, 5, 6]] in row-major and column-major order
        let (c_order, f_order) = (
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0],
        );
        for descr in ["<f8", ">f8", "<f4", ">f4"] {
            for (fortran, values) in [(false, &c_order), (true, &f_order)] {
                let p = npy(
                    dir.path(),
                    &format!("{}{fortran}.npy", &descr[1..]),
                    descr,
                    fortran,
                    values,
                );
                let m = read_matrix(&p, None).unwrap();
                let got: Vec<f64> = (0..2)
                    .flat_map(|i| (0..3).map(move |j| (i, j)))
                    .map(|(i, j)| m[(i, j)])
                    .collect();
                assert_eq!(got, c_order, "{descr} fortran={fortran}");
            }
        }
    }

    #[test]
    fn a_non_finite_value_is_named_by_row_and_column_in_every_layout() {
        let dir = tempfile::tempdir().unwrap();
        for descr in ["<f8", ">f8", "<f4"] {
            // NaN at row 1, column 0 of [[1, 2, 3], [NaN, 5, 6]]
            let c = [1.0, 2.0, 3.0, f64::NAN, 5.0, 6.0];
            let f = [1.0, f64::NAN, 2.0, 5.0, 3.0, 6.0];
            for (fortran, values) in [(false, &c), (true, &f)] {
                let p = npy(
                    dir.path(),
                    &format!("nan{}{fortran}.npy", &descr[1..]),
                    descr,
                    fortran,
                    values,
                );
                let e = read_matrix(&p, None).unwrap_err();
                assert!(
                    e.message.contains("row 1, column 0"),
                    "{descr} {fortran}: {}",
                    e.message
                );
            }
        }
        let m = Mat::from_fn(
            3,
            2,
            |i, j| if (i, j) == (2, 1) { f64::INFINITY } else { 1.0 },
        );
        let e = check_finite("m", m.as_ref()).unwrap_err();
        assert!(e.message.contains("row 2, column 1"), "{}", e.message);
        assert!(check_finite("m", Mat::<f64>::zeros(3, 2).as_ref()).is_ok());
    }
}
