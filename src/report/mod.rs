//! The report of a pipeline run, made from its results folder alone (`scores.json`,
//! `models.csv`): the paper's figures ([`figures`], drawn by [`plot`]), the claims table
//! ([`claims`]) and one self-contained HTML page ([`html`]); language-model results get
//! the paper's Figure 8 and its claims instead ([`language`]); supervised and self-supervised
//! networks compared by layer name get the cross-objective figure ([`objectives`]).
//!
//! Files written into the results folder: `report.html`, `claims.json`,
//! `figures/<name>.svg` and `.png`. Unchanged files are not rewritten.

pub mod claims;
pub mod data;
pub mod figures;
pub mod html;
pub mod language;
pub mod objectives;
pub mod plot;

use std::path::{Path, PathBuf};

use crate::error::UserError;
use crate::results_set::write_if_changed;

/// Writes the report of the results in `dir` for pipeline `name`; `settings` is the pipeline's
/// text (with its includes). Returns the page's path.
pub fn write(dir: &Path, name: &str, settings: &str) -> Result<PathBuf, UserError> {
    let results = data::Results::load(dir)?;
    let figures = figures::figures(&results)?;
    let claims = claims::claims(&results);
    let fig_dir = dir.join("figures");
    std::fs::create_dir_all(&fig_dir)
        .map_err(|e| UserError::input(format!("cannot create `{}`: {e}", fig_dir.display())))?;
    for f in &figures {
        write_if_changed(&fig_dir.join(format!("{}.svg", f.name)), f.svg.as_bytes())?;
        write_if_changed(&fig_dir.join(format!("{}.png", f.name)), &f.png)?;
    }
    let claims_json = serde_json::to_string_pretty(&claims).expect("claims serialise");
    write_if_changed(&dir.join("claims.json"), claims_json.as_bytes())?;
    let page = html::page(name, settings, &results, &claims, &figures);
    let path = dir.join("report.html");
    write_if_changed(&path, page.as_bytes())?;
    Ok(path)
}
