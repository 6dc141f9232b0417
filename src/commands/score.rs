//! `repflow score X Y`: every requested metric on one pair of activation matrices.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use repflow_kernels::{rotation, Metric, Named, Pair, PreparedLayer, Score, Settings};
use serde_json::Value;

use crate::cli::{MetricSelection, ScoreArgs};
use crate::error::UserError;
use crate::matrix_io::{check_finite, read_file_matrix};
use crate::score_json::{draws_json, interval_json, to_json};
use repflow_kernels::inference::{self, Draws, Interval};

/// One metric's outcome: its score, or why it could not be computed.
type Outcome = Result<Score, (Metric, repflow_kernels::KernelError)>;

/// Runs `repflow score` and prints its table or JSON; the exit code is 1 when a metric could
/// not be computed (every other metric is still printed, the failed one with its reason).
pub fn run(args: &ScoreArgs) -> Result<i32, UserError> {
    let x = read_file_matrix(&args.x, args.x_key.as_deref())?;
    let y = read_file_matrix(&args.y, args.y_key.as_deref())?;
    let names = (args.x.display().to_string(), args.y.display().to_string());
    let (a, b) = prepare(args, x.as_ref(), y.as_ref(), (&names.0, &names.1))?;
    // the prepared layers hold everything the metrics read: the raw matrices can go
    drop((x, y));
    let scored = score_prepared(args, a, b, true)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&scored.json(args)).expect("JSON values serialise")
        );
        for n in &scored.notes {
            eprintln!("note: {n}");
        }
    } else {
        print_table(args, &scored);
    }
    Ok(scored.exit_code(true))
}

/// Every requested metric and statistic of one pair of matrices, as `repflow score` computes
/// them (the Python package calls this with in-memory arrays).
pub struct Scored {
    /// X, prepared.
    pub a: PreparedLayer,
    /// Y, prepared.
    pub b: PreparedLayer,
    /// The metric engine's settings.
    pub settings: Settings,
    scores: Vec<Outcome>,
    inference: Vec<Inference>,
    /// Notes on metrics left out.
    pub notes: Vec<String>,
}

/// Scores `x` against `y` (named `names` in messages) with `args`' metrics, settings and
/// statistics; `progress` shows a bar on a terminal.
pub fn compute(
    args: &ScoreArgs,
    x: faer::MatRef<'_, f64>,
    y: faer::MatRef<'_, f64>,
    names: (&str, &str),
    progress: bool,
) -> Result<Scored, UserError> {
    let (a, b) = prepare(args, x, y, names)?;
    score_prepared(args, a, b, progress)
}

/// Refuses fewer stimuli (rows) than folds.
pub(crate) fn enough_stimuli(rows: usize, k: usize) -> Result<(), UserError> {
    if rows >= k {
        return Ok(());
    }
    Err(
        UserError::input(format!("{rows} stimuli are fewer than the {k} folds"))
            .hint("use --folds with a smaller number, or more stimuli"),
    )
}

/// Checks `x` and `y` (named `names` in messages) and prepares both layers with `args`'
/// settings (X rotated first with `--rotate-x`).
fn prepare(
    args: &ScoreArgs,
    x: faer::MatRef<'_, f64>,
    y: faer::MatRef<'_, f64>,
    names: (&str, &str),
) -> Result<(PreparedLayer, PreparedLayer), UserError> {
    let settings = args.settings()?;
    check_finite(names.0, x)?;
    check_finite(names.1, y)?;
    if x.nrows() != y.nrows() {
        return Err(UserError::input(format!(
            "`{}` has {} rows (stimuli) but `{}` has {}",
            names.0,
            x.nrows(),
            names.1,
            y.nrows()
        ))
        .hint("rows must be the same stimuli in the same order in both files"));
    }
    enough_stimuli(x.nrows(), settings.folds.k)?;
    let rotated;
    let x = match args.rotate_x {
        Some(seed) => {
            rotated = rotation::rotate(x, seed)?;
            rotated.as_ref()
        }
        None => x,
    };
    let prepare = |m: faer::MatRef<'_, f64>, name: &str| {
        PreparedLayer::new(m, &settings)
            .map_err(|e| UserError::from(e).prefixed(&format!("`{name}`: ")))
    };
    let (a, b) = rayon::join(|| prepare(x, names.0), || prepare(y, names.1));
    let (a, b) = (a?, b?);
    // one pair and no statistics: each layer's ridge factorisation of a fold is used once,
    // so it is not kept (at n = 2,048 the kept ones are most of the linear metric's memory)
    if args.null.is_none() && args.bootstrap.is_none() && args.rotations.is_none() {
        return Ok((a.single_use(), b.single_use()));
    }
    Ok((a, b))
}

