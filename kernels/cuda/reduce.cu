// Activation reduction from full feature maps (batch x channels x height x width, float32,
// row-major as PyTorch and candle store them) to one row per stimulus (batch x channels).
// The same arithmetic, in the same order, as the CPU path (repflow_kernels::maps), so the
// bits are the same: centre pixel (h/2, w/2) floor; the mean sums each row left to right,
// divides by w, sums those top to bottom and divides by h; max over all positions.

extern "C" __global__ void reduce_center_pixel(const float* x, float* out, int n, int c, int h, int w) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    out[i] = x[i * h * w + (long long)(h / 2) * w + w / 2];
}

extern "C" __global__ void reduce_mean_pool(const float* x, float* out, int n, int c, int h, int w) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    const float* map = x + i * h * w;
    float total = 0.0f;
    for (int y = 0; y < h; ++y) {
        float row = 0.0f;
        for (int v = 0; v < w; ++v) row += map[y * w + v];
        total += row / (float)w;
    }
    out[i] = total / (float)h;
}

extern "C" __global__ void reduce_max_pool(const float* x, float* out, int n, int c, int h, int w) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    const float* map = x + i * h * w;
    float best = map[0];
    for (int p = 1; p < h * w; ++p) best = fmaxf(best, map[p]);
    out[i] = best;
}
