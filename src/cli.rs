//! Command-line flags: the raw `clap` definitions, and their resolution into kernel settings.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use repflow_kernels::{
    Corr, DimMatch, FoldSpec, HsicEstimator, Metric, Named, Settings, TestZscore,
};

use crate::error::UserError;

/// repflow: audit convergent learning by aligning neural-network layer activations.
#[derive(Parser, Debug)]
#[command(name = "repflow", version, about, propagate_version = true)]
pub struct Cli {
    /// Where the metrics' heavy operations run: auto (a GPU when one is usable, else the
    /// CPU), cpu, cuda or cuda:N. Default: a pipeline's `options.device`, else auto.
    #[arg(long, global = true, env = "REPFLOW_DEVICE")]
    pub device: Option<String>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// repflow's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Score the alignment between two activation matrices (stimuli × units).
    Score(ScoreArgs),
    /// One metric on every pair of two networks' layers (`--x` files against `--y` files):
    /// a table with a row per pair. Procrustes scores a batch of pairs at once (on a GPU,
    /// one batched launch for all their folds).
    Pairs(PairsArgs),
    /// The spatial-shift search between two conv layers' full maps (stimuli × channels ×
    /// height × width): Procrustes after the best circular shift, cross-validated.
    Shift(ShiftArgs),
    /// Run a pipeline: compute what the store lacks, reuse the rest, write the score table.
    Run(RunArgs),
    /// Show a pipeline's DAG with each node's state (cached, stale, missing).
    Plan(PlanArgs),
    /// Explain why a node will run: which input, parameter or kind version changed.
    Why(WhyArgs),
    /// Inspect and maintain the store.
    Cache(CacheArgs),
    /// Execute one node of the store by its key (for cluster workers).
    ExecNode(ExecNodeArgs),
    /// Extract a network's layer activations on a stimulus set into a pipeline source folder.
    Extract(ExtractArgs),
    /// Train a network on Fashion-MNIST, saving checkpoints from step 0.
    Train(TrainArgs),
    /// Train a byte-level GPT-style decoder on WordNet's definitions, saving checkpoints
    /// from step 0 (each a folder `repflow extract --arch gpt` reads).
    TrainLm(TrainLmArgs),
}

/// Flags of `repflow train-lm`.
#[derive(clap::Args, Debug)]
pub struct TrainLmArgs {
    /// Blocks (depth).
    #[arg(long, default_value_t = 4, value_parser = crate::ranges::positive_count)]
    pub layers: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 128, value_parser = crate::ranges::positive_count)]
    pub width: usize,
    /// Attention heads (must divide the width).
    #[arg(long, default_value_t = 4, value_parser = crate::ranges::positive_count)]
    pub heads: usize,
    /// Context length in bytes.
    #[arg(long, default_value_t = 64, value_parser = crate::ranges::positive_count)]
    pub context: usize,
    /// Seed of initialisation and window order.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Peak learning rate (AdamW; linear warm-up, then cosine decay).
    #[arg(long, default_value_t = 3e-3, value_parser = crate::ranges::learning_rate)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// Weight decay of matrices.
    #[arg(long, default_value_t = 0.1, value_parser = crate::ranges::weight_decay)]
    pub weight_decay: f64,
    /// Windows per step.
    #[arg(long, default_value_t = 32, value_parser = crate::ranges::positive_count)]
    pub batch: usize,
    /// Optimisation steps.
    #[arg(long, default_value_t = 1000, value_parser = crate::ranges::positive_steps)]
    pub steps: u64,
    /// Checkpoint steps, e.g. 0,10,50,200; the last step is always saved.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub checkpoints: Vec<u64>,
    /// The wordnet-base package (default: data/downloads/wordnet-base_3.0-37_all.deb).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder: step-<N>/ (config.json, model.safetensors), metrics.jsonl, recipe.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags of `repflow shift`.
