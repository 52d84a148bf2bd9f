//! Runs instrumented WASI preview-1 tasks deterministically. The only crate that touches
//! wasmtime.
//!
//! Input is the output of [`runegrid_instrument::instrument`]: the module meters its own fuel,
//! call depth and memory growth and canonicalizes its NaNs, so this crate only sets the limits
//! in the module's exported globals, runs `_start` against a deterministic WASI host (see
//! [`wasi`] for the exact behaviour a browser host must reproduce) and reads the globals back
//! to tell how the run ended:
//!
//! 1. `proc_exit(code)` → `Exited { code }`; returning from `_start` → `Exited { code: 0 }`,
//!    or `OutOfFuel` when the fuel global is below zero (the last charges spent it and no
//!    refuel check came after them);
//! 2. a stdout write past the cap → `StdoutLimit` (stdout holds exactly the cap);
//! 3. the wall-time deadline, checked each time the module asks for fuel (see [`fuel`]) →
//!    [`SandboxError::Timeout`]: not deterministic, so not an [`Execution`];
//! 4. any other trap: fuel global below zero → `OutOfFuel`; depth global below zero →
//!    `StackOverflow`; memory-denied flag set → `MemoryLimit`; otherwise the trap's kind
//!    (wasmtime's own stack overflow, a backstop the depth limit should pre-empt, is
//!    `StackOverflow` too).
//!
//! Fuel used is `limit - remaining`, or the whole limit when it ran out. A module whose initial
//! memory is above the limit ends with `MemoryLimit` and fuel 0 before running.
//!
//! Modules instrumented before the refuel import existed (stored by an older coordinator) hold
//! the whole limit in their fuel global and never call back: they run on a second engine, made
//! on first use, that checks wall time with wasmtime's epoch interruption.
//!
//! Architecture Invariant: nothing a host function does depends on anything but the task and
//! what the guest did before; wasmtime's own NaN canonicalization and fuel are off (the module
//! carries both), so the same module gives the same bytes on any engine.
//!
//! Each run executes on a pooled runner thread with a stack of [`THREAD_STACK_BYTES`] (so
//! callers need no special stack), while the calling thread receives stdout as it is written
//! and hands it to the `on_stdout` callback (which therefore needs neither `Send` nor
//! `'static`).
//!
//! Per-run overhead, measured on the shared 2-core development machine under load (release,
//! `tests/overhead.rs`): a no-op module costs about 35-45 µs per run (median), most of it the
//! hand-off to the runner thread and the teardown of the instance's memory mapping; the
//! pooling allocator measured no faster, so the default on-demand allocator is used.

mod fuel;
mod preinit;
mod runner;
pub mod wasi;

pub use fuel::SLICE as FUEL_SLICE;
pub use preinit::preinitialize;
use runegrid_core::{ExecStatus, Execution, FailureKind, Limits, OutputFile, TrapKind};
use runegrid_instrument::{
    DEPTH_GLOBAL, FUEL_GLOBAL, MEMORY_DENIED_GLOBAL, MEMORY_LIMIT_GLOBAL, REFILL_GLOBAL,
};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
pub use wasi::Blob;
use wasi::{Fs, Host, SplitMix64, Stop};
use wasmtime::{
    Config, Engine, Extern, ExternType, InstancePre, Linker, Module, ModuleExport, OptLevel, Store,
    StoreLimitsBuilder, Strategy, Trap, Val,
};

/// Stack size of the runner threads that execute runs. Callers of [`Sandbox::run`] need no
/// particular stack: the guest runs on a runner thread, never on the caller's.
pub const THREAD_STACK_BYTES: usize = 32 << 20;
/// Native stack wasm may use before wasmtime traps. The injected call-depth limit is meant to
/// trigger long before (4096 calls by default); this is only a backstop.
pub const MAX_WASM_STACK_BYTES: usize = 16 << 20;
/// Period of the epoch ticker that enforces wall time for modules without the refuel import.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Compiled programs kept in the cache.
pub const CACHE_CAPACITY: usize = 64;
/// Runs one sandbox can hold at once (instance slots of the pooling allocator).
pub const MAX_CONCURRENT_RUNS: u32 = 256;
/// Most elements a table may reach (wasmtime backstop; the module enforces the same).
const MAX_TABLE_ELEMENTS: usize = runegrid_instrument::MAX_TABLE_ELEMENTS as usize;

