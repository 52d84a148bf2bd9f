//! Compute kernels shared by the guest programs and the host.
//!
//! The guests under `examples/` include this very file with `#[path = ...]`, so the host can
//! run the exact same code natively (for WASI-vs-native benchmarks, and to know a guest's
//! expected output without running it).
//!
//! Everything here is a pure function of its arguments, uses only `core`/`alloc` and only
//! correctly rounded IEEE-754 operations (`+`, `-`, `*`, comparisons, integer conversions; no
//! `ln`, `sin`, ... whose results depend on the math library), so a wasm build and a native
//! build give bit-identical results.

/// Seed the `matmul` and `montecarlo` guests use when they are given none.
pub const DEFAULT_SEED: u64 = 42;

/// SplitMix64, a tiny deterministic 64-bit pseudo random generator.
///
/// Not cryptographic; it only makes reproducible inputs for the kernels.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is fully determined by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Next 64 pseudo random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform `f64` in `[0, 1)` with 53 random bits (exact, no rounding involved).
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Builds two `n`×`n` matrices with entries in `[-1, 1)` from a [`SplitMix64`] seeded with
/// `seed` (first A, then B, both row-major), multiplies them and returns the sum of all
/// entries of the product, summed in row-major order.
///
/// Each product entry is accumulated over `k` in increasing order, so the result does not
/// depend on the loop order used (i-k-j here, for cache friendliness).
pub fn matmul(n: usize, seed: u64) -> f64 {
    let mut rng = SplitMix64::new(seed);
    let len = n * n;
    let a: Vec<f64> = (0..len).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
    let b: Vec<f64> = (0..len).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
    let mut c = vec![0.0f64; len];
    for i in 0..n {
        let c_row = &mut c[i * n..(i + 1) * n];
        for k in 0..n {
            let a_ik = a[i * n + k];
            let b_row = &b[k * n..(k + 1) * n];
            for (c_ij, b_kj) in c_row.iter_mut().zip(b_row) {
                *c_ij += a_ik * b_kj;
            }
        }
    }
    c.iter().sum()
}

/// The line (without newline) the `matmul` guest prints: the checksum with 17 significant
/// digits, enough to tell any two different `f64` apart.
pub fn matmul_report(n: usize, checksum: f64) -> String {
    format!("matmul n={n} checksum={checksum:.16e}")
}

/// Estimates π by drawing `samples` points in the unit square from a [`SplitMix64`] seeded
/// with `seed` and counting those inside the quarter disc. Returns `0.0` for no samples.
pub fn monte_carlo_pi(samples: u64, seed: u64) -> f64 {
    if samples == 0 {
        return 0.0;
    }
    let mut rng = SplitMix64::new(seed);
    let mut inside = 0u64;
    for _ in 0..samples {
        let x = rng.next_unit();
        let y = rng.next_unit();
        if x * x + y * y < 1.0 {
            inside += 1;
        }
    }
    4.0 * inside as f64 / samples as f64
}

/// The line (without newline) the `montecarlo` guest prints. The value is shown in its
/// shortest form that reads back to the same `f64`.
pub fn monte_carlo_report(samples: u64, pi: f64) -> String {
    format!("pi≈{pi} samples={samples}")
}

/// Total number of Collatz steps (`n → n/2` or `n → 3n+1`) needed to bring every `n` in
/// `1..=limit` down to 1. An integer-only kernel.
pub fn collatz_steps(limit: u64) -> u64 {
    let mut total = 0u64;
    for start in 1..=limit {
        let mut n = start;
        while n != 1 {
            n = if n & 1 == 0 {
                n >> 1
            } else {
                n.wrapping_mul(3).wrapping_add(1)
            };
            total += 1;
        }
    }
    total
}

/// The line (without newline) the `collatz` guest prints.
pub fn collatz_report(limit: u64, steps: u64) -> String {
    format!("collatz limit={limit} steps={steps}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_stream() {
        // Reference values of SplitMix64 seeded with 1234567 (from the reference C code).
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(rng.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn unit_is_in_range() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn matmul_small_cases() {
        assert_eq!(matmul(0, 1), 0.0);
        // 1x1: the product of the two drawn entries.
        let mut rng = SplitMix64::new(9);
        let a = rng.next_unit() * 2.0 - 1.0;
        let b = rng.next_unit() * 2.0 - 1.0;
        assert_eq!(matmul(1, 9), a * b);
    }

    #[test]
    fn matmul_matches_naive_order() {
        let (n, seed) = (7, 3);
        let mut rng = SplitMix64::new(seed);
        let a: Vec<f64> = (0..n * n).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
        let b: Vec<f64> = (0..n * n).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
        let mut sum = 0.0;
        for i in 0..n {
            for j in 0..n {
                let mut c = 0.0;
                for k in 0..n {
                    c += a[i * n + k] * b[k * n + j];
                }
                sum += c;
            }
        }
        assert_eq!(matmul(n, seed).to_bits(), sum.to_bits());
    }

    #[test]
    fn kernels_give_known_values() {
        // Pinned values, the same as the guests print under a WASI runtime: a change here
        // changes the guests' output, hence their digests.
        assert_eq!(
            matmul_report(64, matmul(64, 42)),
            "matmul n=64 checksum=-3.8511187738741171e1"
        );
        assert_eq!(
            monte_carlo_report(100_000, monte_carlo_pi(100_000, 42)),
            "pi≈3.14064 samples=100000"
        );
        assert_eq!(collatz_steps(1), 0);
        assert_eq!(collatz_steps(10), 67);
        assert_eq!(
            collatz_report(1_000_000, collatz_steps(1_000_000)),
            "collatz limit=1000000 steps=131434424"
        );
    }

    #[test]
    fn monte_carlo_is_near_pi() {
        assert_eq!(monte_carlo_pi(0, 1), 0.0);
        let pi = monte_carlo_pi(200_000, 5);
        assert!((pi - core::f64::consts::PI).abs() < 0.02, "{pi}");
    }
}