/// Every requested metric and statistic of two prepared layers.
fn score_prepared(
    args: &ScoreArgs,
    a: PreparedLayer,
    b: PreparedLayer,
    progress: bool,
) -> Result<Scored, UserError> {
    let settings = a.settings().clone();
    let pair = Pair::new(&a, &b)?;

    let mut metrics = args.metrics();
    let mut notes = Vec::new();
    if args.metric == MetricSelection::All && a.n_units() != b.n_units() {
        metrics.retain(|m| *m != Metric::Permutation);
        notes.push(format!(
            "permutation skipped: widths differ ({} vs {} units); soft-matching generalises it",
            a.n_units(),
            b.n_units()
        ));
    }
    // A progress bar on a terminal (hidden when stderr is redirected): large layers take
    // seconds to minutes per metric.
    let bar = if progress {
        ProgressBar::new(metrics.len() as u64)
    } else {
        ProgressBar::hidden()
    }
    .with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} metrics: {msg}")
            .expect("valid progress template"),
    );
    if progress {
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
    }
    let mut scores: Vec<Outcome> = Vec::with_capacity(metrics.len());
    for m in metrics {
        bar.set_message(m.name());
        scores.push(pair.score(m).map_err(|e| (m, e)));
        bar.inc(1);
    }
    let inference = infer(args, &scores, &a, &b, &bar)?;
    bar.finish_and_clear();
    drop(pair);
    Ok(Scored {
        a,
        b,
        settings,
        scores,
        inference,
        notes,
    })
}

impl Scored {
    /// The JSON `repflow score --json` prints: one object, or an array for `--metric all`.
    pub fn json(&self, args: &ScoreArgs) -> Value {
        let objects: Vec<Value> = self
            .scores
            .iter()
            .zip(&self.inference)
            .map(|(s, inf)| match s {
                Ok(s) => {
                    let mut o = to_json(s, &self.a, &self.b, &self.settings);
                    inf.extend_json(s.score, &mut o);
                    o
                }
                Err((m, e)) => serde_json::json!({
                    "metric": m.name(), "score": null, "error": e.to_string()
                }),
            })
            .collect();
        if args.metric == MetricSelection::All {
            Value::Array(objects)
        } else {
            objects[0].clone()
        }
    }

    /// 0, or 2 when a metric cannot be computed on this input (too few stimuli for it) and 1
    /// for a numerical failure; with `report`, each reason goes to stderr.
    pub fn exit_code(&self, report: bool) -> i32 {
        let failed: Vec<_> = self
            .scores
            .iter()
            .filter_map(|s| s.as_ref().err())
            .collect();
        let mut code = 0;
        for (m, e) in &failed {
            if report {
                eprintln!("error: {}: {e}", m.name());
            }
            code = code.max(UserError::from(e.clone()).code);
        }
        if report && failed.len() > 1 {
            eprintln!(
                "error: {} of {} metrics could not be computed",
                failed.len(),
                self.scores.len()
            );
        }
        code
    }
}

