//! Prebuilt guest modules: the modules a guest workspace compiles to, kept in the repository
//! beside a manifest that names the sources they were built from, so that a first build of the
//! host skips the nested build (minutes on a small machine) while the sources are unchanged.
//!
//! The manifest (`MANIFEST` in the prebuilt directory) is line-based text:
//!
//! ```text
//! recipe runegrid-guest-build/1 wasm32-wasip1
//! rustc rustc 1.95.0 (59807616e 2026-04-14)
//! watch Cargo.toml Cargo.lock src
//! sources <sha256 of the watched files>
//! module rune-runner.wasm <sha256 of the module>
//! ```
//!
//! A prebuilt module is used only when the recipe, the watched paths and the sources' digest
//! all match and the module's bytes have the recorded digest; anything else builds from source.
//! The nested build maps the cargo home out of every path it embeds, so the same sources and
//! toolchain give the same bytes on any machine: [`crate::Guests::verify_prebuilt`] rebuilds
//! and compares, and with `RUNEGRID_REFRESH_GUESTS=1` writes fresh modules and manifest.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Names how the modules are built (target, flags, path mapping); a change of recipe makes
/// every prebuilt module stale.
pub(crate) const RECIPE: &str = "runegrid-guest-build/1 wasm32-wasip1";

/// The manifest's file name inside the prebuilt directory.
pub const MANIFEST: &str = "MANIFEST";

/// What a prebuilt directory's manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The build recipe ([`RECIPE`] when written).
    pub recipe: String,
    /// `rustc --version` of the toolchain that built the modules.
    pub rustc: String,
    /// The watched paths, relative to the guest workspace.
    pub watch: Vec<String>,
    /// sha256 of the watched files ([`sources_digest`]).
    pub sources: String,
    /// Each module's file name and sha256.
    pub modules: Vec<(String, String)>,
}

impl Manifest {
    /// Reads `dir/MANIFEST`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, String> {
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Manifest::parse(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Manifest, String> {
        let (mut recipe, mut rustc, mut watch, mut sources) = (None, None, None, None);
        let mut modules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "recipe" => recipe = Some(rest.to_owned()),
                "rustc" => rustc = Some(rest.to_owned()),
                "watch" => watch = Some(rest.split_whitespace().map(str::to_owned).collect()),
                "sources" => sources = Some(rest.to_owned()),
                "module" => match rest.split_once(' ') {
                    Some((name, digest)) => modules.push((name.to_owned(), digest.to_owned())),
                    None => return Err(format!("line {}: `module NAME SHA256` expected", n + 1)),
                },
                other => return Err(format!("line {}: unknown key `{other}`", n + 1)),
            }
        }
        let missing = |key: &str| format!("no `{key}` line");
        Ok(Manifest {
            recipe: recipe.ok_or_else(|| missing("recipe"))?,
            rustc: rustc.ok_or_else(|| missing("rustc"))?,
            watch: watch.ok_or_else(|| missing("watch"))?,
            sources: sources.ok_or_else(|| missing("sources"))?,
            modules,
        })
    }

    /// The manifest as written to `MANIFEST`.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Prebuilt guest modules and the sources they were built from; written by\n\
             # scripts/refresh-guests.sh, checked by the host crate's `prebuilt` test.\n",
        );
        text += &format!("recipe {}\n", self.recipe);
        text += &format!("rustc {}\n", self.rustc);
        text += &format!("watch {}\n", self.watch.join(" "));
        text += &format!("sources {}\n", self.sources);
        for (name, digest) in &self.modules {
            text += &format!("module {name} {digest}\n");
        }
        text
    }

    /// Why these prebuilt modules cannot stand for `binaries` built from sources whose digest is
    /// `sources` with the paths `watch`; `None` when they can.
    pub fn stale_reason(&self, watch: &[&str], sources: &str, binaries: &[&str]) -> Option<String> {
        if self.recipe != RECIPE {
            return Some(format!("built by recipe `{}`, not `{RECIPE}`", self.recipe));
        }
        if self
            .watch
            .iter()
            .map(String::as_str)
            .ne(watch.iter().copied())
        {
            return Some("built watching other paths".into());
        }
        if self.sources != sources {
            return Some("built from other sources".into());
        }
        for binary in binaries {
            let file = module_file(binary);
            if !self.modules.iter().any(|(name, _)| *name == file) {
                return Some(format!("no {file}"));
            }
        }
        None
    }
}

