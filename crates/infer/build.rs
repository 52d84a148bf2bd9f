//! Builds the inference guest (`guest/`, its own cargo workspace) for `wasm32-wasip1` and copies
//! `infer.wasm` into `OUT_DIR`, where `src/lib.rs` embeds it.
//!
//! The nested build is an ordinary `cargo build --release` with its own target directory,
//! `<target>/<profile>/infer-guest`, which persists across host builds: the first build
//! compiles candle (about 2 minutes on 2 cores), later ones only what changed.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const TARGET: &str = "wasm32-wasip1";

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
    let guest_dir = manifest_dir.join("guest");
    for path in ["Cargo.toml", "Cargo.lock", "src", "patches"] {
        println!("cargo::rerun-if-changed={}", guest_dir.join(path).display());
    }

    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()))?;
    let guest_target_dir = profile_dir.join("infer-guest");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--bin")
        .arg("infer")
        .arg("--manifest-path")
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&guest_target_dir)
        .current_dir(&guest_dir)
        // Cargo's output goes to stderr; keep stdout for `cargo::` directives only.
        .stdout(Stdio::from(io::stderr()))
        .stderr(Stdio::inherit());
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_BUILD_BUILD_DIR", &guest_target_dir);
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
            "building the inference guest in {} failed ({status}); its output is under \
             `--- stderr` (is the {TARGET} target installed? `rustup target add {TARGET}`)",
            guest_dir.display()
        ));
    }
    let built = guest_target_dir
        .join(TARGET)
        .join("release")
        .join("infer.wasm");
    copy_if_changed(&built, &out_dir.join("infer.wasm"))
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set; build scripts run under cargo"))
}

/// Copies `from` to `to` unless `to` already holds the same bytes.
fn copy_if_changed(from: &Path, to: &Path) -> Result<(), String> {
    let bytes =
        fs::read(from).map_err(|e| format!("cannot read built module {}: {e}", from.display()))?;
    if fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(to, &bytes).map_err(|e| format!("cannot write {}: {e}", to.display()))
}
