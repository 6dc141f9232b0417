//! The pipeline file's schema, read with serde (unknown keys refused with a suggestion).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use repflow_kernels::{FoldSpec, Metric, Named, Settings};
use serde::Deserialize;

use crate::error::UserError;

/// A pipeline as written in its TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline (default: the file's stem).
    pub name: Option<String>,
    /// Where the score tables go (default: `results/<name>`).
    pub results: Option<PathBuf>,
    /// Where activations come from (file-based pipelines).
    pub source: Option<SourceSpec>,
    /// The models to compare (folder or file names under `source.dir`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Networks whose activations repflow extracts itself (network-based pipelines), trained
    /// here or imported from checkpoints.
    #[serde(default)]
    pub model: Vec<NetworkSpec>,
    /// The stimuli networks are shown (network-based pipelines).
    pub stimuli: Option<StimuliSpec>,
    /// The sentences language models (`arch = "bert"` or `"gpt"`) are shown.
    pub sentences: Option<SentencesSpec>,
    /// The recipe of trained networks.
    pub training: Option<TrainingSpec>,
    /// The recipe of language models (`arch = "gpt"` with a `seed`) trained here.
    pub lm_training: Option<LmTrainingSpec>,
    /// Which model pairs: `"all"` or a list of `[a, b]`.
    #[serde(default)]
    pub pairs: Pairs,
    /// Which layer pairs: `"matched"` (by normalised depth), `"named"` (the layers both
    /// models have by name) or `"all"`.
    #[serde(default = "default_layers")]
    pub layers: String,
    /// Explicit layer lists (and order) per model.
    #[serde(default)]
    pub layer_lists: BTreeMap<String, Vec<String>>,
    /// Metrics to compute.
    pub metrics: Vec<String>,
    /// Metric options.
    #[serde(default)]
    pub options: Options,
    /// How `--executor slurm` submits this pipeline's nodes.
    pub slurm: Option<SlurmSpec>,
    /// Statistical tests of the scores (`[statistics]`).
    #[serde(default)]
    pub statistics: StatisticsSpec,
    /// The file this was read from (set by [`load`]).
    #[serde(skip)]
    pub path: PathBuf,
    /// The files it includes (`include = [...]`, set by [`load`]).
    #[serde(skip)]
    pub includes: Vec<PathBuf>,
}

impl PipelineSpec {
    /// The pipeline's text followed by each included file's, for reports.
    pub fn text(&self) -> String {
        let mut out = std::fs::read_to_string(&self.path).unwrap_or_default();
        for inc in &self.includes {
            out.push_str(&format!(
                "\n# ---- included: {} ----\n{}",
                inc.display(),
                std::fs::read_to_string(inc).unwrap_or_default()
            ));
        }
        out
    }
}

/// The `[slurm]` table: how `repflow run --executor slurm` submits jobs (flags override it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    /// `sbatch --partition`.
    pub partition: Option<String>,
    /// At most this many elements of one array at once.
    pub array_max: Option<usize>,
    /// Further `sbatch` arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds between status queries.
    pub poll: Option<f64>,
    /// Resubmissions of a failed element.
    pub retries: Option<u32>,
    /// Node kinds run in the driver besides `folds` and `table`.
    #[serde(default)]
    pub driver: Vec<String>,
    /// Resources per node kind, e.g. `[slurm.kinds.train] cpus = 8, gres = "gpu:1"`.
    #[serde(default)]
    pub kinds: BTreeMap<String, repflow_engine::Resources>,
}

fn default_layers() -> String {
    "matched".into()
}

/// Where activations come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The folder, relative to the pipeline file.
    pub dir: PathBuf,
    /// `npy` (a folder per model, a file per layer) or `safetensors` (a file per model).
    #[serde(default)]
    pub format: SourceFormat,
}

/// The layout of a source folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// `DIR/<model>/<layer>.npy`, optional `DIR/<model>/layers.txt` and `stimuli.txt`.
    #[default]
    Npy,
    /// `DIR/<model>.safetensors`, one tensor per layer (file order), optional `DIR/<model>.stimuli.txt`.
    Safetensors,
}

