//! Build-script helper: compiles a guest cargo workspace for `wasm32-wasip1` and copies the
//! modules into `OUT_DIR`, where the host crate embeds them with `include_bytes!`.
//!
//! Used by the build scripts of `runegrid-examples` (the guest workspace `examples/`),
//! `runegrid-runner` (the Rune runner in `crates/runner/guest/`) and `runegrid-infer` (the
//! inference program in `crates/infer/guest/`).
//!
//! The nested build is an ordinary `cargo build --release --locked` with its own target
//! directory, `<target>/<profile>/<target_subdir>`, which persists across host builds, so
//! after the first build it only recompiles what changed (and is a no-op when nothing did).
//! The host build's settings (flags, wrappers, target dir, profile overrides) are kept out of
//! the nested build, whose profile is the one in the guest workspace's `Cargo.toml`; the cargo
//! home is mapped to `/cargo` in every path the modules embed, so they do not depend on where
//! the build ran.
//!
//! A guest workspace may have **prebuilt** modules in the repository ([`prebuilt`]): while its
//! sources are the ones the modules were built from, the build script copies them instead of
//! building (set `RUNEGRID_GUESTS_FROM_SOURCE=1` to build anyway), and the host crate's test
//! [`Guests::verify_prebuilt`] rebuilds them and checks that the bytes are the same.
//!
//! ```no_run
//! // build.rs
//! fn main() -> std::process::ExitCode {
//!     runegrid_guest_build::Guests {
//!         workspace: "guest",
//!         watch: &["Cargo.toml", "Cargo.lock", "src"],
//!         binaries: &["my-guest"],
//!         target_subdir: "wasm-guests-mine",
//!         prebuilt: None,
//!     }
//!     .build_or_report()
//! }
//! ```

pub mod prebuilt;

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use prebuilt::{Manifest, module_file, sha256_hex, sources_digest};

/// The guests' target.
pub const TARGET: &str = "wasm32-wasip1";

/// Set (to anything) to build guests from source even where prebuilt modules are current.
pub const FROM_SOURCE_VAR: &str = "RUNEGRID_GUESTS_FROM_SOURCE";

/// Set to `1` for [`Guests::verify_prebuilt`] to write the modules it built as the prebuilt
/// ones (with their manifest) instead of comparing.
pub const REFRESH_VAR: &str = "RUNEGRID_REFRESH_GUESTS";

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
    /// Directory of prebuilt modules and their manifest, relative to the host package's
    /// manifest directory; `None` when the guests are always built from source.
    pub prebuilt: Option<&'a str>,
}

