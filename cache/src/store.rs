//! The store on disk: objects, entries, recipes, the access log, verification and
//! garbage collection.
//!
//! ```text
//! <dir>/v2/objects/ab/cdef…   immutable objects, named by the blake3 digest of their bytes
//! <dir>/v2/entries/ab/cdef…   JSON entry of node key abcdef… (written after its object)
//! <dir>/v2/recipes/ab/cdef…   JSON recipe of node key abcdef…
//! <dir>/v2/tmp/               files being written (renamed into place when complete)
//! <dir>/v2/access.log         "<unix seconds> <key>" per use, appended once per run
//! <dir>/v2/lock               shared by runs, exclusive for garbage collection
//! ```
//!
//! On a shared filesystem (a cluster's NFS or Lustre), many processes on many hosts write
//! at once. Correctness rests on atomic `rename(2)` alone: every file is written under a
//! temporary name unique to its host, process and write, then renamed into place; an
//! object's name is its content's digest, so two writers of one object write the same
//! bytes; readers verify every object they map. The `flock` is advisory and off the hot
//! path: a shared lock that the filesystem refuses is skipped (only `cache gc`, which needs
//! the exclusive lock, then refuses to run).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::Mmap;

use crate::bundle::MappedBundle;
use crate::digest::{Digest, Key};
use crate::entry::{Entry, Recipe};

/// The layout version, part of the store's folder name (v2: arrays may be f32).
pub const FORMAT: &str = "v2";

/// What can go wrong with the store.
#[derive(Debug)]
pub enum CacheError {
    /// A file operation failed.
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An object's bytes do not match its digest, or are not a valid archive.
    Corrupt {
        /// The object's digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// No entry or object for this key or digest.
    Missing(String),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CacheError::Corrupt { digest, reason } => {
                write!(f, "object {} is corrupt: {reason}", digest.short())
            }
            CacheError::Missing(what) => write!(f, "{what} is not in the store"),
        }
    }
}

impl std::error::Error for CacheError {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Objects whose bytes were hashed.
    pub objects_checked: usize,
    /// Objects removed because their bytes did not match their digest.
    pub corrupt_objects: Vec<String>,
    /// Entries removed because their object was missing or corrupt.
    pub dangling_entries: Vec<String>,
}

/// What `gc` removed (or would remove, in a dry run).
#[derive(Debug, Default)]
pub struct GcReport {
    /// Entries removed.
    pub entries: Vec<Entry>,
    /// Objects removed.
    pub objects: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// An open store. Holds a shared lock on it (an exclusive one for garbage collection).
pub struct Store {
    root: PathBuf,
    _lock: Option<File>,
    counter: AtomicU64,
    /// Distinguishes this process's temporary files from those of every other process on
    /// every host sharing the store.
    nonce: String,
}

/// How a store is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Created if missing, shared with other runs.
    Shared,
    /// Created if missing, exclusive (garbage collection).
    Exclusive,
    /// Must exist; nothing is created or written (a read-only store can be listed).
    ReadOnly,
}

impl Store {
    /// Opens (creating if needed) the store under `dir`, sharing it with other runs.
    /// Temporary files left by processes of this host that no longer exist are removed.
    pub fn open(dir: &Path) -> Result<Store, CacheError> {
        let store = Self::open_with(dir, Mode::Shared)?;
        store.remove_stale_temporaries();
        Ok(store)
    }

    /// Opens the store for exclusive use (garbage collection waits for runs to finish).
    pub fn open_exclusive(dir: &Path) -> Result<Store, CacheError> {
        Self::open_with(dir, Mode::Exclusive)
    }

    /// Opens a store to read it, creating and writing nothing: it may be on a read-only
    /// filesystem (the shared lock is taken when the lock file can be opened), and one that
    /// does not exist reads as empty ([`Store::exists`] tells).
    pub fn open_read_only(dir: &Path) -> Result<Store, CacheError> {
        Self::open_with(dir, Mode::ReadOnly)
    }