/// A network in a pipeline: trained from `seed`, or imported from `checkpoint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Its name in the score table (trained ones get `@step<N>` per checkpoint).
    pub name: String,
    /// resnet18, resnet50, vgg16-bn, vgg19-bn or vit.
    pub arch: String,
    /// Width of the first stage (ViT: hidden size).
    #[serde(default = "default_width")]
    pub width: usize,
    /// Training seed (trained networks).
    pub seed: Option<u32>,
    /// A checkpoint with torchvision names (imported networks), relative to the pipeline:
    /// `.safetensors`, or a torch.save `.pt`/`.pth` state dict.
    pub checkpoint: Option<PathBuf>,
    /// torchvision's ImageNet stem instead of the small-image stem.
    #[serde(default)]
    pub imagenet_stem: bool,
    /// Output classes.
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// This network's optimiser, instead of `training.optimizer` (e.g. `adamw` for a ViT).
    pub optimizer: Option<String>,
    /// This network's peak learning rate, instead of `training.lr`.
    pub lr: Option<f64>,
    /// This network's weight decay, instead of `training.weight_decay`.
    pub weight_decay: Option<f64>,
    /// Decoder blocks of a language model trained here (`arch = "gpt"` with a `seed`).
    pub depth: Option<usize>,
    /// This network's objective, instead of `training.objective`: `supervised` or `moco`.
    pub objective: Option<String>,
}

fn default_width() -> usize {
    16
}

fn default_classes() -> usize {
    10
}

/// The sentences of a language-model pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentencesSpec {
    /// `wordnet:N` (N WordNet example sentences) or a text file (one sentence a line,
    /// relative to the pipeline).
    pub source: String,
    /// The wordnet-base .deb (default: data/downloads/wordnet-base_3.0-37_all.deb).
    pub package: Option<PathBuf>,
    /// How each layer's tokens are pooled: `mean`, `cls` or `last`.
    #[serde(default = "default_pooling")]
    pub reduce: String,
    /// Sentences per forward pass.
    #[serde(default = "default_text_batch")]
    pub batch: usize,
}

fn default_pooling() -> String {
    "mean".into()
}

fn default_text_batch() -> usize {
    64
}

/// The stimulus set of a network-based pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StimuliSpec {
    /// `fashion-mnist`, `mnist5k` or `folder`.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// `test` or `train` (Fashion-MNIST).
    #[serde(default = "default_split")]
    pub split: String,
    /// The first `count` images.
    pub count: Option<usize>,
    /// The package (default: data/downloads/<package>, relative to the working directory).
    pub package: Option<PathBuf>,
    /// An out-of-distribution transform, e.g. `contrast:0.1`.
    pub transform: Option<String>,
    /// Seed of random transforms.
    #[serde(default)]
    pub transform_seed: u32,
    /// Out-of-distribution sets shown beside the base set: transforms of it (`contrast:0.1`,
    /// …), `battery` (the default battery) or `mnist5k` (the far shift to MNIST digits).
    /// Every network is extracted and scored on each; accuracy is recorded per set.
    #[serde(default)]
    pub ood: Vec<String>,
    /// Which checkpoints of a trained network are shown the out-of-distribution sets:
    /// `last` (the default: the OOD audit reads final networks only) or `all`.
    #[serde(default = "default_ood_checkpoints")]
    pub ood_checkpoints: String,
    /// `center-pixel`, `mean-pool`, `max-pool`, `flatten`, or `shift-search` (centre pixel
    /// for the listed metrics, full maps kept, and `procrustes-shift` scored beside them).
    #[serde(default = "default_reduce")]
    pub reduce: String,
    /// Keep every layer's full output in the store and reduce it in its own node, so that a
    /// new `reduce` does not rerun the networks (implied by `procrustes-shift`).
    #[serde(default)]
    pub maps: bool,
    /// `dataset = "folder"`: the folder (one subfolder per class), relative to the pipeline.
    pub folder: Option<PathBuf>,
    /// `dataset = "folder"`: shorter side resized to this.
    #[serde(default = "default_resize")]
    pub resize: u32,
    /// `dataset = "folder"`: centre crop.
    #[serde(default = "default_crop")]
    pub crop: u32,
    /// `dataset = "folder"`: keep colour (3 channels; networks then take 3 channels).
    #[serde(default)]
    pub colour: bool,
}

fn default_resize() -> u32 {
    32
}

fn default_crop() -> u32 {
    28
}

fn default_ood_checkpoints() -> String {
    "last".into()
}

fn default_dataset() -> String {
    "fashion-mnist".into()
}

fn default_split() -> String {
    "test".into()
}

