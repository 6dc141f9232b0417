//! `repflow._repflow`: the Rust side of the Python package. It calls the same code as the
//! command line — `repflow score`'s computation, the pipeline runner, the kernels — on numpy
//! arrays; options arrive as the command line's own flags, parsed by its own clap
//! definitions, so defaults, ranges and error messages are the CLI's. The GIL is released
//! while anything is computed.

use std::sync::Arc;

use clap::Parser;
use faer::{Mat, MatRef};
use numpy::{PyArrayMethods, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rayon::prelude::*;
use repflow::cli::{RunArgs, ScoreArgs};
use repflow::error::UserError;
use repflow::nodes::table::RowLabel;
use repflow_kernels::{Metric, Named, Pair, PreparedLayer, Settings};

/// `repflow score`'s flags, parsed without a program name (`X Y --metric …`).
#[derive(Parser)]
#[command(name = "repflow.score", no_binary_name = true)]
struct ScoreFlags {
    #[command(flatten)]
    args: ScoreArgs,
}

/// `repflow run`'s flags, parsed without a program name.
#[derive(Parser)]
#[command(name = "repflow.run", no_binary_name = true)]
struct RunFlags {
    #[command(flatten)]
    args: RunArgs,
}

fn value_error(e: UserError) -> PyErr {
    let text = match &e.hint {
        Some(h) => format!("{} (hint: {h})", e.message),
        None => e.message,
    };
    PyValueError::new_err(text)
}

fn score_flags(argv: Vec<String>) -> PyResult<ScoreArgs> {
    ScoreFlags::try_parse_from(argv)
        .map(|f| f.args)
        .map_err(|e| PyValueError::new_err(e.to_string().trim().to_string()))
}

/// A 2-D float64 or float32 array, borrowed when it is float64 (any strides), converted
/// otherwise.
enum Matrix<'py> {
    Borrowed(PyReadonlyArray2<'py, f64>),
    Converted(Mat<f64>),
}

impl Matrix<'_> {
    fn view(&self) -> MatRef<'_, f64> {
        match self {
            Matrix::Borrowed(a) => {
                let (m, n) = (a.shape()[0], a.shape()[1]);
                let s = a.strides();
                // numpy strides are in bytes; f64 arrays' are multiples of 8 unless the array
                // is a misaligned view, which `extract` refuses
                // SAFETY: the read-only borrow keeps the buffer alive and unmodified for the
                // lifetime of the view; shape and strides are numpy's own.
                unsafe { MatRef::from_raw_parts(a.data(), m, n, s[0] / 8, s[1] / 8) }
            }
            Matrix::Converted(m) => m.as_ref(),
        }
    }
}

fn matrix<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Matrix<'py>> {
    let arr = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| PyValueError::new_err(format!("`{name}` is not a numpy array")))?;
    if arr.ndim() != 2 {
        return Err(PyValueError::new_err(format!(
            "`{name}` is a {}-D array of shape {:?}; expected 2-D (stimuli × units) (hint: reshape it to (n_stimuli, n_units), e.g. x.reshape(len(x), -1))",
            arr.ndim(),
            arr.shape()
        )));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f64>>() {
        if a.strides().iter().all(|s| s % 8 == 0) {
            return Ok(Matrix::Borrowed(a));
        }
        let v = a.as_array();
        return Ok(Matrix::Converted(Mat::from_fn(
            v.nrows(),
            v.ncols(),
            |i, j| v[(i, j)],
        )));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
        let v = a.as_array();
        return Ok(Matrix::Converted(Mat::from_fn(
            v.nrows(),
            v.ncols(),
            |i, j| v[(i, j)] as f64,
        )));
    }
    Err(PyValueError::new_err(format!(
        "`{name}` has dtype {}; expected float32 or float64 (hint: x.astype(numpy.float64))",
        arr.dtype()
    )))
}

/// `repflow score X Y <flags>` on two arrays: the JSON `repflow score --json` prints, and
/// the exit code it would return (0, 1 numerical failure, 2 input a metric cannot score).
#[pyfunction]
fn score(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    flags: Vec<String>,
) -> PyResult<(String, i32)> {
    let mut argv = vec!["X".to_string(), "Y".to_string()];
    argv.extend(flags);
    let args = score_flags(argv)?;
    let (xm, ym) = (matrix(x, "X")?, matrix(y, "Y")?);
    let (xv, yv) = (xm.view(), ym.view());
    py.detach(|| {
        let scored = repflow::commands::score::compute(&args, xv, yv, ("X", "Y"), false)
            .map_err(value_error)?;
        Ok((scored.json(&args).to_string(), scored.exit_code(false)))
    })
}

/// One layer prepared for scoring (its fold statistics and factorisations, computed once
/// and shared by every pair it takes part in).
#[pyclass(frozen)]
struct Layer {
    inner: Arc<PreparedLayer>,
}

