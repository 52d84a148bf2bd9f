//! The native worker: one outbound WebSocket to the coordinator (so it works behind NAT), a
//! bounded number of sandbox runs at once, an ed25519 identity that signs every result.
//!
//! [`run`] builds the `Worker` (what lives as long as the process: its settings, key,
//! sandbox, slots, compiled programs and blob cache) and keeps it connected, dialling again
//! with backoff (`backoff`: exponential, with full jitter). `connection` dials and does the
//! handshake; `session` is one connection's message loop; `runner` runs attempts (`Slots`)
//! and keeps programs on disk; `programs` keeps compiled ones in memory; `blobs` is the blob
//! cache; `identity` the key.
//!
//! Architecture Invariant: the async runtime never runs WebAssembly. Attempts run on the
//! sandbox's runner threads (`Sandbox::spawn`), at most `slots` at once, and report to the
//! connection task through a channel.

mod backoff;
mod blobs;
mod connection;
mod gpu;
mod identity;
mod programs;
mod runner;
mod session;

use connection::SessionError;
use ed25519_dalek::SigningKey;
use programs::Programs;
use runegrid_core::AttemptId;
use runegrid_proto::failover::Coordinators;
use runegrid_proto::worker::ToCoordinator;
use runegrid_sandbox::{Blob, Sandbox, SandboxError};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

pub use backoff::Backoff;
pub use blobs::{BlobCache, BlobError};
pub use gpu::GpuMode;
pub use identity::load_or_create_key;
pub use programs::PROGRAMS_IN_MEMORY;
pub use runner::Misbehaviour;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator base URL, e.g. `http://127.0.0.1:7070`, or several separated by commas
    /// (coordinators sharing one database: the worker finds the active one, and moves when a
    /// standby takes over).
    pub coordinator: String,
    /// API token of the account that owns this worker.
    pub token: String,
    /// Tasks run at once.
    pub slots: u32,
    /// Where the key and the program cache live.
    pub data_dir: PathBuf,
    pub name: String,
    /// Fault injection for tests and benchmarks: a worker that misbehaves on purpose.
    pub misbehaviour: Option<Misbehaviour>,
    /// Give up after this many failed connection attempts in a row (`None`: never).
    pub max_reconnects: Option<u32>,
    /// Disk bytes for blobs that tasks mount, in `<data_dir>/blobs/` (0: takes no blob tasks).
    pub blob_space: u64,
    /// Memory offered to a task (`None`: the machine's); the coordinator gives the worker no
    /// task that needs more, such as a model's requests past its memory.
    pub memory_bytes: Option<u64>,
    /// Whether it looks for a GPU to run GPU tasks on.
    pub gpu: GpuMode,
}

/// The default blob space: 8 GiB.
pub const DEFAULT_BLOB_SPACE: u64 = 8 << 30;

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot use data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid coordinator url {url}: {message}")]
    Url { url: String, message: String },
    #[error("the coordinator rejected this worker: {0}")]
    Rejected(String),
    #[error("cannot reach the coordinator at {url} after {tries} tries: {last}")]
    Unreachable {
        url: String,
        tries: u32,
        last: String,
    },
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("invalid worker settings: {0}")]
    Config(String),
    #[error(transparent)]
    Blobs(#[from] BlobError),
}

/// Events from the runner threads to the connection.
pub(crate) enum Event {
    /// A message for the coordinator (dropped if its connection is gone).
    Out { session: u64, msg: ToCoordinator },
    /// The message that ends an attempt; its slot is free again.
    Done { session: u64, msg: ToCoordinator },
    /// A program finished compiling (or failed to).
    Compiled {
        sha256: String,
        result: Result<Arc<runner::Runnable>, SandboxError>,
    },
    /// An attempt's blobs are loaded (or one of them cannot be: why).
    BlobsReady {
        session: u64,
        attempt: AttemptId,
        result: Result<Vec<Blob>, String>,
    },
}

/// Runs the worker until a fatal error.
pub async fn run(config: WorkerConfig) -> Result<(), WorkerError> {
    Worker::new(config)?.run().await
}

/// The worker's runtime: what outlives its connections.
struct Worker {
    config: WorkerConfig,
    /// The coordinators' base URLs (`http://HOST:PORT`), in the order given, and the one in
    /// use.
    coordinators: Coordinators,
    key: SigningKey,
    sandbox: Arc<Sandbox>,
    blob_cache: Arc<BlobCache>,
    slots: runner::Slots,
    /// Compiled programs (and checked GPU kernels), at most [`PROGRAMS_IN_MEMORY`].
    programs: Programs<runner::Runnable>,
    /// Its GPU, if it has one.
    gpu: Option<Arc<gpu::Device>>,
    /// Where runner threads and blob loads report ([`Event`]).
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
}