fn default_reduce() -> String {
    "center-pixel".into()
}

/// The training recipe of a network-based pipeline (Fashion-MNIST).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSpec {
    /// The Fashion-MNIST package (default: data/downloads/<package>).
    pub package: Option<PathBuf>,
    /// Epochs.
    pub epochs: f64,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate (cosine schedule).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// `sgd` or `adamw`.
    pub optimizer: String,
    /// Random crop and flip.
    pub augment: bool,
    /// Checkpoints compared: steps (`"0"`, `"50"`), epochs (`"0.5e"`) or `"end"`.
    pub checkpoints: Vec<String>,
    /// Train on the first N images only.
    pub train_limit: Option<usize>,
    /// Measure accuracy on the first N test images only.
    pub test_limit: Option<usize>,
    /// `supervised` (cross-entropy on the labels) or `moco` (MoCo v2, no labels).
    pub objective: String,
    /// MoCo's settings (`[training.moco]`), used by networks trained with `moco`.
    pub moco: MocoSpec,
}

/// `[training.moco]`: MoCo v2's settings; `[training.moco.augment]` and
/// `[training.moco.probe]` hold the views' and the probe's ([`crate::models::augment::ViewAugment`],
/// [`crate::models::probe::ProbeConfig`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoSpec {
    /// Output dimension of the projection head.
    pub dim: usize,
    /// Keys in the queue of negatives.
    pub queue: usize,
    /// Momentum of the key encoder.
    pub momentum: f64,
    /// Temperature of the InfoNCE logits.
    pub temperature: f64,
    /// The views.
    pub augment: crate::models::augment::ViewAugment,
    /// The linear probe and k-NN classifier of each checkpoint.
    pub probe: crate::models::probe::ProbeConfig,
}

impl Default for MocoSpec {
    fn default() -> Self {
        let m = crate::models::moco::MocoConfig::default();
        MocoSpec {
            dim: 128,
            queue: m.queue,
            momentum: m.momentum,
            temperature: m.temperature,
            augment: m.augment,
            probe: m.probe,
        }
    }
}

impl MocoSpec {
    /// The training objective these settings describe.
    pub fn config(&self) -> crate::models::moco::MocoConfig {
        crate::models::moco::MocoConfig {
            queue: self.queue,
            momentum: self.momentum,
            temperature: self.temperature,
            augment: self.augment,
            probe: self.probe,
        }
    }
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            package: None,
            epochs: 2.0,
            batch: 128,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            optimizer: "sgd".into(),
            augment: true,
            checkpoints: vec!["end".into()],
            train_limit: None,
            test_limit: None,
            objective: "supervised".into(),
            moco: MocoSpec::default(),
        }
    }
}

/// The recipe of the byte-level decoders a language-model pipeline trains (WordNet's
/// definitions, next-token loss, AdamW, warm-up then cosine decay).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmTrainingSpec {
    /// The wordnet-base package (default: data/downloads/wordnet-base_3.0-37_all.deb).
    pub package: Option<PathBuf>,
    /// Optimisation steps.
    pub steps: u64,
    /// Windows per step.
    pub batch: usize,
    /// Context length in bytes (the decoder's positions).
    pub context: usize,
    /// Attention heads.
    pub heads: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// Weight decay of matrices.
    pub weight_decay: f64,
    /// Checkpoints compared (steps; the last step is always one).
    pub checkpoints: Vec<u64>,
}

impl Default for LmTrainingSpec {
    fn default() -> Self {
        LmTrainingSpec {
            package: None,
            steps: 1000,
            batch: 32,
            context: 64,
            heads: 4,
            lr: 3e-3,
            warmup: 50,
            weight_decay: 0.1,
            checkpoints: Vec::new(),
        }
    }
}

/// Which model pairs to compare.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Pairs {
    /// `"all"`: every pair of distinct models.
    Keyword(String),
    /// Named pairs.
    List(Vec<(String, String)>),
}

impl Default for Pairs {
    fn default() -> Self {
        Pairs::Keyword("all".into())
    }
}

/// A metric of a pipeline; `rotated` (written `permutation:rotated`) scores a Haar-rotated copy
/// of the first model's layer against the second's: the privileged-basis test; `shift`
/// (written `procrustes-shift`) is Procrustes on full feature maps after the best circular
/// spatial shift ([`repflow_kernels::shift`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricChoice {
    /// The metric.
    pub metric: Metric,
    /// Whether the first model's layers are rotated.
    pub rotated: bool,
    /// The spatial-shift search on full maps (with `metric` Procrustes).
    pub shift: bool,
}

