//! Failover: several coordinators on one PostgreSQL database, one active, the others standing
//! by (see `runegrid_store::Lease` for the lease and the fence).
//!
//! A coordinator on PostgreSQL binds its address first and serves the standby answer there: 503
//! `standby`, naming the active coordinator's URL (header `x-runegrid-active` and the message),
//! so clients given several URLs find the active one. Meanwhile it tries to take the lease; once
//! it has it, it starts as any coordinator does (recovering the grid from the database) and
//! [`Switch`]es the same listener over to the real router.
//!
//! The active coordinator renews its lease every quarter of the lease's time to live. When it
//! learns it lost the lease (the renewal finds another holder, a fenced write fails) or cannot
//! renew it in time (the database is out of reach), it exits at once with
//! [`EXIT_LEASE_LOST`]: its in-memory grid may be ahead of the database and a standby is about
//! to rebuild from the database, so there is nothing it could safely go on doing. Run it under a
//! supervisor that restarts it; it comes back as a standby.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use runegrid_proto::{ErrorBody, ErrorDetail};
use runegrid_store::{Fence, Lease, StoreError};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Exit status of a coordinator that lost its lease (EX_TEMPFAIL: start it again, as a
/// standby).
pub const EXIT_LEASE_LOST: i32 = 75;

/// Header naming the active coordinator's URL on a standby's answers (empty when none is).
pub const ACTIVE_HEADER: &str = runegrid_proto::failover::ACTIVE_HEADER;

/// How a coordinator on a shared database takes part in failover.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// The URL clients and standbys are told to use for this coordinator when it is active
    /// (default: `http://` and the address it listens on).
    pub advertise: Option<String>,
    /// How long the lease lasts past each renewal: how long a standby waits before taking
    /// over from an active coordinator that stopped renewing (killed, cut off).
    pub lease_ttl: Duration,
}

impl Default for FailoverConfig {
    fn default() -> FailoverConfig {
        FailoverConfig {
            advertise: None,
            lease_ttl: Duration::from_secs(4),
        }
    }
}

/// The service the listener serves: the standby answer until the coordinator is active, its
/// router after.
#[derive(Clone)]
pub struct Switch(Arc<RwLock<Router>>);

impl Switch {
    pub fn new(router: Router) -> Switch {
        Switch(Arc::new(RwLock::new(router)))
    }

    pub fn set(&self, router: Router) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = router;
    }
}

impl tower::Service<Request<Body>> for Switch {
    type Response = Response;
    type Error = Infallible;
    type Future = tower::util::Oneshot<Router, Request<Body>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use tower::ServiceExt as _;
        let router = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        router.oneshot(req)
    }
}

/// What a standby knows of the active coordinator.
#[derive(Default)]
pub struct Standby {
    active: Mutex<Option<String>>,
}

impl Standby {
    /// The router a standby serves: every request answered 503 `standby`.
    pub fn router(self: &Arc<Standby>) -> Router {
        let me = self.clone();
        Router::new().fallback(move || {
            let active = me.active.lock().unwrap_or_else(|e| e.into_inner()).clone();
            async move { standby_answer(active) }
        })
    }

    fn set_active(&self, url: Option<String>) {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }
}

fn standby_answer(active: Option<String>) -> Response {
    let message = match &active {
        Some(url) => format!("this coordinator is standing by; the active one is at {url}"),
        None => "this coordinator is standing by and no coordinator is active right now (one is taking over): retry shortly".to_string(),
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: "standby".into(),
            message,
        },
    };
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    // Always there (empty when no coordinator is active): it is how clients tell a standby's
    // 503 from any other.
    let v = active
        .and_then(|u| HeaderValue::from_str(&u).ok())
        .unwrap_or_else(|| HeaderValue::from_static(""));
    r.headers_mut().insert(ACTIVE_HEADER, v);
    r
}

/// Why starting on the lease failed.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("lease: {0}")]
    Store(#[from] StoreError),
}

