//! The choices a score depends on: metric, folds, correlation type and per-metric options;
//! the one place each choice is converted to and from its name ([`Named`]); and which
//! settings each metric reads ([`Metric::reads`], declared beside each metric's code).

use crate::folds::FoldSpec;

/// A choice with a name on the command line, in pipelines, keys and tables: the one place
/// it is converted to and from text.
pub trait Named: Sized + Copy + PartialEq + 'static {
    /// Every value, in documentation order.
    const CHOICES: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// The value called `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES.iter().copied().find(|c| c.name() == name)
    }
    /// Every name, in documentation order.
    fn names() -> Vec<&'static str> {
        Self::CHOICES.iter().map(|c| c.name()).collect()
    }
}

/// A setting a metric may read; each metric declares the ones it reads beside its code, and
/// a score's cache key holds exactly those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// [`Settings::corr`].
    Corr,
    /// [`Settings::test_zscore`].
    TestZscore,
    /// [`Settings::alphas`].
    Alphas,
    /// [`Settings::dim_match`].
    DimMatch,
    /// [`Settings::hsic`].
    Hsic,
    /// [`Settings::rsa_compare`].
    RsaCompare,
}

/// A setting's value in canonical form.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    /// A named choice.
    Name(&'static str),
    /// Numbers as their exact IEEE-754 bit patterns (equal floats, equal keys everywhere).
    Bits(Vec<u64>),
}

impl Setting {
    /// The setting's name (as in a pipeline's `[options]`).
    pub fn name(self) -> &'static str {
        match self {
            Setting::Corr => "corr",
            Setting::TestZscore => "test_zscore",
            Setting::Alphas => "alphas",
            Setting::DimMatch => "dim_match",
            Setting::Hsic => "hsic",
            Setting::RsaCompare => "rsa_compare",
        }
    }

    /// Its value in `settings`.
    pub fn value(self, settings: &Settings) -> SettingValue {
        match self {
            Setting::Corr => SettingValue::Name(settings.corr.name()),
            Setting::TestZscore => SettingValue::Name(settings.test_zscore.name()),
            Setting::Alphas => {
                SettingValue::Bits(settings.alphas.iter().map(|a| a.to_bits()).collect())
            }
            Setting::DimMatch => SettingValue::Name(settings.dim_match.name()),
            Setting::Hsic => SettingValue::Name(settings.hsic.name()),
            Setting::RsaCompare => SettingValue::Name(settings.rsa_compare.name()),
        }
    }
}

/// An alignment metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Cross-validated ridge regression (affine-invariant), both directions.
    Linear,
    /// Cross-validated orthogonal Procrustes map (rotations and reflections), both directions.
    Procrustes,
    /// Cross-validated one-to-one unit matching by exact assignment (equal widths).
    Permutation,
    /// Cross-validated exact optimal transport between units with uniform marginals.
    SoftMatching,
    /// Linear centred kernel alignment on all stimuli.
    Cka,
    /// Correlation between the upper triangles of correlation-distance RDMs.
    Rsa,
}

impl Metric {
    /// An upper estimate of the memory (bytes) scoring two layers of `m` stimuli and `nx`,
    /// `ny` units takes, the two prepared layers and what they keep for later pairs
    /// included. Calibrated on `make bench`'s peak resident memory of `repflow score` at
    /// m = 10,000 (README) with a margin: the layers' data are `8·m·(nx + ny)` bytes; linear's
    /// kept ridge factorisations (every fold, both directions) took ~20 times that (6.4 GB
    /// at n = 2,048), Procrustes 3.5 plus its folds' n × n cross-products, maps and blocks
    /// (all held at once, so that their SVDs are one batch: 1.58 GB peak at n = 2,048), the
    /// matchings and CKA 2.2 plus their n × n matrices, RSA two m × m RDMs (2.2 GB at
    /// m = 10,000 whatever n).
    pub fn working_bytes(self, m: usize, nx: usize, ny: usize) -> u64 {
        let (m, nx, ny) = (m as u64, nx as u64, ny as u64);
        let data = 8 * m * (nx + ny);
        let units = 8 * (nx + ny) * (nx + ny);
        match self {
            Metric::Linear => 20 * data,
            Metric::Procrustes => 4 * data + 5 * units,
            Metric::Permutation | Metric::SoftMatching | Metric::Cka => 3 * data + 2 * units,
            Metric::Rsa => 3 * data + 24 * m * m,
        }
    }

    /// What scoring one more pair adds to memory while a batch of pairs runs
    /// ([`crate::Pair::score_many`], bytes), for `k` folds and layers of `nx` and `ny`
    /// units: Procrustes holds every fold's test block, train cross-product and map
    /// (`nx × ny` each) and their sum until the batch is done; the other metrics score the
    /// pairs one at a time (0).
    pub fn batch_bytes(self, k: usize, nx: usize, ny: usize) -> u64 {
        match self {
            Metric::Procrustes => 8 * (nx * ny) as u64 * (3 * k as u64 + 1),
            _ => 0,
        }
    }

