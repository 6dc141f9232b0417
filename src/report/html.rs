//! `report.html`: one self-contained page (figures inline as SVG) with the pipeline's
//! settings, the claims table, every figure with its caption, the rotation table and links to
//! the score tables.

use super::claims::Claim;
use repflow_kernels::across_scores::PairMean;

use super::data::{depth_groups, over_pairs, plus_minus, Results};
use super::figures::Figure;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{margin-bottom:.2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.yes{color:#176b2c;font-weight:bold}.no{color:#a11;font-weight:bold}.na{color:#777}\
figure{margin:2em 0;border-top:1px solid #ddd;padding-top:1em}figure svg{max-width:100%;height:auto}\
figcaption{font-size:.92em;color:#444;margin-top:.4em}pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.85em}";

/// The rotation table (the paper's Table 1): per architecture, the smallest and largest
/// permutation score over layers in the native and the rotated basis (each layer's mean over
/// seed pairs, ± its standard error where there are three or more seeds).
fn rotation_table(r: &Results) -> Option<String> {
    let last = r.final_step();
    let mut rows = Vec::new();
    let per_layer = |a: &str, metric: &str| -> Vec<PairMean> {
        depth_groups(&r.within(a, last, "base", metric))
            .into_iter()
            .map(|(_, g)| over_pairs(&g, |row| Some(row.score)))
            .filter(|m| m.pairs > 0)
            .collect()
    };
    for a in r.archs() {
        let (native, rotated) = (
            per_layer(&a, "permutation"),
            per_layer(&a, "permutation:rotated"),
        );
        if native.is_empty() || rotated.is_empty() {
            continue;
        }
        let range = |v: &[PairMean]| {
            let by = |x: &&PairMean, y: &&PairMean| x.mean.total_cmp(&y.mean);
            (
                plus_minus(v.iter().min_by(by).expect("layers")),
                plus_minus(v.iter().max_by(by).expect("layers")),
            )
        };
        let ((n0, n1), (r0, r1)) = (range(&native), range(&rotated));
        rows.push(format!(
            "<tr><td>{}</td><td>{n0}</td><td>{n1}</td><td>{r0}</td><td>{r1}</td></tr>",
            escape(&a)
        ));
    }
    (!rows.is_empty()).then(|| {
        let se = if r.has_seed_errors() {
            "<p>Each value: one layer's mean over seed pairs ± its standard error (delete-one-network jackknife).</p>"
        } else {
            ""
        };
        format!(
            "<h2>Permutation score over layers, native and rotated basis</h2>{se}\
             <table><tr><th>architecture</th><th>native min</th><th>native max</th><th>rotated min</th><th>rotated max</th></tr>{}</table>",
            rows.join("")
        )
    })
}

/// The networks' accuracies: per network, the last checkpoint's test accuracy and its accuracy
/// on each stimulus set.
fn accuracy_table(r: &Results) -> Option<String> {
    if r.models.is_empty() {
        return None;
    }
    let last = r.final_step();
    let mut sets: Vec<String> = vec!["base".into()];
    sets.extend(r.ood_sets());
    let mut rows = Vec::new();
    for m in r
        .models
        .iter()
        .filter(|m| m.stimuli == "base" && m.step == last)
    {
        let cells: Vec<String> = sets
            .iter()
            .map(|s| {
                r.accuracy(&m.model, s)
                    .map(|a| format!("{a:.3}"))
                    .unwrap_or_default()
            })
            .collect();
        rows.push(format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.model),
            escape(&m.arch),
            m.test_accuracy
                .map(|a| format!("{a:.3}"))
                .unwrap_or_default(),
            cells.join("</td><td>")
        ));
    }
    Some(format!(
        "<h2>Networks</h2><p>Accuracy (fraction correct) on the test set and on each stimulus set.</p>\
         <table><tr><th>model</th><th>architecture</th><th>test accuracy</th><th>{}</th></tr>{}</table>",
        sets.iter().map(|s| escape(s)).collect::<Vec<_>>().join("</th><th>"),
        rows.join("")
    ))
}

/// The page.
pub fn page(
    name: &str,
    settings: &str,
    r: &Results,
    claims: &[Claim],
    figures: &[Figure],
) -> String {
    let verdict = |c: &Claim| match c.holds {
        Some(true) => "<span class=\"yes\">holds</span>",
        Some(false) => "<span class=\"no\">does not hold</span>",
        None => "<span class=\"na\">not measured</span>",
    };
    let claims_rows: String = claims
        .iter()
        .map(|c| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(c.finding),
                verdict(c),
                escape(&c.measured)
            )
        })
        .collect();
    let figs: String = figures
        .iter()
        .map(|f| {
            format!(
                "<figure id=\"{id}\"><h3>{title}</h3>{svg}<figcaption>{caption} \
                 (<a href=\"figures/{id}.png\">PNG</a>, <a href=\"figures/{id}.svg\">SVG</a>)</figcaption></figure>",
                id = f.name,
                title = escape(&f.title),
                svg = strip_prolog(&f.svg),
                caption = escape(&f.caption)
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>repflow: {n}</title><style>{STYLE}</style></head><body>\
         <h1>repflow audit: {n}</h1>\
         <p>{scores} scores, {figures} figures. Tables: <a href=\"scores.csv\">scores.csv</a>, <a href=\"scores.json\">scores.json</a>{models}, <a href=\"claims.json\">claims.json</a>.</p>\
         <h2>Claims</h2><p>The paper's findings, checked against this pipeline's own numbers.</p>\
         <table id=\"claims\"><tr><th>finding</th><th>here</th><th>measured</th></tr>{claims_rows}</table>\
         {rotation}{accuracy}<h2>Figures</h2>{figs}\
         <h2>Pipeline</h2><pre>{settings}</pre></body></html>\n",
        n = escape(name),
        scores = r.scores.len(),
        figures = figures.len(),
        models = if r.models.is_empty() { "" } else { ", <a href=\"models.csv\">models.csv</a>" },
        rotation = rotation_table(r).unwrap_or_default(),
        accuracy = accuracy_table(r).unwrap_or_default(),
        settings = escape(settings),
    )
}

/// An SVG document without its XML prolog, to inline in HTML.
fn strip_prolog(svg: &str) -> &str {
    svg.find("<svg").map(|i| &svg[i..]).unwrap_or(svg)
}
