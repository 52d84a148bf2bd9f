//! Conformance of the browser engine (`web/exec.js`) with this sandbox: the same instrumented
//! module and task must end with the same status code, fuel, stdout and digest on both. Where
//! the browser engine cannot tell the deterministic outcome (see [`Case::browser_declines`])
//! it must refuse to report one (an `internal` error: the attempt is lost, not compared); it
//! must never report a different result.
//!
//! The test runs every case natively, writes a fixture (modules in base64, tasks, and the
//! native results) and runs `node web/test/conformance.mjs FIXTURE`, which runs each case
//! with `runTask` and prints a JSON report; then it compares case by case.
//!
//! The cases are in `cases.rs`, the WAT modules they run in `modules.rs`; this file holds the
//! harness: running natively, the fixture, the comparison.
//!
//! Needs Node 20 (`node` on `PATH`, or the binary named by `RUNEGRID_NODE`); without it the
//! test fails, unless `RUNEGRID_SKIP_NODE=1`. With `RUNEGRID_WASI_TESTSUITE=DIR` the official
//! WASI test suite's tests under DIR are cases too (`testsuite.rs`).

#[path = "../common/mod.rs"]
mod common;

mod cases;
use cases::suite;
mod modules;
use modules::wat;
mod testsuite;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{WRITE_HI, limits, module, sandbox};
use runegrid_core::{ExecStatus, Execution, Limits};
use runegrid_instrument::{Options, instrument};
use runegrid_sandbox::{Blob, TaskRun};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One task to run on both engines.
#[derive(Clone)]
struct Case {
    name: String,
    /// Key of the instrumented module in [`Suite::modules`].
    module: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    seed: u64,
    limits: Limits,
    /// Files mounted under `/blobs`, in mount order (name, bytes).
    blobs: Vec<(String, Vec<u8>)>,
    /// Why the browser engine cannot know this case's outcome and must decline it with an
    /// `internal` error instead of reporting a result.
    browser_declines: Option<&'static str>,
    /// How it must end, beyond both engines agreeing (the WASI test suite's specs).
    expect: Option<testsuite::Expected>,
}

impl Case {
    fn declined(mut self, why: &'static str) -> Self {
        self.browser_declines = Some(why);
        self
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    fn stdin(mut self, stdin: &[u8]) -> Self {
        self.stdin = stdin.to_vec();
        self
    }

    fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.limits);
        self
    }

    fn blobs(mut self, blobs: &[(&str, &[u8])]) -> Self {
        self.blobs = blobs
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect();
        self
    }
}

/// The instrumented modules and the cases that run them.
#[derive(Default)]
struct Suite {
    modules: BTreeMap<String, Vec<u8>>,
    cases: Vec<Case>,
}

impl Suite {
    /// Instruments `source` (a binary or WAT) as module `key`.
    fn module_with(&mut self, key: &str, source: &[u8], opts: &Options) {
        let out = instrument(source, opts).unwrap_or_else(|e| panic!("instrument {key}: {e}"));
        assert!(
            self.modules.insert(key.to_string(), out.bytes).is_none(),
            "module {key} twice"
        );
    }

    fn module(&mut self, key: &str, source: &[u8]) {
        self.module_with(key, source, &Options::default());
    }

    /// A case of module `key` with no args, env or stdin, seed 0 and generous limits; its
    /// name is `key`, or `key/suffix`.
    fn case(&self, key: &str, suffix: &str) -> Case {
        assert!(self.modules.contains_key(key), "no module {key}");
        Case {
            name: if suffix.is_empty() {
                key.to_string()
            } else {
                format!("{key}/{suffix}")
            },
            module: key.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: Vec::new(),
            seed: 0,
            limits: limits(),
            blobs: Vec::new(),
            browser_declines: None,
            expect: None,
        }
    }

    fn push(&mut self, case: Case) {
        assert!(
            self.cases.iter().all(|c| c.name != case.name),
            "case {} twice",
            case.name
        );
        self.cases.push(case);
    }

    /// Module `key` from WAT `body` (see [`wat`]) and one plain case of it.
    fn wat_case(&mut self, key: &str, body: &str) {
        self.module(key, wat(body).as_bytes());
        self.push(self.case(key, ""));
    }
}

