//! A relay (`runegrid relay --upstream URL[,URL...]`): terminates many worker connections — native
//! workers and browsers — and forwards them to the coordinator over one WebSocket
//! (`GET /v1/relay`, `runegrid_proto::relay`), each worker's connection a session of it.
//!
//! The relay is trusted with nothing it cannot prove. Each worker authenticates with its own
//! account's token (passed through to the coordinator, which checks it), answers the
//! coordinator's own challenge with its own key, and signs its results and failures; the
//! coordinator registers, schedules, trusts and checks each worker as if it were connected
//! directly. A relay that alters a result or forges a failure is caught by the signature check
//! and dropped.
//!
//! What it saves the coordinator: connections (one instead of one per worker), messages (the
//! frames of many sessions go in one WebSocket message), and downloads — programs
//! (`programs`: `need_program` answered from the relay's cache once one worker fetched the
//! program, checked by hash) and blobs (`blobs`: `GET /v1/blobs/{sha256}` served from a
//! content-addressed cache on disk, fetched upstream once, checked by hash).
//!
//! Liveness is kept here: the relay answers its workers' heartbeats itself, ends the session of
//! a worker silent for three heartbeat intervals, and tells the coordinator it is alive
//! (`Frame::Alive`) when it sent nothing else for half of one; the coordinator takes the relay's
//! word for all its workers, so idle workers cost it nothing.
//!
//! Modules: `upstream` (the connection to the coordinator, dialled again with backoff; while it
//! is down the relay turns workers away and they dial again; given several coordinators on one
//! database, it follows a failover to the active one), `session` (one worker's
//! WebSocket), `programs`, `blobs`, `proxy` (every other HTTP route, the contribute page
//! included, forwarded to the coordinator) and `stats` (`GET /relay/stats`).

mod blobs;
mod programs;
mod proxy;
mod session;
mod stats;
mod upstream;

use axum::Router;
use axum::routing::get;
use runegrid_proto::relay::{Frame, SessionId};
use runegrid_worker::BlobCache;
use session::SessionState;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

pub use stats::RelayStats;

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The coordinator's base URL, e.g. `http://127.0.0.1:7070`, or several separated by
    /// commas (coordinators sharing one database, one active and the others standing by).
    pub upstream: String,
    /// The relay operator's api token (the relay connection, and its blob downloads).
    pub token: String,
    /// Where the blob cache lives (`DATA/blobs`).
    pub data_dir: PathBuf,
    /// Disk bytes for cached blobs.
    pub blob_space: u64,
    /// Fault injection for tests: a relay that misbehaves on purpose.
    pub misbehaviour: Option<Misbehaviour>,
}

/// Deliberate faults of a relay, for tests of what the coordinator catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// `flip-result`: every result's stdout altered on the way (its digest recomputed so that
    /// only the worker's signature can tell).
    FlipResult,
    /// `alter-input`: every assignment's seed changed on the way to the worker (the worker then
    /// signs a result of another task: the digest of the assignment it signs gives it away).
    AlterInput,
    /// `forge-failure`: every result replaced by an unsigned `failed` message in the worker's
    /// name (only the missing signature of the worker can tell).
    ForgeFailure,
}

impl std::str::FromStr for Misbehaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flip-result" => Ok(Misbehaviour::FlipResult),
            "alter-input" => Ok(Misbehaviour::AlterInput),
            "forge-failure" => Ok(Misbehaviour::ForgeFailure),
            _ => Err(format!(
                "unknown relay misbehaviour {s:?}: expected flip-result, alter-input or forge-failure"
            )),
        }
    }
}

/// Why a relay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid upstream url {url}: {message}")]
    Url { url: String, message: String },
    #[error(transparent)]
    Blobs(#[from] runegrid_worker::BlobError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the relay's parts share.
pub(crate) struct Hub {
    pub config: RelayConfig,
    /// `http://HOST:PORT` of the coordinator the upstream connection goes (or last went) to,
    /// without a trailing slash: the relay's HTTP requests go there too.
    base: Mutex<String>,
    /// Frames for the coordinator, while the upstream connection is up.
    upstream: Mutex<Option<mpsc::UnboundedSender<Frame>>>,
    sessions: Mutex<HashMap<SessionId, Arc<SessionState>>>,
    next_session: AtomicU64,
    pub programs: programs::ProgramCache,
    pub blobs: BlobCache,
    /// Blob sizes, as the assignments forwarded announced them.
    pub blob_sizes: Mutex<HashMap<String, u64>>,
    pub stats: stats::Counters,
    pub http: reqwest::Client,
    /// The heartbeat interval the coordinator asks of workers, in ms (0 until its welcome
    /// frame told it): how often the relay must say it is alive.
    pub heartbeat_ms: AtomicU64,
    /// The checkers of results' signatures, in batches.
    pub signatures: runegrid_proto::signatures::Signatures,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Sends a frame upstream; false when the upstream connection is down.
    pub fn send_upstream(&self, frame: Frame) -> bool {
        match &*lock(&self.upstream) {
            Some(tx) => tx.send(frame).is_ok(),
            None => false,
        }
    }

    /// The coordinator's base URL (the one the relay is connected to).
    pub fn base(&self) -> String {
        lock(&self.base).clone()
    }

    /// The upstream connection goes to `base` now: so do the relay's HTTP requests.
    fn set_base(&self, base: &str) {
        *lock(&self.base) = base.to_string();
        self.blobs.set_coordinator(base);
    }

    pub fn upstream_up(&self) -> bool {
        lock(&self.upstream).is_some()
    }

    pub fn session(&self, id: SessionId) -> Option<Arc<SessionState>> {
        lock(&self.sessions).get(&id).cloned()
    }

    /// Whether `token` is the token of a worker connected now.
    pub fn knows_token(&self, token: &str) -> bool {
        lock(&self.sessions).values().any(|s| s.token == token)
    }
}

/// A started relay.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The HTTP server (it runs until the process ends).
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a relay listening on `listen`; its upstream connection is dialled (and dialled
/// again) in the background.
pub async fn start(config: RelayConfig, listen: SocketAddr) -> Result<Running, RelayError> {
    let coordinators = upstream::coordinators(&config.upstream)?;
    let base = coordinators.current().to_string();
    let blobs = BlobCache::open(
        config.data_dir.join("blobs"),
        config.blob_space,
        &base,
        &config.token,
    )?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| RelayError::Url {
            url: config.upstream.clone(),
            message: e.to_string(),
        })?;
    let hub = Arc::new(Hub {
        config,
        base: Mutex::new(base),
        upstream: Mutex::new(None),
        sessions: Mutex::new(HashMap::new()),
        next_session: AtomicU64::new(1),
        programs: programs::ProgramCache::default(),
        blobs,
        blob_sizes: Mutex::new(HashMap::new()),
        stats: stats::Counters::default(),
        http,
        heartbeat_ms: AtomicU64::new(0),
        signatures: runegrid_proto::signatures::Signatures::spawn(),
    });
    let upstream = coordinators.urls().join(",");
    tokio::spawn(upstream::run(hub.clone(), coordinators));
    let app = Router::new()
        .route("/v1/worker", get(session::upgrade))
        .route("/v1/blobs/{sha256}", get(blobs::download))
        .route("/relay/stats", get(stats::serve))
        .fallback(proxy::forward)
        .with_state(hub);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RelayError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RelayError::Listen {
        addr: listen,
        source,
    })?;
    tracing::info!(%addr, %upstream, "relay listening");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running { addr, server })
}
