//! The records a store keeps.

use runegrid_core::cache::{CacheKey, CachedResult};
use runegrid_core::gpu::GpuOptions;
use runegrid_core::ledger::{Micros, Transfer};
use runegrid_core::{
    Acceptance, AccountId, AttemptId, Digest, ExecStatus, JobId, Limits, OutputFile, PolicyKind,
    TaskId, TrustRecord, WorkerId,
};
/// The states a store keeps (defined in core: the API shows them too).
pub use runegrid_core::{AttemptState, JobState, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::Millis;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub admin: bool,
    /// A contributor account (made by the contribute page for a browser): it may run workers
    /// and read the grid's stats, but not submit work.
    pub contributor: bool,
    pub created_at: Millis,
    /// The name it shows on the contributors' leaderboard; `None`: it is not shown by name.
    pub display_name: Option<String>,
}

/// What a new account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Admin,
    User,
    Contributor,
}

/// A program as uploaded (hash of the original bytes) with its instrumented form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRecord {
    pub sha256: String,
    pub instrumented_sha256: String,
    pub instrumented: Vec<u8>,
    pub original_size: i64,
    pub owner: AccountId,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub owner: AccountId,
    pub name: String,
    pub program: String,
    pub policy: PolicyKind,
    pub replicas: u32,
    pub agree: u32,
    pub max_attempts: u32,
    pub limits: Limits,
    pub created_at: Millis,
    /// Files its tasks mount read-only: name → SHA-256 of the blob.
    pub blobs: BTreeMap<String, String>,
    /// Its price, micro-credits per 10^9 fuel (0: nothing is paid for it).
    pub price: u64,
    /// What its submitter holds for it (0 on a grid that does not charge: its workers'
    /// earnings are minted).
    pub held: Micros,
    /// Its bid: the most it pays per 10^9 fuel (`None`: the price when it was accepted).
    pub max_price: Option<u64>,
    /// `Active`, or `WaitingForPrice` when its bid is below the price.
    pub state: JobState,
    /// Whether its tasks may be answered from the result cache, and its verified results
    /// added to it.
    pub cache: bool,
    /// How many of its tasks were answered from the cache when it was accepted.
    pub cached: u32,
    /// A GPU job's options (its program is a kernel); `None` for every other job.
    pub gpu: Option<GpuOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: JobId,
    pub owner: AccountId,
    pub name: String,
    pub program: String,
    pub replicas: u32,
    pub agree: u32,
    pub max_attempts: u32,
    pub limits: Limits,
    pub created_at: Millis,
    pub state: JobState,
    pub finished_at: Option<Millis>,
    pub policy: PolicyKind,
    pub blobs: BTreeMap<String, String>,
    pub price: u64,
    pub held: Micros,
    pub max_price: Option<u64>,
    pub cache: bool,
    pub cached: u32,
    pub gpu: Option<GpuOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub stdin: Vec<u8>,
    pub seed: u64,
}

/// The agreed outcome of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub status: Option<ExecStatus>,
    pub stdout: Vec<u8>,
    pub fuel: u64,
    pub digest: Option<Digest>,
    pub error: Option<String>,
    /// How the result was accepted (`None` for failures without a quorum and cancellations).
    pub acceptance: Option<Acceptance>,
    /// The files the accepted result left under `/out` (their bytes are in the coordinator's
    /// blob store, by SHA-256).
    pub files: Vec<OutputFile>,
}

