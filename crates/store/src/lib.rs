//! Persistence for the coordinator: one [`Store`] interface, its backends (SQLite, embedded,
//! the default; PostgreSQL, a server the operator runs), and the conformance suite every
//! backend must pass.
//!
//! Architecture Invariant: the coordinator talks to storage only through [`Store`]. A backend
//! is a connection: the coordinator owns one for writing (on its writer thread) and one for
//! reading, and never shares one between threads.

mod codec;
pub mod conformance;
mod lease;
mod postgres;
mod records;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use lease::{Lease, LeaseHolder};
pub use postgres::{
    BlobDbError, CHUNK_BYTES, Fence, POSTGRES_SCHEMA_VERSION, PostgresBlobs, PostgresStore, Put,
    redact_url,
};
pub use records::*;
pub use sqlite::SqliteStore;

use runegrid_core::ledger::Micros;
use runegrid_core::{AccountId, JobId};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// (Its message carries its causes: tokio-postgres's own is only its kind, "db error".)
    #[error("postgres: {}", postgres::message(.0))]
    Postgres(tokio_postgres::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("cannot open the store at {path}: {message}")]
    Open { path: String, message: String },
    /// A fenced write (see [`Fence`]) after another coordinator took the lease over.
    #[error("this coordinator no longer holds the lease on the database: another one took over")]
    LeaseLost,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        if e.code().map(|c| c.code()) == Some(postgres::FENCE_FAILED) {
            return StoreError::LeaseLost;
        }
        StoreError::Postgres(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The coordinator's durable state.
pub trait Store: Send {
    /// Creates an account; `token_hash` is the hash of its API token (never the token). Its
    /// `welcome` credits (none when 0) are granted in the same transaction
    /// (`Transfer::welcome`).
    fn create_account(
        &mut self,
        name: &str,
        token_hash: &str,
        kind: AccountKind,
        welcome: Micros,
    ) -> Result<Account>;
    /// The account holding a token with this hash.
    fn account_by_token(&mut self, token_hash: &str) -> Result<Option<Account>>;
    /// All accounts, oldest first.
    fn accounts(&mut self) -> Result<Vec<Account>>;

    /// Stores a program unless one with the same hash exists.
    fn put_program(&mut self, program: &ProgramRecord) -> Result<()>;
    fn program(&mut self, sha256: &str) -> Result<Option<ProgramRecord>>;

    fn job(&mut self, id: JobId) -> Result<Option<JobRecord>>;
    /// Jobs of an account (all accounts with `None`), newest first.
    fn jobs(&mut self, owner: Option<AccountId>, limit: u32) -> Result<Vec<JobRecord>>;
    /// A job's tasks in index order.
    fn tasks(&mut self, job: JobId) -> Result<Vec<TaskRecord>>;
    /// How many of a job's tasks are in each state.
    fn task_states(&mut self, job: JobId) -> Result<Vec<(TaskState, u64)>>;
    /// Attempts of a job's tasks, in id order.
    fn attempts(&mut self, job: JobId) -> Result<Vec<AttemptRecord>>;
    /// Jobs that are not finished, for recovery after a restart.
    fn unfinished_jobs(&mut self) -> Result<Vec<JobRecord>>;
    /// Applies state changes in one transaction: all or none.
    fn apply(&mut self, changes: &[Change]) -> Result<()>;
    /// The largest job, task and attempt ids ever stored (0 when none) — attempts counted in
    /// the journal's keys too, since the grid's own attempts (audits, probes) are paid but not
    /// stored — and the largest grant number: the coordinator hands out ids itself, above
    /// these.
    fn max_ids(&mut self) -> Result<MaxIds>;

    /// The journal of transfers after sequence number `after`, in order, at most `limit`.
    fn journal(&mut self, after: i64, limit: u32) -> Result<Vec<JournalEntry>>;
    /// The transfers to or from an account, newest first, before sequence number `before`
    /// (from the newest with `None`), at most `limit`.
    fn statement(
        &mut self,
        account: AccountId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JournalEntry>>;

    /// The result cache, least recently used first.
    fn cached_results(&mut self) -> Result<Vec<CacheEntry>>;

    /// Registers a worker key on first sight, or updates its owner, name and capabilities.
    fn upsert_worker(&mut self, w: &NewWorker) -> Result<WorkerRecord>;
    fn workers(&mut self) -> Result<Vec<WorkerRecord>>;
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub type Millis = i64;
