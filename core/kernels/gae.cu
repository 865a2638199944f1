// Generalised advantage estimation over a [T, N] rollout (row-major: step t, env i at t*N+i).
//
// Per env, backwards in time (CleanRL's ppo.py recurrence, with terminated and truncated
// kept apart so a truncated episode still bootstraps):
//   delta_t = r_t + gamma * (1 - term_t) * next_value_t - value_t
//   A_t     = delta_t + gamma * lambda * (1 - (term_t | trunc_t)) * A_{t+1},  A_T = 0
//   R_t     = A_t + value_t
// next_value_t is the value of the observation that followed step t: of the next step's
// observation normally, of the final observation at a truncation (the caller supplies it),
// ignored at a termination. flags[t*N+i]: bit 0 = terminated, bit 1 = truncated.
// One thread per env; consecutive threads read consecutive envs, so every load is coalesced.

extern "C" __global__ void gae(const float* __restrict__ rewards, const float* __restrict__ values,
                               const float* __restrict__ next_values,
                               const unsigned char* __restrict__ flags,
                               float* __restrict__ adv, float* __restrict__ ret,
                               int t_len, int n, float gamma, float lambda) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float last = 0.f;
    for (int t = t_len - 1; t >= 0; --t) {
        long long j = (long long)t * n + i;
        unsigned char f = flags[j];
        float not_term = (f & 1u) ? 0.f : 1.f;
        float cont = (f & 3u) ? 0.f : 1.f;
        float delta = rewards[j] + gamma * not_term * next_values[j] - values[j];
        last = delta + gamma * lambda * cont * last;
        adv[j] = last;
        ret[j] = last + values[j];
    }
}
