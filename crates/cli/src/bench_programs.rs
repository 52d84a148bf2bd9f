//! `runegrid bench programs`: how much slower the sandbox runs classic benchmark programs than
//! native code, the "measure first" step of making tasks run near native speed.
//!
//! The programs (`benches/programs/`, a cargo workspace of its own: n-body, spectral norm,
//! fannkuch-redux, binary trees, Mandelbrot, fasta, a hash-map workload and an allocation
//! workload) are built when the bench runs, natively and for `wasm32-wasip1`, into
//! `$CARGO_TARGET_DIR/bench-programs`. Each is then timed (best of `--runs`, the same size
//! every time) in five ways:
//!
//! - *native*: the native binary as a child process (wall time, process start included);
//! - *wasmtime*: the module as built, without instrumentation, in wasmtime with the sandbox's
//!   engine settings (mirrored here: `runegrid_sandbox` does not expose its configuration) and
//!   the minimal WASI preview-1 host below;
//! - *instr. no NaN*: instrumented without NaN canonicalization, run by [`Sandbox`];
//! - *instrumented*: instrumented with the default options, run by [`Sandbox`]: what tasks run;
//! - *V8*: Node's `node:wasi` running the module as built (instantiation and run, timed inside
//!   node, with V8's GC single-threaded); skipped when `node` is not on `PATH`.
//!
//! Every run's stdout must equal the native run's: a column whose output differs is reported
//! as a mismatch, not timed, and the bench exits with status 1.

use anyhow::{Context as _, Result, bail};
use clap::Args;
use runegrid_core::{ExecStatus, Limits};
use runegrid_sandbox::{Sandbox, TaskRun};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ProgramsBenchArgs {
    /// Scale every program's problem size by this factor (e.g. 0.01 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Runs of every program in every column; the best time is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Print the figures as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Only these programs (comma-separated names; default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Build the plain wasmtime column with wasmtime's epoch interruption (how the sandbox
    /// enforced wall time before fuel slices), to see what its checks at loop heads and
    /// function entries cost.
    #[arg(long)]
    pub epoch: bool,
}

mod plain;
use plain::Plain;

const WASM_TARGET: &str = "wasm32-wasip1";

/// How a program's cost grows with its size argument, to scale it.
#[derive(Clone, Copy)]
enum Growth {
    /// Cost ∝ n.
    Linear,
    /// Cost ∝ n².
    Square,
    /// Cost ∝ 2ⁿ (a tree depth).
    Exponential,
    /// Cost ∝ n! (permutations).
    Factorial,
}

struct Program {
    name: &'static str,
    /// The default size: about 0.3-1 s natively on the 2-core development machine.
    size: u64,
    /// The smallest size the program accepts.
    min: u64,
    growth: Growth,
}

const PROGRAMS: &[Program] = &[
    Program {
        name: "nbody",
        size: 10_000_000,
        min: 1,
        growth: Growth::Linear,
    },
    Program {
        name: "spectralnorm",
        size: 3_000,
        min: 2,
        growth: Growth::Square,
    },
    Program {
        name: "fannkuch",
        size: 10,
        min: 3,
        growth: Growth::Factorial,
    },
    Program {
        name: "binarytrees",
        size: 17,
        min: 6,
        growth: Growth::Exponential,
    },
    Program {
        name: "mandelbrot",
        size: 3_000,
        min: 8,
        growth: Growth::Square,
    },
    Program {
        name: "fasta",
        size: 4_000_000,
        min: 1,
        growth: Growth::Linear,
    },
    Program {
        name: "hashmap",
        size: 1_500_000,
        min: 4,
        growth: Growth::Linear,
    },
    Program {
        name: "alloc",
        size: 1_000_000,
        min: 1,
        growth: Growth::Linear,
    },
];

impl Program {
    /// The size whose cost is about `scale` times the default size's.
    fn scaled(&self, scale: f64) -> u64 {
        let n = self.size as f64;
        let size = match self.growth {
            Growth::Linear => (n * scale).round() as u64,
            Growth::Square => (n * scale.sqrt()).round() as u64,
            Growth::Exponential => (n + scale.log2()).round().max(0.0) as u64,
            Growth::Factorial => {
                // The largest n whose n! is at most `scale` times the default's (at least min).
                let mut size = self.size;
                let mut cost = 1.0;
                if scale < 1.0 {
                    while size > self.min && cost / size as f64 >= scale {
                        cost /= size as f64;
                        size -= 1;
                    }
                } else {
                    while cost * (size + 1) as f64 <= scale {
                        size += 1;
                        cost *= size as f64;
                    }
                }
                size
            }
        };
        size.max(self.min)
    }
}

