//! Every kernel source compiles with NVRTC and defines the entry points the launchers call.
//! NVRTC needs no GPU and no driver (`make test` puts the PyPI wheel's libnvrtc on the
//! library path); without it the test says so and passes, except under CI, where it fails.

use repflow_cuda::{compile, library_present, SOURCES};

#[test]
fn every_kernel_source_compiles_to_ptx_with_its_entry_points() {
    if !library_present("nvrtc") {
        let why = "NVRTC (libnvrtc.so.12) is not on the library path";
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}; CI must provide it"
        );
        eprintln!("skipped: {why} (pip install nvidia-cuda-nvrtc-cu12; see the Makefile)");
        return;
    }
    // Hopper (the H200) and the oldest architecture CUDA 12 still targets.
    for arch in ["compute_90", "compute_52"] {
        for source in SOURCES {
            let ptx = compile(source, Some(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
            let text = ptx.to_src();
            for entry in source.entry_points {
                assert!(
                    text.contains(&format!(".entry {entry}(")),
                    "{arch}: {} has no entry point {entry}",
                    source.file
                );
            }
        }
    }
}

#[test]
fn a_broken_source_is_an_error_naming_its_file() {
    if !library_present("nvrtc") {
        return;
    }
    let broken = repflow_cuda::Source {
        file: "broken.cu",
        text: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        entry_points: &["k"],
    };
    let e = compile(&broken, None).unwrap_err();
    assert!(e.contains("broken.cu"), "{e}");
}

#[test]
fn compiled_kernels_are_cached_by_source_and_architecture_and_checked_when_read() {
    if !library_present("nvrtc") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("repflow-ptx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let source = &SOURCES[0];
    let (first, cached) = repflow_cuda::compile_cached(source, Some("compute_90"), &dir).unwrap();
    assert!(!cached);
    let path = repflow_cuda::cache_path(source, Some("compute_90"), &dir);
    assert!(path.exists());
    let (again, cached) = repflow_cuda::compile_cached(source, Some("compute_90"), &dir).unwrap();
    assert!(cached, "the second compilation is read from the cache");
    assert_eq!(again.to_src(), first.to_src());
    // another architecture is another entry
    assert_ne!(
        repflow_cuda::cache_path(source, Some("compute_52"), &dir),
        path
    );
    // a damaged entry is not trusted: recompiled and rewritten
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(".entry", ".entrx")).unwrap();
    let (fixed, cached) = repflow_cuda::compile_cached(source, Some("compute_90"), &dir).unwrap();
    assert!(!cached);
    assert_eq!(fixed.to_src(), first.to_src());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    std::fs::remove_dir_all(&dir).unwrap();
}
