//! `runegrid bench`: figures for the README, measured on this machine.

use crate::procs::LocalGrid;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use runegrid_core::Limits;
use runegrid_proto::{ResultState, SubmitJob, TaskSpec};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum Suite {
    /// Verification under misbehaving workers: liars, colluders, stragglers, vanishing workers.
    Trust(crate::bench_trust::TrustBenchArgs),
    /// A browser worker (headless Chromium) against a native one: kernel speed, and the time
    /// from clicking start to the first task accepted.
    Browser(crate::bench_browser::BrowserBenchArgs),
    /// LLM inference: time to first token and tokens/s, locally in the sandbox and through a
    /// local grid (unverified and verified).
    Infer(crate::bench_infer::InferBenchArgs),
    /// Credits: what liars keep after audits (goal 0), honest earnings checked attempt by
    /// attempt, and throughput charging vs `--free`.
    Credits(crate::bench_credits::CreditsBenchArgs),
    /// Classic benchmark programs (n-body, spectral norm, fannkuch, binary trees, ...) built
    /// natively and for wasm32-wasip1: how much slower plain wasmtime, the instrumented sandbox
    /// (with and without NaN canonicalization) and V8 run them than native code.
    Programs(crate::bench_programs::ProgramsBenchArgs),
    /// WGSL kernels (vector add, f32 and int8 matmul): locally with wgpu, through the grid on a
    /// GPU worker, and against their CPU twins as WASI tasks.
    Gpu(crate::bench_gpu::GpuBenchArgs),
    /// Simulated workers speaking the real protocol, thousands per process, against a real
    /// coordinator: the most it holds, its memory and CPU per worker, tasks/s and dispatch
    /// latency as workers are added, and the time for all of them to come back after a restart.
    Swarm(crate::bench_swarm::SwarmBenchArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub suite: Option<Suite>,
    /// Blocking round trips to time.
    #[arg(long, default_value_t = 2000)]
    pub calls: u32,
    /// No-op tasks in the throughput job.
    #[arg(long, default_value_t = 20000)]
    pub tasks: u32,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 2)]
    pub slots: u32,
    /// Only the sandbox measurements (no grid).
    #[arg(long)]
    pub sandbox_only: bool,
    /// Only the grid measurements.
    #[arg(long)]
    pub grid_only: bool,
    /// Keep the grid's data and logs in this directory (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub async fn run(a: BenchArgs) -> Result<i32> {
    match a.suite {
        Some(Suite::Trust(t)) => return crate::bench_trust::run(t).await,
        Some(Suite::Browser(b)) => return crate::bench_browser::run(b).await,
        Some(Suite::Credits(c)) => return crate::bench_credits::run(c).await,
        Some(Suite::Infer(i)) => return crate::bench_infer::run(i).await,
        Some(Suite::Programs(p)) => return crate::bench_programs::run(p).await,
        Some(Suite::Gpu(g)) => return crate::bench_gpu::run(g).await,
        Some(Suite::Swarm(s)) => return crate::bench_swarm::run(s).await,
        None => {}
    }
    println!(
        "runegrid bench on {} ({} cores)",
        std::env::consts::ARCH,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if !a.grid_only {
        tokio::task::spawn_blocking(sandbox_bench).await??;
    }
    if !a.sandbox_only {
        grid_bench(&a).await?;
    }
    Ok(0)
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.expect("n > 0"))
}

