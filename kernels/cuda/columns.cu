// Column statistics of column-major float64 matrices (rows x cols, leading dimension ld),
// one thread block per column, a tree reduction in shared memory (blockDim.x a power of 2,
// at most 1024).

#define MAX_THREADS 1024

__device__ double block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();
    return total;
}

// Mean and standard deviation (ddof = 0, two passes) of rows [r0, r1) of each column.
extern "C" __global__ void column_stats(const double* a, int ld, int r0, int r1, double* mean, double* std) {
    __shared__ double shared[MAX_THREADS];
    const double* col = a + (long long)blockIdx.x * ld;
    double s = 0.0;
    for (int i = r0 + threadIdx.x; i < r1; i += blockDim.x) s += col[i];
    double mu = block_sum(s, shared) / (double)(r1 - r0);
    double q = 0.0;
    for (int i = r0 + threadIdx.x; i < r1; i += blockDim.x) { double d = col[i] - mu; q += d * d; }
    double var = block_sum(q, shared) / (double)(r1 - r0);
    if (threadIdx.x == 0) { mean[blockIdx.x] = mu; std[blockIdx.x] = sqrt(var); }
}

// Pearson correlation of column j of a with column j of b (both rows x cols, leading
// dimensions lda and ldb: b may be a block of a longer matrix); NaN where either column is
// constant (the CPU path counts those as undefined).
extern "C" __global__ void matched_correlation(const double* a, int lda, const double* b, int ldb, int rows, double* r) {
    __shared__ double shared[MAX_THREADS];
    const double* x = a + (long long)blockIdx.x * lda;
    const double* y = b + (long long)blockIdx.x * ldb;
    double sx = 0.0, sy = 0.0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) { sx += x[i]; sy += y[i]; }
    double mx = block_sum(sx, shared) / rows;
    double my = block_sum(sy, shared) / rows;
    double xy = 0.0, xx = 0.0, yy = 0.0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) {
        double dx = x[i] - mx, dy = y[i] - my;
        xy += dx * dy; xx += dx * dx; yy += dy * dy;
    }
    xy = block_sum(xy, shared);
    xx = block_sum(xx, shared);
    yy = block_sum(yy, shared);
    if (threadIdx.x == 0) r[blockIdx.x] = (xx == 0.0 || yy == 0.0) ? __longlong_as_double(0x7ff8000000000000LL) : xy / sqrt(xx * yy);
}
