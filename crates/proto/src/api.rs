//! The user-facing HTTP/JSON API under `/v1`.

use runegrid_core::{
    Acceptance, Digest, ExecStatus, JobId, JobState, Limits, PolicyKind, Standing, TaskState,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One task's input: a line of an input file. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// Text given on stdin.
    pub stdin: String,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// A GPU task's input buffers: buffer name → its bytes, base64 (standard alphabet, with
    /// padding). Only for GPU kernels, whose tasks take no args, stdin or env.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub buffers: BTreeMap<String, String>,
}

/// Answer to `POST /v1/programs` (body: the module's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgramInfo {
    /// SHA-256 of the uploaded bytes: the name to submit jobs with.
    pub program: String,
    /// SHA-256 of the metered module the workers run.
    pub instrumented_sha256: String,
    pub size: u64,
    pub instrumented_size: u64,
    /// `wasm` (a WASI module) or `gpu` (a WGSL kernel). Absent from older coordinators: wasm.
    #[serde(default)]
    pub kind: ProgramKind,
}

/// What kind of program a hash names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProgramKind {
    /// A WASI preview-1 module, metered and run in the sandbox.
    #[default]
    Wasm,
    /// A WGSL compute kernel (JSON: shader, entry point, buffers, dispatches), run on GPUs.
    Gpu,
}

/// What a GPU job asks of its workers (`SubmitJob::gpu`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct GpuJob {
    /// How replicas are compared: `exact` (the default: equal digests), `homogeneous` (equal
    /// digests, replicas only on workers of one adapter class and driver), or
    /// `tolerance:abs=A,rel=R,ulps=U` (outputs read as f32 arrays agree element-wise within
    /// any of the bounds given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    /// Software adapters (lavapipe, SwiftShader, WARP) may run it. Default false: GPUs only.
    pub allow_software: bool,
}

/// Answer to `PUT /v1/blobs/{sha256}` and `POST /v1/blobs` (body: the file's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlobInfo {
    /// SHA-256 of the bytes: the name jobs mount it by.
    pub sha256: String,
    pub size: u64,
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Program hash from `POST /v1/programs`, or `rune` for the built-in Rune runner (each
    /// task's stdin is then a call, see `runegrid-runner`); the job shows the runner's hash.
    pub program: String,
    #[serde(default)]
    pub name: Option<String>,
    /// One task per entry; must not be empty.
    pub tasks: Vec<TaskSpec>,
    /// `adaptive` (the default when no `replicas`/`agree` are given: trusted workers run a task
    /// alone, with spot checks; others are replicated), `quorum` (the default when they are:
    /// always replicated) or `none` (one attempt, accepted as reported).
    #[serde(default)]
    pub policy: Option<PolicyKind>,
    /// Attempts on distinct workers (adaptive: for results of untrusted workers). Default 2
    /// under `adaptive`, 3 under `quorum`.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Matching results needed. Default 2.
    #[serde(default)]
    pub agree: Option<u32>,
    /// Cap on attempts per task when replicas disagree (default `replicas + 2 * agree`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub limits: Limits,
    /// Read-only files every task sees under `/blobs/NAME`: NAME → SHA-256 of an uploaded blob.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blobs: BTreeMap<String, String>,
    /// The most the job pays, in micro-credits per 10^9 fuel (its bid). Its worst case is
    /// held at this price; it pays the grid's price when it starts, and waits
    /// (`waiting_for_price`) while the price is above its bid. Queued work runs highest bid
    /// first. Default: the price when it is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<u64>,
    /// Where every task's random stream (`random_get`) starts, below 2^53. Default: a fresh
    /// seed per task, so no two submissions are alike and none is answered from the result
    /// cache; with a seed, a task with the same inputs as one verified before is answered
    /// from that result at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `false`: never answer its tasks from the result cache, nor keep its results there.
    /// Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// For a GPU kernel: how replicas are compared and which adapters may run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuJob>,
}

