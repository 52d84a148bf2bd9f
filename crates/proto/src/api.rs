//! The user-facing HTTP/JSON API under `/v1`.

use runegrid_core::{Digest, ExecStatus, JobId, Limits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One task's input: a line of an input file. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// Text given on stdin.
    pub stdin: String,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
}

/// Answer to `POST /v1/programs` (body: the module's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    /// SHA-256 of the uploaded bytes: the name to submit jobs with.
    pub program: String,
    /// SHA-256 of the metered module the workers run.
    pub instrumented_sha256: String,
    pub size: u64,
    pub instrumented_size: u64,
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Program hash from `POST /v1/programs`.
    pub program: String,
    #[serde(default)]
    pub name: Option<String>,
    /// One task per entry; must not be empty.
    pub tasks: Vec<TaskSpec>,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default = "default_agree")]
    pub agree: u32,
    /// Cap on attempts per task when replicas disagree (default `replicas + 2 * agree`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub limits: Limits,
}

pub fn default_replicas() -> u32 {
    3
}
pub fn default_agree() -> u32 {
    2
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitJobResponse {
    pub job: JobId,
    pub tasks: u64,
    /// With `POST /v1/jobs?wait=SECONDS`: the results once the job finished (or as they stood
    /// when the wait ran out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<JobResults>,
}

/// Task counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct JobStatus {
    pub job: JobId,
    pub name: String,
    pub owner: String,
    pub program: String,
    /// `active`, `done` or `cancelled`.
    pub state: String,
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
}

/// One task's result, as printed by `submit --wait --json` and `results --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub index: u32,
    /// `queued`, `running`, `verified`, `failed` or `cancelled`.
    pub state: String,
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
pub struct JobResults {
    pub job: JobId,
    pub tasks: Vec<TaskResult>,
}

/// `GET /v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// `GET /v1/me` and `POST /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    /// Only in the answer to `POST /v1/accounts`: the new account's token, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /v1/accounts` (admin only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_module`, `not_found`, `unauthorized`.
    pub code: String,
    pub message: String,
}

/// One event of a job's stream (`GET /v1/jobs/{id}/events`, Server-Sent Events; the SSE event
/// name is the `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A task reached a final state.
    Task { result: TaskResult },
    /// Every task is final; the stream ends.
    Done { state: String, counts: Counts },
}

impl JobEvent {
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Progress { .. } => "progress",
            JobEvent::Stdout { .. } => "stdout",
            JobEvent::Task { .. } => "task",
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
    fn binary_stdout_roundtrips() {
        let mut r = TaskResult {
            index: 0,
            state: "verified".into(),
            exit_code: Some(0),
            stdout: None,
            stdout_base64: None,
            fuel: Some(1),
            digest: None,
            attempts: 1,
            error: None,
            status: None,
        };
        r.set_stdout(b"hi\n");
        assert_eq!(r.stdout.as_deref(), Some("hi\n"));
        assert!(r.stdout_base64.is_none());
        r.set_stdout(&[0xff, 0, 1]);
        assert_eq!(r.stdout_bytes().unwrap(), vec![0xff, 0, 1]);
    }
}