/// What the native sandbox produced for a case.
struct Native {
    execution: Execution,
}

fn run_native(s: &Suite, case: &Case) -> Native {
    let program = sandbox()
        .compile(&s.modules[&case.module])
        .unwrap_or_else(|e| panic!("{}: compile: {e}", case.name));
    let blobs: Vec<Blob> = case
        .blobs
        .iter()
        .map(|(n, b)| Blob::new(n.clone(), b.clone()))
        .collect();
    let task = TaskRun {
        args: &case.args,
        env: &case.env,
        stdin: &case.stdin,
        seed: case.seed,
        limits: case.limits,
        blobs: &blobs,
    };
    let mut streamed = Vec::new();
    let out = sandbox()
        .run(&program, &task, &mut |c| streamed.extend_from_slice(c))
        .unwrap_or_else(|e| panic!("{}: native run: {e}", case.name));
    assert_eq!(
        streamed, out.execution.stdout,
        "{}: streamed stdout",
        case.name
    );
    Native {
        execution: out.execution,
    }
}

fn fixture(s: &Suite, natives: &[Native]) -> Value {
    let modules: serde_json::Map<String, Value> = s
        .modules
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(B64.encode(v))))
        .collect();
    let cases: Vec<Value> = s
        .cases
        .iter()
        .zip(natives)
        .map(|(c, n)| {
            json!({
                "name": c.name,
                "module": c.module,
                "task": {
                    "args": c.args,
                    "env": c.env,
                    "stdin": B64.encode(&c.stdin),
                    "seed": c.seed,
                    "limits": c.limits,
                    "blobs": c.blobs.iter().map(|(n, b)| json!({
                        "name": n,
                        "bytes": B64.encode(b),
                    })).collect::<Vec<_>>(),
                },
                "native": {
                    "status": n.execution.status,
                    "code": n.execution.status.code(),
                    "fuel": n.execution.fuel,
                    "stdout": B64.encode(&n.execution.stdout),
                    "digest": n.execution.digest().to_hex(),
                },
            })
        })
        .collect();
    json!({ "modules": modules, "cases": cases })
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Shows where two byte strings differ.
fn bytes_diff(native: &[u8], browser: &[u8]) -> String {
    let at = native
        .iter()
        .zip(browser)
        .position(|(a, b)| a != b)
        .unwrap_or(native.len().min(browser.len()));
    let around = |b: &[u8]| {
        let from = at.saturating_sub(16);
        let to = (at + 16).min(b.len());
        format!("\"{}\"", b[from..to].escape_ascii())
    };
    format!(
        "native {} bytes, browser {} bytes, first difference at byte {at}: native …{}…, browser …{}…",
        native.len(),
        browser.len(),
        around(native),
        around(browser)
    )
}

/// Compares one case; returns the readable differences.
fn compare(case: &Case, native: &Execution, browser: &Value) -> Vec<String> {
    if let Some(err) = browser.get("error") {
        if case.browser_declines.is_some() && err["kind"] == "internal" {
            return Vec::new();
        }
        return vec![format!(
            "the browser engine failed ({}): {}",
            err["kind"], err["message"]
        )];
    }
    let mut diffs = Vec::new();
    // The status must be the serde form of an ExecStatus whose code the engine reports.
    match serde_json::from_value::<ExecStatus>(browser["status"].clone()) {
        Ok(status) if status.code() == browser["code"].as_str().unwrap_or_default() => {}
        Ok(status) => diffs.push(format!(
            "status {status:?} does not match code {}",
            browser["code"]
        )),
        Err(e) => diffs.push(format!("bad status {}: {e}", browser["status"])),
    }
    let code = browser["code"].as_str().unwrap_or_default();
    if code != native.status.code() {
        diffs.push(format!(
            "status: native {}, browser {code}",
            native.status.code()
        ));
    }
    let fuel = browser["fuel"].as_u64();
    if fuel != Some(native.fuel) {
        diffs.push(format!(
            "fuel: native {}, browser {}",
            native.fuel, browser["fuel"]
        ));
    }
    let stdout = B64
        .decode(browser["stdout"].as_str().unwrap_or_default())
        .unwrap_or_default();
    if stdout != native.stdout {
        diffs.push(format!("stdout: {}", bytes_diff(&native.stdout, &stdout)));
    }
    if browser["streamed_matches"] != Value::Bool(true) {
        diffs.push("onStdout chunks do not add up to stdout".into());
    }
    let files: Vec<runegrid_core::OutputFile> =
        serde_json::from_value(browser["files"].clone()).unwrap_or_default();
    if files != native.files {
        diffs.push(format!(
            "files: native {:?}, browser {:?}",
            native.files, files
        ));
    }
    let digest = native.digest().to_hex();
    if browser["digest"].as_str() != Some(digest.as_str()) {
        diffs.push(format!(
            "digest: native {digest}, browser {}",
            browser["digest"]
        ));
    }
    diffs
}