/// Seeds are kept below 2^53 so every engine (JavaScript numbers included) holds them exactly.
pub const MAX_SEED: u64 = (1 << 53) - 1;

impl SubmitJob {
    /// The policy and quorum this submission asks for, defaults filled in.
    pub fn resolved_policy(&self) -> Result<(PolicyKind, u32, u32), String> {
        let kind = self
            .policy
            .unwrap_or(if self.replicas.is_some() || self.agree.is_some() {
                PolicyKind::Quorum
            } else {
                PolicyKind::Adaptive
            });
        let (replicas, agree) = match kind {
            PolicyKind::None => {
                if self.replicas.is_some_and(|r| r != 1) || self.agree.is_some_and(|a| a != 1) {
                    return Err("policy none runs one attempt: leave out replicas and agree".into());
                }
                (1, 1)
            }
            PolicyKind::Adaptive => (self.replicas.unwrap_or(2), self.agree.unwrap_or(2)),
            PolicyKind::Quorum => {
                let replicas = self.replicas.unwrap_or(3);
                (replicas, self.agree.unwrap_or(replicas / 2 + 1))
            }
        };
        Ok((kind, replicas, agree))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitJobResponse {
    pub job: JobId,
    pub tasks: u64,
    /// Its price and hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<JobCost>,
    /// With `POST /v1/jobs?wait=SECONDS`: the results once the job finished (or as they stood
    /// when the wait ran out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<JobResults>,
}

/// Task counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub verified: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.verified + self.failed + self.cancelled
    }
    pub fn finished(&self) -> u64 {
        self.verified + self.failed + self.cancelled
    }
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    pub job: JobId,
    pub name: String,
    pub owner: String,
    pub program: String,
    pub state: JobState,
    pub policy: PolicyKind,
    pub replicas: u32,
    pub agree: u32,
    pub max_attempts: u32,
    pub limits: Limits,
    pub counts: Counts,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Why queued tasks are not moving, when the coordinator can tell (e.g. too few workers).
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// The blobs its tasks mount: NAME → SHA-256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blobs: BTreeMap<String, String>,
    /// Its price and what it has cost so far (absent for jobs from before credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<JobCost>,
    /// Whether it uses the result cache.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Tasks answered from the result cache when it was accepted (no attempt, nothing paid).
    #[serde(default)]
    pub cached: u64,
}

fn yes() -> bool {
    true
}

/// What a job pays. Amounts are micro-credits (10^-6 credit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCost {
    /// Micro-credits per 10^9 fuel, fixed when the job was accepted (fee not included).
    pub price: u64,
    /// Held from the submitter when the job was accepted: its worst case (every task run
    /// `max_attempts` times to its fuel limit, fee included); 0 on a grid that does not charge.
    pub held: i64,
    /// Paid so far for its verified results (fees included); once the job finished, its final
    /// cost (the rest of the hold went back to the submitter).
    pub spent: i64,
    /// Its bid, when it gave one (`max_price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<u64>,
}

/// `GET /v1/account`: the caller's credits, in micro-credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountCredits {
    pub account: String,
    /// What it may spend now (negative after a clawback: its workers earn it back first).
    pub balance: i64,
    /// Held for its unfinished jobs.
    pub held: i64,
    /// Earned by its workers for verified results (clawbacks deducted).
    pub earned: i64,
    /// Paid for its jobs, fees included.
    pub spent: i64,
    /// The name it shows on the contributors' leaderboard (absent: not shown by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `PUT /v1/account`: the account's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// The name to show on the contributors' leaderboard (1 to 40 characters), or `null` to
    /// be listed without a name.
    pub display_name: Option<String>,
}

/// `GET /v1/leaderboard`: the contributors who earned most, public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Leaderboard {
    pub contributors: Vec<Contributor>,
}