/// What `--null`, `--bootstrap` and `--rotations` found for one metric.
#[derive(Default)]
struct Inference {
    null: Option<Draws>,
    interval: Option<Interval>,
    rotation: Option<Draws>,
    /// Why a requested statistic could not be computed for this metric.
    notes: Vec<(&'static str, String)>,
}

impl Inference {
    /// Adds `null`, `chance_corrected`, `bootstrap` and `rotation_null` to a score's object.
    fn extend_json(&self, score: f64, o: &mut Value) {
        if let Some(d) = &self.null {
            o["null"] = draws_json(d);
            o["chance_corrected"] = (score - d.mean).into();
        }
        if let Some(i) = &self.interval {
            o["bootstrap"] = interval_json(i);
        }
        if let Some(d) = &self.rotation {
            o["rotation_null"] = draws_json(d);
        }
        for (field, why) in &self.notes {
            o[*field] = serde_json::json!({ "error": why });
        }
    }
}

/// Computes the requested statistics of every scored metric.
fn infer(
    args: &ScoreArgs,
    scores: &[Outcome],
    a: &PreparedLayer,
    b: &PreparedLayer,
    bar: &ProgressBar,
) -> Result<Vec<Inference>, UserError> {
    let basis_metrics = [Metric::Permutation, Metric::SoftMatching];
    if args.rotations.is_some()
        && !scores
            .iter()
            .any(|s| s.as_ref().is_ok_and(|s| basis_metrics.contains(&s.metric)))
    {
        return Err(UserError::input(
            "--rotations tests for a privileged basis with the permutation or soft-matching metric; neither is scored",
        )
        .hint("add --metric permutation (equal widths) or --metric soft-matching"));
    }
    let mut out = Vec::with_capacity(scores.len());
    for s in scores {
        let mut inf = Inference::default();
        let Ok(s) = s else {
            out.push(inf);
            continue;
        };
        let m = s.metric;
        if let Some(n) = args.null {
            bar.set_message(format!("{}: null, {n} permutations", m.name()));
            match inference::permutation_null(a, b, m, n, args.null_seed) {
                Ok(v) => inf.null = Some(Draws::new(s.score, v, args.null_seed)),
                Err(e) => inf.notes.push(("null", e.to_string())),
            }
        }
        if let Some(n) = args.bootstrap {
            bar.set_message(format!("{}: bootstrap, {n} draws", m.name()));
            match inference::bootstrap(a, b, m, n, args.bootstrap_seed, args.ci) {
                Ok(i) => inf.interval = Some(i),
                Err(e) => inf.notes.push(("bootstrap", e.to_string())),
            }
        }
        if let (Some(r), true) = (args.rotations, basis_metrics.contains(&m)) {
            bar.set_message(format!("{}: rotation null, {r} rotations", m.name()));
            match inference::rotation_null(a, b, m, r, args.rotation_seed) {
                Ok(v) => inf.rotation = Some(Draws::new(s.score, v, args.rotation_seed)),
                Err(e) => inf.notes.push(("rotation_null", e.to_string())),
            }
        }
        out.push(inf);
    }
    Ok(out)
}

fn describe_folds(settings: &Settings) -> String {
    match settings.folds.shuffle_seed {
        Some(seed) => format!("{}-fold, shuffled with seed {seed}", settings.folds.k),
        None => format!("{}-fold, unshuffled", settings.folds.k),
    }
}

fn print_table(args: &ScoreArgs, scored: &Scored) {
    let Scored {
        a,
        b,
        settings,
        scores,
        inference,
        notes,
    } = scored;
    let layer = |path: &Path, l: &PreparedLayer| {
        format!(
            "{} ({} stimuli × {} units, {} constant units dropped)",
            path.display(),
            l.n_rows(),
            l.n_units_in(),
            l.dropped().len()
        )
    };
    println!("X: {}", layer(&args.x, a));
    println!("Y: {}", layer(&args.y, b));
    if let Some(seed) = args.rotate_x {
        println!("X rotated by a Haar-random rotation (seed {seed})");
    }
    println!(
        "{}, {} correlation",
        describe_folds(settings),
        settings.corr.name()
    );
    println!();
    let with_p = inference
        .iter()
        .any(|i| i.null.is_some() || i.rotation.is_some());
    let with_ci = inference.iter().any(|i| i.interval.is_some());
    print!(
        "{:<14} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "metric", "score", "std", "X->Y", "Y->X", "nan_units"
    );
    if with_p {
        print!(" {:>8} {:>9} {:>8}", "null", "p", "rot_p");
    }
    if with_ci {
        print!(" {:>19}", "CI");
    }
    println!();
    let dir = |f: &Option<Vec<f64>>| match f {
        Some(v) => format!("{:.4}", repflow_kernels::stats::mean(v)),
        None => "-".into(),
    };
    for (s, inf) in scores.iter().zip(inference) {
        let s = match s {
            Ok(s) => s,
            Err((m, e)) => {
                println!("{:<14} {:>8} error: {e}", m.name(), "NaN");
                continue;
            }
        };
        let std = s
            .std
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into());
        print!(
            "{:<14} {:>8.4} {:>8} {:>8} {:>8} {:>9}",
            s.metric.name(),
            s.score,
            std,
            dir(&s.x_to_y),
            dir(&s.y_to_x),
            s.nan_units
        );
        let cell =
            |v: Option<f64>, p: usize| v.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into());
        if with_p {
            print!(
                " {:>8} {:>9} {:>8}",
                cell(inf.null.as_ref().map(|d| d.mean), 4),
                cell(inf.null.as_ref().map(|d| d.p_value), 5),
                cell(inf.rotation.as_ref().map(|d| d.p_value), 4),
            );
        }
        if with_ci {
            let ci = inf
                .interval
                .as_ref()
                .map(|i| format!("[{:.4}, {:.4}]", i.low, i.high))
                .unwrap_or_else(|| "-".into());
            print!(" {ci:>19}");
        }
        println!();
        if let Some(ang) = &s.angular_distance {
            println!(
                "{:<14} {:>8.4} rad (netrep angular distance, mean over folds)",
                "",
                repflow_kernels::stats::mean(ang)
            );
        }
    }
    for n in notes {
        println!("note: {n}");
    }
}
