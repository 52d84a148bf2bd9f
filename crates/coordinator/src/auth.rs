//! API tokens: random, shown once, stored only as their SHA-256.

use runegrid_store::{Account, AccountKind, Store, StoreError};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Makes a new random token.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    format!("rg_{}", hex::encode(b))
}

/// The hash under which a token is stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// On first start (no accounts yet), creates the admin account (with `welcome` micro-credits)
/// and writes its token to `file`.
pub fn ensure_admin(
    store: &mut dyn Store,
    file: &Path,
    welcome: runegrid_core::ledger::Micros,
) -> Result<(), crate::CoordinatorError> {
    if !store.accounts()?.is_empty() {
        return Ok(());
    }
    let token = new_token();
    write_secret(file, &token).map_err(|source| crate::CoordinatorError::DataDir {
        path: file.display().to_string(),
        source,
    })?;
    store.create_account("admin", &hash_token(&token), AccountKind::Admin, welcome)?;
    tracing::info!(file = %file.display(), "created the admin account; its token is in this file");
    Ok(())
}

fn write_secret(file: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(file)?;
    writeln!(f, "{token}")?;
    f.sync_all()
}

/// Looks an account up by token.
pub fn account_for(store: &mut dyn Store, token: &str) -> Result<Option<Account>, StoreError> {
    store.account_by_token(&hash_token(token))
}