impl TaskOutcome {
    /// The outcome of a task that ended without an accepted result (no quorum, cancelled).
    pub fn failed(error: impl Into<String>) -> TaskOutcome {
        TaskOutcome {
            status: None,
            stdout: vec![],
            fuel: 0,
            digest: None,
            error: Some(error.into()),
            acceptance: None,
            files: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub job: JobId,
    pub index: u32,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub stdin: Vec<u8>,
    pub seed: u64,
    pub state: TaskState,
    pub outcome: Option<TaskOutcome>,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub task: TaskId,
    pub job: JobId,
    pub worker: WorkerId,
    /// Who is paid for it (unknown for attempts stored before credits).
    pub owner: Option<AccountId>,
    pub state: AttemptState,
    pub status: Option<ExecStatus>,
    pub digest: Option<Digest>,
    /// The digest the attempt was accepted as, when that is not its own: a tolerance job's
    /// attempt that agreed, within the job's tolerance, with the result chosen.
    pub agreed: Option<Digest>,
    pub fuel: Option<u64>,
    pub signature: Option<String>,
    pub error: Option<String>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
}

/// Largest ids in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaxIds {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: AttemptId,
    /// The largest grant number in the journal.
    pub grant: u64,
}

/// One state change, applied with others in a single transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new job and its tasks (ids chosen by the coordinator), all queued.
    CreateJob {
        id: JobId,
        job: Box<NewJob>,
        tasks: Vec<(TaskId, NewTask)>,
    },
    StartAttempt {
        id: AttemptId,
        task: TaskId,
        job: JobId,
        worker: WorkerId,
        /// The worker's owner when the attempt started: who is paid for it.
        owner: AccountId,
        at: Millis,
    },
    FinishAttempt {
        id: AttemptId,
        status: ExecStatus,
        digest: Digest,
        fuel: u64,
        signature: String,
        at: Millis,
    },
    /// A finished attempt of a tolerance job agreed with the result accepted (digest `agreed`)
    /// without being bit-identical to it.
    AgreeAttempt {
        id: AttemptId,
        agreed: Digest,
    },
    LoseAttempt {
        id: AttemptId,
        error: String,
        at: Millis,
    },
    CancelAttempt {
        id: AttemptId,
        at: Millis,
    },
    TaskState {
        id: TaskId,
        state: TaskState,
        attempts: u32,
    },
    FinishTask {
        id: TaskId,
        state: TaskState,
        outcome: TaskOutcome,
        attempts: u32,
    },
    /// A finished task's outcome replaced after an audit (its attempts count is unchanged).
    CorrectTask {
        id: TaskId,
        state: TaskState,
        outcome: TaskOutcome,
    },
    FinishJob {
        id: JobId,
        state: JobState,
        at: Millis,
    },
    WorkerSeen {
        id: WorkerId,
        at: Millis,
        completed_delta: u32,
    },
    /// A worker's trust record changed.
    WorkerTrust {
        id: WorkerId,
        trust: TrustRecord,
    },
    /// Credits moved: appended to the journal unless a transfer with the same key is there.
    Transfer {
        transfer: Transfer,
        at: Millis,
    },
    /// A job that waited for the price starts: `Active`, at `price`.
    StartJob {
        id: JobId,
        price: u64,
    },
    /// An account's leaderboard name set (or, with `None`, withdrawn).
    DisplayName {
        account: AccountId,
        name: Option<String>,
    },
    /// A verified result kept in the result cache (replacing one under the same key).
    CachePut {
        key: CacheKey,
        result: CachedResult,
        at: Millis,
    },
    /// A cached result answered a task at `at` (its place in the eviction order).
    CacheUse {
        key: CacheKey,
        at: Millis,
    },
    /// A cached result left the cache.
    CacheEvict {
        key: CacheKey,
    },
}

/// A result in the result cache, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: CacheKey,
    pub result: CachedResult,
    /// When it was stored or last answered a task.
    pub used_at: Millis,
}

/// A transfer as the journal keeps it: numbered in the order it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry {
    pub seq: i64,
    pub transfer: Transfer,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorker {
    pub public_key: String,
    pub owner: AccountId,
    pub name: String,
    pub capabilities: serde_json::Value,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub public_key: String,
    pub owner: AccountId,
    pub name: String,
    pub capabilities: serde_json::Value,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub completed: u64,
    pub trust: TrustRecord,
}
