//! One module per command.

pub mod score;
