//! # repflow-engine
//!
//! repflow's build engine, with no knowledge of metrics, networks, images or figures:
//!
//! - a node kind implements [`Kind`] (name, version, key parameters, external files, `run`);
//!   a [`Registry`] maps kind names to decoders so that a worker rebuilds any node from its
//!   recipe;
//! - a [`Dag`] holds nodes with labels and named inputs;
//! - keys ([`KeyParts`]) hash kind, version, parameters and the inputs' *output digests*, so
//!   an unchanged upstream output stops the cascade (early cutoff);
//! - the scheduler ([`schedule::run`]) starts a node as soon as its own inputs are done and
//!   hands it to an [`Executor`]: [`Local`] (a rayon pool in this process) or [`Slurm`]
//!   (array jobs on a cluster, each element running the [`worker`]).
//!
//! The domain supplies a per-run context `C` (state its nodes share within one process);
//! the engine only passes it through. A [`MemoryBudget`] (given to [`Local`]) admits nodes by
//! their estimated memory and evicts the context's caches through [`Evict`].

pub mod budget;
pub mod dag;
pub mod execute;
pub mod executor;
pub mod files;
mod heartbeat;
pub mod keys;
pub mod local;
pub mod node;
pub mod registry;
pub mod schedule;
pub mod slurm;
pub mod worker;

pub use budget::{Evict, MemoryBudget};
pub use dag::{Dag, DagNode, GraphError};
pub use executor::{Completion, Executor, ExecutorStats, Task, TaskError};
pub use keys::KeyParts;
pub use local::Local;
pub use node::{group_batches, Batch, Input, Inputs, Kind, Node, NodeError};
pub use registry::Registry;
pub use schedule::{Failure, Outcome, RunOptions, State};
pub use slurm::{Resources, Slurm, SlurmConfig};
