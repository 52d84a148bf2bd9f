//! What a relay counts, served at `GET /relay/stats` (JSON): its upstream traffic, the
//! programs and blob bytes it served from its caches against those it fetched.

use crate::{Hub, lock};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Default)]
pub(crate) struct Counters {
    pub upstream_connects: AtomicU64,
    pub upstream_messages_sent: AtomicU64,
    pub upstream_messages_received: AtomicU64,
    pub upstream_frames_sent: AtomicU64,
    pub upstream_frames_received: AtomicU64,
    pub upstream_bytes_sent: AtomicU64,
    pub upstream_bytes_received: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub programs_fetched: AtomicU64,
    pub programs_from_cache: AtomicU64,
    pub program_bytes_fetched: AtomicU64,
    pub program_bytes_from_cache: AtomicU64,
    pub blob_bytes_served: AtomicU64,
    pub results_rejected: AtomicU64,
    pub results_altered: AtomicU64,
    pub inputs_altered: AtomicU64,
    pub heartbeats_kept: AtomicU64,
    pub silent_workers: AtomicU64,
    pub failures_forged: AtomicU64,
}

/// A relay's figures since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStats {
    /// Whether the upstream connection is up now.
    pub upstream_connected: bool,
    /// The coordinator the upstream connection goes (or last went) to: its base URL.
    #[serde(default)]
    pub upstream: String,
    /// Upstream connections made.
    pub upstream_connects: u64,
    /// Worker sessions open now, and opened in all.
    pub sessions: u64,
    pub sessions_opened: u64,
    /// WebSocket messages on the upstream connection (each holds one or more frames).
    pub upstream_messages_sent: u64,
    pub upstream_messages_received: u64,
    /// Frames: one worker protocol message each, or a session's open or close.
    pub upstream_frames_sent: u64,
    pub upstream_frames_received: u64,
    pub upstream_bytes_sent: u64,
    pub upstream_bytes_received: u64,
    /// `need_program`s forwarded upstream, and answered here (from the cache, or by a fetch
    /// another worker's request made).
    pub programs_fetched: u64,
    pub programs_from_cache: u64,
    /// Bytes of `program` messages received upstream, and sent to workers from the cache.
    pub program_bytes_fetched: u64,
    pub program_bytes_from_cache: u64,
    /// Blob bytes fetched upstream, and served to workers.
    pub blob_bytes_fetched: u64,
    pub blob_bytes_served: u64,
    /// Results and failures that failed their checks here (the worker's doing: not
    /// forwarded).
    pub results_rejected: u64,
    /// Results this relay altered (`--misbehave flip-result`).
    pub results_altered: u64,
    /// Assignments this relay altered (`--misbehave alter-input`).
    #[serde(default)]
    pub inputs_altered: u64,
    /// Workers' heartbeats answered here (they do not go upstream).
    #[serde(default)]
    pub heartbeats_kept: u64,
    /// Sessions ended because their worker went silent.
    #[serde(default)]
    pub silent_workers: u64,
    /// Failures this relay forged in its workers' names (`--misbehave forge-failure`).
    #[serde(default)]
    pub failures_forged: u64,
}

pub(crate) async fn serve(State(hub): State<Arc<Hub>>) -> Json<RelayStats> {
    let c = &hub.stats;
    let n = |a: &AtomicU64| a.load(Relaxed);
    Json(RelayStats {
        upstream_connected: hub.upstream_up(),
        upstream: hub.base(),
        upstream_connects: n(&c.upstream_connects),
        sessions: lock(&hub.sessions).len() as u64,
        sessions_opened: n(&c.sessions_opened),
        upstream_messages_sent: n(&c.upstream_messages_sent),
        upstream_messages_received: n(&c.upstream_messages_received),
        upstream_frames_sent: n(&c.upstream_frames_sent),
        upstream_frames_received: n(&c.upstream_frames_received),
        upstream_bytes_sent: n(&c.upstream_bytes_sent),
        upstream_bytes_received: n(&c.upstream_bytes_received),
        programs_fetched: n(&c.programs_fetched),
        programs_from_cache: n(&c.programs_from_cache),
        program_bytes_fetched: n(&c.program_bytes_fetched),
        program_bytes_from_cache: n(&c.program_bytes_from_cache),
        blob_bytes_fetched: hub.blobs.fetched_bytes(),
        blob_bytes_served: n(&c.blob_bytes_served),
        results_rejected: n(&c.results_rejected),
        results_altered: n(&c.results_altered),
        inputs_altered: n(&c.inputs_altered),
        heartbeats_kept: n(&c.heartbeats_kept),
        silent_workers: n(&c.silent_workers),
        failures_forged: n(&c.failures_forged),
    })
}