/// Why a run produced no [`Execution`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The module could not be compiled or is not an instrumented runegrid module.
    #[error("cannot compile module: {0}")]
    Compile(String),
    /// The run exceeded its wall-time limit (not deterministic: the attempt is lost).
    #[error("wall time limit of {wall_time_ms} ms exceeded")]
    Timeout { wall_time_ms: u64 },
    /// Instantiation failed (resources exhausted on this worker).
    #[error("cannot instantiate module: {0}")]
    Instantiate(String),
    /// The task itself is malformed (e.g. two blobs with one name); no worker can run it.
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// A bug or an unexpected engine failure.
    #[error("internal sandbox error: {0}")]
    Internal(String),
}

impl SandboxError {
    /// What a worker reports as the kind of its failed attempt (the one place this mapping
    /// lives).
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            SandboxError::Compile(_) => FailureKind::Program,
            SandboxError::Timeout { .. } => FailureKind::WallTime,
            SandboxError::InvalidTask(_) => FailureKind::InvalidTask,
            SandboxError::Instantiate(_) | SandboxError::Internal(_) => FailureKind::Internal,
        }
    }
}

/// One task to run.
#[derive(Debug, Clone, Copy)]
pub struct TaskRun<'a> {
    /// Arguments after `argv[0]` (which is always `main`).
    pub args: &'a [String],
    /// Environment variables, in order.
    pub env: &'a [(String, String)],
    /// Everything fd 0 reads.
    pub stdin: &'a [u8],
    /// Seed of `random_get`.
    pub seed: u64,
    /// Fuel, memory, wall-time and stdout limits of this run.
    pub limits: Limits,
    /// Read-only files mounted under [`wasi::MOUNT_DIR`] (none: no file system at all).
    pub blobs: &'a [Blob],
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// The deterministic part, compared between replicas.
    pub execution: Execution,
    /// Stderr, capped at [`wasi::STDERR_CAP`]; not part of the digest.
    pub stderr: Vec<u8>,
    /// The content of each of `execution.files`, in the same order.
    pub files: Vec<Vec<u8>>,
    /// The size of the module's linear memory when the run ended: its peak, since a linear
    /// memory only grows (0 when the run never started). Not part of the digest, though
    /// replicas agree on it too (growth is the module's own deterministic doing).
    pub memory_bytes: u64,
}

/// A compiled, linked module, ready to instantiate. Cloning is cheap (shared code).
#[derive(Clone)]
pub struct Program {
    pre: InstancePre<Host>,
    sha256: [u8; 32],
    initial_pages: u64,
    exports: Exports,
    /// The epoch ticker to keep running while it runs: only for a module without the refuel
    /// import.
    ticker: Option<Arc<Ticker>>,
}

impl Program {
    /// SHA-256 of the module bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("sha256", &hex_short(&self.sha256))
            .field("initial_pages", &self.initial_pages)
            .finish_non_exhaustive()
    }
}

fn hex_short(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Pre-resolved exports, so a run does no name lookups.
#[derive(Clone, Copy)]
struct Exports {
    start: ModuleExport,
    memory: ModuleExport,
    fuel: ModuleExport,
    depth: ModuleExport,
    limit: ModuleExport,
    denied: ModuleExport,
    /// The refill threshold, in modules with the refuel import.
    refill: Option<ModuleExport>,
}

/// The wasmtime engine, the WASI linker, a cache of compiled programs and the runner threads.
/// `Send + Sync`: one sandbox serves many concurrent runs.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<Host>,
    /// The engine for modules without the refuel import, made on first use.
    legacy: OnceLock<Result<Legacy, SandboxError>>,
    cache: Mutex<Cache>,
    runners: Arc<runner::Runners>,
    /// Fuel handed to a module at a time, above its margin.
    slice: i64,
}

