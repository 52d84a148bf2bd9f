//! `runegrid bench infer`: time to first token and tokens per second of the inference program,
//! run locally in the sandbox and through a local grid (one worker, unverified; two workers,
//! verified by a quorum of both), for the same request.
//!
//! Local: the instrumented program, compiled once beforehand, run in this process with the model
//! mounted, as a worker runs it; the time to first token is from the start of the run to the
//! first stdout chunk. Grid: `POST /v1/chat/completions` with `stream: true`; the time to first
//! token is from sending the request to the first content chunk, so it adds the job's creation,
//! dispatch, and the chunk's trip worker → coordinator → client. Its first request also pays the
//! worker's download of the weights and compiling the program: it is reported apart (cold), the
//! rest as the best and median of the following rounds. The decode rate is the tokens after the
//! first over the time from the first to the last.
//!
//! llama.cpp: when `llama-cpp-python` is installed for `python3` (`$RUNEGRID_PYTHON`), each
//! round also runs the same request on the same GGUF file with llama.cpp, single-threaded
//! (greedy, the model's chat template, streamed), timed the same way, so the ratio of the sandbox
//! to llama.cpp comes from one run on one machine; without it the column is skipped with a note.

use crate::procs::LocalGrid;
use anyhow::{Context, Result, bail};
use clap::Args;
use runegrid_infer::{INFER_WASM, MODEL_BLOB, Request, SMOLLM2_135M, Summary};
use runegrid_proto::chat::{AnswerState, ChatGridOptions, ChatMessage, ChatRequest};
use runegrid_sandbox::{Blob, Sandbox, TaskRun};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct InferBenchArgs {
    /// The model's weights (default: the file scripts/fetch-model.sh fetched).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tokens to generate per request (greedy).
    #[arg(long, default_value_t = 64)]
    pub tokens: u32,
    /// Measured rounds (after a cold first request on the grid).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Keep the grid's data and logs in this directory (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Only the local runs (and llama.cpp's): no grid.
    #[arg(long)]
    pub local_only: bool,
    /// Measure this inference module (`wasm32-wasip1`, as built, uninstrumented) locally
    /// instead of the built-in one, e.g. to compare a change to the guest before committing
    /// it; implies `--local-only`.
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// Skip the browser worker's rounds (headless Chromium through chromedriver; skipped with
    /// a note when they are missing).
    #[arg(long)]
    pub no_browser: bool,
}

const PROMPT: &str = "Write a long story about a dragon who learns to program computers.";

/// One run's timing.
#[derive(Debug, Clone, Copy)]
struct Run {
    ttft: Duration,
    total: Duration,
    tokens: u64,
    /// Time of the last token after the first.
    decode: Duration,
    /// A local run's fuel, the SHA-256 of its text and its linear memory at the end (zero and
    /// empty for others).
    fuel: u64,
    text_sha: [u8; 32],
    memory: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        if self.tokens < 2 || self.decode.is_zero() {
            return 0.0;
        }
        (self.tokens - 1) as f64 / self.decode.as_secs_f64()
    }
}

fn request() -> Request {
    Request::chat(PROMPT, 0)
}

/// The model file: given, or where scripts/fetch-model.sh puts it.
fn model_file(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = given
        .or_else(runegrid_infer::model_path)
        .filter(|p| p.is_file())
        .context("no model file: run scripts/fetch-model.sh or give --model FILE")?;
    Ok(path.canonicalize().unwrap_or(path))
}

fn local_run(
    sandbox: &Sandbox,
    program: &runegrid_sandbox::Program,
    blobs: &[Blob],
    tokens: u32,
) -> Result<Run> {
    let mut req = request();
    req.max_tokens = tokens;
    let stdin = req.to_stdin();
    let limits = SMOLLM2_135M.limits(PROMPT.len() as u64, tokens);
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: &stdin,
        seed: 0,
        limits,
        blobs,
    };
    let (mut first, mut last) = (None, None);
    let start = Instant::now();
    let out = sandbox
        .run(program, &task, &mut |_chunk: &[u8]| {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
        })
        .map_err(|e| anyhow::anyhow!("local run: {e}"))?;
    let total = start.elapsed();
    let summary = Summary::from_stderr(&out.stderr).context("the program wrote no summary")?;
    // A run asked for no token (to time the start and the model load) has its end as "first".
    let first = match first {
        Some(first) => first,
        None if tokens == 0 => start + total,
        None => bail!("no token came out"),
    };
    let last = last.unwrap_or(first);
    use sha2::Digest as _;
    Ok(Run {
        ttft: first - start,
        total,
        tokens: summary.tokens as u64,
        decode: last - first,
        fuel: out.execution.fuel,
        text_sha: sha2::Sha256::digest(&out.execution.stdout).into(),
        memory: out.memory_bytes,
    })
}

