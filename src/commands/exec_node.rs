//! `repflow exec-node KEY…`: execute nodes given only the store and their keys — what a
//! cluster worker (one Slurm array element: one node, or a batch of one kind) runs.

use repflow_cache::Digest;
use repflow_engine::worker::{execute_keys, WorkerOutcome};

use crate::cli::ExecNodeArgs;
use crate::error::UserError;
use crate::nodes::{registry, RunContext};

/// Executes the nodes whose recipes are stored under `args.keys`, unless their outputs
/// exist; nodes that batch run together. Every key is tried; the first failure is the error
/// (exit 1), the others are printed on stderr.
pub fn run(args: &ExecNodeArgs) -> Result<(), UserError> {
    let store = super::open_store(&args.store.dir())?;
    let keys = args
        .keys
        .iter()
        .map(|k| {
            k.parse::<Digest>()
                .map_err(|e| UserError::input(format!("key `{k}`: {e}")))
        })
        .collect::<Result<Vec<Digest>, UserError>>()?;
    // the keys were grouped by the run that wrote them: let all of them batch here
    let ctx = RunContext::default().with_score_batch(keys.len());
    let mut failures = Vec::new();
    // inside a Slurm job, batches are cut to fit the job's memory
    let memory = repflow_engine::slurm::job_memory();
    let outcomes = execute_keys(&store, &registry(), &ctx, &keys, memory);
    for (key, outcome) in keys.iter().zip(outcomes) {
        match outcome {
            Ok(WorkerOutcome::AlreadyDone(_)) => {
                println!("{} is already in the store", key.short())
            }
            Ok(WorkerOutcome::Executed(label, _)) => println!("executed {label} ({})", key.short()),
            Err(e) => failures.push(e),
        }
    }
    let Some(first) = failures.first().cloned() else {
        return Ok(());
    };
    for e in &failures[1..] {
        eprintln!("error: {e}");
    }
    // a node could not be computed: exit 1, as a failed run
    Err(UserError {
        message: first,
        hint: None,
        code: crate::error::EXIT_FAILURE,
    })
}
