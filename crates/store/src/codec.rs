//! How both backends write the columns that are not plain numbers or bytes: JSON text,
//! hexadecimal digests, and the error for a value that does not read back.

use crate::{Result, StoreError};
use runegrid_core::{Digest, ExecStatus};

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialize")
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

pub(crate) fn digest_col(s: Option<String>) -> Result<Option<Digest>> {
    s.map(|s| Digest::from_hex(&s).ok_or_else(|| corrupt("digest", s)))
        .transpose()
}

pub(crate) fn status_col(s: Option<String>) -> Result<Option<ExecStatus>> {
    s.map(|s| from_json("status", &s)).transpose()
}

// The columns each record is read from, in the order both backends decode them.
pub(crate) const JOB_COLS: &str = "id, owner, name, program, replicas, agree, max_attempts, limits, created_at, state, finished_at, policy, blobs, price, held, max_price, cache, cached, gpu";

pub(crate) const TRANSFER_COLS: &str =
    "seq, key_kind, key_id, from_kind, from_id, to_kind, to_id, amount, reason, at";

pub(crate) const TASK_COLS: &str = "id, job, idx, args, env, stdin, seed, state, status, stdout, fuel, digest, error, attempts, acceptance, files";

pub(crate) const ATTEMPT_COLS: &str = "id, task, job, worker, state, status, digest, fuel, signature, error, started_at, finished_at, owner, agreed";

pub(crate) const WORKER_COLS: &str =
    "id, public_key, owner, name, capabilities, first_seen, last_seen, completed, trust";
