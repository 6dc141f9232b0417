//! `repflow run PIPELINE`: compute what the store lacks (locally or on Slurm), reuse the
//! rest, write the table.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use repflow_engine::schedule::{run as run_dag, Outcome, RunOptions, State};
use repflow_engine::{Executor, Local, MemoryBudget, Slurm, SlurmConfig};

use crate::cli::RunArgs;
use crate::error::UserError;
use crate::nodes::lm_train::LmTrain;
use crate::nodes::network::{Extract, Train};
use crate::nodes::text::{Embed, TextModel};
use crate::nodes::{registry, table, RunContext};
use crate::pipeline::graph::PipelineDag;
use crate::pipeline::PipelineSpec;

/// Score nodes batched together by default when the backend prefers batches (a GPU).
const DEVICE_SCORE_BATCH: usize = 64;
/// Node kinds always run in the driver under Slurm: too small to be worth a job.
const DRIVER_KINDS: [&str; 2] = ["folds", "table"];

/// Runs the pipeline; returns the exit code (1 when a node failed).
pub fn run(args: &RunArgs) -> Result<i32, UserError> {
    run_summary(args, true).map(|(code, _)| code)
}

/// Runs the pipeline; returns the exit code and the run's summary (the object `--json`
/// prints: nodes executed, cached, failed and blocked, seconds, results, failures), printing
/// it (or the text version) when `print`.
pub fn run_summary(args: &RunArgs, print: bool) -> Result<(i32, serde_json::Value), UserError> {
    if args.dry_run {
        let plan_args = crate::cli::PlanArgs {
            pipeline: args.pipeline.clone(),
            json: args.json,
            store: args.store.clone(),
        };
        super::plan::run(&plan_args)?;
        return Ok((0, serde_json::Value::Null));
    }
    let (plan, dag) = super::load_plan_and_dag(&args.pipeline)?;
    if !repflow_kernels::backend::installed() {
        // `--device` (main puts it in REPFLOW_DEVICE) over the pipeline's `options.device`
        let (choice, origin) = match std::env::var("REPFLOW_DEVICE") {
            Ok(flag) => (flag, "--device".to_string()),
            Err(_) => (
                plan.spec.options.device.clone().unwrap_or("auto".into()),
                format!("{}: `options.device`", plan.spec.path.display()),
            ),
        };
        let ptx = args.store.dir().join("ptx");
        if args.executor == "slurm" {
            crate::device::install_for_driver(&choice, &origin, Some(&ptx))?;
        } else {
            crate::device::install(&choice, &origin, Some(&ptx))?;
        }
        // Slurm workers (`repflow exec-node`) inherit the choice through the environment.
        std::env::set_var("REPFLOW_DEVICE", &choice);
    }
    let results_dir = plan.spec.results_dir();
    let store = Arc::new(super::open_store(&args.store.dir())?);
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // `--jobs` bounds both the nodes run at once and the threads of their parallel work
    // (ignored when the pool already exists).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build_global();
    let batch = args
        .score_batch
        .unwrap_or_else(|| default_score_batch(args, &plan.spec));
    let ctx = Arc::new(RunContext::default().with_score_batch(batch));
    let budget = args
        .max_memory
        .map(|limit| Arc::new(MemoryBudget::new(limit, ctx.clone())));
    let local = Local::with_budget(jobs, store.clone(), ctx, budget);
    let mut executor: Box<dyn Executor<RunContext>> = match args.executor.as_str() {
        "slurm" => Box::new(
            Slurm::new(slurm_config(args, &plan.spec)?, store.clone(), local)
                .map_err(UserError::input)?,
        ),
        _ => Box::new(local),
    };
    let opts = RunOptions {
        force: args.force.clone(),
        progress: !args.json,
    };
    let outcome = run_dag(&dag.dag, &store, executor.as_mut(), &opts);
    drop(executor);
    let mut state: BTreeMap<String, _> = super::load_state(&store, &args.pipeline);
    for (node, parts) in dag.dag.nodes.iter().zip(&outcome.parts) {
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
            // Scores, model table and report are written as one set: all new or all old.
            crate::results_set::replace(&results_dir, |stage| {
                table::write_results(bundle.meta(), stage)?;
                write_model_table(&plan, &dag, &outcome, &store, stage)?;
                crate::report::write(stage, &plan.spec.name(), &plan.spec.text())?;
                Ok(())
            })?;
            Some(results_dir.join("scores.csv"))
        }
        None => None,
    };
    let v = summary(&dag, &outcome, results.as_deref());
    if print {
        report(&dag, &outcome, results.as_deref(), args.json.then_some(&v));
    }
    let code = if outcome.count(|s| matches!(s, State::Failed(_))) > 0 {
        1
    } else {
        0
    };
    Ok((code, v))
}

