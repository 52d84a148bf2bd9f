//! Inference speed, native vs WASI, for the same program (`guest/`) and the same request.
//!
//! `cargo run --release -p runegrid-infer --example bench_infer -- [--tokens N] [--skip-native]
//! [--runs N] [--quick] [--wasm PATH] [--env KEY=VALUE]`
//!
//! Needs the model (`scripts/fetch-model.sh`). The native binary is built on first use into
//! `<target>/infer-guest-native` (or taken from `$RUNEGRID_INFER_NATIVE`); it runs with
//! `RAYON_NUM_THREADS=1` (the WASI program is single-threaded) and again with rayon's default.
//! The WASI program is instrumented as workers run it (fuel, call depth, memory, NaN
//! canonicalization) and, for comparison, without NaN canonicalization.
//!
//! Reported per run: time to first token (from process start or `_start`, so it includes
//! reading the model and the prompt), decode rate (tokens after the first over the time from
//! the first to the last), and for WASI the fuel. Fuel per generated token is the difference
//! between a run of N tokens and a run of 1 token, over N - 1. The memory a run needs is found
//! by trying limits until one fits.

use runegrid_core::{ExecStatus, Limits};
use runegrid_infer::{INFER_WASM, MODEL_BLOB, Request, Summary, model_path};
use runegrid_instrument::{Options, instrument};
use runegrid_sandbox::{Blob, Program, Sandbox, TaskRun};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROMPT: &str = "Write a long story about a dragon who learns to program computers.";

struct Timing {
    ttft: Duration,
    total: Duration,
    tokens: usize,
    stop: String,
    fuel: Option<u64>,
    stdout: Vec<u8>,
}

impl Timing {
    fn decode_rate(&self, first: Duration, last: Duration) -> f64 {
        if self.tokens < 2 || last <= first {
            return f64::NAN;
        }
        (self.tokens - 1) as f64 / (last - first).as_secs_f64()
    }
}

