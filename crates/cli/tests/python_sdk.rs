//! The Python SDK's test suite (`sdk/python/tests`, pytest), run against this build's
//! `runegrid` binary: it starts its own coordinator and workers from it.
//!
//! Needs `python3` with the SDK and pytest installed (`pip install ./sdk/python[test]`).
//! Without them the test is skipped with a message, unless `RUNEGRID_REQUIRE_PYTHON` is set
//! (CI sets it), which makes that a failure. `RUNEGRID_SKIP_PYTHON=1` always skips it.
//! `RUNEGRID_PYTEST_MARK` passes a marker expression to pytest (e.g. `not script`).
//! The GPU kernel tests (marker `gpu`) run on the workers' Vulkan adapter (lavapipe without a
//! GPU) and skip without one, unless `RUNEGRID_REQUIRE_GPU` is set (passed through, like all of
//! the environment).

mod common;

use common::output_within;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The repository root and the SDK's sources: the tests always import the SDK from this
/// checkout (the installed package brings its dependencies).
fn paths() -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let src = repo.join("sdk/python/src");
    (repo, src)
}

/// Why the SDK cannot be used here, if it cannot.
fn python_missing() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import runegrid, httpx, tqdm, pytest"])
        .env("PYTHONPATH", paths().1)
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
                .to_string(),
        ),
        Err(e) => Some(format!("python3: {e}")),
    }
}

#[test]
fn python_sdk_tests_pass() {
    if std::env::var("RUNEGRID_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("RUNEGRID_SKIP_PYTHON=1: Python SDK tests skipped");
        return;
    }
    if let Some(why) = python_missing() {
        assert!(
            std::env::var_os("RUNEGRID_REQUIRE_PYTHON").is_none(),
            "RUNEGRID_REQUIRE_PYTHON is set but `import runegrid, pytest` fails \
             (pip install ./sdk/python[test]): {why}"
        );
        eprintln!(
            "Python SDK tests skipped: `import runegrid, pytest` fails ({why}); \
             pip install ./sdk/python[test] to run them"
        );
        return;
    }
    let (repo, src) = paths();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "sdk/python/tests",
    ])
    .current_dir(&repo)
    .env("RUNEGRID_BIN", env!("CARGO_BIN_EXE_runegrid"))
    .env("PYTHONPATH", src)
    .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Ok(mark) = std::env::var("RUNEGRID_PYTEST_MARK") {
        cmd.args(["-m", &mark]);
    }
    let out = output_within(cmd, Duration::from_secs(900));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the Python SDK's tests failed ({}); pytest's output is above",
        out.status
    );
}
