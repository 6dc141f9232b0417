//! `repflow plan PIPELINE`: each node's state without running anything.

use crate::cli::PlanArgs;
use crate::error::UserError;
use repflow_engine::schedule::{plan, State};

/// Prints the DAG with each node's state: `cached`, `stale` (built before, inputs or
/// parameters changed since) or `missing` (never built).
pub fn run(args: &PlanArgs) -> Result<(), UserError> {
    let dag = super::load_dag(&args.pipeline)?.dag;
    let store = super::open_store_read_only(&args.store.dir())?;
    let previous = super::load_state(&store, &args.pipeline);
    let o = plan(&dag, &store);
    let mut rows = Vec::new();
    let (mut cached, mut stale, mut missing) = (0, 0, 0);
    for &i in &dag.order {
        let label = &dag.nodes[i].label;
        let state = match &o.states[i] {
            State::Cached => {
                cached += 1;
                "cached"
            }
            _ if previous.contains_key(label) => {
                stale += 1;
                "stale"
            }
            _ => {
                missing += 1;
                "missing"
            }
        };
        let key = o.keys[i]
            .map(|k| if args.json { k.hex() } else { k.short() })
            .unwrap_or_else(|| "-".into());
        rows.push((label.clone(), state, key, dag.nodes[i].inputs.len()));
    }
    if args.json {
        let nodes: Vec<_> = rows
            .iter()
            .map(|(l, s, k, n)| serde_json::json!({"node": l, "state": s, "key": k, "inputs": n}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"cached": cached, "stale": stale, "missing": missing, "nodes": nodes})
        );
        return Ok(());
    }
    for (label, state, key, _) in &rows {
        println!("{state:<8} {key:<12} {label}");
    }
    println!(
        "{} nodes: {cached} cached, {stale} stale, {missing} missing",
        rows.len()
    );
    Ok(())
}
