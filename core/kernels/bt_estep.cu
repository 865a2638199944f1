// E-step of the Bradley-Terry mixture (docs/algorithms.md: EM over K preference groups).
//
// For comparison i (chosen response w_i, rejected l_i, made by user u_i) and group k,
//   ll[u, k] = sum over i with u_i = u of  log sigmoid(r_chosen[i, k] - r_rejected[i, k]).
// The host sorts comparisons by user (stable counting sort) and passes CSR offsets
// [users + 1]; one thread per (user, group) sums its segment in comparison order with a
// double accumulator, so the result does not depend on the launch shape and matches the CPU
// reference's summation order.

__device__ __forceinline__ float log_sigmoid(float x) {
    // log s(x) = min(x, 0) - log1p(e^{-|x|}): no overflow for any finite x
    return fminf(x, 0.f) - log1pf(expf(-fabsf(x)));
}

extern "C" __global__ void bt_estep(const float* __restrict__ r_chosen,
                                    const float* __restrict__ r_rejected,
                                    const unsigned int* __restrict__ order,
                                    const unsigned int* __restrict__ offsets,
                                    float* __restrict__ ll, int users, int k) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)users * k) return;
    int u = (int)(idx / k);
    int g = (int)(idx % k);
    double acc = 0.0;
    for (unsigned int p = offsets[u]; p < offsets[u + 1]; ++p) {
        long long i = (long long)order[p] * k + g;
        acc += (double)log_sigmoid(r_chosen[i] - r_rejected[i]);
    }
    ll[idx] = (float)acc;
}
