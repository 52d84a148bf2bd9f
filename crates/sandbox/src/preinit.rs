//! Pre-initialization: run a module's initialization export once, against the same
//! deterministic WASI host as a task with empty input, and write the resulting memory and
//! globals back into the module as its initial state ([`wasmtime_wizer`]), so that every run
//! starts where the initialization ended.
//!
//! The result is a plain WASI module, to be instrumented like an upload; it depends only on
//! the input module (seed 0, clock 0, no arguments, environment or stdin), so the same bytes
//! come out wherever it is made.

use crate::wasi::{self, Host};
use crate::{SandboxError, StdoutSink, THREAD_STACK_BYTES, TaskRun};
use runegrid_core::Limits;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use wasmtime::{Engine, Instance, Linker, Module, OptLevel, Store, Val};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

/// Runs the export `init_func` (of type `[] -> []`) of the WASI module `wasm` and returns the
/// module with the memory and globals it left, without that export. The initialization must
/// neither exit, trap, nor write to stdout or stderr. Takes a few seconds for a large module
/// (it is compiled with Cranelift first).
pub fn preinitialize(wasm: &[u8], init_func: &str) -> Result<Vec<u8>, SandboxError> {
    let (wasm, init_func) = (wasm.to_vec(), init_func.to_string());
    // On a thread of its own: the guest runs on the host stack, which must hold its own.
    std::thread::Builder::new()
        .name("runegrid-preinit".into())
        .stack_size(THREAD_STACK_BYTES)
        .spawn(move || preinitialize_here(&wasm, &init_func))
        .map_err(|e| SandboxError::Internal(format!("cannot start a thread: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(SandboxError::Internal("pre-initialization panicked".into())))
}

fn preinitialize_here(wasm: &[u8], init_func: &str) -> Result<Vec<u8>, SandboxError> {
    let failed = |e: wasmtime::Error| SandboxError::Internal(format!("pre-initialization: {e:#}"));
    let mut wizer = Wizer::new();
    wizer.init_func(init_func);
    let (cx, instrumented) = wizer
        .instrument(wasm)
        .map_err(|e| SandboxError::Compile(format!("pre-initialization: {e:#}")))?;

    let mut config = crate::engine_config();
    // Compiled for one run: compile fast; nothing interrupts it; NaNs canonical, so the
    // snapshot is the same on every architecture.
    config
        .cranelift_opt_level(OptLevel::None)
        .cranelift_nan_canonicalization(true)
        .epoch_interruption(false);
    let engine = Engine::new(&config).map_err(failed)?;
    let module = Module::new(&engine, &instrumented)
        .map_err(|e| SandboxError::Compile(format!("pre-initialization: {e:#}")))?;
    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker).map_err(failed)?;
    // No scratch space: the snapshot must not depend on a file system.
    let limits = Limits {
        memory_bytes: Limits::MAX_MEMORY,
        scratch_bytes: 0,
        ..Limits::default()
    };
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: &[],
        seed: 0,
        limits,
        blobs: &[],
    };
    let sink: StdoutSink = Box::new(|_| {});
    let mut store = Store::new(&engine, crate::host(&task, sink));
    store.limiter(|host| &mut host.limits);
    let instance = linker.instantiate(&mut store, &module).map_err(failed)?;
    store.data_mut().memory = instance.get_memory(&mut store, "memory");
    let init = instance
        .get_typed_func::<(), ()>(&mut store, init_func)
        .map_err(failed)?;
    init.call(&mut store, ())
        .map_err(|e| failed(e.context(format!("`{init_func}` failed"))))?;
    let host = store.data();
    if !host.stdout.is_empty() || !host.stderr.is_empty() {
        return Err(SandboxError::Internal(format!(
            "pre-initialization: `{init_func}` wrote output: {}{}",
            String::from_utf8_lossy(&host.stdout),
            String::from_utf8_lossy(&host.stderr)
        )));
    }
    let mut state = State { store, instance };
    ready(wizer.snapshot(&cx, &mut state)).map_err(failed)
}

/// The state of the initialized instance, as wizer reads it.
struct State {
    store: Store<Host>,
    instance: Instance,
}

impl InstanceState for State {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let global = self
            .instance
            .get_global(&mut self.store, name)
            .expect("wizer names an exported global");
        match global.get(&mut self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            _ => panic!("a global of a type wizer does not snapshot"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self
            .instance
            .get_memory(&mut self.store, name)
            .expect("wizer names an exported memory");
        contents(memory.data(&self.store))
    }
}

/// The value of a future that never waits (wizer's snapshot over [`State`]).
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}