async fn grid_run(
    c: &runegrid_client::Client,
    tokens: u32,
    replicas: u32,
) -> Result<(Run, AnswerState)> {
    let req = ChatRequest {
        model: SMOLLM2_135M.id.into(),
        messages: vec![ChatMessage::new("user", PROMPT)],
        max_tokens: Some(tokens),
        temperature: Some(0.0),
        runegrid: Some(ChatGridOptions {
            policy: Some(if replicas == 1 {
                runegrid_core::PolicyKind::None
            } else {
                runegrid_core::PolicyKind::Quorum
            }),
            replicas: (replicas > 1).then_some(replicas),
            agree: (replicas > 1).then_some(replicas),
            max_attempts: None,
        }),
        ..ChatRequest::default()
    };
    let start = Instant::now();
    let mut s = c.chat_stream(&req).await?;
    let (mut first, mut last, mut tokens_seen, mut state) = (None, None, 0, AnswerState::Running);
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        let now = Instant::now();
        if chunk.choices[0]
            .delta
            .content
            .as_ref()
            .is_some_and(|t| !t.is_empty())
        {
            first.get_or_insert(now);
            last = Some(now);
        }
        if let Some(u) = chunk.usage {
            tokens_seen = u.completion_tokens;
        }
        if let Some(info) = chunk.runegrid {
            state = info.state;
        }
    }
    let total = start.elapsed();
    let first = first.context("no token came through the grid")?;
    Ok((
        Run {
            ttft: first - start,
            total,
            tokens: tokens_seen,
            decode: last.unwrap_or(first) - first,
            fuel: 0,
            text_sha: [0; 32],
            memory: 0,
        },
        state,
    ))
}

/// The same request answered by a browser worker alone: headless Chromium on the contribute
/// page of a grid of its own (started like the first, no native worker), one cold request (the
/// page fetches the weights into IndexedDB and compiles the program), then `rounds` measured.
async fn browser_runs(model: &str, tokens: u32, rounds: u32) -> Result<(Run, Vec<Run>)> {
    let grid = LocalGrid::start_with(None, &["--model", model]).await?;
    let (_driver, b) = crate::bench_browser::start_browser("chromedriver").await?;
    let measured = async {
        b.goto(&format!("{}/contribute", grid.url)).await?;
        b.find_id("toggle").await?.click().await?;
        crate::bench_browser::wait_browser_workers(&grid.url, |n| n > 0).await?;
        let c = grid.client();
        let (cold, _) = grid_run(&c, tokens, 1).await?;
        let mut runs = Vec::new();
        for round in 0..rounds {
            let (r, state) = grid_run(&c, tokens, 1).await?;
            if state != AnswerState::Verified {
                bail!("browser round {round}: the grid's answer ended {state}");
            }
            runs.push(r);
        }
        Ok((cold, runs))
    }
    .await;
    // The browser goes with its session, whatever happened.
    let closed = b.close().await;
    let measured = measured?;
    closed?;
    Ok(measured)
}

/// Runs the request once with llama.cpp (`llama-cpp-python`) on `threads` threads: prints one
/// JSON object `{"ttft_ms", "decode_s", "tokens", "version"}`, or exits 3 when the package is
/// missing.
const LLAMA_CPP: &str = r#"
import json, sys, time
try:
    import llama_cpp
except ImportError:
    sys.exit(3)
model, prompt, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_threads=threads, n_threads_batch=threads,
                      n_ctx=2048, verbose=False, seed=0)
messages = [{"role": "user", "content": prompt}]
# Warm-up (page in the weights), then the measured request from an empty context: reset, so
# the prompt is not found already evaluated.
for _ in llm.create_chat_completion(messages, max_tokens=2, temperature=0.0, stream=True):
    pass
llm.reset()
start = time.perf_counter()
first = last = None
n = 0
for chunk in llm.create_chat_completion(messages, max_tokens=tokens, temperature=0.0,
                                        top_k=1, stream=True):
    text = chunk["choices"][0]["delta"].get("content")
    if text:
        now = time.perf_counter()
        first = first or now
        last = now
        n += 1
print(json.dumps({"ttft_ms": (first - start) * 1e3, "decode_s": last - first, "tokens": n,
                  "version": llama_cpp.__version__}))
"#;

