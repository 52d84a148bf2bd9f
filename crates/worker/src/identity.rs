//! The worker's ed25519 identity, created once and kept in its data directory.

use crate::WorkerError;
use ed25519_dalek::SigningKey;
use std::path::Path;

const KEY_FILE: &str = "worker.key";

/// Loads the key in `dir/worker.key`, creating it on first use.
pub fn load_or_create_key(dir: &Path) -> Result<SigningKey, WorkerError> {
    let path = dir.join(KEY_FILE);
    let err = |source| WorkerError::DataDir {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let bytes: [u8; 32] = hex::decode(s.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "worker.key must hold 32 bytes in hex",
                    ))
                })?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(err)?;
            let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            use std::io::Write;
            let mut f = opts.open(&path).map_err(err)?;
            writeln!(f, "{}", hex::encode(key.to_bytes())).map_err(err)?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}
