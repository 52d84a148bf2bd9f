//! Build-script helper: compiles a guest cargo workspace for `wasm32-wasip1` and copies the
//! modules into `OUT_DIR`, where the host crate embeds them with `include_bytes!`.
//!
//! Used by the build scripts of `runegrid-examples` (the guest workspace `examples/`) and
//! `runegrid-runner` (the Rune runner in `crates/runner/guest/`).
//!
//! The nested build is an ordinary `cargo build --release --locked` with its own target
//! directory, `<target>/<profile>/<target_subdir>`, which persists across host builds, so
//! after the first build it only recompiles what changed (and is a no-op when nothing did).
//! The host build's settings (flags, wrappers, target dir, profile overrides) are kept out of
//! the nested build, whose profile is the one in the guest workspace's `Cargo.toml`.
//!
//! ```no_run
//! // build.rs
//! fn main() -> std::process::ExitCode {
//!     runegrid_guest_build::Guests {
//!         workspace: "guest",
//!         watch: &["Cargo.toml", "Cargo.lock", "src"],
//!         binaries: &["my-guest"],
//!         target_subdir: "wasm-guests-mine",
//!     }
//!     .build_or_report()
//! }
//! ```

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The guests' target.
pub const TARGET: &str = "wasm32-wasip1";

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

/// A guest workspace to build from a build script.
#[derive(Debug, Clone, Copy)]
pub struct Guests<'a> {
    /// The guest workspace's directory (holding its `Cargo.toml` and `Cargo.lock`), relative to
    /// the host package's manifest directory.
    pub workspace: &'a str,
    /// Files and directories of the guest workspace, relative to it, whose changes must rebuild
    /// the guests (a directory counts with everything under it).
    pub watch: &'a [&'a str],
    /// Binaries to copy into `OUT_DIR` as `NAME.wasm`.
    pub binaries: &'a [&'a str],
    /// Name of the nested target directory, inside the host profile's directory. Each guest
    /// workspace has its own, so two build scripts never wait on each other's lock.
    pub target_subdir: &'a str,
}

impl Guests<'_> {
    /// Builds the guests; on failure prints the reason as a `cargo::error` and fails the build.
    pub fn build_or_report(&self) -> ExitCode {
        match self.build() {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                println!("cargo::error={msg}");
                ExitCode::FAILURE
            }
        }
    }

    /// Builds the guests and copies the modules into `OUT_DIR`; prints the `rerun-if-changed`
    /// directives. The error is a message for the user.
    pub fn build(&self) -> Result<(), String> {
        let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
        let out_dir = PathBuf::from(env_var("OUT_DIR")?);
        let guests_dir = manifest_dir.join(self.workspace);
        let guests_manifest = guests_dir.join("Cargo.toml");
        for path in self.watch {
            println!(
                "cargo::rerun-if-changed={}",
                guests_dir.join(path).display()
            );
        }

        check_target_installed()?;

        // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out.
        let profile_dir = out_dir
            .ancestors()
            .nth(3)
            .ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()))?;
        let guest_target_dir = profile_dir.join(self.target_subdir);

        let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(&cargo);
        cmd.arg("build")
            .arg("--release")
            .arg("--locked")
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
        for binary in self.binaries {
            let file = format!("{binary}.wasm");
            copy_if_changed(&built.join(&file), &out_dir.join(&file))?;
        }
        Ok(())
    }
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
        let package = env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "this package".into());
        return Err(format!(
            "the Rust standard library for {TARGET} is not installed, but {package} \
             compiles guest programs for it; install it with `rustup target add {TARGET}`"
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