impl MetricChoice {
    /// The spatial-shift search.
    pub const SHIFT: MetricChoice = MetricChoice {
        metric: Metric::Procrustes,
        rotated: false,
        shift: true,
    };

    /// `permutation`, `permutation:rotated` or `procrustes-shift`.
    pub fn name(&self) -> String {
        if self.shift {
            crate::nodes::shift_score::NAME.to_string()
        } else if self.rotated {
            format!("{}:rotated", self.metric.name())
        } else {
            self.metric.name().to_string()
        }
    }
}

/// `[statistics]`: which statistical tests run on which scores (each test of each score is
/// one cache node, keyed by its number of draws and seed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatisticsSpec {
    /// Draws of the stimulus-permutation null per score (0: none).
    pub null: usize,
    /// Seed of the null's permutations.
    pub null_seed: u32,
    /// Draws of the stimulus bootstrap per score (0: none; not for rsa).
    pub bootstrap: usize,
    /// The bootstrap interval's confidence level.
    pub ci: f64,
    /// Seed of the bootstrap.
    pub bootstrap_seed: u32,
    /// Haar rotations of the rotation null per permutation / soft-matching score (0: none).
    pub rotations: usize,
    /// Seed of the first rotation.
    pub rotation_seed: u32,
    /// The metrics tested, as `metrics` names them (`permutation`, `permutation:rotated`, …;
    /// empty: every metric of the pipeline).
    pub metrics: Vec<String>,
    /// `last`: only pairs of final checkpoints (and imported or file models); `all`: every pair.
    pub checkpoints: String,
    /// `base`: only pairs on the base stimulus set; `all`: out-of-distribution sets too.
    pub sets: String,
}

impl Default for StatisticsSpec {
    fn default() -> Self {
        StatisticsSpec {
            null: 0,
            null_seed: 0,
            bootstrap: 0,
            ci: 0.95,
            bootstrap_seed: 0,
            rotations: 0,
            rotation_seed: 0,
            metrics: Vec::new(),
            checkpoints: "last".into(),
            sets: "base".into(),
        }
    }
}

/// The metric engine's options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Number of folds.
    pub folds: usize,
    /// Seed of the fold shuffle.
    pub seed: u32,
    /// Whether to shuffle before splitting.
    pub shuffle: bool,
    /// `pearson` or `spearman`.
    pub corr: String,
    /// `train` or `own`.
    pub test_zscore: String,
    /// Ridge penalties.
    pub alphas: Option<Vec<f64>>,
    /// `zeropad` or `pca`.
    pub dim_match: String,
    /// `biased` or `unbiased`.
    pub hsic: String,
    /// `spearman` or `pearson`.
    pub rsa_compare: String,
    /// Seed of the Haar rotations of `:rotated` metrics.
    pub rotation_seed: u32,
    /// Where the metrics' heavy operations run (`auto`, `cpu`, `cuda`, `cuda:N`); `--device`
    /// and `REPFLOW_DEVICE` override it. Not part of any key.
    pub device: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            folds: 5,
            seed: 42,
            shuffle: true,
            corr: "pearson".into(),
            test_zscore: "train".into(),
            alphas: None,
            dim_match: "zeropad".into(),
            hsic: "biased".into(),
            rsa_compare: "spearman".into(),
            rotation_seed: 0,
            device: None,
        }
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j + 1] + 1)
                .min(cur[j] + 1)
                .min(prev[j] + usize::from(ca != *cb));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if reasonably close.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn choice<T: Named>(file: &Path, key: &str, value: &str) -> Result<T, UserError> {
    T::from_name(value).ok_or_else(|| {
        let names = T::names();
        let mut e = UserError::input(format!(
            "{}: `{key}` is `{value}`; expected one of {}",
            file.display(),
            names.join(", ")
        ));
        if let Some(c) = closest(value, names.iter().copied()) {
            e = e.hint(format!("did you mean `{c}`?"));
        }
        e
    })
}

