//! `repflow pairs --x A… --y B…`: one metric on every pair of two networks' layers, as a
//! table. The layers are read and prepared once each; Procrustes scores pairs in batches
//! (`Pair::score_many`: every fold of every pair of a batch fitted, then all their maps in
//! one backend call, one batched launch on a GPU), a batch being as many pairs as
//! `--batch-memory` holds of fold products. A GPU holds every layer for the whole run
//! (`Backend::hold`: each sent once, its blocks and predictions computed there).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use repflow_kernels::backend::{self, Held};
use repflow_kernels::batch::chunks;
use repflow_kernels::{KernelError, Metric, Pair, PreparedLayer, Score, Settings};
use serde_json::{json, Value};

use crate::cli::PairsArgs;
use crate::error::UserError;
use crate::matrix_io::{check_finite, read_file_matrix};
use crate::nodes::table::csv_field;
use crate::results_set::write_if_changed;
use crate::score_json::to_json;

/// Runs `repflow pairs`; the exit code is 1 when a pair could not be scored (its row says
/// why; every other pair is still in the table).
pub fn run(args: &PairsArgs) -> Result<i32, UserError> {
    let settings = args.options.settings()?;
    if let Some(out) = &args.out {
        check_writable(out)?;
    }
    let files: Vec<&PathBuf> = args.x.iter().chain(&args.y).collect();
    let layers = prepare_all(&files, &settings)?;
    // a GPU keeps every layer for the whole run, each sent once (nothing on the CPU)
    let _held = Held::new(backend::current(), layers.iter().map(|l| l.data()));
    let (xs, ys) = layers.split_at(args.x.len());
    let index: Vec<(usize, usize)> = (0..xs.len())
        .flat_map(|i| (0..ys.len()).map(move |j| (i, j)))
        .collect();
    let costs: Vec<u64> = index
        .iter()
        .map(|&(i, j)| {
            let k = settings.folds.k;
            args.metric.batch_bytes(k, xs[i].n_units(), ys[j].n_units())
        })
        .collect();
    let mut progress = Progress::new(index.len());
    let mut scores: Vec<Result<Score, KernelError>> = Vec::with_capacity(index.len());
    for batch in chunks(&costs, args.batch_memory) {
        let pairs: Vec<Pair<'_>> = index[batch]
            .iter()
            .map(|&(i, j)| Pair::new(&xs[i], &ys[j]))
            .collect::<Result<_, _>>()
            .map_err(UserError::from)?;
        scores.extend(Pair::score_many(&pairs, args.metric));
        progress.advance(pairs.len());
    }
    progress.finish();
    let rows: Vec<Row<'_>> = index
        .iter()
        .zip(&scores)
        .map(|(&(i, j), s)| Row {
            metric: args.metric,
            x: (&args.x[i], &xs[i]),
            y: (&args.y[j], &ys[j]),
            score: s,
        })
        .collect();
    let text = if args.json {
        let objects: Vec<Value> = rows.iter().map(|r| r.json(&settings)).collect();
        serde_json::to_string_pretty(&objects).expect("JSON values serialise") + "\n"
    } else {
        csv(&rows, &settings)
    };
    match &args.out {
        Some(path) => write_if_changed(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    let failed = scores.iter().filter(|s| s.is_err()).count();
    if failed > 0 {
        eprintln!(
            "note: {failed} of {} pairs could not be scored; their rows say why",
            scores.len()
        );
    }
    Ok(i32::from(failed > 0))
}

/// Refuses an `--out` whose folder does not exist before any work is done (an all-pairs
/// run can take hours; its table must not be lost to a typo at the end).
fn check_writable(out: &Path) -> Result<(), UserError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() && !out.is_dir() {
        return Ok(());
    }
    Err(UserError::input(format!(
        "--out `{}`: {}",
        out.display(),
        if out.is_dir() {
            "is a folder; give a file name".to_string()
        } else {
            format!("the folder `{}` does not exist", parent.display())
        }
    ))
    .hint("create the folder first, or give --out a path in an existing one"))
}

/// Reads, checks and prepares every layer file (in parallel once read); errors name the
/// file.
fn prepare_all(files: &[&PathBuf], settings: &Settings) -> Result<Vec<PreparedLayer>, UserError> {
    let mut rows: Option<(usize, &Path)> = None;
    let mut layers = Vec::with_capacity(files.len());
    for path in files {
        let name = path.display().to_string();
        let m = read_file_matrix(path, None)?;
        let m = m.as_ref();
        check_finite(&name, m)?;
        match rows {
            None => rows = Some((m.nrows(), path)),
            Some((r, first)) if r != m.nrows() => {
                return Err(UserError::input(format!(
                    "`{name}` has {} rows (stimuli) but `{}` has {r}",
                    m.nrows(),
                    first.display()
                ))
                .hint("every layer file must hold the same stimuli in the same order"))
            }
            Some(_) => {}
        }
        super::score::enough_stimuli(m.nrows(), settings.folds.k)
            .map_err(|e| e.prefixed(&format!("`{name}`: ")))?;
        let layer = PreparedLayer::new(m, settings)
            .map_err(|e| UserError::from(e).prefixed(&format!("`{name}`: ")))?;
        layers.push(layer);
    }
    Ok(layers)
}

/// One row of the table.
struct Row<'a> {
    metric: Metric,
    x: (&'a PathBuf, &'a PreparedLayer),
    y: (&'a PathBuf, &'a PreparedLayer),
    score: &'a Result<Score, KernelError>,
}