    fn open_with(dir: &Path, mode: Mode) -> Result<Store, CacheError> {
        let root = dir.join(FORMAT);
        let lock_path = root.join("lock");
        let lock = if mode == Mode::ReadOnly {
            // A store that does not exist yet reads as empty.
            let lock = File::open(&lock_path).ok();
            if let Some(l) = &lock {
                let _ = l.lock_shared();
            }
            lock
        } else {
            for sub in ["objects", "entries", "recipes", "tmp"] {
                let p = root.join(sub);
                fs::create_dir_all(&p).map_err(io(&p))?;
            }
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(io(&lock_path))?;
            if mode == Mode::Exclusive {
                lock.lock().map_err(io(&lock_path))?;
            } else {
                // Advisory: a filesystem without working locks (some NFS mounts) still runs.
                let _ = lock.lock_shared();
            }
            Some(lock)
        };
        Ok(Store {
            root,
            _lock: lock,
            counter: AtomicU64::new(0),
            nonce: nonce(),
        })
    }

    /// Removes temporary files written by processes of this host that are no longer running
    /// (a full disk or a kill leaves them behind). Files of other hosts are left to `gc`.
    pub fn remove_stale_temporaries(&self) -> usize {
        let host = host_name();
        let mut removed = 0;
        for p in walk(&self.root.join("tmp")) {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some((pid, h)) = temp_owner(name) {
                if h == host && !process_alive(pid) && fs::remove_file(&p).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// A fresh temporary path in the store's `tmp/` folder, named for this host, process and
    /// write (`<stem>.<pid>@<host>~<nonce>-<n>`), for writing a file to rename into place.
    pub fn temp_path(&self, stem: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        temp_path_in(&self.root, stem, &format!("{}-{n}", self.nonce))
    }

    /// Whether the store's folders exist (a read-only open of a missing store reads as empty).
    pub fn exists(&self) -> bool {
        self.root.join("entries").is_dir()
    }

    /// The versioned folder holding everything.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn sharded(&self, area: &str, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join(area).join(&hex[..2]).join(&hex[2..])
    }

    /// Writes `bytes` to `dest` atomically: a temporary file, fsync, then rename.
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        let parent = dest.parent().expect("store paths have parents");
        fs::create_dir_all(parent).map_err(io(parent))?;
        let tmp = self.temp_path("w");
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(io(&tmp))
            .and_then(|_| fs::rename(&tmp, dest).map_err(io(dest)));
        if let Err(e) = written {
            // A full disk must not leave a partial temporary file behind.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable.
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Stores `bytes` as an object and returns its digest. The object is always written
    /// (atomically, replacing what is there): a computed output is never assumed to be on
    /// disk already, so a recomputed or forced node repairs a corrupt object of the same size.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, CacheError> {
        let digest = Digest::of(bytes);
        let path = self.sharded("objects", &digest);
        self.write_atomic(&path, bytes).map(|_| digest)
    }

    /// Whether the object `digest` is present (not verified).
    pub fn has_object(&self, digest: &Digest) -> bool {
        self.sharded("objects", digest).is_file()
    }

    /// Maps the object `digest` after checking its bytes hash to it.
    pub fn get(&self, digest: &Digest) -> Result<MappedBundle, CacheError> {
        let path = self.sharded("objects", digest);
        let file = File::open(&path)
            .map_err(|_| CacheError::Missing(format!("object {}", digest.short())))?;
        // SAFETY: objects are never modified after their rename into place; a process that
        // truncated one behind our back is detected by the digest check below.
        let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        if Digest::of(&map) != *digest {
            return Err(CacheError::Corrupt {
                digest: *digest,
                reason: "bytes do not match the digest".into(),
            });
        }
        MappedBundle::new(map).map_err(|reason| CacheError::Corrupt {
            digest: *digest,
            reason,
        })
    }

    /// An object mapped without the digest check, for what its header says (sizes and
    /// shapes for a memory estimate), never for values a node computes from: those come
    /// from [`Store::get`].
    pub fn peek(&self, digest: &Digest) -> Result<MappedBundle, CacheError> {
        let path = self.sharded("objects", digest);
        let file = File::open(&path)
            .map_err(|_| CacheError::Missing(format!("object {}", digest.short())))?;
        // SAFETY: as in `get`; a truncated object fails `MappedBundle::new`'s bounds checks.
        let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        MappedBundle::new(map).map_err(|reason| CacheError::Corrupt {
            digest: *digest,
            reason,
        })
    }

    /// Removes an object (after it was found corrupt).
    pub fn remove_object(&self, digest: &Digest) {
        let _ = fs::remove_file(self.sharded("objects", digest));
    }

    /// Records what `entry.key` produced. Write its object first.
    pub fn put_entry(&self, key: &Key, entry: &Entry) -> Result<(), CacheError> {
        let json = serde_json::to_vec_pretty(entry).expect("entries serialise");
        self.write_atomic(&self.sharded("entries", key), &json)
    }

    /// The entry of `key`, if present and readable.
    pub fn entry(&self, key: &Key) -> Option<Entry> {
        let bytes = fs::read(self.sharded("entries", key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes the entry of `key`.
    pub fn remove_entry(&self, key: &Key) {
        let _ = fs::remove_file(self.sharded("entries", key));
    }

    /// The entry of `key` and its verified object; a corrupt or missing object removes the
    /// entry and gives `None`, so the node is recomputed.
    pub fn lookup(&self, key: &Key) -> Option<(Entry, MappedBundle)> {
        let entry = self.entry(key)?;
        let digest: Digest = entry.object.parse().ok()?;
        match self.get(&digest) {
            Ok(b) => Some((entry, b)),
            Err(CacheError::Corrupt { .. }) => {
                self.remove_object(&digest);
                self.remove_entry(key);
                None
            }
            Err(_) => {
                self.remove_entry(key);
                None
            }
        }
    }

    /// Records how to recompute a key.
    pub fn put_recipe(&self, key: &Key, recipe: &Recipe) -> Result<(), CacheError> {
        let path = self.sharded("recipes", key);
        let json = serde_json::to_vec_pretty(recipe).expect("recipes serialise");
        if fs::read(&path).map(|b| b == json).unwrap_or(false) {
            return Ok(());
        }
        self.write_atomic(&path, &json)
    }

    /// The recipe of `key`.
    pub fn recipe(&self, key: &Key) -> Option<Recipe> {
        serde_json::from_slice(&fs::read(self.sharded("recipes", key)).ok()?).ok()
    }

    /// Every entry in the store.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for path in walk(&self.root.join("entries")) {
            if let Some(e) = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
            {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Finds the entry whose key starts with `prefix` (at least 4 hexadecimal characters).
    pub fn find(&self, prefix: &str) -> Result<Entry, String> {
        if prefix.len() < 4 {
            return Err(format!(
                "key prefix `{prefix}` is too short; give at least 4 characters"
            ));
        }
        let matches: Vec<Entry> = self
            .entries()
            .into_iter()
            .filter(|e| e.key.starts_with(prefix))
            .collect();
        match matches.len() {
            0 => Err(format!("no entry has a key starting with `{prefix}`")),
            1 => Ok(matches.into_iter().next().unwrap()),
            n => Err(format!(
                "{n} entries have keys starting with `{prefix}`; give more characters"
            )),
        }
    }

    /// Appends one use of each key to the access log (one write per run).
    pub fn record_use(&self, keys: &[Key]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut text = String::with_capacity(keys.len() * 80);
        for k in keys {
            text.push_str(&format!("{t} {}\n", k.hex()));
        }
        let path = self.root.join("access.log");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(text.as_bytes()).map_err(io(&path))
    }

    /// Last use of each key (from the access log; an entry's creation time otherwise).
    pub fn last_used(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        if let Ok(text) = fs::read_to_string(self.root.join("access.log")) {
            for line in text.lines() {
                if let Some((t, k)) = line.split_once(' ') {
                    if let Ok(t) = t.parse::<u64>() {
                        let slot = out.entry(k.to_string()).or_insert(0);
                        *slot = (*slot).max(t);
                    }
                }
            }
        }
        out
    }

    /// Size in bytes of every object, by digest (hex).
    pub fn object_sizes(&self) -> HashMap<String, u64> {
        walk(&self.root.join("objects"))
            .into_iter()
            .filter_map(|p| {
                let len = fs::metadata(&p).ok()?.len();
                let name = format!(
                    "{}{}",
                    p.parent()?.file_name()?.to_string_lossy(),
                    p.file_name()?.to_string_lossy()
                );
                Some((name, len))
            })
            .collect()
    }

    /// Hashes every object; removes corrupt objects and entries whose object is gone.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        for (hex, _) in self.object_sizes() {
            let Ok(d) = hex.parse::<Digest>() else {
                continue;
            };
            report.objects_checked += 1;
            if let Err(CacheError::Corrupt { .. }) = self.get(&d) {
                self.remove_object(&d);
                report.corrupt_objects.push(hex);
            }
        }
        let sizes = self.object_sizes();
        for e in self.entries() {
            if !sizes.contains_key(&e.object) {
                if let Ok(k) = e.key.parse::<Digest>() {
                    self.remove_entry(&k);
                }
                report.dangling_entries.push(e.key);
            }
        }
        report
    }

    /// Collects garbage. Entries whose key is in `keep` stay. Without `max_size` every other
    /// entry goes; with it, other entries go least recently used first, weighted by
    /// recompute cost (`age / (1 + seconds)`), until the store fits. Objects no entry points
    /// to and leftover temporary files go too. Call on a store opened exclusively.
    pub fn gc(&self, keep: &HashSet<String>, max_size: Option<u64>, dry_run: bool) -> GcReport {
        let sizes = self.object_sizes();
        let entries = self.entries();
        let mut refs: HashMap<String, usize> = HashMap::new();
        for e in &entries {
            *refs.entry(e.object.clone()).or_insert(0) += 1;
        }
        // Objects no entry points to go in any case; the limit applies to the rest.
        let mut total: u64 = refs.keys().filter_map(|o| sizes.get(o)).sum();
        let last = self.last_used();
        let t = now();
        let mut candidates: Vec<(f64, Entry)> = entries
            .into_iter()
            .filter(|e| !keep.contains(&e.key))
            .map(|e| {
                let used = last.get(&e.key).copied().unwrap_or(e.created);
                let age = t.saturating_sub(used) as f64 + 1.0;
                (age / (1.0 + e.seconds), e)
            })
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.key.cmp(&b.1.key)));
        let mut report = GcReport::default();
        for (_, e) in candidates {
            if let Some(limit) = max_size {
                if total <= limit {
                    break;
                }
            }
            let count = refs.get_mut(&e.object).expect("counted above");
            *count -= 1;
            if *count == 0 {
                total = total.saturating_sub(sizes.get(&e.object).copied().unwrap_or(0));
            }
            report.entries.push(e);
        }
        let live: HashSet<&String> = refs
            .iter()
            .filter(|(_, &c)| c > 0)
            .map(|(o, _)| o)
            .collect();
        for (hex, size) in &sizes {
            if !live.contains(hex) {
                report.objects += 1;
                report.bytes += size;
            }
        }
        if !dry_run {
            for e in &report.entries {
                if let Ok(k) = e.key.parse::<Digest>() {
                    self.remove_entry(&k);
                }
            }
            for hex in sizes.keys() {
                if !live.contains(hex) {
                    if let Ok(d) = hex.parse::<Digest>() {
                        self.remove_object(&d);
                    }
                }
            }
            for p in walk(&self.root.join("tmp")) {
                let _ = fs::remove_file(p);
            }
            // (temporary digests files of versions that wrote them beside the store's files)
            if let Ok(rd) = fs::read_dir(&self.root) {
                for e in rd.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .starts_with("file-digests.tmp")
                    {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        report
    }
}

/// A temporary path in the `tmp/` folder of the store whose versioned folder is `root`
/// ([`Store::root`]), named `<stem>.<pid>@<host>~<unique>` so that the store can tell when
/// its writer is gone ([`Store::remove_stale_temporaries`]).
pub fn temp_path_in(root: &Path, stem: &str, unique: &str) -> PathBuf {
    root.join("tmp").join(format!(
        "{stem}.{}@{}~{unique}",
        std::process::id(),
        host_name()
    ))
}

/// This host's name (as in temporary file names; `@` and `~` replaced).
fn host_name() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host.trim().replace(['@', '~', '/'], "_")
}

/// The process id and host of a temporary file's name (`<stem>.<pid>@<host>~<rest>`).
fn temp_owner(name: &str) -> Option<(i32, &str)> {
    let (head, rest) = name.split_once('@')?;
    let pid = head.rsplit('.').next()?.parse().ok()?;
    let (host, _) = rest.split_once('~')?;
    Some((pid, host))
}

/// Whether a process with this id runs on this host (`kill(pid, 0)`; a process of another
/// user counts as running).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A name unique to this process on this host at this time: host name, process id and the
/// clock, hashed.
fn nonce() -> String {
    let host = host_name();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let text = format!("{}\n{}\n{nanos}", host.trim(), std::process::id());
    Digest::of(text.as_bytes()).hex()[..16].to_string()
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