#[derive(clap::Args, Debug)]
pub struct ShiftArgs {
    /// Full maps of the first layer: .npy or .safetensors, stimuli × channels × height × width.
    pub x: PathBuf,
    /// Full maps of the second layer: the same stimuli in the same order, the same grid.
    pub y: PathBuf,
    /// Number of cross-validation folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed of the fold shuffle (scikit-learn's KFold random_state).
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
    /// Keep stimulus order when splitting folds (KFold(shuffle=False)).
    #[arg(long)]
    pub no_shuffle: bool,
    /// Correlation used for fold scores.
    #[arg(long, default_value = "pearson", value_parser = named::<Corr>())]
    pub corr: Corr,
    /// The tensor of X in a .safetensors file that holds several.
    #[arg(long)]
    pub x_key: Option<String>,
    /// The tensor of Y in a .safetensors file that holds several.
    #[arg(long)]
    pub y_key: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `repflow train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Architecture: resnet18, resnet50, vgg16-bn, vgg19-bn or vit.
    #[arg(long)]
    pub arch: String,
    /// Channels of the first stage.
    #[arg(long, default_value_t = 16, value_parser = crate::ranges::positive_count)]
    pub width: usize,
    /// Seed of initialisation, batch order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// sgd (momentum, weight decay) or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Peak learning rate (cosine schedule).
    #[arg(long, default_value_t = 0.05, value_parser = crate::ranges::learning_rate)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, value_parser = crate::ranges::momentum)]
    pub momentum: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 5e-4, value_parser = crate::ranges::weight_decay)]
    pub weight_decay: f64,
    /// Batch size.
    #[arg(long, default_value_t = 128, value_parser = crate::ranges::positive_count)]
    pub batch: usize,
    /// Epochs (may be fractional).
    #[arg(long, default_value_t = 2.0, value_parser = crate::ranges::epochs)]
    pub epochs: f64,
    /// Checkpoints: steps (`0,50,200`) or epochs with an `e` suffix (`0.25e,1e`); the last step is always saved.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub checkpoints: Vec<String>,
    /// Turn off random crop and flip.
    #[arg(long)]
    pub no_augment: bool,
    /// supervised (cross-entropy on the labels) or moco (MoCo v2, no labels: two augmented
    /// views, momentum key encoder, projection head, queue of negatives, InfoNCE).
    #[arg(long, default_value = "supervised")]
    pub objective: String,
    /// MoCo: output dimension of the projection head.
    #[arg(long, default_value_t = 128, value_parser = crate::ranges::positive_count)]
    pub projection_dim: usize,
    /// MoCo: keys in the queue of negatives.
    #[arg(long, default_value_t = 4096, value_parser = crate::ranges::positive_count)]
    pub queue: usize,
    /// MoCo: momentum of the key encoder.
    #[arg(long, default_value_t = 0.99, value_parser = crate::ranges::momentum)]
    pub key_momentum: f64,
    /// MoCo: temperature of the InfoNCE logits.
    #[arg(long, default_value_t = 0.2, value_parser = crate::ranges::temperature)]
    pub temperature: f64,
    /// Train on the first N training images only.
    #[arg(long, value_parser = crate::ranges::positive_count)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_parser = crate::ranges::positive_count)]
    pub test_limit: Option<usize>,
    /// The Fashion-MNIST package or folder (default: data/downloads/<package>).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder: step-<N>.safetensors, metrics.jsonl, config.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags of `repflow extract`.
#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    /// Architecture: resnet18, resnet50, vgg16-bn, vgg19-bn, vit; or a language model:
    /// bert (--checkpoint is a folder with config.json, model.safetensors, tokenizer.json)
    /// or gpt (a `repflow train-lm` checkpoint folder: config.json, model.safetensors).
    #[arg(long)]
    pub arch: String,
    /// Channels of the first stage (torchvision: 64).
    #[arg(long, default_value_t = 64, value_parser = crate::ranges::positive_count)]
    pub width: usize,
    /// Use torchvision's ImageNet stem (7 × 7 stride 2 and max-pool) instead of the small-image stem.
    #[arg(long)]
    pub imagenet_stem: bool,
    /// Output classes of the network.
    #[arg(long, default_value_t = 10, value_parser = crate::ranges::positive_count)]
    pub classes: usize,
    /// Weights with torchvision parameter names: .safetensors, or a torch.save .pt/.pth state
    /// dict (also under `state_dict` or `model`); a `module.` prefix is stripped.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Stimuli: fashion-mnist-test, fashion-mnist-train, mnist5k, an image folder (one
    /// subfolder of PNG/JPEG files per class), or an .npy array (N × H × W or N × C × H × W, values in [0, 1]).
    #[arg(long)]
    pub stimuli: Option<String>,
    /// Sentences for a language model: a UTF-8 text file (one sentence a line), or
    /// `wordnet:N` (N example sentences of WordNet 3.0, from the wordnet-base package).
    #[arg(long)]
    pub sentences: Option<String>,
    /// Image folders: resize the shorter side to this many pixels.
    #[arg(long, default_value_t = 32, value_parser = crate::ranges::positive_pixels)]
    pub resize: u32,
    /// Image folders: keep the centre square of this size.
    #[arg(long, default_value_t = 28, value_parser = crate::ranges::positive_pixels)]
    pub crop: u32,
    /// Image folders: keep colour (3 channels) instead of converting to grey.
    #[arg(long)]
    pub colour: bool,
    /// Where the dataset package is (default: data/downloads/<package>).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use the first N stimuli only.
    #[arg(long, value_parser = crate::ranges::positive_count)]
    pub limit: Option<usize>,
    /// An out-of-distribution transform, e.g. contrast:0.1, rotation:90, eidolon:4:0.3.
    #[arg(long)]
    pub transform: Option<String>,
    /// Seed of random transforms.
    #[arg(long, default_value_t = 0)]
    pub transform_seed: u32,
    /// Normalise inputs as (x − MEAN) / STD, e.g. 0.2860,0.3530 for Fashion-MNIST.
    #[arg(long, value_delimiter = ',', value_parser = crate::ranges::finite)]
    pub normalize: Option<Vec<f64>>,
    /// Comma-separated layers (default: every conv and linear layer).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// How conv outputs become one row per stimulus: center-pixel (the default), mean-pool,
    /// max-pool or flatten; for language models how tokens are pooled: mean (the default),
    /// cls or last.
    #[arg(long)]
    pub reduce: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256, value_parser = crate::ranges::positive_count)]
    pub batch: usize,
    /// Output folder: <layer>.npy, layers.txt, stimuli.txt, labels.txt (a pipeline model folder).
    #[arg(long)]
    pub out: PathBuf,
}

/// Where the store is: `--cache`, else `$REPFLOW_CACHE`, else `.repflow`.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The store's folder (default: $REPFLOW_CACHE, else .repflow).
    #[arg(long, global = true)]
    pub cache: Option<PathBuf>,
}

impl StoreArgs {
    /// The store folder.
    pub fn dir(&self) -> PathBuf {
        self.cache
            .clone()
            .or_else(|| std::env::var_os("REPFLOW_CACHE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".repflow"))
    }
}

/// Flags of `repflow run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = crate::ranges::positive_count)]
    pub jobs: Option<usize>,
    /// Show what would run, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Recompute nodes whose label contains this text (repeatable).
    #[arg(long, value_name = "NODE-PATTERN")]
    pub force: Vec<String>,
    /// Print one JSON summary object.
    #[arg(long)]
    pub json: bool,
    /// The most Procrustes score nodes run as one batch when they are ready together (all
    /// their folds' maps in one backend call: one batched launch on a GPU); 1 runs each
    /// alone. Default: 64 on a GPU, 1 on the CPU (where batching gains nothing).
    #[arg(long, value_name = "PAIRS", value_parser = crate::ranges::positive_count)]
    pub score_batch: Option<usize>,
    /// Memory budget of the nodes run in this process (e.g. `8G`, `512M`): a node starts
    /// when its estimated memory fits beside the running ones', evicting cached prepared
    /// layers first; a node that alone needs more fails and says so. Default: no budget.
    #[arg(long, value_name = "SIZE", value_parser = repflow_engine::budget::parse_size)]
    pub max_memory: Option<u64>,
    /// Where nodes run: `local` (threads of this process) or `slurm` (array jobs; the store
    /// must be on a filesystem the cluster's nodes share).
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    pub executor: String,
    /// Slurm: the partition (overrides `[slurm] partition`).
    #[arg(long)]
    pub slurm_partition: Option<String>,
    /// Slurm: at most N elements of one array run at once (`--array=…%N`).
    #[arg(long, value_name = "N", value_parser = crate::ranges::positive_count)]
    pub slurm_array_max: Option<usize>,
    /// Slurm: a further `sbatch` argument (repeatable), e.g. `--slurm-arg=--account=lab`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub slurm_arg: Vec<String>,
    /// Slurm: seconds between status queries (default 5).
    #[arg(long, value_name = "SECONDS")]
    pub slurm_poll: Option<f64>,
    /// Slurm: a node kind to run in the driver instead of as jobs (repeatable; `folds` and
    /// `table` always are).
    #[arg(long, value_name = "KIND")]
    pub slurm_driver: Vec<String>,
    /// Resubmissions of a failed node before it is reported (default 2).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Flags of `repflow plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Flags of `repflow why`.
