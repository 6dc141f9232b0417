//! Node kinds: one module per kind, each a serde struct implementing the engine's
//! [`Kind`](repflow_engine::Kind) — its name, version (bumped when its output changes
//! meaning), key parameters, named inputs and how to compute its output. Nodes do no store
//! I/O: the engine hands them their inputs and stores what they return.
//!
//! Adding a kind: a module here, a line in [`registry`], and the place in
//! [`pipeline::graph`](crate::pipeline::graph) that creates its nodes.

pub mod context;
pub mod folds;
pub mod images;
pub mod lm_train;
pub mod network;
pub mod prepared;
pub mod reduce;
pub mod score;
pub mod shift_score;
pub mod source;
pub mod statistic;
pub mod table;
pub mod text;

pub use context::RunContext;
use repflow_engine::Registry;

/// Every node kind of repflow, for rebuilding nodes from their recipes.
pub fn registry() -> Registry<RunContext> {
    Registry::new()
        .with::<source::Source>()
        .with::<folds::FoldsNode>()
        .with::<prepared::Prepared>()
        .with::<score::ScoreNode>()
        .with::<statistic::StatisticNode>()
        .with::<table::Table>()
        .with::<images::ImageSet>()
        .with::<images::TransformNode>()
        .with::<network::Weights>()
        .with::<network::Train>()
        .with::<network::Extract>()
        .with::<reduce::Reduce>()
        .with::<text::SentenceSet>()
        .with::<text::Embed>()
        .with::<lm_train::LmTrain>()
        .with::<shift_score::ShiftScoreNode>()
}
