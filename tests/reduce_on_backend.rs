//! Feature maps are pooled on the installed compute backend (the GPU's reduction kernels
//! when CUDA is installed): a stand-in backend that records the maps it is asked to reduce
//! sees every pooled layer output, and neither a flattened one nor a centre pixel (a view). (It installs a process-wide
//! backend: keep it the only test of its binary that does.)

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use repflow::models::extract::{reduce, Reduction};
use repflow_kernels::backend::{self, Backend, Cpu};
use repflow_kernels::maps::{MapReduction, MapShape};
use repflow_kernels::KernelError;

/// The CPU, recording each reduction it is asked for.
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<(MapShape, MapReduction)>>,
}

impl Backend for Recording {
    fn name(&self) -> String {
        "recording".into()
    }
    fn gram(&self, a: faer::MatRef<'_, f64>) -> faer::Mat<f64> {
        Cpu.gram(a)
    }
    fn cross(&self, a: faer::MatRef<'_, f64>, b: faer::MatRef<'_, f64>) -> faer::Mat<f64> {
        Cpu.cross(a, b)
    }
    fn polar(&self, c: faer::MatRef<'_, f64>) -> Result<faer::Mat<f64>, KernelError> {
        Cpu.polar(c)
    }
    fn sym_eigen(
        &self,
        s: faer::MatRef<'_, f64>,
    ) -> Result<(Vec<f64>, faer::Mat<f64>), KernelError> {
        Cpu.sym_eigen(s)
    }
    fn reduce_maps(
        &self,
        maps: &[f32],
        shape: MapShape,
        how: MapReduction,
    ) -> Result<Vec<f32>, KernelError> {
        self.seen.lock().unwrap().push((shape, how));
        Cpu.reduce_maps(maps, shape, how)
    }
}

#[test]
fn pooled_layer_outputs_go_through_the_installed_backend() {
    let recording = Arc::new(Recording::default());
    backend::install(recording.clone());
    let (n, c, h, w) = (3, 5, 11, 13);
    let t = Tensor::from_vec(
        (0..n * c * h * w)
            .map(|i| (i % 17) as f32)
            .collect::<Vec<_>>(),
        (n, c, h, w),
        &Device::Cpu,
    )
    .unwrap();
    for r in [
        Reduction::MeanPool,
        Reduction::MaxPool,
        Reduction::CenterPixel,
        Reduction::Flatten,
    ] {
        reduce(&t, r, "l").unwrap();
    }
    let shape = MapShape { n, c, h, w };
    assert_eq!(
        *recording.seen.lock().unwrap(),
        vec![
            (shape, MapReduction::MeanPool),
            (shape, MapReduction::MaxPool),
        ]
    );
}