/// The columns after native, in order: (key, heading).
const COLUMNS: &[(&str, &str)] = &[
    ("wasmtime", "wasmtime (plain)"),
    ("instrumented_no_nan", "instrumented, no NaN"),
    ("instrumented", "instrumented"),
    ("v8", "V8 (node:wasi)"),
];

#[derive(Serialize)]
struct Report {
    runs: u32,
    scale: f64,
    programs: Vec<ProgramReport>,
    /// Geometric mean of each column's ratio to native (columns timed for every program).
    geomean: BTreeMap<String, f64>,
    goal: Goal,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct ProgramReport {
    name: String,
    args: Vec<String>,
    /// The native run's stdout, the output every column must reproduce.
    output: String,
    native_ms: f64,
    columns: BTreeMap<String, ColumnReport>,
}

#[derive(Serialize, Default)]
struct ColumnReport {
    /// Best time in milliseconds (absent when skipped or mismatched).
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<f64>,
    /// `ms` ÷ native.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    /// Whether every run's stdout equalled the native one.
    matched: bool,
    /// What it printed instead, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    mismatch: Option<String>,
    /// Why the column was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
}

#[derive(Serialize)]
struct Goal {
    /// Geometric mean of instrumented ÷ native.
    geomean: Option<f64>,
    geomean_pass: bool,
    stretch_pass: bool,
    /// The slowest program, instrumented ÷ native.
    worst: Option<(String, f64)>,
    worst_pass: bool,
    /// n-body: instrumented ÷ instrumented-without-NaN − 1.
    nbody_nan_cost: Option<f64>,
    nbody_nan_pass: bool,
}

pub async fn run(a: ProgramsBenchArgs) -> Result<i32> {
    // The plain wasmtime column runs wasm on the calling thread: it needs a large stack.
    tokio::task::spawn_blocking(move || {
        std::thread::Builder::new()
            .name("bench-programs".into())
            .stack_size(runegrid_sandbox::THREAD_STACK_BYTES)
            .spawn(move || run_blocking(a))
            .context("cannot start the bench thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the bench thread panicked"))?
    })
    .await?
}

