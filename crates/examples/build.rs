//! Builds the guest workspace at `<repo>/examples` for `wasm32-wasip1` and copies the modules
//! into `OUT_DIR`, where `src/lib.rs` embeds them with `include_bytes!`.
//!
//! The nested build is an ordinary `cargo build --release` with its own target directory,
//! `<target>/<profile>/wasm-guests`, which persists across host builds, so after the first
//! build it only recompiles what changed (and is a no-op when nothing did).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Guest programs, one package and one binary each, as listed in `examples/Cargo.toml`.
const GUESTS: &[&str] = &[
    "render",
    "matmul",
    "montecarlo",
    "collatz",
    "noop",
    "echo",
    "hostile",
];

/// The guests' target.
const TARGET: &str = "wasm32-wasip1";

/// Variables that would carry the host build's settings into the nested build. Cargo sets
/// some of them for build scripts (`CARGO_ENCODED_RUSTFLAGS`, `CARGO_PRIMARY_PACKAGE`, the
/// wrappers under `cargo clippy`); others may come from the user's environment.
const LEAKY_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_DIR",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            println!("cargo::error={msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let shared_kernels = manifest_dir.join("src/kernels.rs");
    let repo_root = manifest_dir
        .ancestors()
        .nth(2)
        .ok_or_else(|| format!("unexpected manifest dir: {}", manifest_dir.display()))?;
    let guests_dir = repo_root.join("examples");
    let guests_manifest = guests_dir.join("Cargo.toml");

    println!("cargo::rerun-if-changed={}", shared_kernels.display());
    println!("cargo::rerun-if-changed={}", guests_manifest.display());
    println!(
        "cargo::rerun-if-changed={}",
        guests_dir.join("Cargo.lock").display()
    );
    for guest in GUESTS {
        println!(
            "cargo::rerun-if-changed={}",
            guests_dir.join(guest).display()
        );
    }

    check_target_installed()?;

    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()))?;
    let guest_target_dir = profile_dir.join("wasm-guests");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(&guests_manifest)
        .arg("--target-dir")
        .arg(&guest_target_dir)
        .current_dir(&guests_dir)
        // Cargo's output goes to stderr; keep stdout for `cargo::` directives only.
        .stdout(Stdio::from(io::stderr()))
        .stderr(Stdio::inherit());
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    // Pin the nested build directory too: a `build.build-dir` configured for the host build
    // must not make both builds share (and lock) one directory.
    cmd.env("CARGO_BUILD_BUILD_DIR", &guest_target_dir);
    // Profile overrides given to the host build through the environment are not the guests'.
    for (key, _) in env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("CARGO_PROFILE_"))
        {
            cmd.env_remove(key);
        }
    }

    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !status.success() {
        return Err(format!(
            "building the guest programs in {} failed ({status}); its output is under `--- stderr`",
            guests_dir.display()
        ));
    }

    let built = guest_target_dir.join(TARGET).join("release");
    for guest in GUESTS {
        let file = format!("{guest}.wasm");
        copy_if_changed(&built.join(&file), &out_dir.join(&file))?;
    }
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set; build scripts run under cargo"))
}

/// Fails with instructions when the standard library for the guests' target is missing.
fn check_target_installed() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&rustc).display()))?;
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || libdir.is_empty() || !Path::new(&libdir).is_dir() {
        return Err(format!(
            "the Rust standard library for {TARGET} is not installed, but runegrid-examples \
             compiles its guest programs for it; install it with `rustup target add {TARGET}`"
        ));
    }
    Ok(())
}

/// Copies `from` to `to` unless `to` already holds the same bytes, so an unchanged module
/// keeps its modification time.
fn copy_if_changed(from: &Path, to: &Path) -> Result<(), String> {
    let bytes =
        fs::read(from).map_err(|e| format!("cannot read built module {}: {e}", from.display()))?;
    if fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(to, &bytes).map_err(|e| format!("cannot write {}: {e}", to.display()))
}