#[derive(clap::Args, Debug)]
pub struct WhyArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The node's label, or a part of it that names one node.
    pub node: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Flags of `repflow cache`.
#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CacheCommand,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `repflow cache` subcommands.
#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List entries: key, kind, size, compute time, creation time.
    Ls,
    /// Total size, by node kind.
    Du,
    /// One entry's metadata and recipe.
    Show {
        /// The key, or a prefix of at least 4 characters.
        key: String,
    },
    /// Hash every object; remove corrupt objects and the entries that point to them.
    Verify,
    /// Remove entries and objects.
    Gc {
        /// Keep the store under this size (e.g. 500M, 10G): least recently used first,
        /// weighted by recompute cost.
        #[arg(long)]
        max_size: Option<String>,
        /// Keep everything these pipelines reach (repeatable).
        #[arg(long)]
        keep: Vec<PathBuf>,
        /// Say what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Flags of `repflow exec-node`.
#[derive(clap::Args, Debug)]
pub struct ExecNodeArgs {
    /// The nodes' keys (their recipes must be in the store); nodes of a kind that batches
    /// run together, as in `repflow run`.
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `--metric`: one metric, or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricSelection {
    /// One metric.
    One(Metric),
    /// Every metric (permutation is skipped when widths differ).
    All,
}

/// A parser for a kernel choice from the kernels' own list of names (one place for names).
fn named<T: Named + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::names()).map(|s| T::from_name(&s).expect("a listed name"))
}

