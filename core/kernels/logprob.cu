// Fused per-token log-probabilities from logits, and their backward.
//
// Forward (one block per row, one read of the logits):
//   logits z [N, V] (f32, or bf16 passed as raw u16 bits), targets t [N],
//   optional reference logits w [N, V] (same dtype).
//   stats [N, 8] (f32) = [log p(t), entropy, KL(p || q), log q(t), max z, log sum e^(z - max z),
//                         max w, log sum e^(w - max w)]
//   where p = softmax(z), q = softmax(w); the reference columns are 0 without a reference.
//   The max and log-sum are kept apart (lse = max + log-sum) because at |z| ~ 1e4 an f32 lse
//   would lose the digits the backward needs.
// Every thread keeps an online state relative to its running max m:
//   s = sum e^(z-m), a = sum e^(z-m) (z-m), c = sum e^(z-m) (w-mw), and for w: mw, sw.
// States merge across threads by rescaling (the online log-sum-exp trick), so no pass
// over the vocabulary is repeated. Reductions are in f32 with per-thread partial sums.
//
// Backward (one block per row): given dL/dstats [N, 8] (only the first three columns carry
// gradient: the reference is a constant and columns 4.. are saved for this backward),
//   dL/dz_j = g0 (1[j=t] - p_j) - g1 p_j (log p_j + H) + g2 p_j (log p_j - log q_j - KL)
//
// The `unfused_*` kernels are the baseline for benchmarks only: one simple kernel per step of
// the naive composition (max, subtract, exp, sum, log-softmax, gather, exp, multiply, sum),
// each writing its intermediate to memory like a framework composition does.

#define NSTATS 8
#define INFINITY __int_as_float(0x7f800000)
#define NAN __int_as_float(0x7fffffff)
#define BLOCK 512
#define UNROLL 4

