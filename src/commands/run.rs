//! `repflow run PIPELINE`: compute what the store lacks, reuse the rest, write the table.

use std::collections::BTreeMap;

use crate::cli::RunArgs;
use crate::dag::run::{run as run_dag, Outcome, RunOptions, State};
use crate::error::UserError;
use crate::nodes::table;

/// Runs the pipeline; returns the exit code (1 when a node failed).
pub fn run(args: &RunArgs) -> Result<i32, UserError> {
    if args.dry_run {
        let plan_args = crate::cli::PlanArgs {
            pipeline: args.pipeline.clone(),
            json: args.json,
            store: args.store.clone(),
        };
        super::plan::run(&plan_args)?;
        return Ok(0);
    }
    let (plan, dag) = super::load_plan_and_dag(&args.pipeline)?;
    let results_dir = plan.spec.results_dir();
    let store = super::open_store(&args.store.dir())?;
    let opts = RunOptions {
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        force: args.force.clone(),
        execute: true,
        progress: !args.json,
    };
    let outcome = run_dag(&dag, &store, &opts);
    let mut state: BTreeMap<String, _> = super::load_state(&store, &args.pipeline);
    for (node, parts) in dag.nodes.iter().zip(&outcome.parts) {
        if let Some(p) = parts {
            state.insert(node.label.clone(), p.clone());
        }
    }
    super::save_state(&store, &args.pipeline, &state);

    let results = match outcome.digests[dag.table] {
        Some(d) => {
            let bundle = store.get(&d).map_err(|e| {
                UserError::input(format!("table object: {e}; run again to recompute it"))
            })?;
            Some(table::write_results(bundle.meta(), &results_dir)?)
        }
        None => None,
    };
    if results.is_some() {
        write_model_table(&plan, &dag, &outcome, &store, &results_dir)?;
        crate::report::write(&results_dir, &plan.spec.name(), &plan.spec.text())?;
    }
    report(&dag, &outcome, results.as_deref(), args.json);
    Ok(if outcome.count(|s| matches!(s, State::Failed(_))) > 0 {
        1
    } else {
        0
    })
}

/// `models.csv`: for each extracted network (its `[[model]]` and architecture) and stimulus set
/// (`base` or an out-of-distribution set), its accuracy on that set and, for trained checkpoints, the step, epoch, train loss and
/// test accuracy. Accuracy is left empty on a set from another dataset than the base set
/// (`mnist5k` beside Fashion-MNIST): its labels name other classes.
fn write_model_table(
    plan: &crate::pipeline::Plan,
    dag: &crate::dag::Dag,
    o: &Outcome,
    store: &repflow_cache::Store,
    dir: &std::path::Path,
) -> Result<(), UserError> {
    use crate::nodes::NodeSpec;
    let meta = |i: usize| -> Option<serde_json::Value> {
        let b = store.get(&o.digests[i]?).ok()?;
        serde_json::from_str(b.meta()).ok()
    };
    let mut lines = vec![
        "model,network,arch,stimuli,accuracy_on_stimuli,step,epoch,train_loss,test_accuracy"
            .to_string(),
    ];
    for (i, node) in dag.nodes.iter().enumerate() {
        let NodeSpec::Extract(extract) = &node.spec else {
            continue;
        };
        let arch = serde_json::to_value(extract.model.arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let label = node.label.trim_start_matches("extract/");
        // `name[set]` for an out-of-distribution set (see `Model::label`)
        let (name, set) = match label.strip_suffix(']').and_then(|l| l.split_once('[')) {
            Some((name, set)) => (name, set),
            None => (label, "base"),
        };
        // a checkpoint `net@step<N>` belongs to network `net`
        let network = name.split("@step").next().unwrap_or(name);
        let other_classes = plan.networks.as_ref().is_some_and(|n| {
            let base = &n.sets[0].images.dataset;
            n.sets
                .iter()
                .any(|s| s.name.as_deref() == Some(set) && &s.images.dataset != base)
        });
        let acc = if other_classes {
            serde_json::Value::Null
        } else {
            meta(i).map(|m| m["accuracy"].clone()).unwrap_or_default()
        };
        let train = node
            .inputs
            .first()
            .copied()
            .filter(|&w| matches!(dag.nodes[w].spec, NodeSpec::Train(_)))
            .and_then(meta);
        let field = |v: Option<&serde_json::Value>| {
            v.filter(|v| !v.is_null())
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        lines.push(format!(
            "{name},{network},{arch},{set},{},{},{},{},{}",
            field(Some(&acc)),
            field(train.as_ref().map(|t| &t["step"])),
            field(train.as_ref().map(|t| &t["epoch"])),
            field(train.as_ref().map(|t| &t["train_loss"])),
            field(train.as_ref().map(|t| &t["test_accuracy"])),
        ));
    }
    if lines.len() > 1 {
        let path = dir.join("models.csv");
        table::write_if_changed(&path, (lines.join("\n") + "\n").as_bytes())?;
    }
    Ok(())
}

fn report(dag: &crate::dag::Dag, o: &Outcome, results: Option<&std::path::Path>, json: bool) {
    let executed = o.count(|s| *s == State::Executed);
    let cached = o.count(|s| *s == State::Cached);
    let failed = o.count(|s| matches!(s, State::Failed(_)));
    let blocked = o.count(|s| *s == State::Blocked);
    let failures: Vec<(String, String)> = dag
        .nodes
        .iter()
        .zip(&o.states)
        .filter_map(|(n, s)| match s {
            State::Failed(m) => Some((n.label.clone(), m.clone())),
            _ => None,
        })
        .collect();
    if json {
        let v = serde_json::json!({
            "executed": executed, "cached": cached, "failed": failed, "blocked": blocked,
            "seconds": o.seconds, "results": results.map(|p| p.display().to_string()),
            "failures": failures.iter().map(|(l, m)| serde_json::json!({"node": l, "error": m})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    for (label, msg) in &failures {
        eprintln!("failed: {label}: {msg}");
    }
    println!(
        "{executed} executed, {cached} reused from cache, {failed} failed, {blocked} blocked, in {:.2} s",
        o.seconds
    );
    if let Some(p) = results {
        println!("scores: {}", p.display());
    }
}
