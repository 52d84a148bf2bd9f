//! Blobs: large read-only files (model weights, datasets) that tasks mount under `/blobs/NAME`.
//!
//! A blob is stored once, as a file named by its SHA-256 in `<data dir>/blobs/`; it is written to
//! a temporary file while its hash is computed and renamed into place only when the hash is the
//! one expected, so a file under its final name always holds the bytes its name promises (unless
//! the disk is tampered with: workers check the hash again on download).

use runegrid_proto::BlobInfo;
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Largest blob accepted (the sandbox holds a mounted blob in memory).
pub const MAX_BLOB_BYTES: u64 = 4 << 30;

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a sha256: expected 64 lowercase hex digits")]
    BadName(String),
    #[error("the body has sha256 {actual}, not {expected}: nothing was stored")]
    Mismatch { expected: String, actual: String },
    #[error("the blob is larger than {MAX_BLOB_BYTES} bytes")]
    TooLarge,
    #[error("the body is empty: send the file's bytes")]
    Empty,
    #[error("reading the body: {0}")]
    Body(String),
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
}

pub use runegrid_proto::is_sha256;

/// The coordinator's blob files.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

/// A blob being written: bytes go to a temporary file while they are hashed.
pub struct Upload {
    dir: PathBuf,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
}

impl BlobStore {
    /// Opens (creating) the blob directory.
    pub fn open(dir: PathBuf) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(&dir)?;
        Ok(BlobStore { dir })
    }

    /// Where a blob's file is (whether or not it exists).
    pub fn path(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        if !is_sha256(sha256) {
            return Err(BlobError::BadName(sha256.into()));
        }
        Ok(self.dir.join(sha256))
    }

    /// The size of a stored blob, `None` when there is none with that hash.
    pub fn size(&self, sha256: &str) -> Option<u64> {
        let path = self.path(sha256).ok()?;
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// A job's mounts (name → SHA-256), with sizes from the store (0 for a blob that is
    /// missing: workers then fail to fetch it and say why).
    pub fn mounts(
        &self,
        named: &std::collections::BTreeMap<String, String>,
    ) -> std::sync::Arc<[runegrid_proto::worker::BlobMount]> {
        named
            .iter()
            .map(|(name, sha)| runegrid_proto::worker::BlobMount {
                name: name.clone(),
                sha256: sha.clone(),
                size: self.size(sha).unwrap_or(0),
            })
            .collect()
    }

    /// Starts writing a blob.
    pub fn upload(&self) -> Result<Upload, BlobError> {
        Ok(Upload {
            dir: self.dir.clone(),
            tmp: tempfile::Builder::new()
                .prefix(".upload-")
                .tempfile_in(&self.dir)?,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Copies a local file into the store (blocking), checking its hash when one is expected.
    pub fn import(&self, path: &Path, expected: Option<&str>) -> Result<BlobInfo, BlobError> {
        let mut file = std::fs::File::open(path)?;
        let mut up = self.upload()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            up.write(&buf[..n])?;
        }
        up.finish(expected)
    }
}

impl Upload {
    /// Appends bytes (blocking file I/O; chunks are small).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.size += chunk.len() as u64;
        if self.size > MAX_BLOB_BYTES {
            return Err(BlobError::TooLarge);
        }
        self.hasher.update(chunk);
        self.tmp.write_all(chunk)?;
        Ok(())
    }

    /// Checks the hash and moves the file into place (an existing blob of the same hash is
    /// kept: it holds the same bytes).
    pub fn finish(self, expected: Option<&str>) -> Result<BlobInfo, BlobError> {
        if self.size == 0 {
            return Err(BlobError::Empty);
        }
        let actual = hex::encode(self.hasher.finalize());
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(BlobError::Mismatch {
                expected: expected.into(),
                actual,
            });
        }
        let path = self.dir.join(&actual);
        let same = std::fs::metadata(&path).is_ok_and(|m| m.len() == self.size);
        if !same {
            self.tmp.as_file().sync_all()?;
            self.tmp
                .persist(&path)
                .map_err(|e| BlobError::Io(e.error))?;
        }
        Ok(BlobInfo {
            sha256: actual,
            size: self.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_by_hash_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs")).unwrap();
        let sha = hex::encode(Sha256::digest(b"hello blob"));
        assert_eq!(store.size(&sha), None);
        let mut up = store.upload().unwrap();
        up.write(b"hello ").unwrap();
        up.write(b"blob").unwrap();
        let info = up.finish(Some(&sha)).unwrap();
        assert_eq!((info.sha256.as_str(), info.size), (sha.as_str(), 10));
        assert_eq!(store.size(&sha), Some(10));
        assert_eq!(
            std::fs::read(store.path(&sha).unwrap()).unwrap(),
            b"hello blob"
        );

        // Wrong bytes for the name: refused, nothing left behind.
        let other = hex::encode(Sha256::digest(b"other"));
        let mut up = store.upload().unwrap();
        up.write(b"not other").unwrap();
        let e = up.finish(Some(&other)).unwrap_err();
        assert!(matches!(e, BlobError::Mismatch { .. }), "{e}");
        assert_eq!(store.size(&other), None);
        let files = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert_eq!(files, 1, "only the stored blob remains");

        assert!(matches!(
            store.upload().unwrap().finish(None),
            Err(BlobError::Empty)
        ));
        assert!(matches!(store.path("../x"), Err(BlobError::BadName(_))));
        assert!(!is_sha256(&sha.to_uppercase()));

        // Import from a file, hash computed.
        let src = dir.path().join("f");
        std::fs::write(&src, b"from a file").unwrap();
        let info = store.import(&src, None).unwrap();
        assert_eq!(info.sha256, hex::encode(Sha256::digest(b"from a file")));
        assert!(store.import(&src, Some(&sha)).is_err());
    }
}
