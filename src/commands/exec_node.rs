//! `repflow exec-node KEY`: execute one node given only the store and its key — what a
//! cluster worker (one Slurm array element per node) runs.

use repflow_cache::Digest;
use repflow_engine::worker::{execute_key, WorkerOutcome};

use crate::cli::ExecNodeArgs;
use crate::error::UserError;
use crate::nodes::{registry, RunContext};

/// Executes the node whose recipe is stored under `args.key`, unless its output exists.
pub fn run(args: &ExecNodeArgs) -> Result<(), UserError> {
    let store = super::open_store(&args.store.dir())?;
    let key: Digest = args.key.parse().map_err(UserError::input)?;
    match execute_key(&store, &registry(), &RunContext::default(), &key) {
        Ok(WorkerOutcome::AlreadyDone(_)) => println!("{} is already in the store", key.short()),
        Ok(WorkerOutcome::Executed(label, _)) => println!("executed {label} ({})", key.short()),
        // the node could not be computed: exit 1, as a failed run
        Err(e) => {
            return Err(UserError {
                message: e,
                hint: None,
                code: crate::error::EXIT_FAILURE,
            })
        }
    }
    Ok(())
}
