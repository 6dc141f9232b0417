//! `repflow cache ls | du | show KEY | verify | gc`.

use std::collections::{BTreeMap, HashSet};

use repflow_cache::Store;

use crate::cli::{CacheArgs, CacheCommand};
use crate::error::UserError;

/// Parses a size like `500M`, `10G`, `1.5T` or `1024` (bytes).
pub fn parse_size(s: &str) -> Result<u64, UserError> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * mult as f64) as u64)
        .ok_or_else(|| {
            UserError::input(format!("--max-size `{s}` is not a size"))
                .hint("write e.g. 500M, 10G or 1024")
        })
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// Opens the store to read it; says so on stderr when there is none yet.
fn read_only(dir: &std::path::Path) -> Result<repflow_cache::Store, UserError> {
    let store = super::open_store_read_only(dir)?;
    if !store.exists() {
        eprintln!(
            "note: no store at `{}` yet (nothing is cached)",
            dir.display()
        );
    }
    Ok(store)
}

/// Runs a cache subcommand.
pub fn run(args: &CacheArgs) -> Result<(), UserError> {
    let dir = args.store.dir();
    match &args.command {
        CacheCommand::Ls => {
            let store = read_only(&dir)?;
            for e in store.entries() {
                println!(
                    "{}  {:<9} {:>10}  {:>8.3} s  {}",
                    &e.key[..12],
                    e.kind,
                    human(e.size),
                    e.seconds,
                    e.created
                );
            }
        }
        CacheCommand::Du => {
            let store = read_only(&dir)?;
            let mut by_kind: BTreeMap<String, (usize, u64)> = BTreeMap::new();
            for e in store.entries() {
                let s = by_kind.entry(e.kind).or_default();
                s.0 += 1;
                s.1 += e.size;
            }
            let total: u64 = store.object_sizes().values().sum();
            for (k, (n, b)) in &by_kind {
                println!("{k:<10} {n:>7} entries {:>12}", human(*b));
            }
            println!(
                "{:<10} {:>7} objects {:>12}",
                "total",
                store.object_sizes().len(),
                human(total)
            );
        }
        CacheCommand::Show { key } => {
            let store = read_only(&dir)?;
            let e = store.find(key).map_err(UserError::input)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&e).expect("entries serialise")
            );
            if let Some(r) = e.key.parse().ok().and_then(|k| store.recipe(&k)) {
                println!(
                    "recipe: {}",
                    serde_json::to_string_pretty(&r).expect("recipes serialise")
                );
            }
        }
        CacheCommand::Verify => {
            let store = super::open_store(&dir)?;
            let r = store.verify();
            println!(
                "{} objects checked, {} corrupt objects removed, {} entries without object removed",
                r.objects_checked,
                r.corrupt_objects.len(),
                r.dangling_entries.len()
            );
            for o in &r.corrupt_objects {
                println!("corrupt: {o}");
            }
        }
        CacheCommand::Gc {
            max_size,
            keep,
            dry_run,
        } => {
            let limit = max_size.as_deref().map(parse_size).transpose()?;
            // The pipelines are read first (a bad one fails before anything waits)...
            let dags = keep
                .iter()
                .map(|p| super::load_dag(p).map(|d| d.dag))
                .collect::<Result<Vec<_>, _>>()?;
            if keep.is_empty() && limit.is_none() && !dry_run {
                return Err(UserError::input(
                    "`cache gc` without --keep or --max-size would remove every entry",
                )
                .hint(
                    "pass --keep PIPELINE to keep what it reaches, --max-size SIZE, or --dry-run",
                ));
            }
            let store = Store::open_exclusive(&dir).map_err(|e| UserError::input(e.to_string()))?;
            // ...and what they reach is computed under the exclusive lock: a run of one of
            // them that was going on has finished, and every key it wrote is kept.
            let mut kept = HashSet::new();
            for dag in &dags {
                let o = repflow_engine::schedule::plan(dag, &store);
                kept.extend(o.keys.iter().flatten().map(|k| k.hex()));
            }
            let r = store.gc(&kept, limit, *dry_run);
            let verb = if *dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} entries and {} objects ({})",
                r.entries.len(),
                r.objects,
                human(r.bytes)
            );
        }
    }
    Ok(())
}