/// What [`Guests::verify_prebuilt`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The modules built from source are byte for byte the prebuilt ones.
    Identical,
    /// The prebuilt modules were (re)written from a build from source.
    Refreshed,
    /// The sources match but the modules came from another toolchain, so the bytes could not
    /// be compared.
    OtherToolchain {
        /// The toolchain that built the prebuilt modules.
        prebuilt: String,
        /// The toolchain here.
        here: String,
    },
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

    /// Puts the modules into `OUT_DIR`: the prebuilt ones while they are current, else built
    /// from source. Prints the `rerun-if-changed` directives. The error is a message for the
    /// user.
    pub fn build(&self) -> Result<(), String> {
        let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
        let out_dir = PathBuf::from(env_var("OUT_DIR")?);
        let guests_dir = manifest_dir.join(self.workspace);
        for path in self.watch {
            println!(
                "cargo::rerun-if-changed={}",
                guests_dir.join(path).display()
            );
        }
        println!("cargo::rerun-if-env-changed={FROM_SOURCE_VAR}");

        if let Some(prebuilt) = self.prebuilt {
            let prebuilt_dir = manifest_dir.join(prebuilt);
            println!("cargo::rerun-if-changed={}", prebuilt_dir.display());
            if env::var_os(FROM_SOURCE_VAR).is_none() {
                match self.current_prebuilt(&guests_dir, &prebuilt_dir)? {
                    Ok(()) => {
                        for binary in self.binaries {
                            let file = module_file(binary);
                            copy_if_changed(&prebuilt_dir.join(&file), &out_dir.join(&file))?;
                        }
                        return Ok(());
                    }
                    Err(reason) => println!(
                        "cargo::warning=the prebuilt guest modules in {} do not stand for \
                         the sources ({reason}); building from source (refresh them with \
                         scripts/refresh-guests.sh)",
                        prebuilt_dir.display()
                    ),
                }
            }
        }

        // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out.
        let profile_dir = out_dir
            .ancestors()
            .nth(3)
            .ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()))?;
        let built = self.cargo_build(&guests_dir, &profile_dir.join(self.target_subdir))?;
        for binary in self.binaries {
            let file = module_file(binary);
            copy_if_changed(&built.join(&file), &out_dir.join(&file))?;
        }
        Ok(())
    }

    /// `Ok(Ok(()))` when the prebuilt modules stand for the current sources, `Ok(Err(why))`
    /// when they do not (stale, missing, corrupt), `Err` when the sources cannot be read.
    fn current_prebuilt(
        &self,
        guests_dir: &Path,
        prebuilt_dir: &Path,
    ) -> Result<Result<(), String>, String> {
        let manifest = match Manifest::read(prebuilt_dir) {
            Ok(Some(manifest)) => manifest,
            Ok(None) => return Ok(Err(format!("no {}", prebuilt::MANIFEST))),
            Err(e) => return Ok(Err(e)),
        };
        let sources = sources_digest(guests_dir, self.watch)?;
        if let Some(reason) = manifest.stale_reason(self.watch, &sources, self.binaries) {
            return Ok(Err(reason));
        }
        for (file, digest) in &manifest.modules {
            match fs::read(prebuilt_dir.join(file)) {
                Ok(bytes) if sha256_hex(&bytes) == *digest => {}
                Ok(_) => return Ok(Err(format!("{file} does not have its recorded digest"))),
                Err(e) => return Ok(Err(format!("cannot read {file}: {e}"))),
            }
        }
        Ok(Ok(()))
    }

    /// Builds the guests from source into `target_dir` (for a host crate's test: the host
    /// package's manifest directory and a scratch directory that may persist between runs) and
    /// compares them with the prebuilt modules, or, with `RUNEGRID_REFRESH_GUESTS=1`, writes
    /// them and their manifest as the prebuilt ones. The error says what differs and how to
    /// refresh.
    pub fn verify_prebuilt(
        &self,
        manifest_dir: &Path,
        target_dir: &Path,
    ) -> Result<Verified, String> {
        let prebuilt = self
            .prebuilt
            .ok_or("these guests have no prebuilt modules")?;
        let prebuilt_dir = manifest_dir.join(prebuilt);
        let guests_dir = manifest_dir.join(self.workspace);
        let refresh = env::var(REFRESH_VAR).is_ok_and(|v| v == "1");
        let sources = sources_digest(&guests_dir, self.watch)?;
        let here = rustc_version()?;
        let how = format!(
            "refresh them with scripts/refresh-guests.sh (or {REFRESH_VAR}=1 and this test)"
        );

        let manifest = Manifest::read(&prebuilt_dir)?;
        if !refresh {
            let manifest = manifest.as_ref().ok_or_else(|| {
                format!("no prebuilt modules in {}; {how}", prebuilt_dir.display())
            })?;
            if let Some(reason) = manifest.stale_reason(self.watch, &sources, self.binaries) {
                return Err(format!(
                    "the prebuilt modules in {} are stale ({reason}); {how}",
                    prebuilt_dir.display()
                ));
            }
        }

        let built = self.cargo_build(&guests_dir, target_dir)?;
        let mut modules = Vec::new();
        let mut differ = Vec::new();
        for binary in self.binaries {
            let file = module_file(binary);
            let bytes = fs::read(built.join(&file))
                .map_err(|e| format!("cannot read built module {file}: {e}"))?;
            let digest = sha256_hex(&bytes);
            let recorded = manifest
                .as_ref()
                .and_then(|m| m.modules.iter().find(|(name, _)| *name == file));
            if recorded.is_none_or(|(_, d)| *d != digest) {
                differ.push(format!(
                    "{file}: built {digest}, prebuilt {}",
                    recorded.map_or("none", |(_, d)| d.as_str())
                ));
            }
            modules.push((file, bytes, digest));
        }

        if refresh {
            fs::create_dir_all(&prebuilt_dir)
                .map_err(|e| format!("cannot create {}: {e}", prebuilt_dir.display()))?;
            for (file, bytes, _) in &modules {
                let path = prebuilt_dir.join(file);
                fs::write(&path, bytes)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            let manifest = Manifest {
                recipe: prebuilt::RECIPE.to_owned(),
                rustc: here,
                watch: self.watch.iter().map(|&p| p.to_owned()).collect(),
                sources,
                modules: modules.into_iter().map(|(f, _, d)| (f, d)).collect(),
            };
            let path = prebuilt_dir.join(prebuilt::MANIFEST);
            fs::write(&path, manifest.render())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            return Ok(Verified::Refreshed);
        }
        let manifest = manifest.expect("checked above when not refreshing");
        if differ.is_empty() {
            Ok(Verified::Identical)
        } else if manifest.rustc != here {
            Ok(Verified::OtherToolchain {
                prebuilt: manifest.rustc,
                here,
            })
        } else {
            Err(format!(
                "the prebuilt modules in {} are not what their sources build to with the same \
                 toolchain ({}); {how}",
                prebuilt_dir.display(),
                differ.join("; ")
            ))
        }
    }

    /// The body of a host crate's `prebuilt` test: [`Guests::verify_prebuilt`] in the build
    /// script's nested target directory (`<target>/<profile>/<target_subdir>`, found from the
    /// test's own path `<target>/<profile>/deps/<test>`), so the rebuild is incremental. Panics
    /// with the reason when the prebuilt modules are not their sources' build.
    pub fn assert_prebuilt_from_test(&self, manifest_dir: &Path) {
        let exe = env::current_exe().expect("the test's path");
        let profile_dir = exe
            .ancestors()
            .nth(2)
            .expect("a test runs as <target>/<profile>/deps/<test>");
        match self.verify_prebuilt(manifest_dir, &profile_dir.join(self.target_subdir)) {
            Ok(Verified::Identical) => {}
            Ok(Verified::Refreshed) => eprintln!("prebuilt modules refreshed"),
            Ok(Verified::OtherToolchain { prebuilt, here }) => eprintln!(
                "the prebuilt modules were built by {prebuilt}, this is {here}: their sources \
                 match, their bytes were not compared"
            ),
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs the nested `cargo build` of the guest workspace into `target_dir`; returns the
    /// directory holding the modules.
    fn cargo_build(&self, guests_dir: &Path, target_dir: &Path) -> Result<PathBuf, String> {
        check_target_installed()?;
        let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(&cargo);
        cmd.arg("build")
            .arg("--release")
            .arg("--locked")
            .arg("--target")
            .arg(TARGET)
            .arg("--manifest-path")
            .arg(guests_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(guests_dir)
            // Cargo's output goes to stderr; keep stdout for `cargo::` directives only.
            .stdout(Stdio::from(io::stderr()))
            .stderr(Stdio::inherit());
        for var in LEAKY_VARS {
            cmd.env_remove(var);
        }
        // Pin the nested build directory too: a `build.build-dir` configured for the host build
        // must not make both builds share (and lock) one directory.
        cmd.env("CARGO_BUILD_BUILD_DIR", target_dir);
        // Profile overrides given to the host build through the environment are not the guests'.
        for (key, _) in env::vars_os() {
            if key
                .to_str()
                .is_some_and(|k| k.starts_with("CARGO_PROFILE_"))
            {
                cmd.env_remove(key);
            }
        }
        // The same bytes wherever the cargo home is: its path (in the panic locations of
        // dependencies) becomes `/cargo`. Given with `--config`, the flag is added to the
        // guest workspace's own `rustflags` instead of replacing them.
        if let Some(home) = cargo_home() {
            let flag = format!("--remap-path-prefix={}=/cargo", home.display());
            cmd.arg("--config").arg(format!(
                "target.{TARGET}.rustflags=[{}]",
                toml_string(&flag)
            ));
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
        Ok(target_dir.join(TARGET).join("release"))
    }
}

/// The cargo home the nested build uses: `CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `rustc --version` of the toolchain cargo uses.
fn rustc_version() -> Result<String, String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&rustc).display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest workspace with one source file and a prebuilt directory whose manifest stands
    /// for it.
    fn fixture(name: &str) -> (PathBuf, Guests<'static>) {
        let root = env::temp_dir().join(format!("guest-build-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("guest/src")).unwrap();
        fs::create_dir_all(root.join("prebuilt")).unwrap();
        fs::write(root.join("guest/Cargo.toml"), "[package]\nname = \"g\"\n").unwrap();
        fs::write(root.join("guest/src/main.rs"), "fn main() {}\n").unwrap();
        let guests = Guests {
            workspace: "guest",
            watch: &["Cargo.toml", "src"],
            binaries: &["g"],
            target_subdir: "g",
            prebuilt: Some("prebuilt"),
        };
        let module = b"\0asm\x01\0\0\0".to_vec();
        fs::write(root.join("prebuilt/g.wasm"), &module).unwrap();
        let manifest = Manifest {
            recipe: prebuilt::RECIPE.into(),
            rustc: "rustc 1.95.0".into(),
            watch: vec!["Cargo.toml".into(), "src".into()],
            sources: sources_digest(&root.join("guest"), guests.watch).unwrap(),
            modules: vec![("g.wasm".into(), sha256_hex(&module))],
        };
        fs::write(root.join("prebuilt/MANIFEST"), manifest.render()).unwrap();
        (root, guests)
    }

    fn current(root: &Path, guests: &Guests) -> Result<(), String> {
        guests
            .current_prebuilt(&root.join("guest"), &root.join("prebuilt"))
            .unwrap()
    }

    #[test]
    fn prebuilt_modules_stand_only_for_their_sources() {
        let (root, guests) = fixture("sources");
        assert_eq!(current(&root, &guests), Ok(()));

        fs::write(root.join("guest/src/main.rs"), "fn main() { loop {} }\n").unwrap();
        assert!(
            current(&root, &guests)
                .unwrap_err()
                .contains("other sources")
        );
        fs::write(root.join("guest/src/main.rs"), "fn main() {}\n").unwrap();
        assert_eq!(current(&root, &guests), Ok(()));

        // A new source file counts as a change too.
        fs::write(root.join("guest/src/extra.rs"), "").unwrap();
        assert!(
            current(&root, &guests)
                .unwrap_err()
                .contains("other sources")
        );
        fs::remove_file(root.join("guest/src/extra.rs")).unwrap();

        let more = Guests {
            binaries: &["g", "h"],
            ..guests
        };
        assert!(current(&root, &more).unwrap_err().contains("no h.wasm"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn corrupt_or_missing_prebuilt_modules_are_not_used() {
        let (root, guests) = fixture("corrupt");
        // A module changed after the manifest was written (a bad merge, a text pointer file).
        fs::write(root.join("prebuilt/g.wasm"), b"version https://git-lfs").unwrap();
        assert!(
            current(&root, &guests)
                .unwrap_err()
                .contains("recorded digest")
        );
        fs::remove_file(root.join("prebuilt/g.wasm")).unwrap();
        assert!(
            current(&root, &guests)
                .unwrap_err()
                .contains("cannot read g.wasm")
        );
        fs::remove_file(root.join("prebuilt/MANIFEST")).unwrap();
        assert!(current(&root, &guests).unwrap_err().contains("no MANIFEST"));
        fs::write(root.join("prebuilt/MANIFEST"), "recipe x\n").unwrap();
        assert!(
            current(&root, &guests)
                .unwrap_err()
                .contains("no `rustc` line")
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn toml_strings_escape_quotes_and_backslashes() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
