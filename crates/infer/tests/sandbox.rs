//! The inference program in the sandbox, instrumented as workers run it. The tests that need
//! the model (`scripts/fetch-model.sh`) print a message and pass without it.

use runegrid_core::{ExecStatus, Limits};
use runegrid_infer::{INFER_WASM, MODEL_BLOB, Request, Summary};
use runegrid_instrument::{Options, instrument};
use runegrid_sandbox::{Blob, Program, RunOutput, Sandbox, TaskRun};
use std::sync::{Arc, OnceLock};

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new().expect("sandbox"))
}

fn program() -> Arc<Program> {
    static PROGRAM: OnceLock<Arc<Program>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let out = instrument(INFER_WASM, &Options::default()).expect("instrument");
            sandbox().compile(&out.bytes).expect("compile")
        })
        .clone()
}

fn model() -> Option<Blob> {
    static MODEL: OnceLock<Option<Blob>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = runegrid_infer::model_for_tests()?;
            let bytes = std::fs::read(&path).expect("read model");
            Some(Blob::new(MODEL_BLOB, bytes))
        })
        .clone()
}

/// Enough for a short answer: 1 GiB of memory, 10^12 fuel.
fn limits() -> Limits {
    Limits {
        fuel: 1_000_000_000_000,
        memory_bytes: 1 << 30,
        wall_time_ms: 600_000,
        stdout_bytes: 1 << 20,
        scratch_bytes: 64 << 20,
        output_bytes: 16 << 20,
    }
}

/// Runs `stdin` with `blobs`; returns the output and the stdout chunks as they came.
fn run(stdin: &[u8], blobs: &[Blob]) -> (RunOutput, Vec<Vec<u8>>) {
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin,
        seed: 7,
        limits: limits(),
        blobs,
    };
    let mut chunks = Vec::new();
    let out = sandbox()
        .run(&program(), &task, &mut |c| chunks.push(c.to_vec()))
        .expect("run");
    (out, chunks)
}

fn stderr(out: &RunOutput) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_program_passes_instrumentation() {
    let out = instrument(INFER_WASM, &Options::default()).expect("instrument");
    assert!(out.imports.iter().any(|i| i.ends_with(".path_open")));
    assert!(out.imports.iter().any(|i| i.ends_with(".fd_prestat_get")));
}

#[test]
fn without_a_model_it_fails_cleanly() {
    let req = Request::chat("hi", 4).to_stdin();
    let (out, _) = run(&req, &[]);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 2 });
    assert!(stderr(&out).contains("cannot read model /blobs/model.gguf"));

    // A blob that is not a GGUF file: opened, read, refused.
    let junk = [Blob::new(MODEL_BLOB, &b"definitely not a gguf file"[..])];
    let (out, _) = run(&req, &junk);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 2 });
    assert!(stderr(&out).contains("infer: model:"), "{}", stderr(&out));

    let (out, _) = run(b"{\"prompt\": 5}", &junk);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 1 });
    assert!(stderr(&out).contains("bad request"), "{}", stderr(&out));
}

#[test]
fn a_tiny_prompt_gets_an_answer() {
    let Some(model) = model() else {
        eprintln!("skipped: no model file (run scripts/fetch-model.sh or set RUNEGRID_MODEL)");
        return;
    };
    let req =
        Request::chat("What is the capital of France? Answer in one sentence.", 16).to_stdin();
    let (out, chunks) = run(&req, &[model]);
    assert_eq!(
        out.execution.status,
        ExecStatus::Exited { code: 0 },
        "{}",
        stderr(&out)
    );
    let text = String::from_utf8(out.execution.stdout.clone()).expect("utf-8");
    eprintln!("answer: {text:?} ({} fuel)", out.execution.fuel);
    // Greedy decoding; the native build of the same program answers the same.
    assert_eq!(text, "The capital of France is Paris.");
    let summary = Summary::from_stderr(&out.stderr).expect("summary");
    assert_eq!(summary.stop, "eos", "{summary:?}");
    assert_eq!(summary.tokens, 7, "{summary:?}");
    // Streamed: one chunk per token (each valid UTF-8 on its own), adding up to stdout.
    assert!(chunks.len() >= summary.tokens.min(2), "{chunks:?}");
    assert!(chunks.iter().all(|c| std::str::from_utf8(c).is_ok()));
    assert_eq!(chunks.concat(), out.execution.stdout);
}

#[test]
fn two_runs_agree_byte_for_byte() {
    let Some(model) = model() else {
        eprintln!("skipped: no model file (run scripts/fetch-model.sh or set RUNEGRID_MODEL)");
        return;
    };
    let req = Request {
        temperature: 0.8,
        top_p: Some(0.95),
        seed: 42,
        ..Request::chat("Write a haiku about computers sharing work.", 16)
    }
    .to_stdin();
    let blobs = [model];
    let (a, _) = run(&req, &blobs);
    let (b, _) = run(&req, &blobs);
    assert_eq!(
        a.execution.status,
        ExecStatus::Exited { code: 0 },
        "{}",
        stderr(&a)
    );
    assert!(!a.execution.stdout.is_empty());
    assert_eq!(a.execution, b.execution);
    assert_eq!(a.execution.digest(), b.execution.digest());
    eprintln!(
        "sampled: {:?} ({} fuel)",
        String::from_utf8_lossy(&a.execution.stdout),
        a.execution.fuel
    );
}