/// A parser for `--metric`: a metric's name or `all`.
fn metric_selection() -> impl clap::builder::TypedValueParser<Value = MetricSelection> {
    let mut names = Metric::names();
    names.push("all");
    PossibleValuesParser::new(names).map(|s| match Metric::from_name(&s) {
        Some(m) => MetricSelection::One(m),
        None => MetricSelection::All,
    })
}

/// The fold split and the metrics' options, shared by `repflow score` and `repflow pairs`.
#[derive(clap::Args, Debug)]
pub struct MetricOptions {
    /// Number of cross-validation folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed of the fold shuffle (scikit-learn's KFold random_state).
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
    /// Keep stimulus order when splitting folds (KFold(shuffle=False)).
    #[arg(long)]
    pub no_shuffle: bool,
    /// Correlation used for fold scores and matching.
    #[arg(long, default_value = "pearson", value_parser = named::<Corr>())]
    pub corr: Corr,
    /// Statistics that z-score the linear metric's test fold.
    #[arg(long, default_value = "train", value_parser = named::<TestZscore>())]
    pub test_zscore: TestZscore,
    /// Comma-separated ridge penalties searched by leave-one-out error (0 = least squares).
    /// Default: 1e-8,1e-7,...,1e8.
    #[arg(long, value_delimiter = ',', value_parser = crate::ranges::penalty)]
    pub alphas: Option<Vec<f64>>,
    /// How Procrustes handles layers of different widths.
    #[arg(long, default_value = "zeropad", value_parser = named::<DimMatch>())]
    pub dim_match: DimMatch,
    /// CKA's HSIC estimator.
    #[arg(long, default_value = "biased", value_parser = named::<HsicEstimator>())]
    pub hsic: HsicEstimator,
    /// How RSA compares the two RDMs.
    #[arg(long, default_value = "spearman", value_parser = named::<Corr>())]
    pub rsa_compare: Corr,
}

impl MetricOptions {
    /// The kernel settings these flags describe.
    pub fn settings(&self) -> Result<Settings, UserError> {
        if self.folds < 2 {
            return Err(UserError::input(format!(
                "--folds must be at least 2, got {}",
                self.folds
            )));
        }
        let alphas = match &self.alphas {
            None => Settings::default_alphas(),
            Some(a) if a.is_empty() => {
                return Err(
                    UserError::input("--alphas is empty").hint("give e.g. --alphas 0.1,1,10")
                )
            }
            Some(a) => {
                if let Some(bad) = a.iter().find(|v| !v.is_finite() || **v < 0.0) {
                    return Err(UserError::input(format!(
                        "--alphas has {bad}; penalties must be finite and >= 0"
                    )));
                }
                a.clone()
            }
        };
        Ok(Settings {
            folds: FoldSpec {
                k: self.folds,
                shuffle_seed: (!self.no_shuffle).then_some(self.seed),
            },
            corr: self.corr,
            test_zscore: self.test_zscore,
            alphas,
            dim_match: self.dim_match,
            hsic: self.hsic,
            rsa_compare: self.rsa_compare,
        })
    }
}

