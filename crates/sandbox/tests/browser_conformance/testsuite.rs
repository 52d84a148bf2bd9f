//! The official WASI test suite (WebAssembly/wasi-testsuite), when a checkout of its prebuilt
//! tests is named by `RUNEGRID_WASI_TESTSUITE` (`scripts/wasi-testsuite.sh` fetches one and
//! runs this test): every `wasm32-wasip1` test becomes a case run on both engines, which must
//! agree as for any case, and must end as its spec says (exit code, stdout). A test whose spec
//! mounts an empty `root` directory as `/` runs in the task's writable root (scratch space); one
//! that preopens named directories (`dirs`) or a root holding files needs mounts a task does not
//! have: it is listed as skipped, with why, and so is a module the instrumenter refuses.

use super::{Case, Suite};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a test's spec expects.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    pub exit_code: i32,
    pub stdout: Option<Vec<u8>>,
}

/// A test that was not run, and why.
pub(crate) struct Skipped {
    pub name: String,
    pub why: String,
}

fn wasm_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            wasm_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "wasm")
            && p.parent()
                .is_some_and(|d| d.ends_with("wasm32-wasip1") || d.ends_with("wasm32-wasi"))
        {
            out.push(p);
        }
    }
}

/// Adds the suite's tests under `root` to `s`; returns those it could not run.
pub(crate) fn add(s: &mut Suite, root: &Path) -> Vec<Skipped> {
    let mut files = Vec::new();
    wasm_files(root, &mut files);
    assert!(
        !files.is_empty(),
        "RUNEGRID_WASI_TESTSUITE={}: no wasm32-wasip1 tests found under it",
        root.display()
    );
    let mut skipped = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        // tests/<language>/testsuite/wasm32-wasip1/<name>.wasm → wasi/<language>/<name>
        let language = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .find(|c| c != "tests")
            .unwrap_or_default();
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let name = format!("wasi/{language}/{stem}");
        let spec: Value = match std::fs::read(file.with_extension("json")) {
            Ok(b) => serde_json::from_slice(&b)
                .unwrap_or_else(|e| panic!("{}: bad spec: {e}", file.display())),
            Err(_) => Value::Object(Default::default()),
        };
        // `root` is a directory preopened as `/`: a task's writable root, when it holds no files.
        let root_files = spec.get("root").and_then(Value::as_str).map(|r| {
            let dir = file.parent().unwrap().join(r);
            std::fs::read_dir(&dir)
                .map(|d| d.flatten().filter(|e| e.file_name() != ".keep").count())
                .unwrap_or(usize::MAX)
        });
        if spec.get("dirs").is_some() || root_files.is_some_and(|n| n > 0) {
            skipped.push(Skipped {
                name,
                why: "preopens a directory of files".into(),
            });
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        let out = match runegrid_instrument::instrument(&bytes, &Default::default()) {
            Ok(o) => o,
            Err(e) => {
                skipped.push(Skipped {
                    name,
                    why: format!("refused at upload: {e}"),
                });
                continue;
            }
        };
        s.modules.insert(name.clone(), out.bytes);
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut case: Case = s.case(&name, "");
        // Without a root the test expects no preopened directory at all.
        if root_files.is_none() {
            case.limits.scratch_bytes = 0;
        }
        case.args = strings(spec.get("args"));
        case.env = spec
            .get("env")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        case.expect = Some(Expected {
            exit_code: spec.get("exit_code").and_then(Value::as_i64).unwrap_or(0) as i32,
            stdout: spec
                .get("stdout")
                .and_then(Value::as_str)
                .map(|s| s.as_bytes().to_vec()),
        });
        s.push(case);
    }
    skipped
}

/// How a case's native run differs from what its spec expects.
pub(crate) fn check(expect: &Expected, native: &runegrid_core::Execution) -> Vec<String> {
    let mut diffs = Vec::new();
    match native.status {
        runegrid_core::ExecStatus::Exited { code } if code == expect.exit_code => {}
        status => diffs.push(format!(
            "ended {}, the spec expects exit code {}",
            status.code(),
            expect.exit_code
        )),
    }
    if let Some(want) = &expect.stdout
        && *want != native.stdout
    {
        diffs.push(format!(
            "stdout {:?}, the spec expects {:?}",
            String::from_utf8_lossy(&native.stdout),
            String::from_utf8_lossy(want)
        ));
    }
    diffs
}
