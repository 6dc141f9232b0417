//! `repflow score X Y`: every requested metric on one pair of activation matrices.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use repflow_kernels::{rotation, Metric, Named, Pair, PreparedLayer, Score, Settings};
use serde_json::Value;

use crate::cli::{MetricSelection, ScoreArgs};
use crate::error::UserError;
use crate::matrix_io::read_matrix;
use crate::score_json::to_json;

/// One metric's outcome: its score, or why it could not be computed.
type Outcome = Result<Score, (Metric, repflow_kernels::KernelError)>;

/// Runs `repflow score` and prints its table or JSON; the exit code is 1 when a metric could
/// not be computed (every other metric is still printed, the failed one with its reason).
pub fn run(args: &ScoreArgs) -> Result<i32, UserError> {
    let settings = args.settings()?;
    let x = read_matrix(&args.x, args.x_key.as_deref())?;
    let y = read_matrix(&args.y, args.y_key.as_deref())?;
    if x.nrows() != y.nrows() {
        return Err(UserError::input(format!(
            "`{}` has {} rows (stimuli) but `{}` has {}",
            args.x.display(),
            x.nrows(),
            args.y.display(),
            y.nrows()
        ))
        .hint("rows must be the same stimuli in the same order in both files"));
    }
    if x.nrows() < settings.folds.k {
        return Err(UserError::input(format!(
            "{} stimuli are fewer than the {} folds",
            x.nrows(),
            settings.folds.k
        ))
        .hint("use --folds with a smaller number, or more stimuli"));
    }
    let x = match args.rotate_x {
        Some(seed) => rotation::rotate(x.as_ref(), seed)?,
        None => x,
    };
    let prepare = |m: &faer::Mat<f64>, path: &Path| {
        PreparedLayer::new(m.as_ref(), &settings)
            .map_err(|e| UserError::from(e).prefixed(&format!("`{}`: ", path.display())))
    };
    let (a, b) = rayon::join(|| prepare(&x, &args.x), || prepare(&y, &args.y));
    let (a, b) = (a?, b?);
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
    let bar = ProgressBar::new(metrics.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} metrics: {msg}")
            .expect("valid progress template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut scores: Vec<Outcome> = Vec::with_capacity(metrics.len());
    for m in metrics {
        bar.set_message(m.name());
        scores.push(pair.score(m).map_err(|e| (m, e)));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let failed = scores.iter().filter(|s| s.is_err()).count();
    if args.json {
        let objects: Vec<Value> = scores
            .iter()
            .map(|s| match s {
                Ok(s) => to_json(s, &a, &b, &settings),
                Err((m, e)) => serde_json::json!({
                    "metric": m.name(), "score": null, "error": e.to_string()
                }),
            })
            .collect();
        let out = if args.metric == MetricSelection::All {
            Value::Array(objects)
        } else {
            objects[0].clone()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON values serialise")
        );
        for n in notes {
            eprintln!("note: {n}");
        }
    } else {
        print_table(args, &scores, &a, &b, &settings, &notes);
    }
    // Exit 2 when a metric cannot be computed on this input (too few stimuli for it), 1 for
    // a numerical failure; each reason goes to stderr as well.
    let mut code = 0;
    for (m, e) in scores.iter().filter_map(|s| s.as_ref().err()) {
        eprintln!("error: {}: {e}", m.name());
        code = code.max(UserError::from(e.clone()).code);
    }
    if failed > 1 {
        eprintln!(
            "error: {failed} of {} metrics could not be computed",
            scores.len()
        );
    }
    Ok(code)
}

fn describe_folds(settings: &Settings) -> String {
    match settings.folds.shuffle_seed {
        Some(seed) => format!("{}-fold, shuffled with seed {seed}", settings.folds.k),
        None => format!("{}-fold, unshuffled", settings.folds.k),
    }
}

fn print_table(
    args: &ScoreArgs,
    scores: &[Outcome],
    a: &PreparedLayer,
    b: &PreparedLayer,
    settings: &Settings,
    notes: &[String],
) {
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
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "metric", "score", "std", "X->Y", "Y->X", "nan_units"
    );
    let dir = |f: &Option<Vec<f64>>| match f {
        Some(v) => format!("{:.4}", repflow_kernels::stats::mean(v)),
        None => "-".into(),
    };
    for s in scores {
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
        println!(
            "{:<14} {:>8.4} {:>8} {:>8} {:>8} {:>9}",
            s.metric.name(),
            s.score,
            std,
            dir(&s.x_to_y),
            dir(&s.y_to_x),
            s.nan_units
        );
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