/// `NAME.wasm`.
pub(crate) fn module_file(binary: &str) -> String {
    format!("{binary}.wasm")
}

/// Hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// sha256 over the watched files of a guest workspace: every file under each watched path
/// (a directory counts with everything below it, `target` directories excepted), in sorted
/// order, each as its `/`-separated relative path, its length and its bytes. A watched path
/// that does not exist counts as absent.
pub fn sources_digest(workspace_dir: &Path, watch: &[&str]) -> Result<String, String> {
    let mut files = Vec::new();
    for path in watch {
        collect(workspace_dir, &workspace_dir.join(path), &mut files)?;
    }
    files.sort();
    files.dedup();
    let mut hasher = Sha256::new();
    for (relative, path) in &files {
        let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hasher.update(relative.as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn collect(root: &Path, path: &Path, files: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if meta.is_dir() {
        if path.file_name().is_some_and(|name| name == "target") {
            return Ok(());
        }
        let entries =
            fs::read_dir(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            collect(root, &entry.path(), files)?;
        }
    } else {
        let relative = path
            .strip_prefix(root)
            .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        files.push((relative, path.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips() {
        let manifest = Manifest {
            recipe: RECIPE.into(),
            rustc: "rustc 1.95.0 (59807616e 2026-04-14)".into(),
            watch: vec!["Cargo.toml".into(), "src".into()],
            sources: "ab".repeat(32),
            modules: vec![("a.wasm".into(), "cd".repeat(32))],
        };
        assert_eq!(Manifest::parse(&manifest.render()), Ok(manifest.clone()));
        assert_eq!(
            manifest.stale_reason(&["Cargo.toml", "src"], &"ab".repeat(32), &["a"]),
            None
        );
        assert!(
            manifest
                .stale_reason(&["Cargo.toml", "src"], &"00".repeat(32), &["a"])
                .is_some()
        );
        assert!(
            manifest
                .stale_reason(&["Cargo.toml"], &"ab".repeat(32), &["a"])
                .is_some()
        );
        assert!(
            manifest
                .stale_reason(&["Cargo.toml", "src"], &"ab".repeat(32), &["a", "b"])
                .is_some()
        );
    }

    #[test]
    fn malformed_manifests_are_refused() {
        assert!(Manifest::parse("recipe x\n").unwrap_err().contains("rustc"));
        assert!(
            Manifest::parse("colour blue\n")
                .unwrap_err()
                .contains("unknown key")
        );
    }

    #[test]
    fn the_sources_digest_follows_contents_and_names() {
        let dir = std::env::temp_dir().join(format!("guest-build-digest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src/target")).unwrap();
        fs::write(dir.join("Cargo.toml"), "[package]").unwrap();
        fs::write(dir.join("src/main.rs"), "fn main() {}").unwrap();
        let watch = ["Cargo.toml", "src", "absent"];
        let first = sources_digest(&dir, &watch).unwrap();
        // Build output under `target` does not count.
        fs::write(dir.join("src/target/out.wasm"), "x").unwrap();
        assert_eq!(sources_digest(&dir, &watch).unwrap(), first);
        fs::write(dir.join("src/main.rs"), "fn main() { }").unwrap();
        let edited = sources_digest(&dir, &watch).unwrap();
        assert_ne!(edited, first);
        fs::rename(dir.join("src/main.rs"), dir.join("src/lib.rs")).unwrap();
        assert_ne!(sources_digest(&dir, &watch).unwrap(), edited);
        fs::remove_dir_all(&dir).unwrap();
    }
}
