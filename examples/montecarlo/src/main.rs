//! `montecarlo SAMPLES [SEED]`: estimates π from SAMPLES points drawn from a PRNG seeded with
//! SEED (default 42) and prints `pi≈<value> samples=SAMPLES`.
//!
//! The kernel is the host's `runegrid_examples::kernels::monte_carlo_pi`, included from the
//! same file, so the host can run it natively and predict this output exactly.

#[allow(dead_code)]
#[path = "../../../crates/examples/src/kernels.rs"]
mod kernels;

use std::process::ExitCode;

const USAGE: &str = "usage: montecarlo SAMPLES [SEED]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (samples, seed) = match args.as_slice() {
        [samples] => (samples.parse::<u64>(), Ok(kernels::DEFAULT_SEED)),
        [samples, seed] => (samples.parse::<u64>(), seed.parse::<u64>()),
        _ => return usage(),
    };
    let (Ok(samples), Ok(seed)) = (samples, seed) else {
        return usage();
    };
    let pi = kernels::monte_carlo_pi(samples, seed);
    println!("{}", kernels::monte_carlo_report(samples, pi));
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
