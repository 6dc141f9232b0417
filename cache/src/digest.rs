//! Digests of bytes and node keys, and the canonical encoding keys are hashed from.

use std::fmt;
use std::str::FromStr;

/// A blake3 digest of an object's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hexadecimal (64 characters).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 12 hexadecimal characters, for display.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{s}` is not a 64-character hexadecimal digest"));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// A node's key: a digest of its kind, kind version, canonical parameters and its inputs'
/// output digests. Built only through [`KeyBuilder`].
pub type Key = Digest;

/// Builds a [`Key`] from a canonical, length-prefixed encoding, so that no two different
/// (kind, version, parameters, inputs) can encode to the same bytes.
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    /// Starts a key for a node of `kind` at `version`.
    pub fn new(kind: &str, version: u32) -> Self {
        let mut b = KeyBuilder {
            hasher: blake3::Hasher::new(),
        };
        b.field(b"repflow-key-v1");
        b.field(kind.as_bytes());
        b.field(&version.to_le_bytes());
        b
    }

    fn field(&mut self, bytes: &[u8]) {
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Adds the canonical parameters (JSON with sorted keys, as `serde_json` writes a
    /// `Value` built from typed parameters).
    pub fn params(mut self, canonical_json: &str) -> Self {
        self.field(b"params");
        self.field(canonical_json.as_bytes());
        self
    }

    /// Adds one input's output digest, in the node's input order.
    pub fn input(mut self, digest: &Digest) -> Self {
        self.field(b"input");
        self.field(&digest.0);
        self
    }

    /// The key.
    pub fn finish(self) -> Key {
        Digest(*self.hasher.finalize().as_bytes())
    }
}
