//! Blobs: large read-only files (model weights, datasets) that tasks mount under `/blobs/NAME`.
//!
//! A blob is stored once, as a file named by its SHA-256 in `<data dir>/blobs/`; it is written to
//! a temporary file while its hash is computed and renamed into place only when the hash is the
//! one expected, so a file under its final name always holds the bytes its name promises (unless
//! the disk is tampered with: workers check the hash again on download).
//!
//! With a PostgreSQL store the database is where blobs live ([`PostgresBlobs`]) and the
//! directory is a cache of it, so that any coordinator on the database (a standby taking over,
//! its own data directory) serves every blob one of them acknowledged:
//! - an upload is hashed into its temporary file, copied into the database (one transaction),
//!   and only then renamed into place and acknowledged: a blob that fails to reach the
//!   database is refused and leaves nothing, neither in the database nor in the directory;
//! - a blob missing from the directory is fetched from the database (checked against its name,
//!   into a temporary file renamed into place) before it is served, one fetch per blob at a
//!   time.
//!
//! Every call here blocks (file and database I/O): async code runs them in `spawn_blocking`,
//! but for [`BlobStore::size`], a file's metadata or one small query.

use runegrid_proto::BlobInfo;
use runegrid_store::{BlobDbError, PostgresBlobs, Put};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest blob accepted (the sandbox holds a mounted blob in memory).
pub const MAX_BLOB_BYTES: u64 = 4 << 30;

/// Copies into or out of the database at least this large log their progress.
const PROGRESS_BYTES: u64 = 64 << 20;
/// How often a large copy logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

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
    /// The database (with a PostgreSQL store) did not take or give the blob.
    #[error("blob database: {0}")]
    Database(#[from] BlobDbError),
}

pub use runegrid_proto::is_sha256;

/// The coordinator's blobs: files, and with a PostgreSQL store the database behind them.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    /// Where blobs are durable, with a PostgreSQL store (the directory is then its cache).
    db: Option<Arc<PostgresBlobs>>,
    /// Fetches from the database under way, by blob (one at a time for each).
    fetching: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// A blob being written: bytes go to a temporary file while they are hashed.
pub struct Upload {
    dir: PathBuf,
    db: Option<Arc<PostgresBlobs>>,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
}

impl BlobStore {
    /// Opens (creating) the blob directory; with `db`, blobs are kept in the database too.
    pub fn open(dir: PathBuf, db: Option<Arc<PostgresBlobs>>) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(&dir)?;
        Ok(BlobStore {
            dir,
            db,
            fetching: Arc::default(),
        })
    }

    /// Where a blob's file is (whether or not it exists).
    pub fn path(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        if !is_sha256(sha256) {
            return Err(BlobError::BadName(sha256.into()));
        }
        Ok(self.dir.join(sha256))
    }

    /// The size of the blob's file in the directory, `None` when there is none.
    fn local_size(&self, sha256: &str) -> Option<u64> {
        let path = self.path(sha256).ok()?;
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// The size of a stored blob, `None` when there is none with that hash (in the directory,
    /// or in the database behind it; a database that does not answer is logged and counts as
    /// not having it).
    pub fn size(&self, sha256: &str) -> Option<u64> {
        if let Some(size) = self.local_size(sha256) {
            return Some(size);
        }
        let db = self.db.as_ref().filter(|_| is_sha256(sha256))?;
        db.size(sha256)
            .inspect_err(
                |e| tracing::warn!(sha256, error = %e, "cannot look a blob up in postgres"),
            )
            .ok()
            .flatten()
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
            db: self.db.clone(),
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

    /// Makes sure the database (with a PostgreSQL store) has a blob whose file is in the
    /// directory, copying the file there unless it has it (blocking).
    pub fn publish(&self, sha256: &str) -> Result<(), BlobError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        if db.size(sha256).map_err(BlobDbError::from)?.is_some() {
            return Ok(());
        }
        let path = self.path(sha256)?;
        let mut file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        copy_into(db, sha256, size, &mut file)?;
        Ok(())
    }

    /// The blob's file, fetched from the database into the directory when it is not there
    /// (blocking); `None` when there is no such blob.
    pub fn fetch(&self, sha256: &str) -> Result<Option<PathBuf>, BlobError> {
        let path = self.path(sha256)?;
        if path.is_file() {
            return Ok(Some(path));
        }
        let Some(db) = &self.db else {
            return Ok(None);
        };
        // One fetch per blob at a time: workers asking for the same blob at once wait for
        // the first one's copy.
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sha256.to_string())
            .or_default()
            .clone();
        let fetched = {
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            if path.is_file() {
                Ok(Some(path.clone()))
            } else {
                self.fetch_from(db, sha256, &path)
            }
        };
        let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        // The last one out removes the entry (held by the map and by this call only); each
        // lets go of its handle with the map locked, so the last one sees only its own.
        if Arc::strong_count(&lock) <= 2 {
            fetching.remove(sha256);
        }
        drop(lock);
        drop(fetching);
        fetched
    }

    fn fetch_from(
        &self,
        db: &PostgresBlobs,
        sha256: &str,
        path: &Path,
    ) -> Result<Option<PathBuf>, BlobError> {
        let started = Instant::now();
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&self.dir)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp);
        let Some(size) = db.get(sha256, &mut out)? else {
            return Ok(None);
        };
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| BlobError::Io(e.error))?;
        tracing::info!(
            sha256,
            size,
            ms = started.elapsed().as_millis() as u64,
            "blob fetched from postgres"
        );
        Ok(Some(path.to_path_buf()))
    }
}

