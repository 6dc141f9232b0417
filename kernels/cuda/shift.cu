// The spatial-shift search's heavy part: for two conv layers' full maps on the same stimuli
// (a: n x ca x h x w, b: n x cb x h x w, float32 row-major), the cross-products of a with
// every circular shift of b, out[s][i][j] = sum over stimuli and positions p of
// a[., i, p] * b[., j, p + s] (s = dy * w + dx, indices mod h and w), float64 accumulation,
// out row-major (shifts x ca x cb). One thread per (shift, i, j).

extern "C" __global__ void shifted_cross(const float* a, const float* b, int n, int ca, int cb, int h, int w, double* out) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)h * w * ca * cb;
    if (t >= total) return;
    int j = t % cb;
    int i = (t / cb) % ca;
    int s = t / ((long long)ca * cb);
    int dy = s / w, dx = s % w;
    double acc = 0.0;
    for (int k = 0; k < n; ++k) {
        const float* ma = a + ((long long)k * ca + i) * h * w;
        const float* mb = b + ((long long)k * cb + j) * h * w;
        for (int y = 0; y < h; ++y) {
            int ys = (y + dy) % h;
            for (int x = 0; x < w; ++x) acc += (double)ma[y * w + x] * (double)mb[ys * w + (x + dx) % w];
        }
    }
    out[t] = acc;
}