impl PipelineSpec {
    /// Checks every numeric key against its range ([`crate::ranges`]) and the name, naming the
    /// key: bad values are refused when the pipeline is loaded, before anything runs.
    fn check_values(&self) -> Result<(), UserError> {
        use crate::ranges::{at_least_one, Rule, EPOCHS, LEARNING_RATE, MOMENTUM, WEIGHT_DECAY};
        let file = self.path.display().to_string();
        let bad = |why: String| UserError::input(format!("{file}: {why}"));
        let real = |key: &str, rule: Rule, v: f64| rule.check(&format!("`{key}`"), v).map_err(bad);
        let count = |key: &str, v: usize| at_least_one(&format!("`{key}`"), v).map_err(bad);
        match &self.name {
            Some(n) if !is_identifier(n) => {
                return Err(bad(format!(
                    "`name` is `{n}`, which cannot name a results folder"
                ))
                .hint(IDENTIFIER_WORDS))
            }
            None if !is_identifier(&self.name()) => {
                return Err(bad(format!(
                    "the pipeline's file name `{}` cannot name a results folder",
                    self.name()
                ))
                .hint(format!(
                    "set `name = \"...\"` in the file: {IDENTIFIER_WORDS}"
                )))
            }
            _ => {}
        }
        if self
            .results
            .as_ref()
            .is_some_and(|r| r.as_os_str().is_empty())
        {
            return Err(bad("`results` is empty".into())
                .hint("name a folder, or leave it out for results/<name>"));
        }
        for (i, m) in self.model.iter().enumerate() {
            let key = |k: &str| format!("model[{i}].{k} (`{}`)", m.name);
            if m.name.trim().is_empty() {
                return Err(bad(format!("`model[{i}].name` is empty")));
            }
            count(&key("width"), m.width)?;
            count(&key("classes"), m.classes)?;
            if let Some(lr) = m.lr {
                real(&key("lr"), LEARNING_RATE, lr)?;
            }
            if let Some(wd) = m.weight_decay {
                real(&key("weight_decay"), WEIGHT_DECAY, wd)?;
            }
        }
        if let Some(st) = &self.stimuli {
            if let Some(c) = st.count {
                count("stimuli.count", c)?;
            }
            count("stimuli.resize", st.resize as usize)?;
            count("stimuli.crop", st.crop as usize)?;
        }
        if let Some(t) = &self.training {
            real("training.epochs", EPOCHS, t.epochs)?;
            real("training.lr", LEARNING_RATE, t.lr)?;
            real("training.momentum", MOMENTUM, t.momentum)?;
            real("training.weight_decay", WEIGHT_DECAY, t.weight_decay)?;
            count("training.batch", t.batch)?;
            if let Some(l) = t.train_limit {
                count("training.train_limit", l)?;
            }
            if let Some(l) = t.test_limit {
                count("training.test_limit", l)?;
            }
            let m = &t.moco;
            count("training.moco.dim", m.dim)?;
            count("training.moco.queue", m.queue)?;
            real("training.moco.momentum", MOMENTUM, m.momentum)?;
            real(
                "training.moco.temperature",
                crate::ranges::TEMPERATURE,
                m.temperature,
            )?;
            let a = &m.augment;
            let fraction = Rule {
                min: 0.0,
                min_open: false,
                max: 1.0,
                words: "a number in [0, 1]",
            };
            for (k, v) in [
                ("jitter_p", a.jitter_p),
                ("blur_p", a.blur_p),
                ("flip_p", a.flip_p),
                ("brightness", a.brightness),
                ("contrast", a.contrast),
            ] {
                real(&format!("training.moco.augment.{k}"), fraction, v)?;
            }
            for (k, (lo, hi), rule) in [
                ("crop_scale", a.crop_scale, fraction),
                ("crop_ratio", a.crop_ratio, crate::ranges::STD),
                ("blur_sigma", a.blur_sigma, crate::ranges::STD),
            ] {
                let key = format!("training.moco.augment.{k}");
                real(&key, rule, lo)?;
                real(&key, rule, hi)?;
                if lo > hi || (k == "crop_scale" && lo <= 0.0) {
                    return Err(bad(format!(
                        "`{key}` is [{lo}, {hi}]; expected [low, high] with 0 < low <= high"
                    )));
                }
            }
            let p = &m.probe;
            count("training.moco.probe.images", p.images)?;
            count("training.moco.probe.steps", p.steps)?;
            count("training.moco.probe.k", p.k)?;
            real("training.moco.probe.lr", LEARNING_RATE, p.lr)?;
            real(
                "training.moco.probe.weight_decay",
                WEIGHT_DECAY,
                p.weight_decay,
            )?;
            real(
                "training.moco.probe.knn_temperature",
                crate::ranges::TEMPERATURE,
                p.knn_temperature,
            )?;
        }
        let st = &self.statistics;
        real("statistics.ci", crate::ranges::CONFIDENCE, st.ci)?;
        for (key, v, allowed) in [
            ("statistics.checkpoints", &st.checkpoints, ["last", "all"]),
            ("statistics.sets", &st.sets, ["base", "all"]),
        ]
        .into_iter()
        .chain(self.stimuli.as_ref().map(|s| {
            (
                "stimuli.ood_checkpoints",
                &s.ood_checkpoints,
                ["last", "all"],
            )
        })) {
            if !allowed.contains(&v.as_str()) {
                return Err(bad(format!(
                    "`{key}` is `{v}`; expected `{}` or `{}`",
                    allowed[0], allowed[1]
                )));
            }
        }
        for m in &st.metrics {
            if Metric::from_name(m.strip_suffix(":rotated").unwrap_or(m)).is_none() {
                return Err(bad(format!(
                    "`statistics.metrics` names `{m}`; expected one of {} (or one with `:rotated`)",
                    Metric::names().join(", ")
                )));
            }
        }
        if let Some(sl) = &self.slurm {
            if let Some(a) = sl.array_max {
                count("slurm.array_max", a)?;
            }
        }
        Ok(())
    }