fn run_blocking(a: ProgramsBenchArgs) -> Result<i32> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !(a.scale.is_finite() && a.scale > 0.0) {
        bail!("--scale must be a positive number");
    }
    for name in &a.only {
        if !PROGRAMS.iter().any(|p| p.name == name) {
            bail!(
                "no program {name:?}; the programs are {}",
                PROGRAMS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let programs: Vec<&Program> = PROGRAMS
        .iter()
        .filter(|p| a.only.is_empty() || a.only.iter().any(|o| o == p.name))
        .collect();
    let (native_dir, wasm_dir) = build()?;
    let tmp = tempfile::tempdir()?;
    let node = node_driver(tmp.path())?;
    let mut notes = Vec::new();
    if node.is_none() {
        notes.push("`node` is not on PATH: the V8 column is skipped".to_string());
    }
    let sandbox = Sandbox::new()?;
    let plain = Plain::new(a.epoch)?;
    let runs = a.runs as usize;

    let mut reports = Vec::new();
    for p in &programs {
        let args = vec![p.scaled(a.scale).to_string()];
        eprintln!("{} {}: native", p.name, args[0]);
        let native = native_dir.join(format!("{}{}", p.name, std::env::consts::EXE_SUFFIX));
        let (native_time, output) = best_of(runs, || run_native(&native, &args))
            .with_context(|| format!("{} (native)", p.name))?;
        let wasm = std::fs::read(wasm_dir.join(format!("{}.wasm", p.name)))
            .with_context(|| format!("cannot read {}.wasm", p.name))?;
        let mut columns = BTreeMap::new();
        for &(key, _) in COLUMNS {
            eprintln!("{} {}: {key}", p.name, args[0]);
            let timed: Result<(Duration, Vec<u8>)> = match key {
                "wasmtime" => plain
                    .compile(&wasm)
                    .and_then(|m| best_of(runs, || plain.run(&m, &args))),
                "instrumented_no_nan" | "instrumented" => {
                    let opts = runegrid_instrument::Options {
                        nan_canonicalization: key == "instrumented",
                        ..Default::default()
                    };
                    runegrid_instrument::instrument(&wasm, &opts)
                        .map_err(anyhow::Error::from)
                        .and_then(|m| Ok(sandbox.compile(&m.bytes)?))
                        .and_then(|prog| best_of(runs, || run_sandbox(&sandbox, &prog, &args)))
                }
                "v8" => match &node {
                    None => {
                        columns.insert(
                            key.to_string(),
                            ColumnReport {
                                skipped: Some("node not found".into()),
                                ..Default::default()
                            },
                        );
                        continue;
                    }
                    Some(driver) => run_node(driver, &wasm_dir, p.name, &args, a.runs),
                },
                _ => unreachable!("unknown column {key}"),
            };
            let report = match timed {
                Ok((t, out)) if out == output => ColumnReport {
                    ms: Some(ms(t)),
                    ratio: Some(t.as_secs_f64() / native_time.as_secs_f64()),
                    matched: true,
                    ..Default::default()
                },
                Ok((_, out)) => ColumnReport {
                    mismatch: Some(format!(
                        "printed {:?}, native printed {:?}",
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&output)
                    )),
                    ..Default::default()
                },
                Err(e) => ColumnReport {
                    mismatch: Some(format!("failed: {e:#}")),
                    ..Default::default()
                },
            };
            if let Some(m) = &report.mismatch {
                eprintln!("MISMATCH: {} in column {key}: {m}", p.name);
            }
            columns.insert(key.to_string(), report);
        }
        reports.push(ProgramReport {
            name: p.name.to_string(),
            args,
            output: String::from_utf8_lossy(&output).into_owned(),
            native_ms: ms(native_time),
            columns,
        });
    }

    let mut geomean = BTreeMap::new();
    for &(key, _) in COLUMNS {
        let ratios: Option<Vec<f64>> = reports.iter().map(|r| r.columns[key].ratio).collect();
        if let Some(ratios) = ratios.filter(|r| !r.is_empty()) {
            let g = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
            geomean.insert(key.to_string(), g);
        }
    }
    let goal = goal(&reports, &geomean);
    let mismatched = reports
        .iter()
        .any(|r| r.columns.values().any(|c| c.mismatch.is_some()));
    let report = Report {
        runs: a.runs,
        scale: a.scale,
        programs: reports,
        geomean,
        goal,
        notes,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    if mismatched {
        eprintln!("error: some runs did not print what the native program printed (see above)");
        return Ok(1);
    }
    Ok(0)
}

fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1e3
}

fn goal(reports: &[ProgramReport], geomean: &BTreeMap<String, f64>) -> Goal {
    let g = geomean.get("instrumented").copied();
    let worst = reports
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.columns["instrumented"].ratio?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let nbody_nan_cost = reports.iter().find(|r| r.name == "nbody").and_then(|r| {
        Some(r.columns["instrumented"].ms? / r.columns["instrumented_no_nan"].ms? - 1.0)
    });
    Goal {
        geomean: g,
        geomean_pass: g.is_some_and(|g| g <= 1.5),
        stretch_pass: g.is_some_and(|g| g <= 1.3),
        worst_pass: worst.as_ref().is_some_and(|w| w.1 <= 2.0),
        worst,
        nbody_nan_pass: nbody_nan_cost.is_some_and(|c| c <= 0.10),
        nbody_nan_cost,
    }
}

fn print_tables(r: &Report) {
    println!(
        "runegrid bench programs: best of {} run(s), scale {}, on {} ({} cores)",
        r.runs,
        r.scale,
        std::env::consts::ARCH,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for p in &r.programs {
        let mut output = p.output.trim_end().replace('\n', " | ");
        if output.chars().count() > 72 {
            output = output.chars().take(71).collect::<String>() + "…";
        }
        println!("\n{} {}  →  {output}", p.name, p.args.join(" "));
        println!("  {:<22} {:>12} {:>9}", "column", "time", "÷ native");
        println!("  {:<22} {:>9.1} ms {:>8.2}×", "native", p.native_ms, 1.0);
        for &(key, heading) in COLUMNS {
            let c = &p.columns[key];
            match (c.ms, c.ratio, &c.mismatch, &c.skipped) {
                (Some(ms), Some(ratio), _, _) => {
                    println!("  {heading:<22} {ms:>9.1} ms {ratio:>8.2}×")
                }
                (_, _, Some(m), _) => println!("  {heading:<22} MISMATCH: {m}"),
                (_, _, _, Some(s)) => println!("  {heading:<22} skipped: {s}"),
                _ => println!("  {heading:<22} -"),
            }
        }
    }
    println!("\ngeometric mean of the ratios to native:");
    for &(key, heading) in COLUMNS {
        match r.geomean.get(key) {
            Some(g) => println!("  {heading:<22} {g:>8.2}×"),
            None => println!("  {heading:<22} -"),
        }
    }
    let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
    let g = &r.goal;
    println!(
        "\ngoal: instrumented ÷ native geometric mean ≤ 1.5× (stretch 1.3×), no program above \
         2×, NaN canonicalization ≤ 10% on n-body"
    );
    match g.geomean {
        Some(x) => println!(
            "  geometric mean {x:.2}×: {} (stretch: {})",
            verdict(g.geomean_pass),
            verdict(g.stretch_pass)
        ),
        None => println!("  geometric mean: not measured: FAIL"),
    }
    match &g.worst {
        Some((name, x)) => println!(
            "  slowest program {name} {x:.2}×: {}",
            verdict(g.worst_pass)
        ),
        None => println!("  slowest program: not measured: FAIL"),
    }
    match g.nbody_nan_cost {
        Some(c) => println!(
            "  NaN canonicalization on n-body {:+.1}%: {}",
            c * 100.0,
            verdict(g.nbody_nan_pass)
        ),
        None => println!("  NaN canonicalization on n-body: not measured: FAIL"),
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

/// The best time of `n` runs of `f` and the output of the runs, which must all agree.
fn best_of(
    n: usize,
    mut f: impl FnMut() -> Result<(Duration, Vec<u8>)>,
) -> Result<(Duration, Vec<u8>)> {
    let mut best: Option<(Duration, Vec<u8>)> = None;
    for _ in 0..n {
        let (t, out) = f()?;
        match &mut best {
            Some((b, first)) => {
                if out != *first {
                    bail!(
                        "two runs printed different outputs: {:?} and {:?}",
                        String::from_utf8_lossy(first),
                        String::from_utf8_lossy(&out)
                    );
                }
                *b = (*b).min(t);
            }
            None => best = Some((t, out)),
        }
    }
    best.context("no runs")
}

/// Builds the programs natively and for wasm32-wasip1; returns the directories holding the
/// native binaries and the modules.
fn build() -> Result<(PathBuf, PathBuf)> {
    let manifest = programs_manifest()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("bench-programs");
    check_wasm_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    for target in [None, Some(WASM_TARGET)] {
        eprintln!(
            "building the benchmark programs ({}) into {}",
            target.unwrap_or("native"),
            target_dir.display()
        );
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--release", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit());
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        // Settings meant for the build of runegrid itself are not the programs'.
        for (key, _) in std::env::vars_os() {
            let Some(k) = key.to_str() else { continue };
            if k.starts_with("CARGO_PROFILE_")
                || k.starts_with("CARGO_BUILD_")
                || matches!(
                    k,
                    "RUSTFLAGS"
                        | "CARGO_ENCODED_RUSTFLAGS"
                        | "CARGO_TARGET_DIR"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "RUSTC_WRAPPER"
                        | "RUSTC_WORKSPACE_WRAPPER"
                )
            {
                cmd.env_remove(&key);
            }
        }
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
        if !status.success() {
            bail!(
                "building the benchmark programs in {} failed ({status})",
                manifest.display()
            );
        }
    }
    Ok((
        target_dir.join("release"),
        target_dir.join(WASM_TARGET).join("release"),
    ))
}

/// The repository this binary was built from.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn programs_manifest() -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("benches/programs/Cargo.toml"),
        repo_root().join("benches/programs/Cargo.toml"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .context("cannot find benches/programs/Cargo.toml: run the bench from the repository")
}

fn check_wasm_target() -> Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .with_context(|| format!("cannot run {}", Path::new(&rustc).display()))?;
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || libdir.is_empty() || !Path::new(&libdir).is_dir() {
        bail!(
            "the Rust standard library for {WASM_TARGET} is not installed; the bench builds \
             the programs for it: install it with `rustup target add {WASM_TARGET}`"
        );
    }
    Ok(())
}

fn run_native(exe: &Path, args: &[String]) -> Result<(Duration, Vec<u8>)> {
    let t = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let t = t.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((t, out.stdout))
}

fn run_sandbox(
    sandbox: &Sandbox,
    program: &runegrid_sandbox::Program,
    args: &[String],
) -> Result<(Duration, Vec<u8>)> {
    let task = TaskRun {
        args,
        env: &[],
        stdin: &[],
        seed: 1,
        limits: Limits {
            fuel: Limits::MAX_FUEL,
            memory_bytes: 1 << 30,
            wall_time_ms: 600_000,
            ..Limits::default()
        },
        blobs: &[],
    };
    let t = Instant::now();
    let out = sandbox.run(program, &task, &mut |_| {})?;
    let t = t.elapsed();
    match out.execution.status {
        ExecStatus::Exited { code: 0 } => Ok((t, out.execution.stdout)),
        status => bail!(
            "the run ended with {status:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Writes the node driver into `dir` when `node` runs; `None` without node.
fn node_driver(dir: &Path) -> Result<Option<PathBuf>> {
    let found = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Ok(None);
    }
    let path = dir.join("driver.mjs");
    std::fs::write(&path, NODE_DRIVER)?;
    Ok(Some(path))
}

/// `node driver.mjs MODULE RUNS OUT_FILE ARGS...`: compiles the module, then `RUNS` times
/// instantiates it with a fresh `node:wasi` (stdout to OUT_FILE) and runs it; prints the best
/// time of instantiation + run in ms, then the stdout of the last run.
const NODE_DRIVER: &str = r#"
import { readFileSync, openSync, closeSync } from 'node:fs';
import { WASI } from 'node:wasi';
import { performance } from 'node:perf_hooks';
const [file, runs, outFile, ...args] = process.argv.slice(2);
const module = await WebAssembly.compile(readFileSync(file));
let best = Infinity;
for (let i = 0; i < Number(runs); i++) {
  const fd = openSync(outFile, 'w');
  const wasi = new WASI({ version: 'preview1', args: ['main', ...args], env: {}, stdout: fd, returnOnExit: true });
  const t0 = performance.now();
  const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi.wasiImport });
  const code = wasi.start(instance);
  const ms = performance.now() - t0;
  closeSync(fd);
  if (code !== 0) { console.error(`exit code ${code}`); process.exit(1); }
  best = Math.min(best, ms);
}
process.stdout.write(`${best}\n` + readFileSync(outFile, 'latin1'));
"#;

fn run_node(
    driver: &Path,
    wasm_dir: &Path,
    name: &str,
    args: &[String],
    runs: u32,
) -> Result<(Duration, Vec<u8>)> {
    let out_file = driver.with_file_name(format!("{name}.stdout"));
    // V8's concurrent GC marking aborts node 20 (SIGABRT/SIGTRAP, no message) on the hash-map
    // program at full size; the GC's threads do not run the wasm code being timed.
    let out = Command::new("node")
        .args(["--no-warnings", "--single-threaded-gc"])
        .arg(driver)
        .arg(wasm_dir.join(format!("{name}.wasm")))
        .arg(runs.to_string())
        .arg(&out_file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run node")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: String = stderr.chars().take(400).collect();
        bail!("node failed ({}): {stderr}", out.status);
    }
    let nl = out
        .stdout
        .iter()
        .position(|&b| b == b'\n')
        .context("the node driver printed no time")?;
    let ms: f64 = std::str::from_utf8(&out.stdout[..nl])?
        .trim()
        .parse()
        .context("the node driver printed no time")?;
    Ok((
        Duration::from_secs_f64(ms / 1e3),
        out.stdout[nl + 1..].to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_keeps_sizes_valid_and_default_at_one() {
        for p in PROGRAMS {
            assert_eq!(p.scaled(1.0), p.size, "{}", p.name);
            assert!(p.scaled(0.01) >= p.min, "{}", p.name);
            assert!(p.scaled(0.01) <= p.size, "{}", p.name);
            assert!(p.scaled(1e-12) >= p.min, "{}", p.name);
        }
        let fannkuch = PROGRAMS.iter().find(|p| p.name == "fannkuch").unwrap();
        assert_eq!(fannkuch.scaled(0.01), 8);
        assert_eq!(fannkuch.scaled(11.0), 11);
        let trees = PROGRAMS.iter().find(|p| p.name == "binarytrees").unwrap();
        assert_eq!(trees.scaled(0.25), 15);
    }
}