/// One contributor on the leaderboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contributor {
    pub rank: u32,
    /// Its display name, when it chose one (`PUT /v1/account`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Micro-credits earned for verified results (clawbacks deducted).
    pub earned: i64,
    /// Results of its workers that agreed with the accepted ones.
    pub tasks_verified: u64,
    /// Time from each of its workers' first to last sign of life, summed (ms).
    pub time_contributed_ms: i64,
    pub workers: u32,
}

/// `GET /v1/price`: what work costs now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PriceInfo {
    /// Micro-credits per 10^9 fuel: `base × multiplier` (rounded up).
    pub price: u64,
    /// The price at multiplier 1.
    pub base: u64,
    /// The demand multiplier in [0.5, 2], in parts per million.
    pub multiplier_ppm: u64,
    /// The protocol fee on each payment, in parts per million (50000 = 5%).
    pub fee_ppm: u64,
    /// Tasks waiting for a worker.
    pub queued: u64,
    /// Free worker slots.
    pub free_slots: u64,
    /// False on a grid that does not charge (`serve --free`): nothing is held or paid by
    /// submitters; contributors' earnings are still recorded.
    pub charging: bool,
}

/// One transfer on an account's statement (`GET /v1/ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    /// Its place in the coordinator's journal (page with `?before=`).
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub reason: runegrid_core::ledger::Reason,
    /// Micro-credits, positive into the account, negative out of it.
    pub amount: i64,
    /// The other side.
    pub counterparty: runegrid_core::ledger::Party,
    /// The event it settles (a job's hold, an attempt's payment, ...).
    pub key: runegrid_core::ledger::EntryKey,
}

/// `GET /v1/ledger`: an account's statement, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Statement {
    pub account: String,
    pub entries: Vec<LedgerEntry>,
    /// Pass as `?before=` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// `POST /v1/accounts/{name}/credits` (admin only): a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GrantCredits {
    /// Micro-credits to grant (positive).
    pub amount: i64,
}

/// Where a task's result stands: its [`TaskState`], or `unverified` while a first result is in
/// (shown at once) and the quorum is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResultState {
    Queued,
    Running,
    Unverified,
    Verified,
    Failed,
    Cancelled,
}

impl ResultState {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultState::Queued => "queued",
            ResultState::Running => "running",
            ResultState::Unverified => "unverified",
            ResultState::Verified => "verified",
            ResultState::Failed => "failed",
            ResultState::Cancelled => "cancelled",
        }
    }

    /// Verified, failed or cancelled: it will not change (except by an audit's correction).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ResultState::Verified | ResultState::Failed | ResultState::Cancelled
        )
    }
}

impl From<TaskState> for ResultState {
    fn from(s: TaskState) -> ResultState {
        match s {
            TaskState::Queued => ResultState::Queued,
            TaskState::Running => ResultState::Running,
            TaskState::Verified => ResultState::Verified,
            TaskState::Failed => ResultState::Failed,
            TaskState::Cancelled => ResultState::Cancelled,
        }
    }
}

impl std::fmt::Display for ResultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One task's result, as printed by `submit --wait --json` and `results --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskResult {
    pub index: u32,
    pub state: ResultState,
    /// How the result was accepted, once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<Acceptance>,
    pub exit_code: Option<i32>,
    /// Stdout as text (invalid UTF-8 replaced); see `stdout_base64` for the exact bytes.
    pub stdout: Option<String>,
    /// The exact stdout bytes, present when stdout is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_base64: Option<String>,
    pub fuel: Option<u64>,
    pub digest: Option<Digest>,
    /// Attempts dispatched so far (finished, running or lost).
    pub attempts: u32,
    pub error: Option<String>,
    /// How the agreed execution ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExecStatus>,
    /// The last bytes of stderr of one worker that produced this result (not verified: stderr
    /// is not compared between replicas); only while the coordinator holds the job in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The files the program left under `/out` (path below it, size, SHA-256), in path order;
    /// each downloads from `GET /v1/jobs/{id}/tasks/{index}/files/{path}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<runegrid_core::OutputFile>,
}

