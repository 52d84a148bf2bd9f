//! Measurements, not checks: the cost of the Rune runner in the sandbox. Ignored by default;
//! run with
//!
//! ```text
//! cargo test --release -p runegrid-runner --test measure -- --ignored --nocapture
//! ```

use runegrid_core::{ExecStatus, Limits};
use runegrid_sandbox::{Sandbox, TaskRun};
use std::time::{Duration, Instant};

#[test]
#[ignore]
fn trivial_call_cost() {
    println!("-- as built");
    measure(runegrid_runner::RUNE_RUNNER);
    let t = Instant::now();
    let prepared =
        runegrid_sandbox::preinitialize(runegrid_runner::RUNE_RUNNER, runegrid_runner::INIT_FUNC)
            .unwrap();
    println!(
        "-- pre-initialized ({} bytes, in {:?})",
        prepared.len(),
        t.elapsed()
    );
    measure(&prepared);
}

fn measure(module: &[u8]) {
    let t = Instant::now();
    let instrumented =
        runegrid_instrument::instrument(module, &runegrid_instrument::Options::default()).unwrap();
    println!(
        "module: {} bytes, instrumented {} bytes in {:?}; initial memory {} pages",
        module.len(),
        instrumented.bytes.len(),
        t.elapsed(),
        initial_pages(module)
    );
    let sandbox = Sandbox::new().unwrap();
    let t = Instant::now();
    let program = sandbox.compile(&instrumented.bytes).unwrap();
    println!("compiled (cranelift) in {:?}", t.elapsed());
    let stdin = runegrid_runner::call_stdin(
        "pub fn add(a, b) { a + b }",
        "add",
        &[serde_json::json!(1), serde_json::json!(2)],
    );
    let mut times: Vec<Duration> = Vec::new();
    let mut fuel = 0;
    for _ in 0..20 {
        let task = TaskRun {
            args: &[],
            env: &[],
            blobs: &[],
            stdin: stdin.as_bytes(),
            seed: 7,
            limits: Limits::default(),
        };
        let t = Instant::now();
        let out = sandbox.run(&program, &task, &mut |_| {}).unwrap();
        times.push(t.elapsed());
        assert_eq!(
            out.execution.status,
            ExecStatus::Exited { code: 0 },
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.execution.stdout, b"{\"ok\":3}\n");
        fuel = out.execution.fuel;
    }
    times.sort();
    println!(
        "trivial call: fuel {fuel}, median {:?}, best {:?}",
        times[times.len() / 2],
        times[0]
    );
    // Where the fuel goes: stop after reading stdin, after building the context (an unknown
    // function), and a call of a bigger script.
    let bigger = format!(
        "{}\npub fn main() {{ 0 }}",
        (0..50)
            .map(|i| format!(
                "pub fn f{i}(a, b) {{ let v = [a, b]; v.iter().map(|x| x * {i}).sum::<i64>() }}"
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (what, stdin) in [
        ("bad stdin (no context)", "x".to_string()),
        (
            "context + compile, unknown function",
            runegrid_runner::call_stdin("pub fn add(a, b) { a + b }", "nope", &[]),
        ),
        (
            "50-function script",
            runegrid_runner::call_stdin(&bigger, "main", &[]),
        ),
    ] {
        let task = TaskRun {
            args: &[],
            env: &[],
            blobs: &[],
            stdin: stdin.as_bytes(),
            seed: 7,
            limits: Limits::default(),
        };
        let t = Instant::now();
        let out = sandbox.run(&program, &task, &mut |_| {}).unwrap();
        println!(
            "{what}: fuel {}, {:?}, {:?}",
            out.execution.fuel,
            t.elapsed(),
            String::from_utf8_lossy(&out.execution.stdout)
        );
    }
}

/// The minimum of the module's (first) memory, in 64 KiB pages.
fn initial_pages(wasm: &[u8]) -> u64 {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let Ok(wasmparser::Payload::MemorySection(r)) = payload
            && let Some(Ok(m)) = r.into_iter().next()
        {
            return m.initial;
        }
    }
    0
}