impl Worker {
    /// Checks the settings and opens the data directory, key, blob cache and sandbox.
    fn new(config: WorkerConfig) -> Result<Worker, WorkerError> {
        let max = runegrid_sandbox::MAX_CONCURRENT_RUNS;
        if config.slots == 0 || config.slots > max {
            return Err(WorkerError::Config(format!(
                "slots must be between 1 and {max}, got {}",
                config.slots
            )));
        }
        std::fs::create_dir_all(config.data_dir.join("programs")).map_err(|source| {
            WorkerError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            }
        })?;
        let key = load_or_create_key(&config.data_dir)?;
        let coordinators = coordinator_list(&config.coordinator)?;
        let blob_cache = Arc::new(BlobCache::open(
            config.data_dir.join("blobs"),
            config.blob_space,
            coordinators.current(),
            &config.token,
        )?);
        let sandbox = Arc::new(Sandbox::new().map_err(|e| WorkerError::Sandbox(e.to_string()))?);
        let (events_tx, events_rx) = mpsc::unbounded_channel::<Event>();
        let gpu = gpu::Device::open(config.gpu)
            .map_err(|e| WorkerError::Config(format!("--gpu: no GPU can be opened: {e}")))?;
        let slots = runner::Slots::new(
            config.slots,
            sandbox.clone(),
            gpu.clone(),
            key.clone(),
            events_tx.clone(),
            config.misbehaviour,
        );
        Ok(Worker {
            config,
            coordinators,
            key,
            sandbox,
            blob_cache,
            slots,
            programs: Programs::new(PROGRAMS_IN_MEMORY),
            gpu,
            events_tx,
            events_rx,
        })
    }

    /// Connects, serves, and connects again (with backoff) until a fatal error.
    async fn run(mut self) -> Result<(), WorkerError> {
        let mut session: u64 = 0;
        let mut failures: u32 = 0;
        let mut backoff = Backoff::new();
        tracing::info!(public_key = %hex::encode(self.key.verifying_key().as_bytes()), slots = self.config.slots, "worker starting");
        loop {
            session += 1;
            match self.session(session).await {
                Ok(()) => {
                    failures = 0;
                    backoff.reset();
                    tracing::warn!("connection to the coordinator ended; reconnecting");
                }
                Err(SessionError::Fatal(e)) => return Err(e),
                Err(e) => {
                    failures += 1;
                    let (last, hint) = match e {
                        SessionError::Standby(active) => (
                            format!(
                                "it is standing by (active: {})",
                                active.as_deref().unwrap_or("none yet")
                            ),
                            active,
                        ),
                        SessionError::Retry(last) => (last, None),
                        SessionError::Fatal(_) => unreachable!("returned above"),
                    };
                    if self.config.max_reconnects.is_some_and(|m| failures > m) {
                        return Err(WorkerError::Unreachable {
                            url: self.config.coordinator.clone(),
                            tries: failures,
                            last,
                        });
                    }
                    tracing::warn!(coordinator = %self.coordinators.current(), error = %last, "cannot use the coordinator");
                    // The active coordinator a standby named, if it is one of ours; else the
                    // next one given.
                    let named = self.coordinators.next(hint.as_deref());
                    self.blob_cache.set_coordinator(self.coordinators.current());
                    if named {
                        // Straight there: the standby said where to go.
                        self.slots.clear();
                        continue;
                    }
                }
            }
            // Queued attempts belonged to the connection that ended: the coordinator has
            // given them to others.
            self.slots.clear();
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One connection, from dialling until it ends.
    async fn session(&mut self, id: u64) -> Result<(), SessionError> {
        let url = connection::ws_url(self.coordinators.current()).map_err(SessionError::Fatal)?;
        let conn = connection::connect(
            &self.config,
            &url,
            &self.key,
            &self.blob_cache,
            self.gpu.as_ref().map(|g| g.info()),
        )
        .await?;
        let session = session::Session::new(id, conn.told.clone());
        self.serve(session, conn).await
    }
}

/// The coordinators in a `--coordinator` value: one base URL or several separated by commas.
fn coordinator_list(spec: &str) -> Result<Coordinators, WorkerError> {
    let list = Coordinators::parse(spec).ok_or_else(|| WorkerError::Url {
        url: spec.into(),
        message: "no coordinator url given".into(),
    })?;
    for u in list.urls() {
        connection::ws_url(u)?;
    }
    Ok(list)
}