impl TaskResult {
    /// The exact stdout bytes.
    pub fn stdout_bytes(&self) -> Option<Vec<u8>> {
        match (&self.stdout_base64, &self.stdout) {
            (Some(b), _) => crate::b64::decode(b).ok(),
            (None, Some(s)) => Some(s.as_bytes().to_vec()),
            (None, None) => None,
        }
    }

    /// Fills `stdout` / `stdout_base64` from bytes.
    pub fn set_stdout(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.stdout = Some(s.to_string());
                self.stdout_base64 = None;
            }
            Err(_) => {
                self.stdout = Some(String::from_utf8_lossy(bytes).into_owned());
                self.stdout_base64 = Some(crate::b64::encode(bytes));
            }
        }
    }
}

/// `GET /v1/jobs/{id}/results`: also the output of `submit --wait --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobResults {
    pub job: JobId,
    pub tasks: Vec<TaskResult>,
}

/// `GET /v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    pub id: i64,
    pub name: String,
    pub public_key: String,
    pub owner: String,
    pub connected: bool,
    pub slots: u32,
    pub running: u32,
    pub completed: u64,
    pub capabilities: serde_json::Value,
    pub last_seen: i64,
    pub standing: Standing,
    /// Reliability, completion and speed in [0, 1].
    pub score: f64,
    /// Results that matched / contradicted the consensus.
    pub agreed: u64,
    pub disagreed: u64,
    /// Attempts abandoned (vanished, failed, lease expired).
    pub abandoned: u64,
    /// Results accepted on its word alone.
    pub accepted_alone: u64,
    /// Relative attempt time (1.0 = typical, 0 = not measured yet).
    pub speed: f64,
    /// Why it gets no work; shown to its owner and administrators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

/// `GET /v1/me` and `POST /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountInfo {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    /// A contributor account (made by `POST /v1/contributors`): runs workers, submits nothing.
    #[serde(default)]
    pub contributor: bool,
    /// Only in the answer to `POST /v1/accounts` and `POST /v1/contributors`: the new
    /// account's token, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /v1/accounts` (admin only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

/// One sample of the grid's activity (`GET /v1/stats`, public).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GridSample {
    /// When it was taken (ms since the Unix epoch).
    pub at: i64,
    /// Connected workers by kind.
    pub workers_native: u32,
    pub workers_browser: u32,
    /// Connected workers with a GPU (hardware or software), of either kind.
    #[serde(default)]
    pub workers_gpu: u32,
    /// Their slots (tasks they run at once), all kinds.
    pub slots: u32,
    /// Attempts running now.
    pub running: u32,
    /// Tasks waiting for a worker.
    pub queued: u32,
    /// Tasks verified and failed since the coordinator started.
    pub verified: u64,
    pub failed: u64,
    /// Tasks finished (verified or failed) per second since the previous sample.
    pub tasks_per_sec: f64,
    /// The price of 10^9 fuel, in micro-credits.
    #[serde(default)]
    pub price: u64,
}

/// `GET /v1/stats`: the grid now and its recent history, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GridStats {
    pub now: GridSample,
    pub interval_ms: u64,
    pub history: Vec<GridSample>,
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_module`, `not_found`, `unauthorized`.
    pub code: String,
    pub message: String,
}

/// One event of a job's stream (`GET /v1/jobs/{id}/events`, Server-Sent Events; the SSE event
/// name is the `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// Task counts changed.
    Progress { counts: Counts },
    /// A chunk of a running attempt's stdout, as the worker wrote it (unverified).
    Stdout {
        task: u32,
        attempt: i64,
        data: String,
    },
    /// A task's first result (state `unverified`, sent at once) or its final state.
    Task { result: TaskResult },
    /// A result accepted on one worker's word was re-executed after that worker was caught
    /// lying, and the quorum's answer differs: `result` replaces the task's earlier result.
    Corrected {
        result: TaskResult,
        previous_digest: Option<Digest>,
    },
    /// Every task is final; the stream ends.
    Done { state: JobState, counts: Counts },
}

