//! `repflow shift X Y`: the spatial-shift search ([`repflow_kernels::shift`]) between two
//! conv layers' full maps saved as arrays (stimuli × channels × height × width).

use repflow_kernels::shift::{score, Maps};
use repflow_kernels::{FoldSpec, Folds};

use crate::cli::ShiftArgs;
use crate::error::UserError;
use crate::matrix_io::read_array;
use crate::nodes::shift_score::to_json;

/// Runs `repflow shift` and prints its summary or JSON.
pub fn run(args: &ShiftArgs) -> Result<i32, UserError> {
    let mut notes = Vec::new();
    let mut load = |path: &std::path::Path,
                    key: Option<&str>|
     -> Result<(Vec<f32>, Vec<usize>), UserError> {
        let a = read_array(path, key)?;
        if a.shape.len() != 4 {
            return Err(UserError::input(format!(
                "`{}` has shape {:?}; the shift search needs full maps, stimuli × channels × height × width",
                path.display(),
                a.shape
            ))
            .hint("save a conv layer's output before any pooling (PyTorch's N × C × H × W)"));
        }
        let values: Vec<f32> = a.values.iter().map(|&v| v as f32).collect();
        if values.iter().zip(&a.values).any(|(&f, &d)| f as f64 != d) {
            notes.push(format!(
                "`{}`: float64 values are rounded to float32 (as networks compute them); cross-products are summed in float64",
                path.display()
            ));
        }
        Ok((values, a.shape))
    };
    let (x, sx) = load(&args.x, args.x_key.as_deref())?;
    let (y, sy) = load(&args.y, args.y_key.as_deref())?;
    let named = |e: repflow_kernels::KernelError, what: &std::path::Path| {
        UserError::from(e).prefixed(&format!("`{}`: ", what.display()))
    };
    let mx = Maps::new(&x, &sx).map_err(|e| named(e, &args.x))?;
    let my = Maps::new(&y, &sy).map_err(|e| named(e, &args.y))?;
    if sx[0] != sy[0] {
        return Err(UserError::input(format!(
            "`{}` has {} stimuli but `{}` has {}",
            args.x.display(),
            sx[0],
            args.y.display(),
            sy[0]
        ))
        .hint("rows must be the same stimuli in the same order in both files"));
    }
    let spec = FoldSpec {
        k: args.folds,
        shuffle_seed: (!args.no_shuffle).then_some(args.seed),
    };
    let folds = Folds::new(sx[0], spec)?;
    let settings = repflow_kernels::Settings {
        folds: spec,
        corr: args.corr,
        ..Default::default()
    };
    let s = score(&mx, &my, &folds, args.corr)?;
    if args.json {
        let mut v = to_json(&s, mx.shape(), &settings);
        v["notes"] = notes.clone().into();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("JSON values serialise")
        );
    } else {
        println!(
            "procrustes-shift {:.4} ± {:.4}  (no shift: {:.4})",
            s.score,
            s.std,
            repflow_kernels::stats::mean(&s.unshifted)
        );
        let shifts: Vec<String> = s
            .shifts
            .iter()
            .map(|(dy, dx)| format!("({dy}, {dx})"))
            .collect();
        println!("shift (dy, dx) chosen per fold: {}", shifts.join(" "));
        for n in &notes {
            eprintln!("note: {n}");
        }
    }
    Ok(0)
}