/// The metric engine's settings from `repflow score`'s flags.
fn settings_of(flags: Vec<String>) -> PyResult<(ScoreArgs, Settings)> {
    let mut argv = vec!["X".to_string(), "Y".to_string()];
    argv.extend(flags);
    let args = score_flags(argv)?;
    let settings = args.settings().map_err(value_error)?;
    Ok((args, settings))
}

/// Prepares named layers (name, array) with the settings of `flags`, in parallel.
#[pyfunction]
fn prepare(
    py: Python<'_>,
    layers: Vec<(String, Bound<'_, PyAny>)>,
    flags: Vec<String>,
) -> PyResult<Vec<Layer>> {
    let (_, settings) = settings_of(flags)?;
    let matrices = layers
        .iter()
        .map(|(name, a)| matrix(a, name))
        .collect::<PyResult<Vec<_>>>()?;
    let views: Vec<(&str, MatRef<'_, f64>)> = layers
        .iter()
        .zip(&matrices)
        .map(|((name, _), m)| (name.as_str(), m.view()))
        .collect();
    py.detach(|| {
        views
            .par_iter()
            .map(|(name, v)| {
                repflow::matrix_io::check_finite(name, *v)?;
                PreparedLayer::new(*v, &settings)
                    .map(|l| Layer { inner: Arc::new(l) })
                    .map_err(|e| UserError::from(e).prefixed(&format!("`{name}`: ")))
            })
            .collect::<Result<Vec<_>, UserError>>()
    })
    .map_err(value_error)
}

/// Scores layer pairs: each `(a, b, metric, label)` with `label` the score table's row
/// label as JSON (`model_a`, `layer_a`, `depth_a`, …); returns the table's rows as JSON, a
/// failed score as a row with its `error`. Rayon-parallel over the pairs.
#[pyfunction]
fn score_pairs(
    py: Python<'_>,
    pairs: Vec<(Bound<'_, Layer>, Bound<'_, Layer>, String, String)>,
    flags: Vec<String>,
) -> PyResult<Vec<String>> {
    let (_, settings) = settings_of(flags)?;
    let work = pairs
        .iter()
        .map(|(a, b, metric, label)| {
            let m = Metric::from_name(metric).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "unknown metric `{metric}`; expected one of {}",
                    Metric::names().join(", ")
                ))
            })?;
            let label: RowLabel = serde_json::from_str(label)
                .map_err(|e| PyValueError::new_err(format!("bad row label: {e}")))?;
            Ok((a.get().inner.clone(), b.get().inner.clone(), m, label))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(py.detach(|| {
        work.par_iter()
            .map(|(a, b, m, label)| {
                let v = match Pair::new(a, b).and_then(|p| p.score(*m)) {
                    Ok(s) => repflow::score_json::to_json(&s, a, b, &settings),
                    Err(e) => serde_json::json!({
                        "metric": m.name(), "score": null, "error": e.to_string()
                    }),
                };
                label.row(&v).to_string()
            })
            .collect()
    }))
}

/// The layer pairs `(i, j)` of models with `a` and `b` layers (`all`, or matched by depth),
/// and each layer's normalised depth — the pipelines' rules.
#[pyfunction]
fn layer_pairs(a: usize, b: usize, all: bool) -> (Vec<(usize, usize)>, Vec<f64>, Vec<f64>) {
    use repflow::pipeline::layer_pairs::{layer_pairs, normalised_depth};
    (
        layer_pairs(a, b, all),
        (0..a).map(|i| normalised_depth(i, a)).collect(),
        (0..b).map(|j| normalised_depth(j, b)).collect(),
    )
}

/// `repflow run PIPELINE <flags>` in this process (local executor): the exit code and the
/// run's summary as JSON.
#[pyfunction]
fn run(py: Python<'_>, flags: Vec<String>) -> PyResult<(i32, String)> {
    let args = RunFlags::try_parse_from(flags)
        .map(|f| f.args)
        .map_err(|e| PyValueError::new_err(e.to_string().trim().to_string()))?;
    if args.executor != "local" {
        return Err(PyValueError::new_err(
            "repflow.run runs pipelines in this process; for Slurm use the `repflow run --jobs slurm` command",
        ));
    }
    py.detach(|| repflow::commands::run::run_summary(&args, false))
        .map(|(code, v)| (code, v.to_string()))
        .map_err(|e| {
            if e.code == 2 {
                value_error(e)
            } else {
                PyRuntimeError::new_err(e.message)
            }
        })
}

/// The extension module.
#[pymodule]
fn _repflow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(prepare, m)?)?;
    m.add_function(wrap_pyfunction!(score_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(layer_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_class::<Layer>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