    /// The pipeline's name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into())
        })
    }

    /// The folder of the pipeline file (relative paths in it start there).
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Where the score tables go.
    pub fn results_dir(&self) -> PathBuf {
        self.results
            .clone()
            .unwrap_or_else(|| PathBuf::from("results").join(self.name()))
    }

    /// The metrics, checked.
    pub fn metrics(&self) -> Result<Vec<MetricChoice>, UserError> {
        if self.metrics.is_empty() {
            return Err(
                UserError::input(format!("{}: `metrics` is empty", self.path.display())).hint(
                    "list at least one of linear, procrustes, permutation, soft-matching, cka, rsa",
                ),
            );
        }
        self.metrics
            .iter()
            .map(|m| {
                if m == crate::nodes::shift_score::NAME {
                    return Ok(MetricChoice::SHIFT);
                }
                let (name, rotated) = match m.strip_suffix(":rotated") {
                    Some(base) => (base, true),
                    None => (m.as_str(), false),
                };
                let metric = Metric::from_name(name).ok_or_else(|| {
                    let names = Metric::ALL.map(|m| m.name());
                    let mut e = UserError::input(format!(
                        "{}: `metrics` has unknown metric `{m}`; expected one of {} (each may end in `:rotated`), or {}",
                        self.path.display(),
                        names.join(", "),
                        crate::nodes::shift_score::NAME
                    ));
                    if let Some(c) = closest(name, names) {
                        e = e.hint(format!("did you mean `{c}`?"));
                    }
                    e
                })?;
                Ok(MetricChoice { metric, rotated, shift: false })
            })
            .collect()
    }

    /// The metric engine settings.
    pub fn settings(&self) -> Result<Settings, UserError> {
        let o = &self.options;
        let f = &self.path;
        if o.folds < 2 {
            return Err(UserError::input(format!(
                "{}: `options.folds` is {}; it must be at least 2",
                f.display(),
                o.folds
            )));
        }
        let alphas = match &o.alphas {
            None => Settings::default_alphas(),
            Some(a) if a.is_empty() || a.iter().any(|v| !v.is_finite() || *v < 0.0) => {
                return Err(UserError::input(format!(
                    "{}: `options.alphas` must be a non-empty list of finite penalties >= 0",
                    f.display()
                )))
            }
            Some(a) => a.clone(),
        };
        Ok(Settings {
            folds: FoldSpec {
                k: o.folds,
                shuffle_seed: o.shuffle.then_some(o.seed),
            },
            corr: choice(f, "options.corr", &o.corr)?,
            test_zscore: choice(f, "options.test_zscore", &o.test_zscore)?,
            alphas,
            dim_match: choice(f, "options.dim_match", &o.dim_match)?,
            hsic: choice(f, "options.hsic", &o.hsic)?,
            rsa_compare: choice(f, "options.rsa_compare", &o.rsa_compare)?,
        })
    }
}

