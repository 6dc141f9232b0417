// Convergence of the batched Newton–Schulz polar iteration (cuda/src/batched.rs): the
// largest |a_ij - s * delta_ij| of each q x q column-major matrix of a batch, one thread
// block per matrix (blockDim.x a power of 2, at most 1024). A NaN entry makes the result
// infinite, so that a broken matrix never looks converged.

#define MAX_THREADS 1024
// +infinity (NVRTC has no math.h, so no INFINITY)
#define INF __longlong_as_double(0x7ff0000000000000LL)

extern "C" __global__ void identity_distance(const double* a, int q, double s, double* out) {
    __shared__ double shared[MAX_THREADS];
    const double* m = a + (long long)blockIdx.x * q * q;
    long long n = (long long)q * q;
    double best = 0.0;
    for (long long k = threadIdx.x; k < n; k += blockDim.x) {
        long long i = k % q, j = k / q;
        double d = fabs(m[k] - (i == j ? s : 0.0));
        best = isnan(d) ? INF : fmax(best, d);
        if (isinf(best)) break;
    }
    shared[threadIdx.x] = best;
    __syncthreads();
    for (int t = blockDim.x / 2; t > 0; t >>= 1) {
        if (threadIdx.x < t) shared[threadIdx.x] = fmax(shared[threadIdx.x], shared[threadIdx.x + t]);
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = shared[0];
}