/// `--score-batch` when not given: [`DEVICE_SCORE_BATCH`] where score nodes run on a GPU —
/// this process's backend prefers batches, or on Slurm the `score` kind's jobs ask for one
/// (`[slurm.kinds.score] gres = "gpu…"`; the driver's own device says nothing about the
/// workers') — else 1.
fn default_score_batch(args: &RunArgs, spec: &PipelineSpec) -> usize {
    let on_gpu = if args.executor == "slurm" {
        spec.slurm
            .as_ref()
            .and_then(|t| t.kinds.get("score"))
            .and_then(|r| r.gres.as_deref())
            .is_some_and(|g| g.contains("gpu"))
    } else {
        repflow_kernels::backend::current().prefers_batches()
    };
    if on_gpu {
        DEVICE_SCORE_BATCH
    } else {
        1
    }
}

/// The Slurm executor's settings: flags over the pipeline's `[slurm]` table over defaults.
fn slurm_config(args: &RunArgs, spec: &PipelineSpec) -> Result<SlurmConfig, UserError> {
    let table = spec.slurm.clone().unwrap_or_default();
    let known: Vec<&str> = registry().kinds().collect();
    let mut driver_kinds: HashSet<String> = DRIVER_KINDS.iter().map(|k| k.to_string()).collect();
    for k in table
        .driver
        .iter()
        .chain(&args.slurm_driver)
        .chain(table.kinds.keys())
    {
        if !known.contains(&k.as_str()) {
            return Err(UserError::input(format!(
                "{}: `{k}` is not a node kind (in `[slurm]` or --slurm-driver)",
                spec.path.display()
            ))
            .hint(format!("node kinds: {}", known.join(", "))));
        }
    }
    driver_kinds.extend(table.driver.iter().chain(&args.slurm_driver).cloned());
    let poll = args.slurm_poll.or(table.poll).unwrap_or(5.0);
    if !(poll.is_finite() && (0.05..=3600.0).contains(&poll)) {
        return Err(UserError::input(format!(
            "the Slurm poll interval is {poll} s; it must be between 0.05 and 3600"
        ))
        .hint("set --slurm-poll or `[slurm] poll`"));
    }
    if args.slurm_array_max.or(table.array_max) == Some(0) {
        return Err(
            UserError::input("the Slurm array limit is 0; it must be at least 1")
                .hint("set --slurm-array-max or `[slurm] array_max` to 1 or more"),
        );
    }
    let program = std::env::current_exe()
        .map_err(|e| UserError::input(format!("cannot find the repflow executable: {e}")))?;
    let dir = args.store.dir();
    let store_dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    Ok(SlurmConfig {
        program,
        store_dir,
        partition: args.slurm_partition.clone().or(table.partition),
        array_max: args.slurm_array_max.or(table.array_max),
        max_array_size: None,
        args: table.args.iter().chain(&args.slurm_arg).cloned().collect(),
        poll: Duration::from_secs_f64(poll),
        retries: args.retries.or(table.retries).unwrap_or(2),
        driver_kinds,
        resources: table.kinds,
    })
}

