//! Node keys: blake3 over the node kind, its version, its canonical parameters and its
//! inputs' output digests — so an unchanged upstream output stops the cascade (early
//! cutoff), and renaming or reordering the TOML changes nothing.

use repflow_cache::{Digest, Key, KeyBuilder};
use serde::{Deserialize, Serialize};

/// Everything a key is made of, kept so that `repflow why` can say what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyParts {
    /// Node kind.
    pub kind: String,
    /// Kind version.
    pub version: u32,
    /// Canonical parameters.
    pub params: serde_json::Value,
    /// (input label, output digest hex) in input order; source files appear as `file:<path>`.
    pub inputs: Vec<(String, String)>,
}

impl KeyParts {
    /// The key.
    pub fn key(&self) -> Key {
        let canonical = serde_json::to_string(&self.params).expect("parameters serialise");
        let mut b = KeyBuilder::new(&self.kind, self.version).params(&canonical);
        for (_, d) in &self.inputs {
            b = b.input(&d.parse::<Digest>().expect("input digests are hex"));
        }
        b.finish()
    }

    /// Human-readable differences from an earlier version of the same node.
    pub fn diff(&self, old: &KeyParts) -> Vec<String> {
        let mut out = Vec::new();
        if self.kind != old.kind || self.version != old.version {
            out.push(format!(
                "kind version changed: {} v{} -> {} v{}",
                old.kind, old.version, self.kind, self.version
            ));
        }
        let (new_p, old_p) = (flatten(&self.params), flatten(&old.params));
        for (k, v) in &new_p {
            match old_p.iter().find(|(ok, _)| ok == k) {
                Some((_, ov)) if ov == v => {}
                Some((_, ov)) => out.push(format!("parameter `{k}` changed: {ov} -> {v}")),
                None => out.push(format!("parameter `{k}` added: {v}")),
            }
        }
        for (k, ov) in &old_p {
            if !new_p.iter().any(|(nk, _)| nk == k) {
                out.push(format!("parameter `{k}` removed (was {ov})"));
            }
        }
        for (i, (label, d)) in self.inputs.iter().enumerate() {
            match old.inputs.get(i) {
                Some((ol, od)) if ol == label && od == d => {}
                Some((ol, od)) if ol == label => out.push(format!(
                    "input `{label}` changed: {} -> {}",
                    &od[..12],
                    &d[..12]
                )),
                Some((ol, _)) => out.push(format!("input {i} is now `{label}` (was `{ol}`)")),
                None => out.push(format!("input `{label}` added")),
            }
        }
        if old.inputs.len() > self.inputs.len() {
            out.push(format!(
                "{} inputs removed",
                old.inputs.len() - self.inputs.len()
            ));
        }
        out
    }
}

/// (dotted path, value) for every leaf of a JSON value.
fn flatten(v: &serde_json::Value) -> Vec<(String, String)> {
    fn go(prefix: String, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    go(
                        if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        },
                        x,
                        out,
                    );
                }
            }
            other => out.push((prefix, other.to_string())),
        }
    }
    let mut out = Vec::new();
    go(String::new(), v, &mut out);
    out
}