/// An engine with epoch interruption, its linker and its epoch ticker: for modules instrumented
/// before the refuel import, which do not come back to the host to be timed.
struct Legacy {
    engine: Engine,
    linker: Linker<Host>,
    ticker: Arc<Ticker>,
    ticker_thread: Option<JoinHandle<()>>,
}

impl Legacy {
    fn new() -> Result<Legacy, SandboxError> {
        let internal = |e: wasmtime::Error| SandboxError::Internal(format!("{e:#}"));
        let mut config = engine_config();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(internal)?;
        let linker = linker(&engine).map_err(internal)?;
        let ticker = Arc::new(Ticker::default());
        let ticker_thread = {
            let ticker = ticker.clone();
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("runegrid-epoch".into())
                .spawn(move || ticker.run(&engine))
                .map_err(|e| {
                    SandboxError::Internal(format!("cannot start the epoch ticker: {e}"))
                })?
        };
        Ok(Legacy {
            engine,
            linker,
            ticker,
            ticker_thread: Some(ticker_thread),
        })
    }
}

impl Drop for Legacy {
    fn drop(&mut self) {
        self.ticker.update(|s| s.stop = true);
        if let Some(thread) = self.ticker_thread.take() {
            let _ = thread.join();
        }
    }
}

/// The WASI functions and `runegrid.refuel`.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    wasi::add_to_linker(&mut linker)?;
    fuel::add_to_linker(&mut linker)?;
    Ok(linker)
}

#[derive(Default)]
struct Cache {
    programs: HashMap<[u8; 32], (Arc<Program>, u64)>,
    clock: u64,
}

