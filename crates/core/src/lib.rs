//! Domain types and the pure decisions of runegrid: what a task is, what an execution
//! produced, when replicas agree, and which worker gets which task.
//!
//! Architecture Invariant: nothing here does I/O, spawns, sleeps or reads a clock. Every
//! function is a deterministic function of its arguments, so it is tested exhaustively and
//! compiles for `wasm32-unknown-unknown` (the browser worker reuses it).

/// `Display` as the wire string (`as_str`) for the enums the API and the CLI show.
macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    )*};
}

pub mod audit;
pub mod cache;
pub mod exec;
pub mod failure;
pub mod gpu;
pub mod ledger;
pub mod lifecycle;
pub mod limits;
pub mod loss;
pub mod model_tier;
pub mod mounts;
pub mod price;
pub mod probe;
pub mod schedule;
pub mod settlement;
pub mod straggler;
pub mod tolerance;
pub mod trust;
pub mod verify;

pub use exec::{Digest, ExecStatus, Execution, OutputFile, TrapKind, digest, digest_with_files};
pub use failure::FailureKind;
pub use lifecycle::{AttemptState, JobState, TaskState};
pub use limits::{Limits, LimitsError};
pub use loss::Loss;
pub use model_tier::ModelTier;
pub use schedule::{Assignment, Need, WorkerView, plan};
pub use tolerance::{
    Answer, Disagreement, OutputTally, Tolerance, ToleranceError, ToleranceVerdict, decide_answers,
    decide_within,
};
pub use trust::{
    Acceptance, Policy, PolicyKind, Requirement, Standing, TrustParams, TrustRecord, requirement,
};
pub use verify::{AttemptTally, Quorum, QuorumError, Verdict, decide};

/// Identifier of a job, unique within one coordinator.
pub type JobId = i64;
/// Identifier of a task (one input of a job).
pub type TaskId = i64;
/// Identifier of one execution of a task on one worker.
pub type AttemptId = i64;
/// Identifier of a connected worker record.
pub type WorkerId = i64;
/// Identifier of an account.
pub type AccountId = i64;
