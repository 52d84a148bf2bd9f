//! `collatz LIMIT`: prints `collatz limit=LIMIT steps=<total Collatz steps of 1..=LIMIT>`.
//!
//! An integer-only workload. The kernel is the host's
//! `runegrid_examples::kernels::collatz_steps`, included from the same file, so the host can
//! run it natively and predict this output exactly.

#[allow(dead_code)]
#[path = "../../../crates/examples/src/kernels.rs"]
mod kernels;

use std::process::ExitCode;

const USAGE: &str = "usage: collatz LIMIT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [limit] = args.as_slice() else {
        return usage();
    };
    let Ok(limit) = limit.parse::<u64>() else {
        return usage();
    };
    let steps = kernels::collatz_steps(limit);
    println!("{}", kernels::collatz_report(limit, steps));
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
