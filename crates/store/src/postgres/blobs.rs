//! Blobs in PostgreSQL: the bytes of every blob a coordinator on a PostgreSQL store
//! acknowledged, so that any coordinator on the same database (a standby taking over, with a
//! data directory of its own) can serve them.
//!
//! A blob is a row of `blobs` (its SHA-256, size, when it was stored) and its bytes in rows of
//! `blob_chunks`, [`CHUNK_BYTES`] each (the last one shorter), numbered from 0. Chunks of
//! `bytea` rather than large objects: plain rows, written in the blob's one transaction,
//! readable by anyone who may read the tables, no orphaned objects to collect, and
//! `pg_dump` copies them like any table. The chunks' column is stored `EXTERNAL`
//! (out of line, uncompressed): weights and datasets do not compress, and trying costs time.
//!
//! Invariants:
//! - a blob is written in one transaction: its `blobs` row and all its chunks commit together,
//!   and only when the bytes hash to its name and have its size, so a half-written or wrong
//!   blob never appears;
//! - two coordinators storing the same blob at once store it once: the second waits on the
//!   first's row (its unique key) and finds it there when the first commits;
//! - nothing holds a blob in memory: it is copied a chunk at a time both ways.
//!
//! [`PostgresBlobs`] keeps connections of its own (the coordinator's writer and reader are
//! busy with records): a few idle ones are kept for the next call, each driven on its own
//! thread as [`PostgresStore`]'s is, so calls block the calling thread (run them where
//! blocking is allowed: `spawn_blocking`).

use super::{CONNECT_TIMEOUT, PostgresStore, block, connect};
use crate::StoreError;
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::sync::Mutex;
use tokio_postgres::{Client, Config};

/// Bytes in each chunk of a blob (the last one holds the rest).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Idle connections kept for the next call.
const IDLE_CONNECTIONS: usize = 4;

/// Why a blob could not be copied to or from the database.
#[derive(Debug, thiserror::Error)]
pub enum BlobDbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the blob's bytes: {0}")]
    Read(std::io::Error),
    #[error("writing the blob's bytes: {0}")]
    Write(std::io::Error),
    #[error(
        "the bytes ({size} bytes, sha256 {actual}) are not blob {expected} of {expected_size} bytes: nothing was stored"
    )]
    Mismatch {
        expected: String,
        expected_size: u64,
        actual: String,
        size: u64,
    },
    #[error("blob {sha256} in the database is damaged: {problem}")]
    Damaged { sha256: String, problem: String },
}

impl From<tokio_postgres::Error> for BlobDbError {
    fn from(e: tokio_postgres::Error) -> BlobDbError {
        BlobDbError::Store(StoreError::Postgres(e))
    }
}

/// What [`PostgresBlobs::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The blob was copied into the database.
    Stored,
    /// The database already had it (stored before, or by another connection meanwhile).
    AlreadyThere,
}

/// The blob storage of a runegrid PostgreSQL database.
pub struct PostgresBlobs {
    config: Config,
    location: String,
    idle: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for PostgresBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBlobs")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PostgresBlobs {
    /// Connects to the database at `url` (as [`PostgresStore::open`], which brings the schema
    /// up to date: its connection becomes the first idle one).
    pub fn open(url: &str) -> Result<PostgresBlobs, StoreError> {
        let store = PostgresStore::open(url)?;
        let mut config = store.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(PostgresBlobs {
            config,
            location: store.location.clone(),
            idle: Mutex::new(vec![store.client]),
        })
    }

    /// Where the database is (its URL without the password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// An idle connection, or a new one.
    fn take(&self) -> Result<Client, StoreError> {
        loop {
            let c = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match c {
                Some(c) if c.is_closed() => continue,
                Some(c) => return Ok(c),
                None => break,
            }
        }
        connect(self.config.clone()).map_err(|message| StoreError::Open {
            path: self.location.clone(),
            message,
        })
    }

    /// Keeps a connection for the next call (unless enough are kept already).
    fn give_back(&self, c: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CONNECTIONS && !c.is_closed() {
            idle.push(c);
        }
    }

    /// The size of the blob named `sha256`, `None` when the database has none.
    pub fn size(&self, sha256: &str) -> Result<Option<u64>, StoreError> {
        let client = self.take()?;
        let row = block(client.query_opt("SELECT size FROM blobs WHERE sha256 = $1", &[&sha256]))?;
        self.give_back(client);
        Ok(row
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map(|s| s as u64))
    }