/// Flags of `repflow score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// Activations of the first network: .npy or .safetensors, stimuli × units.
    pub x: PathBuf,
    /// Activations of the second network, same stimuli in the same order.
    pub y: PathBuf,
    /// Metric to compute.
    #[arg(long, default_value = "all", value_parser = metric_selection())]
    pub metric: MetricSelection,
    /// Folds and the metrics' options.
    #[command(flatten)]
    pub options: MetricOptions,
    /// Rotate X by a Haar-random rotation drawn from this seed before anything else.
    #[arg(long, value_name = "SEED")]
    pub rotate_x: Option<u32>,
    /// Stimulus-permutation null: score X against Y with its rows permuted, N times; adds
    /// `null` (mean, std, quantiles, p-value) and `chance_corrected` to each metric.
    #[arg(long, value_name = "N", value_parser = crate::ranges::positive_count)]
    pub null: Option<usize>,
    /// Seed of the null's permutations (numpy `RandomState(S).permutation(m)`, one per draw).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub null_seed: u32,
    /// Stimulus bootstrap with B draws (each fold fitted on its train rows, evaluated on its
    /// resampled test rows): a confidence interval per metric.
    #[arg(long, value_name = "B", value_parser = crate::ranges::positive_count)]
    pub bootstrap: Option<usize>,
    /// Confidence level of the bootstrap interval.
    #[arg(long, value_name = "LEVEL", default_value_t = 0.95, value_parser = crate::ranges::confidence)]
    pub ci: f64,
    /// Seed of the bootstrap's resampling.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub bootstrap_seed: u32,
    /// Rotation null of the privileged-basis test: R Haar rotations of X, scored with the
    /// permutation and soft-matching metrics; adds `rotation_null` to those.
    #[arg(long, value_name = "R", value_parser = crate::ranges::positive_count)]
    pub rotations: Option<usize>,
    /// Seed of the first rotation (rotation k uses seed S + k).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub rotation_seed: u32,
    /// Tensor name in X when it is a .safetensors file with several tensors.
    #[arg(long)]
    pub x_key: Option<String>,
    /// Tensor name in Y when it is a .safetensors file with several tensors.
    #[arg(long)]
    pub y_key: Option<String>,
    /// Print one JSON object (an array of them for `all`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ScoreArgs {
    /// The metrics to compute.
    pub fn metrics(&self) -> Vec<Metric> {
        match self.metric {
            MetricSelection::One(m) => vec![m],
            MetricSelection::All => Metric::ALL.to_vec(),
        }
    }

    /// The kernel settings these flags describe.
    pub fn settings(&self) -> Result<Settings, UserError> {
        self.options.settings()
    }
}

/// Flags of `repflow pairs`.
#[derive(clap::Args, Debug)]
pub struct PairsArgs {
    /// The first network's layers: .npy or .safetensors files, stimuli × units each.
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    pub x: Vec<PathBuf>,
    /// The second network's layers, the same stimuli in the same order; every X layer is
    /// scored against every Y layer.
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    pub y: Vec<PathBuf>,
    /// Metric to compute.
    #[arg(long, default_value = "procrustes", value_parser = named::<Metric>())]
    pub metric: Metric,
    /// Folds and the metrics' options.
    #[command(flatten)]
    pub options: MetricOptions,
    /// Host memory for one batch of pairs' fold products (e.g. `512M`; default 2G): more
    /// pairs per batch means fewer, larger GPU launches.
    #[arg(long, value_name = "SIZE", default_value_t = repflow_kernels::batch::BATCH_BYTES, value_parser = repflow_engine::budget::parse_size)]
    pub batch_memory: u64,
    /// Write the table here (written whole or not at all) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// A JSON array of `repflow score --json`'s objects, with `x` and `y`, instead of CSV.
    #[arg(long)]
    pub json: bool,
}
