//! `serve` and `worker`: running a coordinator or a native worker in this process.

use crate::commands::{Conn, parse_bytes};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value_t = crate::default_listen())]
    pub listen: SocketAddr,
    /// Data directory (database, admin token, blobs).
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    pub data: PathBuf,
    /// Where records are kept: `sqlite` (the default: a file in the data directory) or a
    /// PostgreSQL database, `postgres://user[:password]@host[:port]/database` (it must exist;
    /// the tables are created on first start). Blobs and the admin token stay in the data
    /// directory.
    #[arg(
        long,
        value_name = "URL",
        env = "RUNEGRID_STORE",
        hide_env_values = true
    )]
    pub store: Option<runegrid_coordinator::StoreLocation>,
    /// Heartbeat interval asked of workers; three missed intervals lose a worker's attempts.
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Extra seconds past a task's wall-time limit before its lease expires.
    #[arg(long, default_value_t = 10)]
    pub lease_grace_secs: u64,
    /// Consecutive results agreeing with consensus before a worker's results are accepted
    /// alone (adaptive policy).
    #[arg(long, default_value_t = runegrid_core::TrustParams::default().trust_after)]
    pub trust_after: u32,
    /// A trusted worker's spot-check rate is SCALE × trust-after / its streak...
    #[arg(long, default_value_t = runegrid_core::TrustParams::default().spot_scale)]
    pub spot_scale: f64,
    /// ...and never below this (0..=1).
    #[arg(long, default_value_t = runegrid_core::TrustParams::default().min_spot_rate)]
    pub min_spot_rate: f64,
    /// Refuse anonymous browser contributors: the contribute page then needs an account's
    /// token (by default it makes a contributor account for each new browser).
    #[arg(long)]
    pub no_open_contributions: bool,
    /// A model's weights (a GGUF file, e.g. from scripts/fetch-model.sh) to serve through
    /// /v1/chat/completions; repeatable. Without it, the file scripts/fetch-model.sh fetched is
    /// used when present: $RUNEGRID_MODEL, else in $RUNEGRID_MODELS, else in ./.runegrid/models.
    #[arg(long = "model", value_name = "FILE")]
    pub models: Vec<PathBuf>,
    /// Contributor sign-ups (`POST /v1/contributors`, no token) one client address may make
    /// at once...
    #[arg(long, default_value_t = runegrid_coordinator::DEFAULT_SIGNUP_LIMIT.burst)]
    pub signup_burst: u32,
    /// ...and how many more it may make each minute after that (0 for either: no limit).
    #[arg(long, default_value_t = runegrid_coordinator::DEFAULT_SIGNUP_LIMIT.per_minute)]
    pub signup_per_minute: u32,
    /// Credits each new user account (and the admin's, on first start) is granted.
    #[arg(long, default_value_t = runegrid_coordinator::DEFAULT_WELCOME_CREDITS.to_string())]
    pub welcome_credits: String,
    /// A private grid that does not charge: nothing is held from submitters, and contributors'
    /// earnings are still recorded (minted).
    #[arg(long)]
    pub free: bool,
    /// Credits per 10^9 fuel at normal demand (the price moves between half and twice this
    /// with queued work against free worker slots).
    #[arg(long, default_value = "1")]
    pub base_price: String,
    /// The protocol fee on each payment, in percent, credited to the grid's treasury.
    #[arg(long, default_value_t = 5.0)]
    pub fee_percent: f64,
    /// Bytes of verified results the result cache keeps (e.g. 64M, 1G; 0: no cache), the
    /// least recently used leaving first.
    #[arg(long, default_value = "64M", value_parser = parse_bytes)]
    pub cache_bytes: u64,
    /// On a PostgreSQL store, the URL clients are sent to when this coordinator is the active
    /// one (standbys name it in their answers); default: http:// and the address it listens
    /// on.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// On a PostgreSQL store, how long the active coordinator's lease lasts past each renewal
    /// (milliseconds): a standby takes over this long after the active one dies.
    #[arg(long, default_value_t = 4000)]
    pub lease_ttl_ms: u64,
}

/// The model file scripts/fetch-model.sh put in place, if any: `$RUNEGRID_MODEL`, else in
/// `$RUNEGRID_MODELS`, else in `./.runegrid/models` (relative to the current directory).
fn fetched_model() -> Option<PathBuf> {
    let path = match (
        std::env::var_os("RUNEGRID_MODEL"),
        std::env::var_os("RUNEGRID_MODELS"),
    ) {
        (Some(file), _) => PathBuf::from(file),
        (None, Some(dir)) => PathBuf::from(dir).join(runegrid_infer::MODEL_FILE),
        (None, None) => PathBuf::from(".runegrid/models").join(runegrid_infer::MODEL_FILE),
    };
    path.is_file().then_some(path)
}

/// Name of the file, in the data directory, where `serve` writes the URL it listens on.
pub const URL_FILE: &str = "coordinator.url";

/// Raises this process's limit on open files to its hard limit (a coordinator holds a socket
/// per connected worker; the usual soft limit, 1024, would cap it there); returns the new one.
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

