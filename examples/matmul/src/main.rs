//! `matmul N [SEED]`: multiplies two N×N `f64` matrices drawn from a PRNG seeded with SEED
//! (default 42) and prints `matmul n=N checksum=<sum of the product, 17 significant digits>`.
//!
//! The kernel is the host's `runegrid_examples::kernels::matmul`, included from the same
//! file, so the host can run it natively and predict this output exactly.

#[allow(dead_code)]
#[path = "../../../crates/examples/src/kernels.rs"]
mod kernels;

use std::process::ExitCode;

const USAGE: &str = "usage: matmul N [SEED]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, seed) = match args.as_slice() {
        [n] => (n.parse::<usize>(), Ok(kernels::DEFAULT_SEED)),
        [n, seed] => (n.parse::<usize>(), seed.parse::<u64>()),
        _ => return usage(),
    };
    let (Ok(n), Ok(seed)) = (n, seed) else {
        return usage();
    };
    if n.checked_mul(n).is_none_or(|len| len > (1 << 26)) {
        eprintln!("matmul: n={n} is too large");
        return ExitCode::from(2);
    }
    let checksum = kernels::matmul(n, seed);
    println!("{}", kernels::matmul_report(n, checksum));
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
