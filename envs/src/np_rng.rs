//! NumPy's default random stream as Gymnasium seeds it: `SeedSequence(seed)` → `PCG64` →
//! `Generator.uniform`, reimplemented from NumPy's documented algorithms so that
//! `reset(Some(seed))` draws exactly the start state that Gymnasium's `reset(seed=seed)` draws.
//!
//! - `SeedSequence` (NumPy ≥ 1.17, `numpy/random/bit_generator.pyx`, after M. O'Neill's
//!   `seed_seq_fe`): the seed's 32-bit little-endian words are hashed into a pool of four 32-bit
//!   words, then `generate_state(4, uint64)` expands the pool into the 128-bit state and increment.
//! - `PCG64` is PCG-XSL-RR 128/64: a 128-bit LCG, output `rotr64(hi ^ lo, state >> 122)`.
//! - `Generator.random()` / `uniform(low, high)` use `(next_u64 >> 11) · 2⁻⁵³` and
//!   `low + (high − low) · u`.
//!
//! The state is plain data (serde), so environments can checkpoint it.

use serde::{Deserialize, Serialize};

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// PCG64's 128-bit LCG multiplier (NumPy's `PCG_DEFAULT_MULTIPLIER_128`).
const PCG_MULT: u128 = 0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645;

/// SeedSequence's keyed hash: each call advances `hash_const`.
fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// The entropy pool of `numpy.random.SeedSequence(seed)` (no spawn key).
pub fn seed_sequence_pool(seed: u64) -> [u32; POOL_SIZE] {
    // NumPy splits a Python int into 32-bit words, least significant first; 0 is one word.
    let entropy: Vec<u32> = if seed >> 32 == 0 {
        vec![seed as u32]
    } else {
        vec![seed as u32, (seed >> 32) as u32]
    };
    let mut pool = [0u32; POOL_SIZE];
    let mut hc = INIT_A;
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hc);
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                let h = hashmix(pool[src], &mut hc);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    // Entropy longer than the pool would be mixed in here; a u64 seed never is.
    pool
}

/// `SeedSequence(seed).generate_state(n_words, np.uint64)`.
pub fn seed_sequence_state_u64(seed: u64, n_words: usize) -> Vec<u64> {
    let pool = seed_sequence_pool(seed);
    let mut hc = INIT_B;
    let words32: Vec<u32> = (0..2 * n_words)
        .map(|i| {
            let mut v = pool[i % POOL_SIZE] ^ hc;
            hc = hc.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hc);
            v ^ (v >> XSHIFT)
        })
        .collect();
    // The uint32 array is viewed as little-endian uint64.
    words32
        .chunks_exact(2)
        .map(|c| c[0] as u64 | ((c[1] as u64) << 32))
        .collect()
}

/// NumPy's `PCG64` bit generator seeded as `Generator(PCG64(SeedSequence(seed)))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpRng {
    /// 128-bit LCG state, high and low halves.
    state: [u64; 2],
    /// 128-bit odd increment, high and low halves.
    inc: [u64; 2],
}

fn join(h: [u64; 2]) -> u128 {
    ((h[0] as u128) << 64) | h[1] as u128
}

fn split(x: u128) -> [u64; 2] {
    [(x >> 64) as u64, x as u64]
}

impl NpRng {
    /// The stream Gymnasium's `reset(seed=seed)` creates.
    pub fn from_seed(seed: u64) -> Self {
        let w = seed_sequence_state_u64(seed, 4);
        // `pcg64_set_seed(seed=w[0..2], inc=w[2..4])`, the first word being the high half.
        let init_state = ((w[0] as u128) << 64) | w[1] as u128;
        let init_seq = ((w[2] as u128) << 64) | w[3] as u128;
        // pcg_setseq_128_srandom_r: state 0, one step, add the seed, one more step.
        let inc = (init_seq << 1) | 1;
        let mut state: u128 = 0;
        state = state.wrapping_mul(PCG_MULT).wrapping_add(inc);
        state = state.wrapping_add(init_state);
        state = state.wrapping_mul(PCG_MULT).wrapping_add(inc);
        Self {
            state: split(state),
            inc: split(inc),
        }
    }

    /// The 128-bit state and increment, as NumPy's `bit_generator.state` shows them.
    pub fn state_u128(&self) -> (u128, u128) {
        (join(self.state), join(self.inc))
    }

    /// `bit_generator.random_raw()`: advance, then output XSL-RR of the new state.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = join(self.state)
            .wrapping_mul(PCG_MULT)
            .wrapping_add(join(self.inc));
        self.state = split(s);
        let x = ((s >> 64) as u64) ^ (s as u64);
        x.rotate_right((s >> 122) as u32)
    }

    /// `Generator.random()`: a double in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `Generator.uniform(low, high)` for one value.
    #[inline]
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }
}

impl Default for NpRng {
    /// The stream of seed 0: an environment that was never seeded draws from it (Gymnasium would
    /// seed from the OS; maxmin never uses unseeded randomness).
    fn default() -> Self {
        Self::from_seed(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by numpy 2.1.3:
    //   ss = np.random.SeedSequence(s); g = np.random.Generator(np.random.PCG64(ss))
    //   g.bit_generator.state, g.uniform(-0.05, 0.05, size=4), g.random()
    #[test]
    fn seed_sequence_matches_numpy() {
        assert_eq!(
            seed_sequence_pool(42),
            [1662858758, 128880814, 1875164712, 753753205]
        );
        assert_eq!(
            seed_sequence_state_u64(42, 4),
            vec![
                11465652750463011511,
                15382171918060459190,
                9018504550953525431,
                3703499796004394495
            ]
        );
    }

    #[test]
    fn pcg64_state_and_output_match_numpy() {
        let mut r = NpRng::from_seed(42);
        assert_eq!(
            r.state_u128(),
            (
                274674114334540486603088602300644985544,
                332724090758049132448979897138935081983
            )
        );
        assert_eq!(r.next_u64(), 0xc621fbcd16d92688);
        let cases: [(u64, u128, u128, [f64; 4], f64); 4] = [
            (
                0,
                35399562948360463058890781895381311971,
                87136372517582989555478159403783844777,
                [0.01369617, -0.02302133, -0.04590265, -0.04834724],
                0.8132702392002724,
            ),
            (
                1,
                207833532711051698738587646355624148094,
                194290289479364712180083596243593368443,
                [0.00118216, 0.04504637, -0.03558404, 0.04486494],
                0.31183145201048545,
            ),
            (
                4294967301,
                54757004869689011157327405944551088965,
                51930290519656236353899355744647017411,
                [0.02742042, -0.00292773, 0.01958803, 0.03165376],
                0.537936929104719,
            ),
            (
                u64::MAX,
                294777589713777894971777624378622791088,
                73721096341569855656437781216719622637,
                [0.01800267, 0.03453118, -0.04925969, 0.03945681],
                0.12896523452474162,
            ),
        ];
        for (seed, state, inc, unif, next) in cases {
            let mut r = NpRng::from_seed(seed);
            assert_eq!(r.state_u128(), (state, inc), "seed {seed}");
            for u in unif {
                assert!((r.uniform(-0.05, 0.05) - u).abs() < 1e-8, "seed {seed}");
            }
            assert_eq!(r.next_f64(), next, "seed {seed}");
        }
    }
}