impl JobEvent {
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Progress { .. } => "progress",
            JobEvent::Stdout { .. } => "stdout",
            JobEvent::Task { .. } => "task",
            JobEvent::Corrected { .. } => "corrected",
            JobEvent::Done { .. } => "done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_spec_fields_are_optional_and_strict() {
        let t: TaskSpec = serde_json::from_str(r#"{"args": ["100000"]}"#).unwrap();
        assert_eq!(t.args, vec!["100000"]);
        assert!(t.stdin.is_empty() && t.env.is_empty());
        let t: TaskSpec =
            serde_json::from_str(r#"{"args": [], "stdin": "7\n", "env": {"K": "V"}}"#).unwrap();
        assert_eq!(t.env["K"], "V");
        assert!(serde_json::from_str::<TaskSpec>(r#"{"argz": []}"#).is_err());
    }

    #[test]
    fn policy_defaults() {
        let job = |s: &str| -> SubmitJob { serde_json::from_str(s).unwrap() };
        let base = r#""program": "p", "tasks": [{}]"#;
        assert_eq!(
            job(&format!("{{{base}}}")).resolved_policy(),
            Ok((PolicyKind::Adaptive, 2, 2))
        );
        assert_eq!(
            job(&format!(r#"{{{base}, "replicas": 5}}"#)).resolved_policy(),
            Ok((PolicyKind::Quorum, 5, 3))
        );
        assert_eq!(
            job(&format!(
                r#"{{{base}, "policy": "adaptive", "replicas": 3}}"#
            ))
            .resolved_policy(),
            Ok((PolicyKind::Adaptive, 3, 2))
        );
        assert_eq!(
            job(&format!(r#"{{{base}, "policy": "none"}}"#)).resolved_policy(),
            Ok((PolicyKind::None, 1, 1))
        );
        assert!(
            job(&format!(r#"{{{base}, "policy": "none", "replicas": 3}}"#))
                .resolved_policy()
                .is_err()
        );
        assert!(
            serde_json::from_str::<SubmitJob>(&format!(r#"{{{base}, "policy": "vote"}}"#)).is_err()
        );
    }

    #[test]
    fn binary_stdout_roundtrips() {
        let mut r = TaskResult {
            index: 0,
            state: ResultState::Verified,
            acceptance: None,
            exit_code: Some(0),
            stdout: None,
            stdout_base64: None,
            fuel: Some(1),
            digest: None,
            attempts: 1,
            error: None,
            status: None,
            stderr: None,
            files: vec![],
        };
        r.set_stdout(b"hi\n");
        assert_eq!(r.stdout.as_deref(), Some("hi\n"));
        assert!(r.stdout_base64.is_none());
        r.set_stdout(&[0xff, 0, 1]);
        assert_eq!(r.stdout_bytes().unwrap(), vec![0xff, 0, 1]);
    }

    #[test]
    fn states_keep_their_wire_strings() {
        for s in [
            ResultState::Queued,
            ResultState::Running,
            ResultState::Unverified,
            ResultState::Verified,
            ResultState::Failed,
            ResultState::Cancelled,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<ResultState>(&json).unwrap(), s);
        }
        for t in [
            TaskState::Queued,
            TaskState::Running,
            TaskState::Verified,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            assert_eq!(ResultState::from(t).as_str(), t.as_str());
        }
        let done: JobEvent = serde_json::from_str(
            r#"{"type": "done", "state": "done", "counts": {"queued": 0, "running": 0, "verified": 1, "failed": 0, "cancelled": 0}}"#,
        )
        .unwrap();
        assert!(matches!(
            done,
            JobEvent::Done {
                state: JobState::Done,
                ..
            }
        ));
        assert!(serde_json::from_str::<ResultState>(r#""finished""#).is_err());
    }
}