/// Runs the epoch forward every [`EPOCH_TICK`] while at least one run is in flight.
#[derive(Default)]
struct Ticker {
    state: Mutex<TickerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TickerState {
    active: usize,
    stop: bool,
}

impl Ticker {
    fn run(&self, engine: &Engine) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.stop {
                return;
            }
            if state.active == 0 {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            drop(state);
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Changes the state; wakes the ticker if it may be waiting for work (or must stop).
    fn update(&self, f: impl FnOnce(&mut TickerState)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let was_idle = state.active == 0;
        f(&mut state);
        if state.stop || (was_idle && state.active > 0) {
            self.wake.notify_all();
        }
    }
}

/// Counts a run as active for the ticker while alive.
struct ActiveRun(Arc<Ticker>);

impl ActiveRun {
    fn new(ticker: Arc<Ticker>) -> Self {
        ticker.update(|s| s.active += 1);
        ActiveRun(ticker)
    }
}

impl Drop for ActiveRun {
    fn drop(&mut self) {
        self.0.update(|s| s.active -= 1);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.runners.shutdown();
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

/// The wasmtime configuration: Cranelift, no wasmtime fuel and no Cranelift NaN
/// canonicalization (the module carries both), no epoch interruption (the module comes back to
/// the host for fuel, where wall time is checked), exactly the WebAssembly features the
/// instrumentation allows; pooled instances.
fn config() -> Config {
    let mut config = engine_config();
    // Pooled instance slots whose first pages stay resident between runs: a small module's
    // run no longer maps, faults in and unmaps its memory each time (measured here: a Rust
    // no-op module's run drops from 70-99 µs to 44-55 µs).
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_memories(MAX_CONCURRENT_RUNS)
        .total_tables(MAX_CONCURRENT_RUNS)
        .total_core_instances(MAX_CONCURRENT_RUNS)
        .max_memory_size(Limits::MAX_MEMORY as usize)
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(1 << 16);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    config
}

/// [`config`] without the pooling allocator.
fn engine_config() -> Config {
    let allowed = runegrid_instrument::ALLOWED_FEATURES;
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(false)
        .consume_fuel(false)
        .epoch_interruption(false)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        // Unused (runs are synchronous) but wasmtime requires it to be at least max_wasm_stack.
        .async_stack_size(MAX_WASM_STACK_BYTES + (1 << 20))
        .parallel_compilation(true)
        .wasm_features(wasmtime::WasmFeatures::all().difference(allowed), false)
        .wasm_features(allowed, true);
    config
}

impl Sandbox {
    /// A sandbox that hands fuel out `slice` at a time (above each module's margin) instead of
    /// [`FUEL_SLICE`]: results are the same whatever the slice; a small one makes the module
    /// come back to the host more often (for tests of exactly that).
    pub fn with_fuel_slice(slice: i64) -> Result<Sandbox, SandboxError> {
        let mut sandbox = Sandbox::new()?;
        sandbox.slice = slice.max(1);
        Ok(sandbox)
    }

    /// Builds the engine and the linker.
    pub fn new() -> Result<Sandbox, SandboxError> {
        let internal = |e: wasmtime::Error| SandboxError::Internal(format!("{e:#}"));
        let engine = Engine::new(&config()).map_err(internal)?;
        let linker = linker(&engine).map_err(internal)?;
        Ok(Sandbox {
            engine,
            linker,
            legacy: OnceLock::new(),
            cache: Mutex::new(Cache::default()),
            runners: runner::Runners::new(THREAD_STACK_BYTES),
            slice: FUEL_SLICE,
        })
    }

    fn legacy(&self) -> Result<&Legacy, SandboxError> {
        self.legacy
            .get_or_init(Legacy::new)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Compiles an instrumented module, or returns the cached program with the same SHA-256.
    pub fn compile(&self, instrumented_wasm: &[u8]) -> Result<Arc<Program>, SandboxError> {
        let sha256: [u8; 32] = Sha256::digest(instrumented_wasm).into();
        if let Some(program) = self.cached(&sha256) {
            return Ok(program);
        }
        let started = std::time::Instant::now();
        let program = Arc::new(self.compile_uncached(instrumented_wasm, sha256)?);
        tracing::debug!(
            sha256 = %hex_short(&sha256),
            bytes = instrumented_wasm.len(),
            ms = started.elapsed().as_millis() as u64,
            "compiled module"
        );
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.clock += 1;
        let clock = cache.clock;
        if cache.programs.len() >= CACHE_CAPACITY && !cache.programs.contains_key(&sha256) {
            let oldest = cache
                .programs
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                cache.programs.remove(&oldest);
            }
        }
        let entry = cache.programs.entry(sha256).or_insert((program, clock));
        entry.1 = clock;
        Ok(entry.0.clone())
    }

    fn cached(&self, sha256: &[u8; 32]) -> Option<Arc<Program>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.clock += 1;
        let clock = cache.clock;
        let (program, used) = cache.programs.get_mut(sha256)?;
        *used = clock;
        Some(program.clone())
    }

    fn compile_uncached(&self, wasm: &[u8], sha256: [u8; 32]) -> Result<Program, SandboxError> {
        let compile = |e: wasmtime::Error| SandboxError::Compile(format!("{e:#}"));
        let mut module = Module::new(&self.engine, wasm).map_err(compile)?;
        let refuels = module.imports().any(|i| {
            i.module() == runegrid_instrument::HOST_MODULE
                && i.name() == runegrid_instrument::REFUEL_FUNCTION
        });
        let mut linker = &self.linker;
        let mut ticker = None;
        if !refuels {
            let legacy = self.legacy()?;
            module = Module::new(&legacy.engine, wasm).map_err(compile)?;
            linker = &legacy.linker;
            ticker = Some(legacy.ticker.clone());
        }
        let not_instrumented = |what: &str| {
            SandboxError::Compile(format!(
                "module is not instrumented for runegrid: {what} (run it through runegrid-instrument)"
            ))
        };
        let global = |name: &str| match module.get_export(name) {
            Some(ExternType::Global(g)) if g.mutability() == wasmtime::Mutability::Var => module
                .get_export_index(name)
                .ok_or_else(|| not_instrumented(&format!("no export {name}"))),
            _ => Err(not_instrumented(&format!("no mutable global {name}"))),
        };
        let exports = Exports {
            refill: if refuels {
                Some(global(REFILL_GLOBAL)?)
            } else {
                None
            },
            fuel: global(FUEL_GLOBAL)?,
            depth: global(DEPTH_GLOBAL)?,
            limit: global(MEMORY_LIMIT_GLOBAL)?,
            denied: global(MEMORY_DENIED_GLOBAL)?,
            start: match module.get_export("_start") {
                Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {
                    module.get_export_index("_start")
                }
                _ => None,
            }
            .ok_or_else(|| not_instrumented("no `_start` function of type [] -> []"))?,
            memory: module
                .get_export_index("memory")
                .ok_or_else(|| not_instrumented("no export `memory`"))?,
        };
        let initial_pages = match module.get_export("memory") {
            Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => m.minimum(),
            _ => return Err(not_instrumented("`memory` is not a 32-bit unshared memory")),
        };
        let pre = linker.instantiate_pre(&module).map_err(compile)?;
        Ok(Program {
            pre,
            sha256,
            initial_pages,
            exports,
            ticker,
        })
    }

    /// Runs a task; `on_stdout` receives stdout as the guest writes it (on the calling thread).
    /// Deterministic outcomes, traps included, are `Ok`; `Err` means the attempt is lost.
    pub fn run(
        &self,
        program: &Program,
        task: &TaskRun<'_>,
        on_stdout: &mut dyn FnMut(&[u8]),
    ) -> Result<RunOutput, SandboxError> {
        enum Event {
            Out(Vec<u8>),
            Done(Result<RunOutput, SandboxError>),
        }
        let (tx, rx) = mpsc::channel::<Event>();
        let out = tx.clone();
        self.spawn(
            program,
            task,
            Box::new(move |chunk| {
                let _ = out.send(Event::Out(chunk.to_vec()));
            }),
            Box::new(move |r| {
                let _ = tx.send(Event::Done(r));
            }),
        );
        // Chunks arrive before the outcome: both are sent from the one runner thread.
        for ev in rx {
            match ev {
                Event::Out(chunk) => on_stdout(&chunk),
                Event::Done(r) => return r,
            }
        }
        Err(SandboxError::Internal("the runner thread vanished".into()))
    }

    /// Starts a task on a runner thread and returns at once. `on_stdout` receives stdout as
    /// the guest writes it and `on_done` the outcome (as [`Sandbox::run`] returns it), both on
    /// the runner thread. This saves the caller a thread of its own per run.
    pub fn spawn(
        &self,
        program: &Program,
        task: &TaskRun<'_>,
        on_stdout: StdoutSink,
        on_done: DoneSink,
    ) {
        let limits = task.limits;
        if let Err(e) = wasi::check_blobs(task.blobs) {
            on_done(Err(SandboxError::InvalidTask(e)));
            return;
        }
        if program.initial_pages > u64::from(limits.memory_pages()) {
            on_done(Ok(RunOutput {
                execution: Execution {
                    status: ExecStatus::MemoryLimit,
                    stdout: Vec::new(),
                    fuel: 0,
                    files: Vec::new(),
                },
                stderr: Vec::new(),
                files: Vec::new(),
                memory_bytes: 0,
            }));
            return;
        }
        let host = host(task, on_stdout);
        let active = program.ticker.clone().map(ActiveRun::new);
        let program = program.clone();
        let slice = self.slice;
        // The job owns `on_done`; if no runner thread can start, it comes back in the error.
        let done = Arc::new(Mutex::new(Some(on_done)));
        let done_job = done.clone();
        let submitted = self.runners.submit(Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                execute(&program, host, limits, slice)
            }))
            .unwrap_or_else(|_| Err(SandboxError::Internal("a run panicked".into())))
            .map(|(status, fuel, stdout, stderr, outputs, memory_bytes)| {
                let (files, bytes) = outputs.into_iter().map(output_file).unzip();
                RunOutput {
                    execution: Execution {
                        status,
                        stdout,
                        fuel,
                        files,
                    },
                    stderr,
                    files: bytes,
                    memory_bytes,
                }
            });
            drop(active);
            if let Some(f) = done_job
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                f(result);
            }
        }));
        if let Err(e) = submitted
            && let Some(f) = done.lock().unwrap_or_else(PoisonError::into_inner).take()
        {
            f(Err(SandboxError::Internal(format!(
                "cannot start a runner thread: {e}"
            ))));
        }
    }
}