struct Measured {
    timing: Timing,
    rate: f64,
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tokens: u32 = arg_value(&args, "--tokens")
        .map(|v| v.parse().expect("--tokens N"))
        .unwrap_or(64);
    let skip_native = args.iter().any(|a| a == "--skip-native");
    let quick = args.iter().any(|a| a == "--quick");
    // `--env KEY=VALUE`: an environment variable for both programs (e.g.
    // `CANDLE_DEQUANTIZE_ALL=1`, which makes candle dequantize the weights to f32 at load).
    let env: Vec<(String, String)> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--env")
        .filter_map(|(i, _)| args.get(i + 1)?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Some(model) = model_path() else {
        eprintln!("no model file: run scripts/fetch-model.sh (or set RUNEGRID_MODEL)");
        std::process::exit(2);
    };
    let req = Request::chat(PROMPT, tokens);
    println!("prompt: {PROMPT:?}, greedy, max_tokens {tokens}");

    let runs: usize = arg_value(&args, "--runs")
        .map(|v| v.parse().expect("--runs N"))
        .unwrap_or(3);
    let mut native_rate = None;
    let native = (!skip_native).then(native_binary);
    if let Some(native) = &native {
        for threads in ["1", "default"] {
            let m = run_native(native, &model, &req, threads, &env);
            if threads == "1" {
                native_rate = Some(m.rate);
            }
            println!(
                "native (rayon threads {threads:>7}): ttft {:>7.0} ms, decode {:>6.2} tok/s, total {:>6.2} s, {} tokens ({})",
                m.timing.ttft.as_secs_f64() * 1e3,
                m.rate,
                m.timing.total.as_secs_f64(),
                m.timing.tokens,
                m.timing.stop
            );
        }
    }

    let model_bytes: Arc<[u8]> = std::fs::read(&model).expect("read model").into();
    let blobs = [Blob {
        name: MODEL_BLOB.into(),
        bytes: model_bytes,
    }];
    let sandbox = Sandbox::new().expect("sandbox");
    // `--wasm PATH`: another build of the program (e.g. with other target features).
    let wasm: Vec<u8> = match arg_value(&args, "--wasm") {
        Some(path) => std::fs::read(&path).expect("read --wasm"),
        None => INFER_WASM.to_vec(),
    };
    println!("module: {} bytes", wasm.len());
    let mut reference: Option<Vec<u8>> = None;
    for nan in [true, false] {
        let t = Instant::now();
        let out = instrument(
            &wasm,
            &Options {
                nan_canonicalization: nan,
                ..Options::default()
            },
        )
        .expect("instrument");
        let instrument_time = t.elapsed();
        let t = Instant::now();
        let program = sandbox.compile(&out.bytes).expect("compile");
        println!(
            "instrumented (NaN canonicalization {nan}): {} bytes; instrument {:.0} ms, compile {:.1} s",
            out.bytes.len(),
            instrument_time.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64()
        );
        let m = run_wasi(&sandbox, &program, &blobs, &req, big_limits(), &env);
        println!(
            "WASI (NaN {nan}):                ttft {:>7.0} ms, decode {:>6.2} tok/s, total {:>6.2} s, {} tokens ({}), fuel {}",
            m.timing.ttft.as_secs_f64() * 1e3,
            m.rate,
            m.timing.total.as_secs_f64(),
            m.timing.tokens,
            m.timing.stop,
            m.timing.fuel.unwrap_or(0)
        );
        if let Some(native) = native_rate {
            println!(
                "  decode rate vs native single-threaded: {:.2}x",
                m.rate / native
            );
        }
        match &reference {
            None => reference = Some(m.timing.stdout.clone()),
            Some(r) => println!(
                "  stdout equals the NaN-canonicalized run's: {}",
                *r == m.timing.stdout
            ),
        }
        if nan && let Some(native) = &native {
            // Alternate native and WASI runs, so both see the same load on a shared machine.
            let (mut best_native, mut best_wasi) = (native_rate.unwrap_or(0.0), m.rate);
            let (mut ttft_native, mut ttft_wasi) = (Duration::MAX, m.timing.ttft);
            let mut ratios = Vec::new();
            for round in 0..runs {
                let n = run_native(native, &model, &req, "1", &env);
                let w = run_wasi(&sandbox, &program, &blobs, &req, big_limits(), &env);
                println!(
                    "  round {round}: native {:.2} tok/s (ttft {:.0} ms), WASI {:.2} tok/s (ttft {:.0} ms): {:.2}x",
                    n.rate,
                    n.timing.ttft.as_secs_f64() * 1e3,
                    w.rate,
                    w.timing.ttft.as_secs_f64() * 1e3,
                    w.rate / n.rate
                );
                ratios.push(w.rate / n.rate);
                best_native = best_native.max(n.rate);
                best_wasi = best_wasi.max(w.rate);
                ttft_native = ttft_native.min(n.timing.ttft);
                ttft_wasi = ttft_wasi.min(w.timing.ttft);
            }
            ratios.sort_by(f64::total_cmp);
            if !ratios.is_empty() {
                println!(
                    "  best of {runs}: native {best_native:.2} tok/s, ttft {:.0} ms; WASI {best_wasi:.2} tok/s, ttft {:.0} ms; ratio of bests {:.2}x, median paired ratio {:.2}x",
                    ttft_native.as_secs_f64() * 1e3,
                    ttft_wasi.as_secs_f64() * 1e3,
                    best_wasi / best_native,
                    ratios[ratios.len() / 2]
                );
            }
        }
        if nan {
            if quick {
                return;
            }
            let again = run_wasi(&sandbox, &program, &blobs, &req, big_limits(), &env);
            println!(
                "  second run: identical stdout and fuel: {}",
                again.timing.stdout == m.timing.stdout && again.timing.fuel == m.timing.fuel
            );
            let one = run_wasi(
                &sandbox,
                &program,
                &blobs,
                &Request {
                    max_tokens: 1,
                    ..req.clone()
                },
                big_limits(),
                &env,
            );
            let zero = run_wasi(
                &sandbox,
                &program,
                &blobs,
                &Request {
                    max_tokens: 0,
                    ..req.clone()
                },
                big_limits(),
                &env,
            );
            println!(
                "  fuel to start, read the model and tokenize (max_tokens 0): {}, in {:.2} s",
                zero.timing.fuel.unwrap_or(0),
                zero.timing.total.as_secs_f64()
            );
            let (fuel_n, fuel_1) = (m.timing.fuel.unwrap_or(0), one.timing.fuel.unwrap_or(0));
            if m.timing.tokens > 1 {
                println!(
                    "  fuel: {fuel_1} to load the model and the prompt and sample the first token; {} per further token",
                    (fuel_n - fuel_1) / (m.timing.tokens as u64 - 1)
                );
            }
            for mib in [192u64, 224, 256, 288, 320, 384, 512] {
                let limits = Limits {
                    memory_bytes: mib << 20,
                    ..big_limits()
                };
                let r = run_wasi(&sandbox, &program, &blobs, &req, limits, &env);
                let ok = r.timing.tokens == m.timing.tokens;
                println!(
                    "  memory limit {mib} MiB: {}",
                    if ok { "fits" } else { "too small" }
                );
                if ok {
                    break;
                }
            }
        }
    }
    println!(
        "answer: {:?}",
        String::from_utf8_lossy(reference.as_deref().unwrap_or_default())
    );
}

fn big_limits() -> Limits {
    Limits {
        fuel: Limits::MAX_FUEL,
        memory_bytes: 1 << 30,
        wall_time_ms: 3_600_000,
        stdout_bytes: 1 << 20,
        scratch_bytes: 64 << 20,
        output_bytes: 16 << 20,
    }
}

fn run_wasi(
    sandbox: &Sandbox,
    program: &Program,
    blobs: &[Blob],
    req: &Request,
    limits: Limits,
    env: &[(String, String)],
) -> Measured {
    let stdin = req.to_stdin();
    let task = TaskRun {
        args: &[],
        env,
        stdin: &stdin,
        seed: 0,
        limits,
        blobs,
    };
    let start = Instant::now();
    let mut first = None;
    let mut last = Duration::ZERO;
    let out = sandbox
        .run(program, &task, &mut |_| {
            let now = start.elapsed();
            first.get_or_insert(now);
            last = now;
        })
        .expect("run");
    let total = start.elapsed();
    let summary = match out.execution.status {
        ExecStatus::Exited { code: 0 } => Summary::from_stderr(&out.stderr),
        _ => None,
    };
    let timing = Timing {
        ttft: first.unwrap_or(total),
        total,
        tokens: summary.as_ref().map_or(0, |s| s.tokens),
        stop: summary.map_or_else(|| out.execution.status.to_string(), |s| s.stop),
        fuel: Some(out.execution.fuel),
        stdout: out.execution.stdout,
    };
    let rate = timing.decode_rate(first.unwrap_or(total), last);
    Measured { timing, rate }
}

fn run_native(
    binary: &PathBuf,
    model: &PathBuf,
    req: &Request,
    threads: &str,
    env: &[(String, String)],
) -> Measured {
    let mut cmd = Command::new(binary);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.arg("--model")
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if threads == "1" {
        cmd.env("RAYON_NUM_THREADS", "1");
    } else {
        cmd.env_remove("RAYON_NUM_THREADS");
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start the native binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&req.to_stdin())
        .expect("write request");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = None;
    let mut last = Duration::ZERO;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stdout.read(&mut buf).expect("read stdout");
        if n == 0 {
            break;
        }
        let now = start.elapsed();
        first.get_or_insert(now);
        last = now;
        all.extend_from_slice(&buf[..n]);
    }
    let out = child.wait_with_output().expect("wait");
    let total = start.elapsed();
    let summary = Summary::from_stderr(&out.stderr);
    let timing = Timing {
        ttft: first.unwrap_or(total),
        total,
        tokens: summary.as_ref().map_or(0, |s| s.tokens),
        stop: summary.map_or_else(|| format!("failed: {}", out.status), |s| s.stop),
        fuel: None,
        stdout: all,
    };
    let rate = timing.decode_rate(first.unwrap_or(total), last);
    Measured { timing, rate }
}

/// The guest built natively (release, the host's default target features).
fn native_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNEGRID_INFER_NATIVE") {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest/Cargo.toml");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("infer-guest-native");
    let t = Instant::now();
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "infer",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the native guest failed");
    eprintln!("native guest built in {:.1} s", t.elapsed().as_secs_f64());
    target.join("release/infer")
}
