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
