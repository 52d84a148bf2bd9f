//! Instruments and runs one WASI module, printing how it ended and what each step cost.
//!
//! `cargo run --release -p runegrid-sandbox --example run_wasm -- FILE.wasm [ARGS...]`
//! (stdin is passed through; `RUNEGRID_FUEL`, `RUNEGRID_SEED`, `RUNEGRID_NAN=0` adjust the run).

use runegrid_core::Limits;
use runegrid_instrument::{Options, instrument};
use runegrid_sandbox::{Sandbox, TaskRun};
use std::io::{Read as _, Write as _};
use std::time::Instant;

fn main() {
    let mut argv = std::env::args().skip(1);
    let Some(path) = argv.next() else {
        eprintln!("usage: run_wasm FILE.wasm [ARGS...]");
        std::process::exit(2);
    };
    let args: Vec<String> = argv.collect();
    let env_u64 = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let mut stdin = Vec::new();
    if std::env::var_os("RUNEGRID_STDIN").is_some() {
        std::io::stdin().read_to_end(&mut stdin).expect("stdin");
    }
    let opts = Options {
        nan_canonicalization: std::env::var("RUNEGRID_NAN").as_deref() != Ok("0"),
        ..Options::default()
    };

    let t = Instant::now();
    let out = instrument(&bytes, &opts).unwrap_or_else(|e| panic!("{e}"));
    let instrument_time = t.elapsed();
    let sandbox = Sandbox::new().expect("sandbox");
    let t = Instant::now();
    let program = sandbox
        .compile(&out.bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    let compile_time = t.elapsed();
    let limits = Limits {
        fuel: env_u64("RUNEGRID_FUEL", Limits::default().fuel),
        ..Limits::default()
    };
    let task = TaskRun {
        args: &args,
        env: &[],
        stdin: &stdin,
        seed: env_u64("RUNEGRID_SEED", 0),
        limits,
        blobs: &[],
    };
    let t = Instant::now();
    let result = sandbox.run(&program, &task, &mut |chunk| {
        let _ = std::io::stdout().write_all(chunk);
    });
    let run_time = t.elapsed();
    let _ = std::io::stdout().flush();
    match result {
        Ok(run) => {
            eprintln!("--- stderr ---\n{}", String::from_utf8_lossy(&run.stderr));
            eprintln!(
                "status: {}\nfuel: {}\ndigest: {}",
                run.execution.status,
                run.execution.fuel,
                run.execution.digest()
            );
        }
        Err(e) => eprintln!("error: {e}"),
    }
    eprintln!(
        "module: {} -> {} bytes; instrument {instrument_time:?}, compile {compile_time:?}, run {run_time:?}",
        bytes.len(),
        out.bytes.len()
    );
}
