//! Content digests of source files, with a size + modification-time fast path: a file
//! whose size and mtime match the last hashing reuses its digest; any other file is hashed
//! again (so touching a file without changing its bytes changes no key).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Error, ErrorKind};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use repflow_cache::Digest;
use serde::{Deserialize, Serialize};

/// Opens an input file for reading, refusing anything but a regular file (after following
/// symlinks): a FIFO would block forever and `/dev/zero` would be read until memory runs out.
/// The file is opened non-blocking and checked on the open descriptor, so a FIFO does not
/// block the open either, and a path swapped between a check and the open cannot slip by.
pub fn open_input(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a pipe, device or socket)"
        };
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {what}; inputs must be regular files"),
        ));
    }
    Ok(file)
}

/// The bytes of an input file ([`open_input`]'s checks), read to the file's size.
pub fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_input(path)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[derive(Clone, Serialize, Deserialize)]
struct Seen {
    size: u64,
    mtime_ns: u128,
    digest: String,
}

/// Remembered digests of files, saved in the store between runs.
pub struct FileDigests {
    path: PathBuf,
    seen: Mutex<HashMap<String, Seen>>,
    changed: Mutex<bool>,
}

impl FileDigests {
    /// Loads the remembered digests kept in `store_root`.
    pub fn load(store_root: &Path) -> FileDigests {
        let path = store_root.join("file-digests.json");
        let seen = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        FileDigests {
            path,
            seen: Mutex::new(seen),
            changed: Mutex::new(false),
        }
    }

    /// The digest of the file at `path`; for a folder, of every file below it with its
    /// relative path.
    pub fn digest(&self, path: &Path) -> Result<Digest, String> {
        if path.is_dir() {
            let mut files = Vec::new();
            let mut stack = vec![path.to_path_buf()];
            while let Some(d) = stack.pop() {
                let rd = std::fs::read_dir(&d)
                    .map_err(|e| format!("cannot read `{}`: {e}", d.display()))?;
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        files.push(p);
                    }
                    // (non-regular files are refused by `file_digest`)
                }
            }
            files.sort();
            let mut listing = String::new();
            for f in files {
                let rel = f
                    .strip_prefix(path)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .into_owned();
                listing.push_str(&format!("{rel}\t{}\n", self.file_digest(&f)?.hex()));
            }
            return Ok(Digest::of(listing.as_bytes()));
        }
        self.file_digest(path)
    }

    fn file_digest(&self, path: &Path) -> Result<Digest, String> {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .to_string_lossy()
            .into_owned();
        if let Some(s) = self.seen.lock().expect("lock").get(&name) {
            if s.size == meta.len() && s.mtime_ns == mtime_ns {
                if let Ok(d) = s.digest.parse() {
                    return Ok(d);
                }
            }
        }
        let bytes =
            read_input(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let digest = Digest::of(&bytes);
        self.seen.lock().expect("lock").insert(
            name,
            Seen {
                size: meta.len(),
                mtime_ns,
                digest: digest.hex(),
            },
        );
        *self.changed.lock().expect("lock") = true;
        Ok(digest)
    }

    /// Saves the remembered digests (atomically) when they changed.
    pub fn save(&self) {
        if !*self.changed.lock().expect("lock") {
            return;
        }
        let json =
            serde_json::to_vec(&*self.seen.lock().expect("lock")).expect("digests serialise");
        let root = self.path.parent().unwrap_or(Path::new("."));
        let unique = format!("{:?}-{}", std::thread::current().id(), repflow_cache::now());
        let tmp = repflow_cache::temp_path_in(root, "file-digests", &unique);
        if std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .is_err()
        {
            // (a full disk or a read-only store: the digests are recomputed next time)
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