/// Copies a blob into the database, logging progress when it is large.
fn copy_into(
    db: &PostgresBlobs,
    sha256: &str,
    size: u64,
    bytes: &mut dyn Read,
) -> Result<Put, BlobError> {
    let started = Instant::now();
    let mut logged = started;
    let large = size >= PROGRESS_BYTES;
    let mut first = large;
    let put = db.put(sha256, size, bytes, &mut |copied| {
        // After the first chunk, then every few seconds (a blob already there logs nothing).
        if large && (std::mem::take(&mut first) || logged.elapsed() >= PROGRESS_EVERY) {
            logged = Instant::now();
            tracing::info!(
                sha256,
                copied_mb = copied >> 20,
                size_mb = size >> 20,
                "copying a blob into postgres"
            );
        }
    })?;
    if put == Put::Stored {
        tracing::info!(
            sha256,
            size,
            ms = started.elapsed().as_millis() as u64,
            "blob stored in postgres"
        );
    }
    Ok(put)
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

    /// Checks the hash, copies the bytes into the database (with a PostgreSQL store) and
    /// moves the file into place (an existing blob of the same hash is kept: it holds the same
    /// bytes). Blocks: file I/O, and the database copy.
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
        // Durable in the database before anything says it is stored (the temporary file is
        // removed, unused, when the copy fails).
        if let Some(db) = &self.db {
            let mut file = self.tmp.reopen()?;
            copy_into(db, &actual, self.size, &mut file)?;
        }
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
        let store = BlobStore::open(dir.path().join("blobs"), None).unwrap();
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

    /// With a PostgreSQL store: an upload is in the database before it is stored, another
    /// coordinator's store (its own directory) fetches it on a miss, and an upload the database
    /// refuses is refused and leaves no file.
    #[test]
    fn with_postgres_blobs_are_in_the_database_first_and_fetched_on_a_miss() {
        let Some(url) = runegrid_store::testing::database() else {
            return;
        };
        let dirs = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let db = Arc::new(PostgresBlobs::open(&url).unwrap());
            BlobStore::open(dirs.path().join(name), Some(db)).unwrap()
        };
        let (a, b) = (open("a"), open("b"));
        // Over two chunks.
        let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sha = hex::encode(Sha256::digest(&bytes));
        let mut up = a.upload().unwrap();
        up.write(&bytes).unwrap();
        up.finish(Some(&sha)).unwrap();
        assert!(a.path(&sha).unwrap().is_file());
        assert!(!b.path(&sha).unwrap().exists());
        assert_eq!(b.size(&sha), Some(bytes.len() as u64), "from the database");
        let path = b.fetch(&sha).unwrap().expect("fetched");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let missing = hex::encode(Sha256::digest(b"nowhere"));
        assert_eq!(b.size(&missing), None);
        assert!(b.fetch(&missing).unwrap().is_none());
        // Workers asking a third coordinator for it at once all get the one file, whole.
        let c = open("c");
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| c.fetch(&sha).unwrap().expect("fetched")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(paths.iter().all(|p| *p == c.path(&sha).unwrap()));
        assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes);
        assert!(
            c.fetching.lock().unwrap().is_empty(),
            "no fetch left behind"
        );
        // b holds the fetched blob and nothing else (no temporary file left).
        assert_eq!(std::fs::read_dir(dirs.path().join("b")).unwrap().count(), 1);

        // The database refuses the bytes: the upload fails, nothing stays anywhere.
        runegrid_store::testing::execute(
            &url,
            "ALTER TABLE blob_chunks ADD CONSTRAINT small CHECK (length(bytes) < 1000) NOT VALID",
        )
        .unwrap();
        let big = vec![9u8; 5000];
        let big_sha = hex::encode(Sha256::digest(&big));
        let mut up = a.upload().unwrap();
        up.write(&big).unwrap();
        let e = up.finish(None).unwrap_err();
        assert!(matches!(e, BlobError::Database(_)), "{e}");
        assert!(e.to_string().starts_with("blob database: "), "{e}");
        assert_eq!(a.size(&big_sha), None);
        assert_eq!(std::fs::read_dir(dirs.path().join("a")).unwrap().count(), 1);

        // A file already in the directory (weights imported before) is published once.
        let small = b"weights".to_vec();
        let small_sha = hex::encode(Sha256::digest(&small));
        std::fs::write(a.path(&small_sha).unwrap(), &small).unwrap();
        a.publish(&small_sha).unwrap();
        let path = b.fetch(&small_sha).unwrap().expect("published");
        assert_eq!(std::fs::read(path).unwrap(), small);
    }
}