/// Stands by until this coordinator holds the lease; returns the lease and the fence to
/// write under.
pub async fn take_lease(
    url: &str,
    advertise: &str,
    ttl: Duration,
    standby: Arc<Standby>,
) -> Result<(Lease, Fence), FailoverError> {
    let holder = format!(
        "{}-{}-{:x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    );
    let (url, advertise) = (url.to_string(), advertise.to_string());
    let mut lease = blocking(move || Lease::open(&url, &holder, &advertise, ttl)).await?;
    let mut announced = None;
    loop {
        let (l, attempt) = blocking(move || {
            let r = lease.try_acquire().and_then(|f| match f {
                Some(f) => Ok(Ok(f)),
                None => Ok(Err(lease.current()?)),
            });
            (lease, r)
        })
        .await;
        lease = l;
        match attempt? {
            Ok(fence) => {
                tracing::info!(
                    holder = lease.holder(),
                    epoch = fence.epoch,
                    "took the lease: this coordinator is active"
                );
                return Ok((lease, fence));
            }
            Err(holder) => {
                let active = holder
                    .as_ref()
                    .filter(|h| h.remaining_ms > 0)
                    .map(|h| h.advertise.clone());
                if announced != Some(active.clone()) {
                    match &active {
                        Some(url) => {
                            tracing::info!(active = %url, "standing by: another coordinator holds the lease")
                        }
                        None => tracing::info!(
                            "standing by: the lease's holder stopped renewing it; taking over when it runs out"
                        ),
                    }
                    announced = Some(active.clone());
                }
                standby.set_active(active);
            }
        }
        tokio::time::sleep(ttl / 4).await;
    }
}

/// The thread keeping the lease.
pub struct Keeper {
    stop: std::sync::mpsc::Sender<std::sync::mpsc::Sender<()>>,
    stopping: Arc<AtomicBool>,
}

/// Keeps the lease: renews it every quarter of its time to live on a thread of its own, and
/// ends the process when it is lost or could not be renewed for three quarters of it.
pub fn keep(mut lease: Lease, ttl: Duration) -> Keeper {
    let valid_until = Arc::new(Mutex::new(Instant::now() + ttl));
    let stopping = Arc::new(AtomicBool::new(false));
    let (stop, stop_rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<()>>();
    let until = valid_until.clone();
    std::thread::Builder::new()
        .name("runegrid-lease".into())
        .spawn(move || {
            loop {
                if let Ok(done) = stop_rx.recv_timeout(ttl / 4) {
                    match lease.release() {
                        Ok(()) => tracing::info!("gave the lease up"),
                        Err(e) => tracing::warn!(error = %e, "cannot give the lease up; a standby takes over when it runs out"),
                    }
                    let _ = done.send(());
                    return;
                }
                let sent = Instant::now();
                match lease.renew() {
                    Ok(true) => *until.lock().unwrap_or_else(|e| e.into_inner()) = sent + ttl,
                    Ok(false) => lost("another coordinator holds the lease"),
                    Err(e) => tracing::warn!(error = %e, "cannot renew the lease; trying again"),
                }
            }
        })
        .expect("spawn the lease thread");
    let watching = stopping.clone();
    std::thread::Builder::new()
        .name("runegrid-lease-watch".into())
        .spawn(move || {
            while !watching.load(Ordering::SeqCst) {
                std::thread::sleep(ttl / 8);
                let until = *valid_until.lock().unwrap_or_else(|e| e.into_inner());
                if !watching.load(Ordering::SeqCst) && Instant::now() + ttl / 4 >= until {
                    lost("the lease could not be renewed in time (is the database reachable?)");
                }
            }
        })
        .expect("spawn the lease watch thread");
    Keeper { stop, stopping }
}

impl Keeper {
    /// Gives the lease up (at a clean shutdown, after the last write), so a standby takes
    /// over at once.
    pub async fn release(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let (done, wait) = std::sync::mpsc::channel();
        if self.stop.send(done).is_ok() {
            blocking(move || wait.recv_timeout(Duration::from_secs(5)).ok()).await;
        }
    }
}

/// Ends the process: this coordinator may no longer act (see the module's docs).
pub fn lost(why: &str) -> ! {
    tracing::error!(
        why,
        "lost the lease; exiting so that the active coordinator serves"
    );
    eprintln!("runegrid: lost the lease ({why}); exiting so that the active coordinator serves");
    std::process::exit(EXIT_LEASE_LOST)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a lease call panicked")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "coordinator".into())
}