    /// Whether the metric is scored on held-out folds (CKA and RSA use all stimuli).
    pub fn cross_validated(self) -> bool {
        !matches!(self, Metric::Cka | Metric::Rsa)
    }

    /// Every metric, in report order.
    pub const ALL: [Metric; 6] = [
        Metric::Linear,
        Metric::Procrustes,
        Metric::Permutation,
        Metric::SoftMatching,
        Metric::Cka,
        Metric::Rsa,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Linear => "linear",
            Metric::Procrustes => "procrustes",
            Metric::Permutation => "permutation",
            Metric::SoftMatching => "soft-matching",
            Metric::Cka => "cka",
            Metric::Rsa => "rsa",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The settings the metric reads besides the fold split (declared beside its code).
    pub fn reads(self) -> &'static [Setting] {
        match self {
            Metric::Linear => crate::linear::READS,
            Metric::Procrustes => crate::procrustes::READS,
            Metric::Permutation => crate::matching::PERMUTATION_READS,
            Metric::SoftMatching => crate::matching::SOFT_MATCHING_READS,
            Metric::Cka => crate::cka::READS,
            Metric::Rsa => crate::rsa::READS,
        }
    }

    /// Whether the metric is cross-validated over folds.
    pub fn is_cross_validated(self) -> bool {
        !matches!(self, Metric::Cka | Metric::Rsa)
    }
}

impl Named for Metric {
    const CHOICES: &'static [Metric] = &Metric::ALL;
    fn name(self) -> &'static str {
        Metric::name(self)
    }
}

/// Which correlation compares responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corr {
    /// Pearson's r.
    Pearson,
    /// Spearman's rho: Pearson's r on average ranks (ties share the mean rank).
    Spearman,
}

impl Named for Corr {
    const CHOICES: &'static [Corr] = &[Corr::Pearson, Corr::Spearman];
    fn name(self) -> &'static str {
        match self {
            Corr::Pearson => "pearson",
            Corr::Spearman => "spearman",
        }
    }
}

/// Which statistics z-score the source's test fold in the linear metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestZscore {
    /// The train fold's mean and standard deviation (no leakage; the default).
    Train,
    /// The test fold's own mean and standard deviation (as the seed lab's code does).
    Own,
}

impl Named for TestZscore {
    const CHOICES: &'static [TestZscore] = &[TestZscore::Train, TestZscore::Own];
    fn name(self) -> &'static str {
        match self {
            TestZscore::Train => "train",
            TestZscore::Own => "own",
        }
    }
}

/// How Procrustes handles layers of different widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimMatch {
    /// Zero-pad the narrower layer to the wider width (netrep's default).
    ZeroPad,
    /// Reduce the wider layer to the narrower width by PCA fitted on the train fold;
    /// predictions of a reduced target are projected back onto its units.
    Pca,
}

impl Named for DimMatch {
    const CHOICES: &'static [DimMatch] = &[DimMatch::ZeroPad, DimMatch::Pca];
    fn name(self) -> &'static str {
        match self {
            DimMatch::ZeroPad => "zeropad",
            DimMatch::Pca => "pca",
        }
    }
}

/// Which HSIC estimator CKA uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsicEstimator {
    /// The biased estimator `tr(KHLH)` (Kornblith et al., 2019).
    Biased,
    /// The unbiased U-statistic estimator (Song et al., 2012).
    Unbiased,
}

impl Named for HsicEstimator {
    const CHOICES: &'static [HsicEstimator] = &[HsicEstimator::Biased, HsicEstimator::Unbiased];
    fn name(self) -> &'static str {
        match self {
            HsicEstimator::Biased => "biased",
            HsicEstimator::Unbiased => "unbiased",
        }
    }
}

/// Every setting a score depends on. Two layers compared together must share them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Fold count and shuffling.
    pub folds: FoldSpec,
    /// Correlation type for fold scores and matching costs.
    pub corr: Corr,
    /// Z-scoring of the linear metric's test fold.
    pub test_zscore: TestZscore,
    /// Ridge penalties searched by leave-one-out error; `[0]` means least squares.
    pub alphas: Vec<f64>,
    /// Procrustes width matching.
    pub dim_match: DimMatch,
    /// CKA's HSIC estimator.
    pub hsic: HsicEstimator,
    /// How RSA compares the two RDMs' upper triangles.
    pub rsa_compare: Corr,
}

impl Settings {
    /// scikit-learn's `RidgeCV` grid used by the seed lab: `10^-8, 10^-7, ..., 10^8`.
    pub fn default_alphas() -> Vec<f64> {
        // Parsed, not `powi`, so each value is the correctly rounded decimal like numpy's.
        (-8..=8)
            .map(|e: i32| format!("1e{e}").parse().expect("valid literal"))
            .collect()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            folds: FoldSpec::default(),
            corr: Corr::Pearson,
            test_zscore: TestZscore::Train,
            alphas: Settings::default_alphas(),
            dim_match: DimMatch::ZeroPad,
            hsic: HsicEstimator::Biased,
            rsa_compare: Corr::Spearman,
        }
    }
}