#[test]
fn browser_engine_matches_the_native_sandbox() {
    let node = std::env::var("RUNEGRID_NODE").unwrap_or_else(|_| "node".into());
    let skip = std::env::var("RUNEGRID_SKIP_NODE").is_ok_and(|v| v == "1");
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        other => {
            if skip {
                eprintln!("RUNEGRID_SKIP_NODE=1: browser conformance skipped ({node} unusable)");
                return;
            }
            panic!(
                "the browser conformance test needs Node 20 or later as `{node}` on PATH \
                 ({other:?}); install it, or set RUNEGRID_SKIP_NODE=1 to skip this test"
            );
        }
    }

    let mut s = suite();
    let testsuite_dir = std::env::var_os("RUNEGRID_WASI_TESTSUITE").map(PathBuf::from);
    let skipped = match &testsuite_dir {
        Some(dir) => testsuite::add(&mut s, dir),
        None => Vec::new(),
    };
    let natives: Vec<Native> = s.cases.iter().map(|c| run_native(&s, c)).collect();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser_conformance.json");
    std::fs::write(&path, serde_json::to_vec(&fixture(&s, &natives)).unwrap())
        .expect("write the fixture");

    let script = web_dir().join("test/conformance.mjs");
    let out = Command::new(&node)
        .arg(&script)
        .arg(&path)
        .output()
        .expect("run node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{stderr}",
        node,
        script.display(),
        out.status
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad report from node ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), s.cases.len(), "one result per case");

    let mut failures = String::new();
    let (mut spec_passed, mut spec_failed) = (0, 0);
    for ((case, native), browser) in s.cases.iter().zip(&natives).zip(results) {
        assert_eq!(browser["name"].as_str(), Some(case.name.as_str()));
        let mut diffs = compare(case, &native.execution, browser);
        if let Some(e) = &case.expect {
            let spec = testsuite::check(e, &native.execution);
            if spec.is_empty() && diffs.is_empty() {
                spec_passed += 1;
            } else {
                spec_failed += 1;
            }
            diffs.extend(spec.into_iter().map(|d| format!("spec: {d}")));
        }
        let n = &native.execution;
        if diffs.is_empty() && browser.get("error").is_some() {
            eprintln!(
                "ok   {:<40} {:<28} declined by the browser engine: {}",
                case.name,
                n.status.code(),
                case.browser_declines.unwrap_or_default()
            );
        } else if diffs.is_empty() {
            eprintln!(
                "ok   {:<40} {:<28} fuel {:>11} stdout {:>7} B  ({} ms in node)",
                case.name,
                n.status.code(),
                n.fuel,
                n.stdout.len(),
                browser["ms"]
            );
        } else {
            eprintln!("FAIL {}", case.name);
            let _ = writeln!(failures, "case {}:", case.name);
            for d in diffs {
                let _ = writeln!(failures, "  {d}");
            }
        }
    }
    if testsuite_dir.is_some() {
        for k in &skipped {
            eprintln!("skip {:<40} {}", k.name, k.why);
        }
        eprintln!(
            "WASI test suite: {spec_passed} passed on both engines, {spec_failed} failed, {} skipped",
            skipped.len()
        );
    }
    assert!(
        failures.is_empty(),
        "the browser engine ({}, node {}) disagrees with the native sandbox, or a case ended \
         otherwise than its spec says:\n{failures}\
         (fixture: {})",
        web_dir().join("exec.js").display(),
        report["node"],
        path.display()
    );
}
