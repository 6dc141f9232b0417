//! # repflow
//!
//! The `repflow` command line: reads activation matrices, runs the alignment metrics of
//! [`repflow_kernels`], and renders tables and JSON.

pub mod cli;
pub mod commands;
pub mod dag;
pub mod error;
pub mod matrix_io;
pub mod models;
pub mod nodes;
pub mod pipeline;
pub mod report;
pub mod stimuli;