/// Receives stdout chunks of a spawned run.
pub type StdoutSink = Box<dyn FnMut(&[u8]) + Send>;
/// Receives the outcome of a spawned run.
pub type DoneSink = Box<dyn FnOnce(Result<RunOutput, SandboxError>) + Send>;

/// An output file's record and its bytes.
fn output_file((path, bytes): (String, Vec<u8>)) -> (OutputFile, Vec<u8>) {
    let file = OutputFile {
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        path,
    };
    (file, bytes)
}

/// What `execute` returns: status, fuel used, stdout, stderr, the files under `/out` and the
/// linear memory's size at the end.
type Outcome = (
    ExecStatus,
    u64,
    Vec<u8>,
    Vec<u8>,
    Vec<(String, Vec<u8>)>,
    u64,
);

/// Instantiates `program` and runs `_start` on the current thread. The files under `/out` come
/// back unless they add up to more than `Limits::output_bytes` (then: `OutputLimit`, none).
fn execute(
    program: &Program,
    host: Host,
    limits: Limits,
    slice: i64,
) -> Result<Outcome, SandboxError> {
    let internal = |e: wasmtime::Error| SandboxError::Internal(format!("{e:#}"));
    let mut store = Store::new(program.pre.module().engine(), host);
    store.limiter(|host| &mut host.limits);
    if program.ticker.is_some() {
        let ticks = limits.wall_time_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
    }

    let instance = program
        .pre
        .instantiate(&mut store)
        .map_err(|e| SandboxError::Instantiate(format!("{e:#}")))?;
    let ex = &program.exports;
    let mut get = |export: &ModuleExport| instance.get_module_export(&mut store, export);
    let (Some(Extern::Memory(memory)), Some(Extern::Func(start))) =
        (get(&ex.memory), get(&ex.start))
    else {
        return Err(SandboxError::Internal(
            "instance lacks memory or _start".into(),
        ));
    };
    let (Some(Extern::Global(fuel)), Some(Extern::Global(depth))) = (get(&ex.fuel), get(&ex.depth))
    else {
        return Err(SandboxError::Internal(
            "instance lacks the fuel or depth global".into(),
        ));
    };
    let (Some(Extern::Global(limit)), Some(Extern::Global(denied))) =
        (get(&ex.limit), get(&ex.denied))
    else {
        return Err(SandboxError::Internal(
            "instance lacks the memory globals".into(),
        ));
    };
    store.data_mut().memory = Some(memory);
    let fuel_limit = limits.fuel.min(i64::MAX as u64) as i64;
    let deadline = Instant::now() + Duration::from_millis(limits.wall_time_ms);
    let refill = match ex
        .refill
        .as_ref()
        .map(|r| instance.get_module_export(&mut store, r))
    {
        None => None,
        Some(Some(Extern::Global(refill))) => Some(refill),
        Some(_) => {
            return Err(SandboxError::Internal(
                "instance lacks the refill global".into(),
            ));
        }
    };
    let first = match refill {
        // No refuel import: the module gets everything at once.
        None => fuel_limit,
        Some(refill) => {
            let margin = refill.get(&mut store).i64().unwrap_or(0);
            let (mut tank, first, threshold) = fuel::Tank::new(fuel_limit, slice, margin, deadline);
            tank.globals = Some((fuel, refill));
            store.data_mut().tank = tank;
            refill
                .set(&mut store, Val::I64(threshold))
                .map_err(internal)?;
            first
        }
    };
    fuel.set(&mut store, Val::I64(first)).map_err(internal)?;
    limit
        .set(&mut store, Val::I32(limits.memory_pages() as i32))
        .map_err(internal)?;
    let start = start.typed::<(), ()>(&store).map_err(internal)?;

    let result = start.call(&mut store, ());

    let in_global = fuel.get(&mut store).i64().unwrap_or(0);
    let remaining = in_global.saturating_add(store.data().tank.reserve);
    let used = if remaining < 0 {
        fuel_limit
    } else {
        fuel_limit - remaining
    } as u64;
    let status = match result {
        // The last charges before `_start` returned spent the fuel: no refuel check came after
        // them.
        Ok(()) if remaining < 0 => ExecStatus::OutOfFuel,
        Ok(()) => ExecStatus::Exited { code: 0 },
        Err(err) => {
            let depth = depth.get(&mut store).i32().unwrap_or(0);
            let denied = denied.get(&mut store).i32().unwrap_or(0) != 0;
            classify(&err, remaining, depth, denied, limits)?
        }
    };
    let stderr = std::mem::take(&mut store.data_mut().stderr);
    let stdout = std::mem::take(&mut store.data_mut().stdout);
    let (mut files, total) = store.data().fs.outputs();
    let status = if total > limits.output_bytes {
        files.clear();
        ExecStatus::OutputLimit
    } else {
        status
    };
    let memory_bytes = memory.data_size(&store) as u64;
    Ok((status, used, stdout, stderr, files, memory_bytes))
}