fn sandbox_bench() -> Result<()> {
    use runegrid_examples::kernels;
    use runegrid_sandbox::{Sandbox, TaskRun};
    let sandbox = Sandbox::new()?;
    let limits = Limits {
        fuel: Limits::MAX_FUEL,
        wall_time_ms: 600_000,
        ..Limits::default()
    };
    let run_in = |module: &[u8], nan: bool, args: &[String]| -> Result<(Duration, Vec<u8>)> {
        let opts = runegrid_instrument::Options {
            nan_canonicalization: nan,
            ..Default::default()
        };
        let m = runegrid_instrument::instrument(module, &opts)?;
        let p = sandbox.compile(&m.bytes)?;
        let task = TaskRun {
            args,
            env: &[],
            stdin: &[],
            seed: 1,
            limits,
            blobs: &[],
        };
        let mut err = None;
        let (t, out) = best_of(3, || match sandbox.run(&p, &task, &mut |_| {}) {
            Ok(o) => o.execution.stdout,
            Err(e) => {
                err = Some(e);
                vec![]
            }
        });
        if let Some(e) = err {
            bail!("sandbox run failed: {e}");
        }
        Ok((t, out))
    };
    println!("\nsandbox: one kernel as WASI (metered, in wasmtime) vs native Rust, best of 3");
    println!(
        "{:<28} {:>11} {:>11} {:>11} {:>8} {:>8}",
        "kernel", "native", "wasi", "wasi+nan", "ratio", "+nan"
    );
    type Native = Box<dyn Fn() -> String>;
    let cases: Vec<(&str, &[u8], Vec<String>, Native)> = vec![
        (
            "collatz limit=3000000 (int)",
            runegrid_examples::COLLATZ,
            vec!["3000000".into()],
            Box::new(|| {
                kernels::collatz_report(
                    3_000_000,
                    kernels::collatz_steps(std::hint::black_box(3_000_000)),
                )
            }),
        ),
        (
            "matmul n=256 (f64)",
            runegrid_examples::MATMUL,
            vec!["256".into()],
            Box::new(|| {
                kernels::matmul_report(
                    256,
                    kernels::matmul(std::hint::black_box(256), kernels::DEFAULT_SEED),
                )
            }),
        ),
        (
            "montecarlo 10^7 (f64)",
            runegrid_examples::MONTECARLO,
            vec!["10000000".into()],
            Box::new(|| {
                kernels::monte_carlo_report(
                    10_000_000,
                    kernels::monte_carlo_pi(
                        std::hint::black_box(10_000_000),
                        kernels::DEFAULT_SEED,
                    ),
                )
            }),
        ),
    ];
    for (name, module, args, native) in cases {
        let (tn, expect) = best_of(3, &native);
        let (tw, out) = run_in(module, false, &args)?;
        let (twn, out_nan) = run_in(module, true, &args)?;
        let expect = format!("{expect}\n");
        if out != expect.as_bytes() || out_nan != expect.as_bytes() {
            bail!(
                "{name}: wasm output {:?} differs from native {:?}",
                String::from_utf8_lossy(&out),
                expect
            );
        }
        println!(
            "{:<28} {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>7.2}x {:>7.2}x",
            name,
            tn.as_secs_f64() * 1e3,
            tw.as_secs_f64() * 1e3,
            twn.as_secs_f64() * 1e3,
            tw.as_secs_f64() / tn.as_secs_f64(),
            twn.as_secs_f64() / tn.as_secs_f64()
        );
    }
    // Per-run overhead of the smallest module.
    let m = runegrid_instrument::instrument(runegrid_examples::NOOP, &Default::default())?;
    let p = sandbox.compile(&m.bytes)?;
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: &[],
        seed: 1,
        limits: Limits::default(),
        blobs: &[],
    };
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        sandbox.run(&p, &task, &mut |_| {})?;
    }
    println!(
        "no-op module: {:.1} µs per run (instantiate + _start + teardown)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}

async fn grid_bench(a: &BenchArgs) -> Result<()> {
    // 20,000 tasks held at up to twice the base price: more than the default welcome.
    let mut grid =
        LocalGrid::start_with(a.dir.clone(), &["--welcome-credits", "1000000000"]).await?;
    for i in 0..a.workers {
        grid.spawn_worker(&format!("bench-{}", i + 1), a.slots, &[])?;
    }
    grid.wait_for_workers(a.workers as usize).await?;
    let client = grid.client();
    let program = client
        .upload_program(runegrid_examples::NOOP.to_vec())
        .await?
        .program;
    let job = |n: u32| SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.clone(),
        name: Some("bench".into()),
        tasks: vec![TaskSpec::default(); n as usize],
        policy: Some(runegrid_core::PolicyKind::None),
        replicas: None,
        agree: None,
        max_attempts: None,
        limits: Limits::default(),
        blobs: Default::default(),
    };
    println!(
        "\ngrid on loopback: 1 coordinator, {} worker process(es) × {} slots, no-op WASI module, replicas=1",
        a.workers, a.slots
    );
    // Warm up: the workers fetch and compile the module once.
    for _ in 0..20 {
        client.submit_wait(&job(1), Duration::from_secs(30)).await?;
    }
    // The floors under a round trip: an authenticated HTTP call, and a durable submission.
    let mut floor = Vec::new();
    for _ in 0..a.calls.min(1000) {
        let t = Instant::now();
        client.me().await?;
        floor.push(t.elapsed());
    }
    floor.sort();
    let mut submit = Vec::new();
    for _ in 0..a.calls.min(1000) {
        let t = Instant::now();
        client.submit(&job(1)).await?;
        submit.push(t.elapsed());
    }
    submit.sort();

    println!(
        "floors: authenticated GET p50 {:.0} µs; durable submit of a 1-task job p50 {:.0} µs",
        pct(&floor, 0.5).as_secs_f64() * 1e6,
        pct(&submit, 0.5).as_secs_f64() * 1e6
    );
    let mut times = Vec::with_capacity(a.calls as usize);
    for _ in 0..a.calls {
        let t = Instant::now();
        let r = client.submit_wait(&job(1), Duration::from_secs(30)).await?;
        times.push(t.elapsed());
        if r.results
            .as_ref()
            .is_none_or(|r| r.tasks[0].state != ResultState::Verified)
        {
            bail!("a no-op call did not verify: {r:?}");
        }
    }
    times.sort();
    println!(
        "blocking call round trip (submit + run + result): p50 {:.0} µs, p99 {:.0} µs over {} calls",
        pct(&times, 0.5).as_secs_f64() * 1e6,
        pct(&times, 0.99).as_secs_f64() * 1e6,
        a.calls
    );
    let t = Instant::now();
    let sub = client.submit(&job(a.tasks)).await?;
    let r = client
        .results(sub.job, Some(Duration::from_secs(600)))
        .await?;
    let el = t.elapsed();
    let ok = r
        .tasks
        .iter()
        .filter(|t| t.state == ResultState::Verified)
        .count();
    if ok != a.tasks as usize {
        bail!("only {ok} of {} tasks verified", a.tasks);
    }
    println!(
        "pipelined: {} no-op tasks in one job in {:.2} s = {:.0} tasks/s",
        a.tasks,
        el.as_secs_f64(),
        a.tasks as f64 / el.as_secs_f64()
    );
    // Many small jobs in flight at once, like many concurrent remote calls.
    let concurrent = 64;
    let per = (a.tasks / concurrent).max(1);
    let t = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..concurrent {
        let client = client.clone();
        let j = job(1);
        handles.push(tokio::spawn(async move {
            for _ in 0..per {
                client.submit_wait(&j, Duration::from_secs(60)).await?;
            }
            Ok::<_, runegrid_client::ClientError>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let el = t.elapsed();
    println!(
        "concurrent calls: {} clients × {} blocking calls in {:.2} s = {:.0} calls/s",
        concurrent,
        per,
        el.as_secs_f64(),
        (concurrent * per) as f64 / el.as_secs_f64()
    );
    Ok(())
}