/// `models.csv`: for each extracted network (its `[[model]]` and architecture) and stimulus set
/// (`base` or an out-of-distribution set), its accuracy on that set and, for trained checkpoints, the step, epoch, train loss,
/// test accuracy and objective (`supervised` or `moco`; a MoCo network's accuracies are its
/// linear probe's, and `knn_accuracy` its k-NN classifier's). Accuracy is left empty on a set from another dataset than the base set
/// (`mnist5k` beside Fashion-MNIST): its labels name other classes.
fn write_model_table(
    plan: &crate::pipeline::Plan,
    dag: &PipelineDag,
    o: &Outcome,
    store: &repflow_cache::Store,
    dir: &std::path::Path,
) -> Result<(), UserError> {
    let dag = &dag.dag;
    let meta = |i: usize| -> Option<serde_json::Value> {
        let b = store.get(&o.digests[i]?).ok()?;
        serde_json::from_str(b.meta()).ok()
    };
    let mut lines = vec![
        "model,network,arch,stimuli,accuracy_on_stimuli,step,epoch,train_loss,test_accuracy,held_out_loss,objective,knn_accuracy"
            .to_string(),
    ];
    let field = |v: Option<&serde_json::Value>| {
        v.filter(|v| !v.is_null())
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    for (i, node) in dag.nodes.iter().enumerate() {
        if let Some(embed) = node.node.as_any().downcast_ref::<Embed>() {
            lines.push(language_model_row(dag, node, embed, &meta, &field));
            continue;
        }
        let Some(extract) = node.node.as_any().downcast_ref::<Extract>() else {
            continue;
        };
        let mut arch = serde_json::to_value(extract.model.arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if extract.model.projection {
            // MoCo networks are their own family in the report (Figure 6 beside Figures 1–5)
            arch.push_str("-moco");
        }
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
            .map(|(_, w)| *w)
            .filter(|&w| dag.nodes[w].node.as_any().is::<Train>())
            .and_then(meta);
        let objective = match &train {
            Some(t) => t["objective"].as_str().unwrap_or("supervised").to_string(),
            None => String::new(),
        };
        lines.push(format!(
            "{name},{network},{arch},{set},{},{},{},{},{},,{objective},{}",
            field(Some(&acc)),
            field(train.as_ref().map(|t| &t["step"])),
            field(train.as_ref().map(|t| &t["epoch"])),
            field(train.as_ref().map(|t| &t["train_loss"])),
            field(train.as_ref().map(|t| &t["test_accuracy"])),
            field(train.as_ref().map(|t| &t["knn_accuracy"])),
        ));
    }
    if lines.len() > 1 {
        let path = dir.join("models.csv");
        crate::results_set::write_if_changed(&path, (lines.join("\n") + "\n").as_bytes())?;
    }
    Ok(())
}

/// The `models.csv` row of a language model's `embed` node: a trained decoder's checkpoint
/// step, training loss and held-out loss (nats per byte) from its `lm-train` input.
fn language_model_row(
    dag: &repflow_engine::Dag<crate::nodes::RunContext>,
    node: &repflow_engine::DagNode<crate::nodes::RunContext>,
    embed: &Embed,
    meta: &dyn Fn(usize) -> Option<serde_json::Value>,
    field: &dyn Fn(Option<&serde_json::Value>) -> String,
) -> String {
    let name = node.label.trim_start_matches("embed/");
    let network = name.split("@step").next().unwrap_or(name);
    let arch = match &embed.model {
        TextModel::Bert { .. } => "bert".to_string(),
        TextModel::Gpt { .. } => "gpt".to_string(),
        TextModel::Trained { config } => format!("gpt-{}", config.n_layer),
    };
    let train = node
        .inputs
        .iter()
        .find(|(n, w)| n == "weights" && dag.nodes[*w].node.as_any().is::<LmTrain>())
        .and_then(|(_, w)| meta(*w));
    let t = |k: &str| field(train.as_ref().map(|t| &t[k]));
    format!(
        "{name},{network},{arch},sentences,,{},,{},,{},{},",
        t("step"),
        t("train_loss"),
        t("held_out_loss"),
        if train.is_some() { "next-token" } else { "" }
    )
}

fn failures<'a>(dag: &PipelineDag, o: &'a Outcome) -> Vec<(String, &'a repflow_engine::Failure)> {
    dag.dag
        .nodes
        .iter()
        .zip(&o.states)
        .filter_map(|(n, s)| match s {
            State::Failed(f) => Some((n.label.clone(), f)),
            _ => None,
        })
        .collect()
}

/// The run's summary, as `repflow run --json` prints it.
fn summary(dag: &PipelineDag, o: &Outcome, results: Option<&std::path::Path>) -> serde_json::Value {
    let failures = failures(dag, o);
    serde_json::json!({
        "executed": o.count(|s| *s == State::Executed),
        "cached": o.count(|s| *s == State::Cached),
        "failed": o.count(|s| matches!(s, State::Failed(_))),
        "blocked": o.count(|s| *s == State::Blocked),
        "seconds": o.seconds, "results": results.map(|p| p.display().to_string()),
        "executor": o.executor, "submitted": o.stats.submitted, "arrays": o.stats.arrays,
        "retries": o.stats.retries, "batched": o.stats.batched,
        "failures": failures.iter().map(|(l, f)| serde_json::json!({
            "node": l, "kind": f.kind, "key": f.key, "error": f.message,
            "log": f.log.as_ref().map(|p| p.display().to_string()),
        })).collect::<Vec<_>>(),
    })
}

/// Prints the summary: `json` as it is, or the failures and a line of counts.
fn report(
    dag: &PipelineDag,
    o: &Outcome,
    results: Option<&std::path::Path>,
    json: Option<&serde_json::Value>,
) {
    if let Some(v) = json {
        println!("{v}");
        return;
    }
    let failures = failures(dag, o);
    let (executed, cached, failed, blocked) = (
        o.count(|s| *s == State::Executed),
        o.count(|s| *s == State::Cached),
        o.count(|s| matches!(s, State::Failed(_))),
        o.count(|s| *s == State::Blocked),
    );
    for (label, f) in &failures {
        eprintln!("failed: {label}: {}", f.message);
        if let Some(log) = &f.log {
            eprintln!("  log: {}", log.display());
        }
    }
    let cluster = if o.executor == "slurm" {
        format!(
            " ({} Slurm elements in {} arrays, {} resubmitted)",
            o.stats.submitted, o.stats.arrays, o.stats.retries
        )
    } else if o.stats.batched > 0 {
        format!(" ({} score nodes in batches)", o.stats.batched)
    } else {
        String::new()
    };
    println!(
        "{executed} executed, {cached} reused from cache, {failed} failed, {blocked} blocked, in {:.2} s{cluster}",
        o.seconds
    );
    if let Some(p) = results {
        println!("scores: {}", p.display());
    }
}
