//! Helpers shared by the kernels' integration tests.

#![allow(dead_code, unused_macros, unused_imports)]

use faer::Mat;
use repflow_kernels::rng::LegacyRandomState;

/// An `m × n` matrix of numpy-legacy Gaussian draws from `seed`, filled row by row.
pub fn gaussian(m: usize, n: usize, seed: u32) -> Mat<f64> {
    let mut rng = LegacyRandomState::new(seed);
    let v: Vec<f64> = (0..m * n).map(|_| rng.gauss()).collect();
    Mat::from_fn(m, n, |i, j| v[i * n + j])
}

/// The [`Backend`](repflow_kernels::backend::Backend) methods every backend must have,
/// delegated to the CPU: for test backends that override only what they observe.
macro_rules! cpu_required_methods {
    () => {
        fn gram(&self, a: ::faer::MatRef<'_, f64>) -> ::faer::Mat<f64> {
            ::repflow_kernels::backend::Cpu.gram(a)
        }
        fn cross(
            &self,
            a: ::faer::MatRef<'_, f64>,
            b: ::faer::MatRef<'_, f64>,
        ) -> ::faer::Mat<f64> {
            ::repflow_kernels::backend::Cpu.cross(a, b)
        }
        fn polar(
            &self,
            c: ::faer::MatRef<'_, f64>,
        ) -> Result<::faer::Mat<f64>, ::repflow_kernels::KernelError> {
            ::repflow_kernels::backend::Cpu.polar(c)
        }
        fn sym_eigen(
            &self,
            s: ::faer::MatRef<'_, f64>,
        ) -> Result<(Vec<f64>, ::faer::Mat<f64>), ::repflow_kernels::KernelError> {
            ::repflow_kernels::backend::Cpu.sym_eigen(s)
        }
    };
}
pub(crate) use cpu_required_methods;