    /// Copies `size` bytes read from `bytes` into the database as blob `sha256`, in one
    /// transaction committed only if they hash to `sha256`; `progress` is told how many bytes
    /// were copied after each chunk. A blob already there is not read again.
    pub fn put(
        &self,
        sha256: &str,
        size: u64,
        bytes: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Put, BlobDbError> {
        let mut client = self.take()?;
        let r = self.put_on(&mut client, sha256, size, bytes, progress);
        // A failed transaction was rolled back when dropped; the connection is still good
        // unless the server went away (then it is closed and not kept).
        self.give_back(client);
        r
    }

    fn put_on(
        &self,
        client: &mut Client,
        sha256: &str,
        size: u64,
        bytes: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Put, BlobDbError> {
        let size_col = i64::try_from(size).map_err(|_| BlobDbError::Mismatch {
            expected: sha256.into(),
            expected_size: size,
            actual: String::new(),
            size,
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let tx = block(client.transaction())?;
        // Waits for another transaction storing the same blob, and finds its row once it
        // commits (or takes its place if it rolls back).
        let inserted = block(tx.execute(
            "INSERT INTO blobs (sha256, size, stored_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
            &[&sha256, &size_col, &now],
        ))?;
        if inserted == 0 {
            return Ok(Put::AlreadyThere);
        }
        let insert =
            block(tx.prepare("INSERT INTO blob_chunks (sha256, seq, bytes) VALUES ($1, $2, $3)"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut copied: u64 = 0;
        let mut seq: i32 = 0;
        loop {
            let n = read_full(bytes, &mut buf).map_err(BlobDbError::Read)?;
            if n == 0 {
                break;
            }
            copied += n as u64;
            if copied > size {
                break;
            }
            hasher.update(&buf[..n]);
            block(tx.execute(&insert, &[&sha256, &seq, &&buf[..n]]))?;
            seq += 1;
            progress(copied);
            if n < buf.len() {
                break;
            }
        }
        let actual = hex::encode(hasher.finalize());
        if copied != size || actual != sha256 {
            // Dropping the transaction rolls it back.
            return Err(BlobDbError::Mismatch {
                expected: sha256.into(),
                expected_size: size,
                actual: if copied > size {
                    "(not computed: too many bytes)".into()
                } else {
                    actual
                },
                size: copied,
            });
        }
        block(tx.commit())?;
        Ok(Put::Stored)
    }

    /// Writes the bytes of blob `sha256` to `out`, a chunk at a time, checking them against
    /// its name and size: its size, `None` when the database has no such blob. On an error
    /// `out` may hold part of the bytes: write to a temporary file.
    pub fn get(&self, sha256: &str, out: &mut dyn Write) -> Result<Option<u64>, BlobDbError> {
        let client = self.take()?;
        let r = get_on(&client, sha256, out);
        self.give_back(client);
        r
    }
}

fn get_on(client: &Client, sha256: &str, out: &mut dyn Write) -> Result<Option<u64>, BlobDbError> {
    let damaged = |problem: String| BlobDbError::Damaged {
        sha256: sha256.into(),
        problem,
    };
    let Some(row) =
        block(client.query_opt("SELECT size FROM blobs WHERE sha256 = $1", &[&sha256]))?
    else {
        return Ok(None);
    };
    let size = row.try_get::<_, i64>(0)? as u64;
    let select =
        block(client.prepare("SELECT bytes FROM blob_chunks WHERE sha256 = $1 AND seq = $2"))?;
    let mut hasher = Sha256::new();
    let mut copied: u64 = 0;
    let mut seq: i32 = 0;
    while copied < size {
        let Some(row) = block(client.query_opt(&select, &[&sha256, &seq]))? else {
            return Err(damaged(format!(
                "chunk {seq} is missing ({copied} of {size} bytes read)"
            )));
        };
        let bytes: &[u8] = row.try_get(0)?;
        if bytes.is_empty() {
            return Err(damaged(format!("chunk {seq} is empty")));
        }
        hasher.update(bytes);
        out.write_all(bytes).map_err(BlobDbError::Write)?;
        copied += bytes.len() as u64;
        seq += 1;
    }
    let actual = hex::encode(hasher.finalize());
    if copied != size || actual != sha256 {
        return Err(damaged(format!(
            "its chunks hold {copied} bytes hashing to {actual}, not {size}"
        )));
    }
    out.flush().map_err(BlobDbError::Write)?;
    Ok(Some(size))
}

/// Reads until `buf` is full or the reader ends: the number of bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
