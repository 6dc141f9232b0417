//! The object format: JSON metadata plus named f64 arrays, archived with rkyv and read
//! through a memory map without copying the array data.

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
    pub data: Vec<f64>,
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

    /// Adds an array.
    pub fn with_array(mut self, name: &str, shape: &[usize], data: Vec<f64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.arrays.push(Array {
            name: name.into(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            data,
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
        let data = a.data.as_slice();
        let offset = data.as_ptr() as usize - self.map.as_ptr() as usize;
        Some(MappedArray {
            map: self.map.clone(),
            offset,
            len: data.len(),
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
    pub fn as_slice(&self) -> &[f64] {
        // SAFETY: the archive was validated; an archived f64 is a little-endian f64 with
        // f64 alignment (rkyv's default aligned format), which on a little-endian target
        // has exactly f64's layout; `offset..offset + 8 * len` lies inside the map.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(self.offset) as *const f64, self.len)
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
        assert_eq!(x.as_slice(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(x.as_slice().as_ptr() as usize % 8, 0);
        assert!(mb.array("y").is_none());
    }
}