/// Reads and checks the pipeline file at `path`.
pub fn load(path: &Path) -> Result<PipelineSpec, UserError> {
    let text = read(path)?;
    let (table, includes) = resolve(path, 0)?;
    let mut spec: PipelineSpec = if includes.is_empty() {
        // Parsed from the text again, so that schema errors point at a line.
        toml::from_str(&text).map_err(|e| toml_error(path, &text, e))?
    } else {
        let names: Vec<String> = includes.iter().map(|p| p.display().to_string()).collect();
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                let mut err = toml_error(path, "", e);
                err.message = format!("{} (with `include`: {})", err.message, names.join(", "));
                err
            })?
    };
    spec.path = path.to_path_buf();
    spec.includes = includes;
    spec.check_values()?;
    Ok(spec)
}

/// Whether `name` is an identifier that can name a results folder: letters, digits, `.`, `_`
/// and `-`, not starting with `.` (so never empty, `..`, absolute, or holding a separator).
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What an identifier may hold, for error hints.
pub const IDENTIFIER_WORDS: &str =
    "use letters, digits, `.`, `_` and `-`, not starting with `.` (no `/`, no `..`, not empty)";

/// The table of the file at `path` with its includes merged in (they first, in order, then the
/// file itself), and every file included on the way.
fn resolve(path: &Path, depth: usize) -> Result<(toml::Table, Vec<PathBuf>), UserError> {
    if depth > 8 {
        return Err(UserError::input(format!(
            "{}: includes nest more than 8 deep (does a file include itself?)",
            path.display()
        )));
    }
    let text = read(path)?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| toml_error(path, &text, e))?;
    let names: Vec<String> = match table.remove("include") {
        None => Vec::new(),
        Some(toml::Value::String(s)) => vec![s],
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                other => Err(include_error(path, &other)),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(include_error(path, &other)),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut merged = toml::Table::new();
    let mut files = Vec::new();
    for name in &names {
        let inc = dir.join(name);
        let (t, nested) = resolve(&inc, depth + 1)
            .map_err(|e| e.prefixed(&format!("{}: `include` names `{name}`: ", path.display())))?;
        merge(&mut merged, t);
        files.extend(nested);
        files.push(inc);
    }
    merge(&mut merged, table);
    Ok((merged, files))
}

fn read(path: &Path) -> Result<String, UserError> {
    repflow_engine::files::read_input(path)
        .and_then(|b| {
            String::from_utf8(b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .map_err(|e| {
            UserError::input(format!("cannot read pipeline `{}`: {e}", path.display()))
                .hint("pipelines are TOML files, e.g. pipelines/example.toml")
        })
}

fn include_error(path: &Path, value: &toml::Value) -> UserError {
    UserError::input(format!(
        "{}: `include` is `{value}`; expected a file name or a list of them",
        path.display()
    ))
    .hint("e.g. include = \"shared/fashion-mnist.toml\" (relative to the pipeline)")
}

/// Merges `over` into `base`: tables key by key (recursively), arrays of tables (`[[model]]`)
/// appended, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    let tables = |a: &[toml::Value]| !a.is_empty() && a.iter().all(toml::Value::is_table);
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (Some(toml::Value::Array(b)), toml::Value::Array(o)) if tables(b) && tables(&o) => {
                b.extend(o)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A TOML or schema error with its line and column, and a suggestion for unknown keys.
fn toml_error(path: &Path, text: &str, e: toml::de::Error) -> UserError {
    let message = e.message().trim().to_string();
    // ":line:col" and the offending line, quoted.
    let (place, line_text) = match e.span() {
        Some(s) if !text.is_empty() => {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count();
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            let quoted = text
                .lines()
                .nth(line)
                .map(|t| format!("\n  {} | {t}", line + 1))
                .unwrap_or_default();
            (format!(":{}:{col}", line + 1), quoted)
        }
        _ => (String::new(), String::new()),
    };
    let mut err = UserError::input(format!("{}{place}: {message}{line_text}", path.display()));
    // serde: "unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`"
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            if let Some(c) = closest(field, candidates.iter().copied()) {
                err = err.hint(format!("did you mean `{c}`?"));
            } else if !candidates.is_empty() {
                err = err.hint(format!("valid keys here: {}", candidates.join(", ")));
            }
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_suggests_small_typos() {
        assert_eq!(closest("metircs", ["metrics", "models"]), Some("metrics"));
        assert_eq!(closest("zzz", ["metrics", "models"]), None);
    }
}