__device__ __forceinline__ float load_f32(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_bf16(const unsigned short* p, long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ unsigned short to_bf16_bits(float f) {
    // round to nearest even, NaN kept quiet
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

struct State {
    float m, s, a;   // policy: running max, sum e^(z-m), sum e^(z-m)(z-m)
    float mw, sw, c; // reference: running max, sum e^(w-mw), sum e^(z-m)(w-mw)
};

__device__ __forceinline__ State state_init() {
    State st;
    st.m = -INFINITY; st.s = 0.f; st.a = 0.f;
    st.mw = -INFINITY; st.sw = 0.f; st.c = 0.f;
    return st;
}

// Merge o into st. Both must already share the same reference max mw (block_reduce aligns
// them first), so only the policy part needs rescaling.
__device__ __forceinline__ void state_merge(State& st, const State& o) {
    if (o.s > 0.f) {
        if (st.s > 0.f) {
            float m = fmaxf(st.m, o.m);
            float f1 = __expf(st.m - m);
            float f2 = __expf(o.m - m);
            // a is relative to its max: e^(z-m)(z-m) = f e^(z-m0)((z-m0) + (m0-m))
            st.a = f1 * (st.a + (st.m - m) * st.s) + f2 * (o.a + (o.m - m) * o.s);
            st.c = f1 * st.c + f2 * o.c;
            st.s = f1 * st.s + f2 * o.s;
            st.m = m;
        } else {
            st.m = o.m; st.s = o.s; st.a = o.a; st.c = o.c;
        }
    }
    st.sw += o.sw;
}

__device__ __forceinline__ State shfl_state(const State& st, int off) {
    State o;
    o.m = __shfl_xor_sync(0xffffffffu, st.m, off);
    o.s = __shfl_xor_sync(0xffffffffu, st.s, off);
    o.a = __shfl_xor_sync(0xffffffffu, st.a, off);
    o.mw = __shfl_xor_sync(0xffffffffu, st.mw, off);
    o.sw = __shfl_xor_sync(0xffffffffu, st.sw, off);
    o.c = __shfl_xor_sync(0xffffffffu, st.c, off);
    return o;
}

// Block reduction of the per-thread states; the result is valid in thread 0.
__device__ State block_reduce(State st, bool has_ref) {
    __shared__ State sh[BLOCK / 32];
    __shared__ float shmw[BLOCK / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    // First agree on the reference max, so every c and sw is relative to the same mw:
    // (w - mw_own) = (w - mw) + (mw - mw_own)  =>  c' = c + (mw_own - mw) s.
    float mw = st.mw;
    if (has_ref) {
        for (int off = 16; off > 0; off >>= 1) mw = fmaxf(mw, __shfl_xor_sync(0xffffffffu, mw, off));
        if (lane == 0) shmw[warp] = mw;
        __syncthreads();
        mw = -INFINITY;
        for (int i = 0; i < nw; ++i) mw = fmaxf(mw, shmw[i]);
        if (st.sw > 0.f) {
            st.c = st.c + (st.mw - mw) * st.s;
            st.sw = st.sw * __expf(st.mw - mw);
        }
    }
    st.mw = mw;
    for (int off = 16; off > 0; off >>= 1) state_merge(st, shfl_state(st, off));
    if (lane == 0) sh[warp] = st;
    __syncthreads();
    if (warp == 0) {
        if (lane < nw) {
            st = sh[lane];
        } else {
            st = state_init();
            st.mw = mw;
        }
        for (int off = 16; off > 0; off >>= 1) state_merge(st, shfl_state(st, off));
    }
    return st;
}

// One thread's pass over its strided share of a row. Loads are unrolled so several are in
// flight; the max is updated once per group of UNROLL elements, so about one exp per element.
template <typename T, float (*LOAD)(const T*, long long)>
__device__ __forceinline__ void row_fwd(const T* __restrict__ z, const T* __restrict__ w,
                                        const unsigned int* __restrict__ targets,
                                        float* __restrict__ stats, int n, int v) {
    int row = blockIdx.x;
    if (row >= n) return;
    bool has_ref = (w != nullptr);
    const long long base = (long long)row * v;
    State st = state_init();
    // reference max is tracked per thread; c stays relative to the thread's current mw
    for (int j0 = threadIdx.x; j0 < v; j0 += blockDim.x * UNROLL) {
        float zz[UNROLL], ww[UNROLL];
        float gm = -INFINITY, gmw = -INFINITY;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            int j = j0 + u * blockDim.x;
            zz[u] = (j < v) ? LOAD(z, base + j) : -INFINITY;
            ww[u] = (has_ref && j < v) ? LOAD(w, base + j) : -INFINITY;
            gm = fmaxf(gm, zz[u]);
            gmw = fmaxf(gmw, ww[u]);
        }
        if (gm == -INFINITY) continue;
        float m = fmaxf(st.m, gm);
        if (st.s > 0.f) {
            float f = __expf(st.m - m);
            st.a = f * (st.a + (st.m - m) * st.s);
            st.c = f * st.c;
            st.s = f * st.s;
        }
        st.m = m;
        if (has_ref) {
            float mw = fmaxf(st.mw, gmw);
            if (st.sw > 0.f) {
                st.c = st.c + (st.mw - mw) * st.s;
                st.sw = __expf(st.mw - mw) * st.sw;
            }
            st.mw = mw;
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            int j = j0 + u * blockDim.x;
            if (j < v) {
                float d = zz[u] - st.m;
                float e = __expf(d);
                st.s += e;
                // masked (-inf) logits contribute nothing, not 0 * inf
                st.a += (e > 0.f) ? e * d : 0.f;
                if (has_ref) {
                    float dw = ww[u] - st.mw;
                    st.sw += __expf(dw);
                    st.c += (e > 0.f) ? e * dw : 0.f;
                }
            }
        }
    }
    st = block_reduce(st, has_ref);
    if (threadIdx.x == 0) {
        unsigned int t = targets[row];
        float* out = stats + (long long)row * NSTATS;
        float ls = logf(st.s);
        float ent = ls - st.a / st.s;
        float zt = (t < (unsigned int)v) ? LOAD(z, base + t) : NAN;
        out[0] = (zt - st.m) - ls;
        out[1] = ent;
        out[4] = st.m;
        out[5] = ls;
        if (has_ref) {
            float lsw = logf(st.sw);
            float wt = (t < (unsigned int)v) ? LOAD(w, base + t) : NAN;
            out[2] = (st.a - st.c) / st.s - ls + lsw;
            out[3] = (wt - st.mw) - lsw;
            out[6] = st.mw;
            out[7] = lsw;
        } else {
            out[2] = 0.f; out[3] = 0.f; out[6] = 0.f; out[7] = 0.f;
        }
    }
}

extern "C" __global__ void __launch_bounds__(BLOCK) logprob_fwd_f32(
    const float* __restrict__ z, const float* __restrict__ w, const unsigned int* __restrict__ targets,
    float* __restrict__ stats, int n, int v) {
    row_fwd<float, load_f32>(z, w, targets, stats, n, v);
}

extern "C" __global__ void __launch_bounds__(BLOCK) logprob_fwd_bf16(
    const unsigned short* __restrict__ z, const unsigned short* __restrict__ w,
    const unsigned int* __restrict__ targets, float* __restrict__ stats, int n, int v) {
    row_fwd<unsigned short, load_bf16>(z, w, targets, stats, n, v);
}

__device__ __forceinline__ void store_grad(unsigned short* p, long long i, float d) { p[i] = to_bf16_bits(d); }
__device__ __forceinline__ void store_grad(float* p, long long i, float d) { p[i] = d; }

template <typename T, float (*LOAD)(const T*, long long)>
__device__ __forceinline__ void row_bwd(const T* __restrict__ z, const T* __restrict__ w,
                                        const unsigned int* __restrict__ targets,
                                        const float* __restrict__ stats,
                                        const float* __restrict__ gout, T* __restrict__ grad,
                                        int n, int v) {
    int row = blockIdx.x;
    if (row >= n) return;
    const long long base = (long long)row * v;
    const float* st = stats + (long long)row * NSTATS;
    const float* g = gout + (long long)row * NSTATS;
    const float ent = st[1], kl = st[2], m = st[4], ls = st[5], mw = st[6], lsw = st[7];
    const float g0 = g[0], g1 = g[1];
    const float g2 = (w != nullptr) ? g[2] : 0.f;
    const unsigned int t = targets[row];
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        float lp = (LOAD(z, base + j) - m) - ls;
        float p = __expf(lp);
        float d = (p > 0.f) ? -p * (g0 + g1 * (lp + ent)) : 0.f;
        if (g2 != 0.f && p > 0.f) {
            float lq = (LOAD(w, base + j) - mw) - lsw;
            d += g2 * p * (lp - lq - kl);
        }
        if ((unsigned int)j == t) d += g0;
        store_grad(grad, base + j, d);
    }
}

extern "C" __global__ void __launch_bounds__(BLOCK) logprob_bwd_f32(
    const float* __restrict__ z, const float* __restrict__ w, const unsigned int* __restrict__ targets,
    const float* __restrict__ stats, const float* __restrict__ gout, float* __restrict__ grad, int n, int v) {
    row_bwd<float, load_f32>(z, w, targets, stats, gout, grad, n, v);
}

extern "C" __global__ void __launch_bounds__(BLOCK) logprob_bwd_bf16(
    const unsigned short* __restrict__ z, const unsigned short* __restrict__ w,
    const unsigned int* __restrict__ targets, const float* __restrict__ stats,
    const float* __restrict__ gout, unsigned short* __restrict__ grad, int n, int v) {
    row_bwd<unsigned short, load_bf16>(z, w, targets, stats, gout, grad, n, v);
}

// ---- unfused baseline (benchmarks only) ----

// out[r] = max_j x[r, j]   (or sum when is_sum)
extern "C" __global__ void unfused_row_reduce(const float* __restrict__ x, float* __restrict__ out,
                                              int n, int v, int is_sum) {
    __shared__ float sh[BLOCK / 32];
    int row = blockIdx.x;
    if (row >= n) return;
    const float* xr = x + (long long)row * v;
    float acc = is_sum ? 0.f : -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x) acc = is_sum ? acc + xr[j] : fmaxf(acc, xr[j]);
    for (int off = 16; off > 0; off >>= 1) {
        float o = __shfl_xor_sync(0xffffffffu, acc, off);
        acc = is_sum ? acc + o : fmaxf(acc, o);
    }
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float r = is_sum ? 0.f : -INFINITY;
        for (int i = 0; i < (int)(blockDim.x >> 5); ++i) r = is_sum ? r + sh[i] : fmaxf(r, sh[i]);
        out[row] = r;
    }
}

// y[r, j] = x[r, j] - b[r]   (log_b: subtract log b[r] instead)
extern "C" __global__ void unfused_sub_row(const float* __restrict__ x, const float* __restrict__ b,
                                           float* __restrict__ y, long long total, int v, int log_b) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        float bb = b[i / v];
        y[i] = x[i] - (log_b ? logf(bb) : bb);
    }
}

// y = exp(x)
extern "C" __global__ void unfused_exp(const float* __restrict__ x, float* __restrict__ y, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) y[i] = expf(x[i]);
}

// y = -(a * b)
extern "C" __global__ void unfused_neg_mul(const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ y, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) y[i] = -(a[i] * b[i]);
}

// out[r] = x[r, t[r]]
extern "C" __global__ void unfused_gather(const float* __restrict__ x, const unsigned int* __restrict__ t,
                                          float* __restrict__ out, int n, int v) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < n) out[r] = x[(long long)r * v + t[r]];
}