pub async fn serve(a: ServeArgs) -> Result<i32> {
    match raise_fd_limit() {
        Some(n) => tracing::info!(
            open_files = n,
            "limit on open files (one per connected worker)"
        ),
        None => tracing::warn!("cannot read or raise the limit on open files"),
    }
    let mut config = runegrid_coordinator::Config::new(a.listen, a.data.clone());
    config.store = a.store.clone().unwrap_or_default();
    config.heartbeat = Duration::from_millis(a.heartbeat_ms.max(50));
    config.lease_grace = Duration::from_secs(a.lease_grace_secs);
    if a.trust_after == 0 {
        bail!("--trust-after must be at least 1");
    }
    if !(0.0..=1.0).contains(&a.min_spot_rate) {
        bail!("--min-spot-rate must be between 0 and 1");
    }
    config.trust.trust_after = a.trust_after;
    config.trust.min_spot_rate = a.min_spot_rate;
    config.open_contributions = !a.no_open_contributions;
    config.signup_limit = (a.signup_burst > 0 && a.signup_per_minute > 0).then_some(
        runegrid_coordinator::RateLimit {
            burst: a.signup_burst,
            per_minute: a.signup_per_minute,
        },
    );
    if !(a.spot_scale.is_finite() && a.spot_scale >= 0.0) {
        bail!("--spot-scale must be a number of at least 0");
    }
    config.trust.spot_scale = a.spot_scale;
    config.credits.welcome = if a.welcome_credits.trim() == "0" {
        0
    } else {
        crate::credits::parse_credits(&a.welcome_credits).context("--welcome-credits")?
    };
    config.credits.free = a.free;
    config.credits.params.base =
        crate::credits::parse_credits(&a.base_price).context("--base-price")? as u64;
    if !(a.fee_percent.is_finite() && (0.0..=100.0).contains(&a.fee_percent)) {
        bail!("--fee-percent must be between 0 and 100");
    }
    config.credits.params.fee_ppm = (a.fee_percent * 1e4).round() as u64;
    config.cache_bytes = a.cache_bytes;
    config.model_files = if a.models.is_empty() {
        fetched_model().into_iter().collect()
    } else {
        a.models.clone()
    };
    if a.lease_ttl_ms < 100 {
        bail!("--lease-ttl-ms must be at least 100");
    }
    if let Some(url) = &a.advertise
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("--advertise must be an http:// or https:// URL");
    }
    config.failover.advertise = a.advertise.clone();
    config.failover.lease_ttl = Duration::from_millis(a.lease_ttl_ms);
    let on_postgres = matches!(
        config.store,
        runegrid_coordinator::StoreLocation::Postgres(_)
    );
    let bound = runegrid_coordinator::bind(config).await?;
    if on_postgres {
        eprintln!(
            "runegrid coordinator on http://{}: standing by until it holds the lease",
            bound.addr
        );
    }
    let mut running = tokio::select! {
        r = bound.activate() => r?,
        r = stop_signal() => {
            r.context("waiting for a signal")?;
            eprintln!("stopping: this coordinator was standing by");
            return Ok(0);
        }
    };
    let url = format!("http://{}", running.addr);
    // Written whole, then renamed: whoever waits for the file never reads it half written.
    let tmp = a.data.join(format!("{URL_FILE}.tmp"));
    std::fs::write(&tmp, &url)
        .and_then(|()| std::fs::rename(&tmp, a.data.join(URL_FILE)))
        .context("writing the coordinator url file")?;
    eprintln!("runegrid coordinator listening on {url}");
    eprintln!("admin token: {}", running.admin_token_file.display());
    tokio::select! {
        r = &mut running.server => { r??; }
        r = stop_signal() => {
            r.context("waiting for a signal")?;
            eprintln!("shutting down: writing what is pending");
            running.shutdown().await;
        }
    }
    Ok(0)
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Coordinator URL (overrides --url).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long)]
    pub slots: Option<u32>,
    /// Where the worker keeps its key and program cache.
    #[arg(long, default_value = ".runegrid/worker")]
    pub data: PathBuf,
    /// Name shown in `runegrid workers`.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Fault injection for tests and benchmarks.
    #[arg(long, hide = true)]
    pub misbehave: Option<runegrid_worker::Misbehaviour>,
    /// Exit after this many failed connection attempts in a row (default: retry forever).
    #[arg(long)]
    pub max_reconnects: Option<u32>,
    /// Disk space for blobs that tasks mount (model weights, data sets), kept under
    /// DATA/blobs: bytes, or with a K, M, G or T suffix (powers of 1024); 0 takes no blob
    /// tasks [default: 8G].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub blob_space: Option<u64>,
    /// Memory to offer a task, bytes or with a K, M, G or T suffix: tasks that need more (a
    /// model's requests among them) go to other workers [default: the machine's memory].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// Require a GPU for GPU tasks (fail to start without one). By default the worker uses
    /// the machine's GPU if it finds one (a software adapter such as lavapipe counts, and is
    /// given only GPU jobs that allow software adapters).
    #[arg(long, conflicts_with = "no_gpu")]
    pub gpu: bool,
    /// Take no GPU tasks, even with a GPU.
    #[arg(long)]
    pub no_gpu: bool,
}

pub async fn worker(conn: &Conn, a: WorkerArgs) -> Result<i32> {
    let url = a.coordinator.unwrap_or_else(|| conn.url.clone());
    let token = conn.token()?;
    let slots = a.slots.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let name = if a.name.is_empty() {
        hostname()
    } else {
        a.name
    };
    let config = runegrid_worker::WorkerConfig {
        coordinator: url,
        token,
        slots,
        data_dir: a.data,
        name,
        misbehaviour: a.misbehave,
        max_reconnects: a.max_reconnects,
        blob_space: a.blob_space.unwrap_or(runegrid_worker::DEFAULT_BLOB_SPACE),
        memory_bytes: a.memory,
        gpu: match (a.gpu, a.no_gpu) {
            (_, true) => runegrid_worker::GpuMode::Off,
            (true, _) => runegrid_worker::GpuMode::Require,
            _ => runegrid_worker::GpuMode::Auto,
        },
    };
    tokio::select! {
        r = runegrid_worker::run(config) => { r?; }
        _ = tokio::signal::ctrl_c() => { eprintln!("worker stopping"); }
    }
    Ok(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}