/// One llama.cpp run; `Ok(None)` when `llama-cpp-python` is not installed.
fn llama_cpp_run(
    model: &std::path::Path,
    tokens: u32,
    threads: u32,
) -> Result<Option<(Run, String)>> {
    let python = std::env::var("RUNEGRID_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args(["-c", LLAMA_CPP])
        .arg(model)
        .arg(PROMPT)
        .arg(tokens.to_string())
        .arg(threads.to_string())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(_) => return Ok(None),
    };
    if out.status.code() == Some(3) {
        return Ok(None);
    }
    if !out.status.success() {
        bail!(
            "llama.cpp run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "llama.cpp run printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let secs = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap_or(0.0).max(0.0));
    let ttft = Duration::from_secs_f64(v["ttft_ms"].as_f64().unwrap_or(0.0).max(0.0) / 1e3);
    let decode = secs("decode_s");
    Ok(Some((
        Run {
            ttft,
            total: ttft + decode,
            tokens: v["tokens"].as_u64().unwrap_or(0),
            decode,
            fuel: 0,
            text_sha: [0; 32],
            memory: 0,
        },
        v["version"].as_str().unwrap_or("?").to_string(),
    )))
}

/// Where a local run's time to first token goes, from two more runs: one asked for no token
/// (the instance's start, reading the weights, building the model and tokenizer) and one for
/// a single token (that plus the prompt and the first token); with `full` (a run of `tokens`)
/// the fuel of each further token. Then the memory a request takes.
fn phases(
    sandbox: &Sandbox,
    program: &runegrid_sandbox::Program,
    blobs: &[Blob],
    full: &Run,
    tokens: u32,
) -> Result<()> {
    let load = local_run(sandbox, program, blobs, 0)?;
    let first = local_run(sandbox, program, blobs, 1)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "local time to first token, by phase (one run each): start and model load {:.0} ms ({:.2e} fuel), prompt and first token {:.0} ms ({:.2e} fuel); each further token {:.2e} fuel",
        ms(load.total),
        load.fuel as f64,
        ms(first.ttft.saturating_sub(load.total)),
        first.fuel.saturating_sub(load.fuel) as f64,
        full.fuel.saturating_sub(first.fuel) as f64 / f64::from(tokens - 1)
    );
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let model = blobs.iter().map(|b| b.bytes.len() as u64).sum::<u64>();
    println!(
        "memory per request: linear memory {:.1} MiB at the end (its peak; {:.1} MiB after the load alone), plus the mounted model {:.1} MiB (one copy per worker, shared by its runs); the model declares {:.0} MiB",
        mib(full.memory),
        mib(load.memory),
        mib(model),
        mib(SMOLLM2_135M.memory_bytes)
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(label: &str, runs: &[Run]) {
    let ttft: Vec<f64> = runs.iter().map(|r| r.ttft.as_secs_f64() * 1e3).collect();
    let rate: Vec<f64> = runs.iter().map(Run::rate).collect();
    let total: Vec<f64> = runs.iter().map(|r| r.total.as_secs_f64()).collect();
    println!(
        "{label:<34} ttft best {:>6.0} ms, median {:>6.0} ms | decode best {:>5.2} tok/s, median {:>5.2} | total median {:>5.2} s ({} tokens)",
        ttft.iter().copied().fold(f64::INFINITY, f64::min),
        median(ttft.clone()),
        rate.iter().copied().fold(0.0, f64::max),
        median(rate.clone()),
        median(total),
        runs[0].tokens
    );
}

pub async fn run(a: InferBenchArgs) -> Result<i32> {
    if a.rounds == 0 || a.tokens < 2 {
        bail!("--rounds must be at least 1 and --tokens at least 2");
    }
    let model = model_file(a.model.clone())?;
    println!(
        "runegrid bench infer: {} ({}), prompt {PROMPT:?}, greedy, {} tokens, {} rounds",
        SMOLLM2_135M.id,
        model.display(),
        a.tokens,
        a.rounds
    );

    // Local: compiled once, as a worker that has run the program before.
    let sandbox = Sandbox::new().map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
    let t = Instant::now();
    let given = match &a.module {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let module = runegrid_instrument::instrument(
        given.as_deref().unwrap_or(INFER_WASM),
        &runegrid_instrument::Options::default(),
    )
    .map_err(|e| anyhow::anyhow!("instrumenting: {e}"))?
    .bytes;
    let program = sandbox
        .compile(&module)
        .map_err(|e| anyhow::anyhow!("compiling: {e}"))?;
    println!(
        "local: instrumented and compiled in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let bytes: Arc<[u8]> = std::fs::read(&model)
        .with_context(|| format!("reading {}", model.display()))?
        .into();
    let blobs = [Blob::new(MODEL_BLOB, bytes)];
    let best = |v: &[Run]| v.iter().map(Run::rate).fold(0.0, f64::max);
    let ttft = |v: &[Run]| median(v.iter().map(|r| r.ttft.as_secs_f64()).collect());
    if a.local_only || a.module.is_some() {
        let (mut local, mut llama) = (Vec::new(), Vec::new());
        let mut llama_version = None;
        for _ in 0..a.rounds {
            local.push(local_run(&sandbox, &program, &blobs, a.tokens)?);
            if let Some((r, v)) = llama_cpp_run(&model, a.tokens, 1)? {
                llama.push(r);
                llama_version = Some(v);
            }
        }
        println!();
        report("local WASI (sandbox, in process)", &local);
        let r = &local[0];
        println!(
            "local text sha256 {}, fuel {} ({} per token)",
            hex::encode(&r.text_sha[..8]),
            r.fuel,
            r.fuel / r.tokens.max(1)
        );
        phases(&sandbox, &program, &blobs, r, a.tokens)?;
        if let Some(version) = &llama_version {
            report(&format!("llama.cpp {version}, 1 thread"), &llama);
            println!(
                "sandbox ÷ llama.cpp (same file, request, run): decode {:.2}× (best), time to first token {:.1}× (median)",
                best(&local) / best(&llama),
                ttft(&local) / ttft(&llama)
            );
        }
        return Ok(0);
    }

    // The grid: one worker for unverified runs, a second for verified ones.
    let model_arg = model.to_string_lossy().into_owned();
    let mut grid = LocalGrid::start_with(a.dir.clone(), &["--model", &model_arg]).await?;
    grid.spawn_worker("w1", 1, &[])?;
    grid.wait_for_workers(1).await?;
    let c = grid.client();
    let (cold, _) = grid_run(&c, a.tokens, 1).await?;
    println!(
        "grid, first request (cold: the worker fetches {} MB of weights and compiles the program): ttft {:.2} s, total {:.2} s",
        SMOLLM2_135M.size / 1_000_000,
        cold.ttft.as_secs_f64(),
        cold.total.as_secs_f64()
    );

    let (mut local, mut single, mut llama) = (Vec::new(), Vec::new(), Vec::new());
    let mut llama_version = None;
    let mut llama_missing = false;
    for round in 0..a.rounds {
        // Alternating, so all see the same load.
        local.push(local_run(&sandbox, &program, &blobs, a.tokens)?);
        if !llama_missing {
            match llama_cpp_run(&model, a.tokens, 1)? {
                Some((r, v)) => {
                    llama.push(r);
                    llama_version = Some(v);
                }
                None => llama_missing = true,
            }
        }
        let (r, state) = grid_run(&c, a.tokens, 1).await?;
        if state != AnswerState::Verified {
            bail!("round {round}: the grid's answer ended {state}");
        }
        single.push(r);
    }
    grid.spawn_worker("w2", 1, &[])?;
    grid.wait_for_workers(2).await?;
    // Warm the second worker (download, compile), then measure verified runs.
    grid_run(&c, a.tokens, 2).await?;
    let mut quorum = Vec::new();
    for _ in 0..a.rounds {
        quorum.push(grid_run(&c, a.tokens, 2).await?.0);
    }
    println!();
    report("local WASI (sandbox, in process)", &local);
    phases(&sandbox, &program, &blobs, &local[0], a.tokens)?;
    report("grid, 1 worker (policy none)", &single);
    report("grid, 2 workers (quorum 2 of 2)", &quorum);
    match &llama_version {
        Some(version) => {
            report(&format!("llama.cpp {version}, 1 thread"), &llama);
            println!(
                "sandbox ÷ llama.cpp (same file, request, run): decode {:.2}× (best), time to first token {:.1}× (median)",
                best(&local) / best(&llama),
                ttft(&local) / ttft(&llama)
            );
        }
        None => println!(
            "llama.cpp column skipped: `import llama_cpp` fails for python3 (pip install llama-cpp-python; $RUNEGRID_PYTHON names another interpreter)"
        ),
    }
    if a.no_browser {
        println!("browser worker skipped (--no-browser)");
    } else {
        match browser_runs(&model_arg, a.tokens, a.rounds).await {
            Ok((cold, runs)) => {
                report("browser worker (headless Chromium)", &runs);
                println!(
                    "browser ÷ local: decode {:.2}× (best), ttft {:+.0} ms (median); its first request (cold: the page fetches the weights and compiles the program): ttft {:.2} s",
                    best(&runs) / best(&local),
                    (ttft(&runs) - ttft(&local)) * 1e3,
                    cold.ttft.as_secs_f64()
                );
            }
            Err(e) => println!("browser worker skipped: {e:#}"),
        }
    }
    println!(
        "grid ÷ local: decode {:.2}× (1 worker), {:.2}× (quorum); ttft {:+.0} ms (1 worker), {:+.0} ms (quorum)",
        best(&single) / best(&local),
        best(&quorum) / best(&local),
        (ttft(&single) - ttft(&local)) * 1e3,
        (ttft(&quorum) - ttft(&local)) * 1e3
    );
    println!(
        "(native vs WASI: `cargo run --release -p runegrid-infer --example bench_infer`; see crates/infer/README.md)"
    );
    Ok(0)
}
