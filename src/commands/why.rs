//! `repflow why PIPELINE NODE`: which component of a node's key changed since its last run.

use crate::cli::WhyArgs;
use crate::error::UserError;
use crate::pipeline::closest_label;
use repflow_engine::schedule::{plan, State};

/// Explains why `args.node` will run (or says that it will not).
pub fn run(args: &WhyArgs) -> Result<(), UserError> {
    let dag = super::load_dag(&args.pipeline)?.dag;
    let store = super::open_store_read_only(&args.store.dir())?;
    let previous = super::load_state(&store, &args.pipeline);
    let o = plan(&dag, &store);
    let labels: Vec<&str> = dag.nodes.iter().map(|n| n.label.as_str()).collect();
    let matches: Vec<usize> = match labels.iter().position(|l| *l == args.node) {
        Some(i) => vec![i],
        None => (0..labels.len())
            .filter(|&i| labels[i].contains(args.node.as_str()))
            .collect(),
    };
    let mut i = match matches.as_slice() {
        [i] => *i,
        [] => {
            let mut e = UserError::input(format!(
                "no node of `{}` is called `{}`",
                args.pipeline.display(),
                args.node
            ));
            if let Some(c) = closest_label(&args.node, &labels) {
                e = e.hint(format!(
                    "did you mean `{c}`? `repflow plan` lists every node"
                ));
            }
            return Err(e);
        }
        many => {
            return Err(
                UserError::input(format!("`{}` matches {} nodes", args.node, many.len())).hint(
                    format!("for example `{}`; give the full label", labels[many[0]]),
                ),
            )
        }
    };
    loop {
        let label = &dag.nodes[i].label;
        if o.states[i] == State::Cached {
            println!(
                "`{label}` is cached (key {}): it will not run",
                o.keys[i].map(|k| k.short()).unwrap_or_default()
            );
            return Ok(());
        }
        match (&o.parts[i], previous.get(label)) {
            (Some(now), Some(before)) => {
                println!(
                    "`{label}` will run: its key changed ({} -> {})",
                    before.key().short(),
                    now.key().short()
                );
                let diff = now.diff(before);
                if diff.is_empty() {
                    println!("  same key components as its last run, but the output is no longer in the store");
                }
                for d in diff {
                    println!("  {d}");
                }
                return Ok(());
            }
            (Some(_), None) => {
                println!("`{label}` will run: it has never been built with this store");
                return Ok(());
            }
            (None, _) => {
                // An input will run first; explain that input.
                let j = dag.nodes[i]
                    .inputs
                    .iter()
                    .map(|(_, j)| *j)
                    .find(|&j| o.digests[j].is_none())
                    .expect("an input lacks its output");
                println!(
                    "`{label}` will run after its input `{}`, which will run:",
                    dag.nodes[j].label
                );
                i = j;
            }
        }
    }
}