/// The store state of a run.
fn host(task: &TaskRun<'_>, on_stdout: StdoutSink) -> Host {
    let nul = |mut v: Vec<u8>| {
        v.push(0);
        v
    };
    let args = std::iter::once("main")
        .chain(task.args.iter().map(String::as_str))
        .map(|a| nul(a.as_bytes().to_vec()))
        .collect();
    let env = task
        .env
        .iter()
        .map(|(k, v)| nul(format!("{k}={v}").into_bytes()))
        .collect();
    let memory_bytes = u64::from(task.limits.memory_pages()) * 65536;
    Host {
        args,
        env,
        stdin: task.stdin.to_vec(),
        stdin_pos: 0,
        stdout: Vec::new(),
        stdout_cap: task.limits.stdout_bytes,
        on_stdout,
        stderr: Vec::new(),
        clock_ns: 0,
        rng: SplitMix64::new(task.seed),
        memory: None,
        fs: Fs::new(task.blobs.to_vec(), task.limits.scratch_bytes),
        tank: fuel::Tank::empty(),
        limits: StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(1)
            .tables(64)
            .build(),
    }
}

/// How a run that did not return from `_start` ended.
fn classify(
    err: &wasmtime::Error,
    fuel_remaining: i64,
    depth: i32,
    memory_denied: bool,
    limits: Limits,
) -> Result<ExecStatus, SandboxError> {
    if let Some(stop) = err.downcast_ref::<Stop>() {
        return Ok(match stop {
            Stop::Exit(code) => ExecStatus::Exited { code: *code },
            Stop::StdoutLimit => ExecStatus::StdoutLimit,
        });
    }
    let trap = err.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) || err.downcast_ref::<fuel::Interrupted>().is_some() {
        return Err(SandboxError::Timeout {
            wall_time_ms: limits.wall_time_ms,
        });
    }
    if fuel_remaining < 0 {
        return Ok(ExecStatus::OutOfFuel);
    }
    if depth < 0 {
        return Ok(ExecStatus::StackOverflow);
    }
    if memory_denied {
        return Ok(ExecStatus::MemoryLimit);
    }
    let kind = match trap {
        None => return Err(SandboxError::Internal(format!("{err:#}"))),
        Some(Trap::StackOverflow) => return Ok(ExecStatus::StackOverflow),
        Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
        Some(Trap::MemoryOutOfBounds) => TrapKind::MemoryOutOfBounds,
        Some(Trap::IntegerDivisionByZero) => TrapKind::IntegerDivisionByZero,
        Some(Trap::IntegerOverflow) => TrapKind::IntegerOverflow,
        Some(Trap::BadConversionToInteger) => TrapKind::BadConversionToInteger,
        Some(Trap::TableOutOfBounds | Trap::IndirectCallToNull | Trap::BadSignature) => {
            TrapKind::IndirectCall
        }
        Some(_) => TrapKind::Other,
    };
    Ok(ExecStatus::Trap { trap: kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn sandbox_and_program_are_send_sync() {
        assert_send_sync::<Sandbox>();
        assert_send_sync::<Program>();
    }
}
