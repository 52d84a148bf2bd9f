//! The built-in Rune runner (`runegrid_runner::RUNE_RUNNER`): registered at startup like an
//! uploaded program (pre-initialized, instrumented once, stored, owned by the admin account),
//! and named `rune` in submissions.
//!
//! Pre-initialization (`runegrid_sandbox::preinitialize`) runs the runner's
//! [`runegrid_runner::INIT_FUNC`] once, which builds rune's context, and snapshots the memory
//! into the module: a call then starts with the context built (a trivial call costs 0.4
//! million fuel instead of 51 million). The stored module is the instrumented snapshot, so
//! every worker runs the same bytes.

use crate::CoordinatorError;
use crate::state::{ProgramBytes, now_ms};
use runegrid_store::{ProgramRecord, Store};
use sha2::{Digest as _, Sha256};
use std::sync::{LazyLock, OnceLock};

/// SHA-256 (hex) of the embedded runner module: the program jobs of `"program": "rune"` get.
pub fn sha256() -> &'static str {
    static SHA: LazyLock<String> =
        LazyLock::new(|| hex::encode(Sha256::digest(runegrid_runner::RUNE_RUNNER)));
    &SHA
}

/// The program a submission names: `rune` stands for the runner, anything else is a hash.
pub fn resolve(program: &str) -> &str {
    if program == runegrid_runner::PROGRAM_NAME {
        sha256()
    } else {
        program
    }
}

/// The runner, pre-initialized and instrumented (made once per process: about 2.5 s in a
/// release build, most of it compiling the module for the initialization run).
fn prepared() -> Result<&'static [u8], CoordinatorError> {
    static PREPARED: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    PREPARED
        .get_or_init(|| {
            let snapshot = runegrid_sandbox::preinitialize(
                runegrid_runner::RUNE_RUNNER,
                runegrid_runner::INIT_FUNC,
            )
            .map_err(|e| e.to_string())?;
            runegrid_instrument::instrument(&snapshot, &runegrid_instrument::Options::default())
                .map(|i| i.bytes)
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| CoordinatorError::Runner(e.clone()))
}

/// Makes sure the store holds the runner, pre-initializing and instrumenting it on the first
/// start of a data directory; returns its metered module.
pub fn register(store: &mut dyn Store) -> Result<ProgramBytes, CoordinatorError> {
    let sha = sha256();
    if let Some(p) = store.program(sha)? {
        return Ok(ProgramBytes {
            sha256: p.instrumented_sha256,
            module: p.instrumented,
        });
    }
    let started = std::time::Instant::now();
    let module = prepared()?.to_vec();
    let isha = hex::encode(Sha256::digest(&module));
    let accounts = store.accounts()?;
    let owner = accounts
        .iter()
        .find(|a| a.admin)
        .or(accounts.first())
        .map(|a| a.id)
        .ok_or_else(|| CoordinatorError::Runner("no account to own it".into()))?;
    store.put_program(&ProgramRecord {
        sha256: sha.to_string(),
        instrumented_sha256: isha.clone(),
        instrumented: module.clone(),
        original_size: runegrid_runner::RUNE_RUNNER.len() as i64,
        owner,
        created_at: now_ms(),
    })?;
    tracing::info!(
        sha256 = %sha,
        bytes = module.len(),
        ms = started.elapsed().as_millis() as u64,
        "registered the rune runner"
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
    fn rune_names_the_runner() {
        assert_eq!(resolve("rune"), sha256());
        assert_eq!(sha256().len(), 64);
        assert_eq!(resolve("abc123"), "abc123");
    }

    #[test]
    fn the_runner_is_stored_once_and_owned_by_the_admin() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        assert!(register(&mut store).is_err(), "no account to own it yet");
        store
            .create_account("someone", "h1", AccountKind::User)
            .unwrap();
        let admin = store
            .create_account("admin", "h2", AccountKind::Admin)
            .unwrap();
        let first = register(&mut store).unwrap();
        let rec = store.program(sha256()).unwrap().expect("stored");
        assert_eq!(rec.owner, admin.id);
        assert_eq!(rec.instrumented_sha256, first.sha256);
        assert_eq!(rec.instrumented, first.module);
        assert_eq!(rec.original_size, runegrid_runner::RUNE_RUNNER.len() as i64);
        // A later start finds it.
        let again = register(&mut store).unwrap();
        assert_eq!(again.sha256, first.sha256);
    }
}
