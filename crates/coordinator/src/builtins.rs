//! The built-in programs: the Rune runner (`runegrid_runner::RUNE_RUNNER`, named `rune` in
//! submissions) and the inference program (`runegrid_infer::INFER_WASM`, named `infer`, run by
//! `/v1/chat/completions`). Each is registered at startup like an uploaded program (instrumented
//! on a data directory's first start, stored, owned by the admin account).
//!
//! The Rune runner is pre-initialized first (`runegrid_sandbox::preinitialize`): its
//! [`runegrid_runner::INIT_FUNC`] runs once, building rune's context, and the memory it leaves is
//! snapshotted into the module, so a call starts with the context built (a trivial call costs
//! 0.4 million fuel instead of 51 million). The stored module is the instrumented snapshot, so
//! every worker runs the same bytes.

use crate::CoordinatorError;
use crate::grid::now_ms;
use crate::programs::ProgramBytes;
use runegrid_store::{ProgramRecord, Store};
use sha2::{Digest as _, Sha256};
use std::sync::LazyLock;

/// A program built into the coordinator.
pub struct Builtin {
    /// The name submissions may use instead of the hash.
    pub name: &'static str,
    /// The module, not instrumented.
    pub wasm: &'static [u8],
    /// An export to run once and snapshot before instrumenting (pre-initialization).
    pub init: Option<&'static str>,
    sha: &'static LazyLock<String>,
}

static RUNE_SHA: LazyLock<String> =
    LazyLock::new(|| hex::encode(Sha256::digest(runegrid_runner::RUNE_RUNNER)));
static INFER_SHA: LazyLock<String> =
    LazyLock::new(|| hex::encode(Sha256::digest(runegrid_infer::INFER_WASM)));

/// The Rune runner.
pub static RUNE: Builtin = Builtin {
    name: runegrid_runner::PROGRAM_NAME,
    wasm: runegrid_runner::RUNE_RUNNER,
    init: Some(runegrid_runner::INIT_FUNC),
    sha: &RUNE_SHA,
};

/// The inference program.
pub static INFER: Builtin = Builtin {
    name: runegrid_infer::PROGRAM_NAME,
    wasm: runegrid_infer::INFER_WASM,
    init: None,
    sha: &INFER_SHA,
};

/// Every built-in program.
pub static ALL: [&Builtin; 2] = [&RUNE, &INFER];

impl Builtin {
    /// SHA-256 (hex) of the module: the program hash jobs naming it get.
    pub fn sha256(&self) -> &'static str {
        self.sha.as_str()
    }
}

/// The program a submission names: a built-in's name stands for its hash, anything else is a
/// hash.
pub fn resolve(program: &str) -> &str {
    ALL.iter()
        .find(|b| b.name == program)
        .map_or(program, |b| b.sha256())
}

/// Makes sure the store holds a built-in program, pre-initializing and instrumenting it on the
/// first start of a data directory (instrumenting: 0.1–0.2 s in a release build; the runner's
/// pre-initialization about 2 s more, most of it compiling the module for the initialization
/// run); returns its metered module. Blocking.
pub fn register(store: &mut dyn Store, b: &Builtin) -> Result<ProgramBytes, CoordinatorError> {
    let sha = b.sha256();
    if let Some(p) = store.program(sha)? {
        return Ok(ProgramBytes {
            sha256: p.instrumented_sha256,
            module: p.instrumented,
        });
    }
    let started = std::time::Instant::now();
    let snapshot = match b.init {
        Some(init) => Some(
            runegrid_sandbox::preinitialize(b.wasm, init)
                .map_err(|e| CoordinatorError::Builtin(b.name, e.to_string()))?,
        ),
        None => None,
    };
    let instrumented = runegrid_instrument::instrument(
        snapshot.as_deref().unwrap_or(b.wasm),
        &runegrid_instrument::Options::default(),
    )
    .map_err(|e| CoordinatorError::Builtin(b.name, e.to_string()))?;
    let module = instrumented.bytes;
    let isha = hex::encode(Sha256::digest(&module));
    let accounts = store.accounts()?;
    let owner = accounts
        .iter()
        .find(|a| a.admin)
        .or(accounts.first())
        .map(|a| a.id)
        .ok_or_else(|| CoordinatorError::Builtin(b.name, "no account to own it".into()))?;
    store.put_program(&ProgramRecord {
        sha256: sha.to_string(),
        instrumented_sha256: isha.clone(),
        instrumented: module.clone(),
        original_size: b.wasm.len() as i64,
        owner,
        created_at: now_ms(),
    })?;
    tracing::info!(
        program = b.name,
        sha256 = %sha,
        bytes = module.len(),
        ms = started.elapsed().as_millis() as u64,
        "registered a built-in program"
    );
    Ok(ProgramBytes {
        sha256: isha,
        module,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runegrid_store::{AccountKind, SqliteStore};

    #[test]
    fn names_stand_for_builtins() {
        assert_eq!(resolve("rune"), RUNE.sha256());
        assert_eq!(resolve("infer"), INFER.sha256());
        assert_eq!(RUNE.sha256().len(), 64);
        assert_ne!(RUNE.sha256(), INFER.sha256());
        assert_eq!(resolve("abc123"), "abc123");
    }

    #[test]
    fn a_builtin_is_stored_once_and_owned_by_the_admin() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        assert!(
            register(&mut store, &RUNE).is_err(),
            "no account to own it yet"
        );
        store
            .create_account("someone", "h1", AccountKind::User, 0)
            .unwrap();
        let admin = store
            .create_account("admin", "h2", AccountKind::Admin, 0)
            .unwrap();
        let first = register(&mut store, &RUNE).unwrap();
        let rec = store.program(RUNE.sha256()).unwrap().expect("stored");
        assert_eq!(rec.owner, admin.id);
        assert_eq!(rec.instrumented_sha256, first.sha256);
        assert_eq!(rec.instrumented, first.module);
        assert_eq!(rec.original_size, runegrid_runner::RUNE_RUNNER.len() as i64);
        // A later start finds it.
        let again = register(&mut store, &RUNE).unwrap();
        assert_eq!(again.sha256, first.sha256);
    }
}