impl Row<'_> {
    /// `repflow score --json`'s object with `x` and `y`, or `{x, y, error}`.
    fn json(&self, settings: &Settings) -> Value {
        let mut obj = match self.score {
            Ok(s) => to_json(s, self.x.1, self.y.1, settings),
            Err(e) => json!({ "metric": self.metric.name(), "error": e.to_string() }),
        };
        obj["x"] = json!(self.x.0.display().to_string());
        obj["y"] = json!(self.y.0.display().to_string());
        obj
    }
}

/// The rows as CSV: `x, y, metric, score, std, fold_1 … fold_k, n_units_x, n_units_y,
/// nan_units, error`.
fn csv(rows: &[Row<'_>], settings: &Settings) -> String {
    let k = settings.folds.k;
    let mut out = String::from("x,y,metric,score,std");
    for f in 1..=k {
        out.push_str(&format!(",fold_{f}"));
    }
    out.push_str(",n_units_x,n_units_y,nan_units,error\n");
    for r in rows {
        let o = r.json(settings);
        let mut line: Vec<String> = ["x", "y", "metric", "score", "std"]
            .iter()
            .map(|c| csv_field(&o[*c]))
            .collect();
        for f in 0..k {
            line.push(csv_field(&o["fold_scores"][f]));
        }
        for c in ["n_units_x", "n_units_y", "nan_units", "error"] {
            line.push(csv_field(&o[c]));
        }
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// Pairs done so far: a bar on a terminal, else a line on stderr every few seconds (a
/// batch job's log is not silent).
struct Progress {
    bar: ProgressBar,
    total: usize,
    done: usize,
    start: Instant,
    said: Instant,
}

/// How often the log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    fn new(total: usize) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new(total as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} pairs {elapsed} (ETA {eta})")
                .expect("valid progress template"),
        );
        let now = Instant::now();
        Progress {
            bar,
            total,
            done: 0,
            start: now,
            said: now,
        }
    }

    fn advance(&mut self, pairs: usize) {
        self.done += pairs;
        self.bar.inc(pairs as u64);
        if self.bar.is_hidden() && self.said.elapsed() >= LOG_EVERY {
            self.said = Instant::now();
            let seconds = self.start.elapsed().as_secs_f64();
            let eta = seconds / self.done as f64 * (self.total - self.done) as f64;
            eprintln!(
                "pairs: {}/{} done, {seconds:.0} s, ETA {eta:.0} s",
                self.done, self.total
            );
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        if self.bar.is_hidden() {
            eprintln!(
                "pairs: {}/{} done in {:.1} s",
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}
