//! # repflow
//!
//! repflow's domain above the engine ([`repflow_engine`]), the store ([`repflow_cache`]) and
//! the mathematics ([`repflow_kernels`]): node kinds, pipeline files and their DAGs, the
//! networks, stimuli, report and the command line.

pub mod allocator;
pub mod cli;
pub mod commands;
pub mod device;
pub mod error;
pub mod input;
pub mod matrix_io;
pub mod models;
pub mod named_serde;
pub mod nodes;
pub mod packages;
pub mod pipeline;
pub mod ranges;
pub mod report;
pub mod results_set;
pub mod score_json;
pub mod stimuli;
pub mod text;
