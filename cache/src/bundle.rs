//! The object format: JSON metadata plus named f64 or f32 arrays, archived with rkyv and read
//! through a memory map without copying the array data. Scores and prepared layers are f64;
//! images, weights and activations are f32 (what the networks compute), half the bytes.

use std::sync::Arc;

use memmap2::Mmap;
use rkyv::rancor;

/// One named array: its shape and its values (in whatever order the writer documents;
/// repflow stores matrices column-major).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct Array {
    /// The array's name within its bundle.
    pub name: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its values.
    pub data: Values,
}

/// An array's values.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub enum Values {
    /// Double precision.
    F64(Vec<f64>),
    /// Single precision.
    F32(Vec<f32>),
}

/// An array's values borrowed from the memory map.
#[derive(Debug, Clone, Copy)]
pub enum Slice<'a> {
    /// Double precision.
    F64(&'a [f64]),
    /// Single precision.
    F32(&'a [f32]),
}

/// An object: metadata (JSON text) plus named arrays.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Bundle {
    /// JSON metadata.
    pub meta: String,
    /// Named arrays.
    pub arrays: Vec<Array>,
}

impl Bundle {
    /// A bundle with metadata only.
    pub fn meta(meta: String) -> Self {
        Bundle {
            meta,
            arrays: Vec::new(),
        }
    }

    /// Adds an f64 array.
    pub fn with_array(mut self, name: &str, shape: &[usize], data: Vec<f64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.arrays.push(Array {
            name: name.into(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            data: Values::F64(data),
        });
        self
    }

    /// Adds an f32 array.
    pub fn with_f32_array(mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.arrays.push(Array {
            name: name.into(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            data: Values::F32(data),
        });
        self
    }

    /// The archived bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(self)
            .expect("bundles always serialise")
            .into_vec()
    }
}

/// A bundle read from the store: the archive is validated once when mapped, then read in
/// place.
#[derive(Clone)]
pub struct MappedBundle {
    map: Arc<Mmap>,
}

/// One array of a [`MappedBundle`], sharing its memory map: `as_slice` borrows the mapped
/// file, nothing is copied.
#[derive(Clone)]
pub struct MappedArray {
    map: Arc<Mmap>,
    offset: usize,
    len: usize,
    f32: bool,
    shape: Vec<usize>,
}

impl MappedBundle {
    /// Validates `map` as an archived [`Bundle`].
    pub(crate) fn new(map: Mmap) -> Result<Self, String> {
        rkyv::access::<ArchivedBundle, rancor::Error>(&map).map_err(|e| e.to_string())?;
        Ok(MappedBundle { map: Arc::new(map) })
    }

    fn archived(&self) -> &ArchivedBundle {
        // SAFETY: `new` validated these bytes as an `ArchivedBundle`, and store objects are
        // immutable once renamed into place (the map is read-only).
        unsafe { rkyv::access_unchecked::<ArchivedBundle>(&self.map) }
    }

    /// The metadata.
    pub fn meta(&self) -> &str {
        self.archived().meta.as_str()
    }

    /// The array called `name`, if any.
    pub fn array(&self, name: &str) -> Option<MappedArray> {
        let a = self
            .archived()
            .arrays
            .iter()
            .find(|a| a.name.as_str() == name)?;
        let (ptr, len, f32) = match &a.data {
            ArchivedValues::F64(v) => (v.as_ptr() as usize, v.len(), false),
            ArchivedValues::F32(v) => (v.as_ptr() as usize, v.len(), true),
        };
        Some(MappedArray {
            map: self.map.clone(),
            offset: ptr - self.map.as_ptr() as usize,
            len,
            f32,
            shape: a.shape.iter().map(|d| d.to_native() as usize).collect(),
        })
    }
}

impl MappedArray {
    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, borrowed from the memory map.
    #[cfg(target_endian = "little")]
    pub fn values(&self) -> Slice<'_> {
        // SAFETY: the archive was validated; an archived f64 (f32) is a little-endian f64
        // (f32) with its natural alignment (rkyv's default aligned format), which on a
        // little-endian target has exactly the native layout; `offset..offset + size * len`
        // lies inside the map.
        unsafe {
            let p = self.map.as_ptr().add(self.offset);
            if self.f32 {
                Slice::F32(std::slice::from_raw_parts(p as *const f32, self.len))
            } else {
                Slice::F64(std::slice::from_raw_parts(p as *const f64, self.len))
            }
        }
    }

    /// The values of an f64 array, borrowed from the memory map (None for an f32 array).
    pub fn as_f64(&self) -> Option<&[f64]> {
        match self.values() {
            Slice::F64(v) => Some(v),
            Slice::F32(_) => None,
        }
    }

    /// The values as f64, borrowed for an f64 array and converted for an f32 one.
    pub fn to_f64(&self) -> std::borrow::Cow<'_, [f64]> {
        match self.values() {
            Slice::F64(v) => std::borrow::Cow::Borrowed(v),
            Slice::F32(v) => std::borrow::Cow::Owned(v.iter().map(|&x| x as f64).collect()),
        }
    }

    /// The values as f32 (converted for an f64 array).
    pub fn to_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        match self.values() {
            Slice::F32(v) => std::borrow::Cow::Borrowed(v),
            Slice::F64(v) => std::borrow::Cow::Owned(v.iter().map(|&x| x as f32).collect()),
        }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("repflow-cache reads archived f64 arrays in place and needs a little-endian target");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_read_back_in_place() {
        let b = Bundle::meta("{\"a\":1}".into()).with_array(
            "x",
            &[2, 3],
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        );
        let bytes = b.to_bytes();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        std::fs::write(&path, &bytes).unwrap();
        let map = unsafe { Mmap::map(&std::fs::File::open(&path).unwrap()).unwrap() };
        let mb = MappedBundle::new(map).unwrap();
        assert_eq!(mb.meta(), "{\"a\":1}");
        let x = mb.array("x").unwrap();
        assert_eq!(x.shape(), &[2, 3]);
        assert_eq!(x.as_f64().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(x.as_f64().unwrap().as_ptr() as usize % 8, 0);
        assert!(mb.array("y").is_none());
    }

    #[test]
    fn f32_arrays_read_back_in_place() {
        let b = Bundle::meta("{}".into())
            .with_f32_array("w", &[3], vec![0.5, -1.25, 3.0])
            .with_array("d", &[1], vec![7.0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        std::fs::write(&path, b.to_bytes()).unwrap();
        let map = unsafe { Mmap::map(&std::fs::File::open(&path).unwrap()).unwrap() };
        let mb = MappedBundle::new(map).unwrap();
        let w = mb.array("w").unwrap();
        match w.values() {
            Slice::F32(v) => {
                assert_eq!(v, &[0.5, -1.25, 3.0]);
                assert_eq!(v.as_ptr() as usize % 4, 0);
                // borrowed from the map, not copied
                assert!(matches!(w.to_f32(), std::borrow::Cow::Borrowed(_)));
            }
            Slice::F64(_) => panic!("stored as f32"),
        }
        assert!(w.as_f64().is_none());
        assert_eq!(&*w.to_f64(), &[0.5, -1.25, 3.0]);
        assert_eq!(mb.array("d").unwrap().as_f64().unwrap(), &[7.0]);
    }
}
