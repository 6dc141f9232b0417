//! The report renders in a real browser: headless Chromium (Debian's `chromium`) loads
//! `report.html`, the rendered page holds every figure, and a screenshot is not blank.
//! Skipped when no Chromium is installed, unless `REPFLOW_REQUIRE_CHROMIUM=1` (CI sets it).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

#[test]
fn the_report_renders_in_headless_chromium_with_every_figure() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("REPFLOW_REQUIRE_CHROMIUM").is_err(),
            "REPFLOW_REQUIRE_CHROMIUM is set but no chromium is on PATH"
        );
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let t = tempdir();
    for (m, seed) in [("net_a", 1), ("net_b", 2), ("net_c", 3)] {
        write_model(&t.path().join("data"), m, seed, 150, &[6, 9, 12, 8]);
    }
    let results = t.path().join("results");
    let p = write_pipeline(
        &t.path().join("r.toml"),
        &format!(
            "name = \"browser\"\nresults = \"{}\"\nmodels = [\"net_a\", \"net_b\", \"net_c\"]\n\
             metrics = [\"linear\", \"procrustes\", \"permutation\", \"permutation:rotated\"]\n\n[source]\ndir = \"data\"\n",
            s(&results)
        ),
    );
    assert_eq!(run(&p, &t.path().join("cache"), &[])["failed"], 0);
    let page = results.join("report.html");
    let url = format!("file://{}", page.display());
    let common_flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];

    // The DOM after loading: every figure with its inline SVG chart and caption.
    let dom = Command::new(&browser)
        .args(common_flags)
        .args(["--dump-dom", &url])
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    for fig in ["fig1_depth", "fig3_rotation"] {
        assert!(
            dom.contains(&format!("<figure id=\"{fig}\">")),
            "{fig} missing from the rendered DOM"
        );
    }
    assert_eq!(dom.matches("<svg").count(), 2, "inline charts");
    assert!(dom.contains("<figcaption>") && dom.contains("id=\"claims\""));

    // A screenshot: a real image with content (not one flat colour).
    let shot = t.path().join("shot.png");
    let status = Command::new(&browser)
        .args(common_flags)
        .args([
            "--window-size=1200,2400",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .status()
        .expect("chromium runs");
    assert!(status.success());
    let img = image::open(&shot).expect("a PNG screenshot").to_rgb8();
    assert_eq!(img.dimensions(), (1200, 2400));
    let distinct: std::collections::BTreeSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        distinct.len() > 50,
        "only {} colours: a blank page?",
        distinct.len()
    );
    // The charts' series colours are on screen (linear blue, Procrustes orange).
    for colour in [[31u8, 119, 180], [255, 127, 14]] {
        assert!(
            img.pixels().any(|p| p.0 == colour),
            "colour {colour:?} not drawn"
        );
    }
}
