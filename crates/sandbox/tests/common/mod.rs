//! Helpers shared by the sandbox tests: one sandbox, WAT → instrumented → compiled programs.

#![allow(dead_code)]

use runegrid_core::Limits;
use runegrid_instrument::{Options, instrument};
use runegrid_sandbox::{Program, RunOutput, Sandbox, SandboxError, TaskRun};
use std::path::Path;
use std::sync::{Arc, OnceLock};

pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new().expect("sandbox"))
}

/// Instruments `wat` with `opts` and compiles it.
pub fn program_with(wat: &str, opts: &Options) -> Arc<Program> {
    let out = instrument(wat.as_bytes(), opts).expect("instrument");
    sandbox().compile(&out.bytes).expect("compile")
}

/// Instruments `wat` with the default options and compiles it.
pub fn program(wat: &str) -> Arc<Program> {
    program_with(wat, &Options::default())
}

/// Generous limits for tests.
pub fn limits() -> Limits {
    Limits {
        fuel: 1_000_000_000,
        memory_bytes: 16 << 20,
        wall_time_ms: 20_000,
        stdout_bytes: 1 << 20,
        scratch_bytes: 1 << 20,
        output_bytes: 1 << 20,
    }
}

/// Runs with no args, env or stdin, seed 0.
pub fn run(program: &Program, limits: Limits) -> RunOutput {
    try_run(program, &[], &[], b"", 0, limits).expect("run")
}

pub fn try_run(
    program: &Program,
    args: &[String],
    env: &[(String, String)],
    stdin: &[u8],
    seed: u64,
    limits: Limits,
) -> Result<RunOutput, SandboxError> {
    let task = TaskRun {
        args,
        env,
        stdin,
        seed,
        limits,
        blobs: &[],
    };
    sandbox().run(program, &task, &mut |_| {})
}

/// Runs on `sandbox` (instead of the shared one) with no args, env or stdin, seed 0.
pub fn run_in(sandbox: &Sandbox, program: &Program, limits: Limits) -> RunOutput {
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: b"",
        seed: 0,
        limits,
        blobs: &[],
    };
    sandbox.run(program, &task, &mut |_| {}).expect("run")
}

/// Imports of every module built by [`module`].
pub const IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))"#;

/// A memory, and `$write (fd, ptr, len)` and `$print (ptr, len)` helpers writing through an
/// iovec at address 0.
pub const PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $print (param $ptr i32) (param $len i32)
    (call $write (i32.const 1) (local.get $ptr) (local.get $len)))
"#;

/// A `_start` that writes "hi": 11 instructions up to the `call` of `fd_write`, 2 after it.
pub const WRITE_HI: &str = r#"
  (data (i32.const 16) "hi")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#;

/// A module made of [`IMPORTS`], [`PRELUDE`] and `body`; the lines of `body` that start with
/// `(import` are moved up with the imports, as the text format requires.
pub fn module(body: &str) -> String {
    let (imports, rest): (Vec<&str>, Vec<&str>) = body
        .lines()
        .partition(|l| l.trim_start().starts_with("(import"));
    format!(
        "(module {IMPORTS}\n{}\n{PRELUDE}\n{})",
        imports.join("\n"),
        rest.join("\n")
    )
}

/// The C example `examples/c/NAME.c` built for `wasm32-wasi` with Debian's clang and
/// wasi-libc (`clang --target=wasm32-wasi -O2`), or `None` (with a note on stderr) when they are
/// not installed — unless `RUNEGRID_REQUIRE_CLANG` is set (CI sets it), when that fails the test.
pub fn c_example(name: &str) -> Option<Vec<u8>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/c")
        .join(format!("{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.wasm"));
    let built = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .output();
    match built {
        Ok(o) if o.status.success() => Some(std::fs::read(&out).expect("clang's output")),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => format!("cannot run clang: {e}"),
            };
            assert!(
                std::env::var_os("RUNEGRID_REQUIRE_CLANG").is_none(),
                "RUNEGRID_REQUIRE_CLANG is set but {} does not build: {why}",
                src.display()
            );
            eprintln!(
                "skipping the C example {name}: clang with wasi-libc is not installed \
                 (apt-get install clang lld wasi-libc libclang-rt-dev-wasm32): {why}"
            );
            None
        }
    }
}
