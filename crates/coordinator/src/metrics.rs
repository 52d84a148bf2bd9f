//! The coordinator's metrics, served at `GET /metrics` in Prometheus' text format.
//!
//! Each coordinator has its own registry ([`Metrics`], held in its `Config`), so coordinators
//! started in one process count apart. Events are counted where they happen, each with one
//! call (`attempt_started`, `task_finished`, `commit`, …); what describes the grid now (tasks by
//! state, workers by kind and standing, queue depth) is read from the state when scraped
//! ([`Grid`]).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use runegrid_core::Acceptance;
use runegrid_store::TaskState;
use std::sync::{Arc, Mutex};

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type HttpLabels = [(&'static str, String); 3];

/// One coordinator's metrics (cheap to clone: a handle).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    attempts_started: Counter,
    attempts_lost: Counter,
    task_outcomes: Family<Labels2, Counter>,
    dispatch_latency: Histogram,
    commit_latency: Histogram,
    commit_batch: Histogram,
    http_requests: Family<HttpLabels, Counter>,
    open_streams: Family<Labels1, Gauge>,
    tasks: Family<Labels1, Gauge>,
    workers: Family<Labels2, Gauge>,
    gpu_workers: Family<Labels1, Gauge>,
    queue_depth: Gauge,
    price: Gauge,
    credits: Family<Labels1, Gauge>,
    cache_lookups: Family<Labels1, Counter>,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    relays_caught: Counter,
    /// Scrapes set the grid gauges and then encode: one at a time.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The grid as the gauges show it, read from the state when scraped.
#[derive(Debug, Default, Clone)]
pub struct Grid {
    /// Tasks of unfinished jobs by state (`queued`, `running`, `verified`, `failed`,
    /// `cancelled`).
    pub tasks: Vec<(&'static str, u64)>,
    /// Connected workers by kind (`native`, `browser`) and standing.
    pub workers: Vec<((&'static str, &'static str), u64)>,
    /// Connected workers with a GPU, by adapter (`hardware`, `software`).
    pub gpu_workers: Vec<(&'static str, u64)>,
    /// Tasks waiting in the dispatch queue.
    pub queue_depth: u64,
    /// Micro-credits per 10^9 fuel now.
    pub price: u64,
    /// Micro-credits by holder (`minted`, `accounts`, `escrow`, `treasury`).
    pub credits: Vec<(&'static str, i64)>,
    /// Results in the result cache, and their bytes.
    pub cache_entries: u64,
    pub cache_bytes: u64,
}

/// A long-lived response the coordinator holds open.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// A Server-Sent Events stream (job events, streamed chat answers).
    Sse,
    /// A worker's WebSocket, or a worker's session on a relay's.
    WebSocket,
    /// A relay's WebSocket.
    Relay,
}

impl Stream {
    fn label(self) -> Labels1 {
        [(
            "kind",
            match self {
                Stream::Sse => "sse",
                Stream::WebSocket => "websocket",
                Stream::Relay => "relay",
            },
        )]
    }
}

/// Counts an open stream until dropped.
pub struct Open {
    gauge: Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("runegrid");
        let attempts_started = Counter::default();
        registry.register(
            "attempts_started",
            "Attempts given to workers (audits and probes included)",
            attempts_started.clone(),
        );
        let attempts_lost = Counter::default();
        registry.register(
            "attempts_lost",
            "Attempts that ended without a result (worker gone, lease expired, failed)",
            attempts_lost.clone(),
        );
        let task_outcomes = Family::<Labels2, Counter>::default();
        registry.register(
            "task_outcomes",
            "Tasks finished, by final state and how their result was accepted (none: no result accepted)",
            task_outcomes.clone(),
        );
        let dispatch_latency = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register_with_unit(
            "dispatch_latency",
            "Time from a job's acceptance to each of its tasks' first attempt",
            Unit::Seconds,
            dispatch_latency.clone(),
        );
        let commit_latency = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        registry.register_with_unit(
            "store_commit",
            "Time to write one batch of changes to the store",
            Unit::Seconds,
            commit_latency.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        registry.register(
            "store_commit_batch_size",
            "Changes written in one store transaction",
            commit_batch.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let open_streams = Family::<Labels1, Gauge>::default();
        registry.register(
            "open_connections",
            "Open Server-Sent Events streams and worker WebSockets",
            open_streams.clone(),
        );
        let tasks = Family::<Labels1, Gauge>::default();
        registry.register("tasks", "Tasks of unfinished jobs, by state", tasks.clone());
        let workers = Family::<Labels2, Gauge>::default();
        registry.register(
            "workers",
            "Connected workers, by kind and standing",
            workers.clone(),
        );
        let gpu_workers = Family::<Labels1, Gauge>::default();
        registry.register(
            "gpu_workers",
            "Connected workers with a GPU, by adapter (hardware, or software such as lavapipe)",
            gpu_workers.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Tasks waiting in the dispatch queue",
            queue_depth.clone(),
        );
        let price = Gauge::default();
        registry.register(
            "price_micros",
            "Price of 10^9 fuel now, in micro-credits",
            price.clone(),
        );
        let credits = Family::<Labels1, Gauge>::default();
        registry.register(
            "credits_micros",
            "Credits in micro-credits: minted, and where they are (accounts, job escrows, the treasury)",
            credits.clone(),
        );
        let cache_lookups = Family::<Labels1, Counter>::default();
        registry.register(
            "cache_lookups",
            "Tasks looked up in the result cache, by result (hit: answered from a verified result, no attempt)",
            cache_lookups.clone(),
        );
        for result in ["hit", "miss"] {
            let _ = cache_lookups.get_or_create(&[("result", result)]);
        }
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Verified results in the result cache",
            cache_entries.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register_with_unit(
            "cache",
            "Size of the result cache",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let relays_caught = Counter::default();
        registry.register(
            "relays_caught",
            "Relay connections dropped for forwarding a result or failure that failed its checks (altered or forged on the way)",
            relays_caught.clone(),
        );
        for kind in [Stream::Sse, Stream::WebSocket, Stream::Relay] {
            open_streams.get_or_create(&kind.label()).set(0);
        }
        Metrics(Arc::new(Inner {
            registry,
            attempts_started,
            attempts_lost,
            task_outcomes,
            dispatch_latency,
            commit_latency,
            commit_batch,
            http_requests,
            open_streams,
            tasks,
            workers,
            gpu_workers,
            queue_depth,
            price,
            credits,
            cache_lookups,
            cache_entries,
            cache_bytes,
            relays_caught,
            scrape: Mutex::new(()),
        }))
    }

    /// An attempt was given to a worker.
    pub fn attempt_started(&self) {
        self.0.attempts_started.inc();
    }

    /// An attempt ended without a result.
    pub fn attempt_lost(&self) {
        self.0.attempts_lost.inc();
    }

    /// A task reached its final state.
    pub fn task_finished(&self, state: TaskState, acceptance: Option<Acceptance>) {
        let state = match state {
            TaskState::Verified => "verified",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Queued | TaskState::Running => return,
        };
        let acceptance = acceptance.map_or("none", |a| a.as_str());
        self.0
            .task_outcomes
            .get_or_create(&[("state", state), ("acceptance", acceptance)])
            .inc();
    }

    /// A task was looked up in the result cache.
    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.0
            .cache_lookups
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// A relay was caught forwarding an altered result.
    pub fn relay_caught(&self) {
        self.0.relays_caught.inc();
    }

    /// A task's first attempt started `ms` milliseconds after its job was accepted.
    pub fn dispatch_latency(&self, ms: i64) {
        self.0.dispatch_latency.observe(ms.max(0) as f64 / 1000.0);
    }

    /// The store writer committed `changes` changes in `seconds`.
    pub fn commit(&self, changes: usize, seconds: f64) {
        self.0.commit_batch.observe(changes as f64);
        self.0.commit_latency.observe(seconds);
    }

    /// An HTTP request was answered.
    pub fn http_request(&self, route: &str, method: &Method, status: StatusCode) {
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.0
            .http_requests
            .get_or_create(&[
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.as_u16().to_string()),
            ])
            .inc();
    }

    /// Counts `kind` open until the guard is dropped.
    pub fn open(&self, kind: Stream) -> Open {
        let gauge = self.0.open_streams.get_or_create_owned(&kind.label());
        gauge.inc();
        Open { gauge }
    }

    /// The metrics in Prometheus' text format, the grid's gauges set from `grid`.
    pub fn render(&self, grid: &Grid) -> String {
        let _one = self.0.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.0.tasks.clear();
        for &(state, n) in &grid.tasks {
            self.0
                .tasks
                .get_or_create(&[("state", state)])
                .set(n as i64);
        }
        self.0.workers.clear();
        for &((kind, standing), n) in &grid.workers {
            self.0
                .workers
                .get_or_create(&[("kind", kind), ("standing", standing)])
                .set(n as i64);
        }
        self.0.gpu_workers.clear();
        for &(adapter, n) in &grid.gpu_workers {
            self.0
                .gpu_workers
                .get_or_create(&[("adapter", adapter)])
                .set(n as i64);
        }
        self.0.queue_depth.set(grid.queue_depth as i64);
        self.0.price.set(grid.price as i64);
        for &(holder, n) in &grid.credits {
            self.0.credits.get_or_create(&[("holder", holder)]).set(n);
        }
        self.0.cache_entries.set(grid.cache_entries as i64);
        self.0.cache_bytes.set(grid.cache_bytes as i64);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.0.registry).expect("writing to a string");
        out
    }
}

/// Middleware: counts each answered request by its route pattern (`unmatched` when no route
/// matched), method and status.
pub async fn track(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let res = next.run(req).await;
    m.http_request(&route, &method, res.status());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text_format() {
        let m = Metrics::new();
        m.attempt_started();
        m.attempt_started();
        m.task_finished(TaskState::Verified, Some(Acceptance::Quorum));
        m.commit(3, 0.002);
        m.http_request("/v1/jobs/{id}", &Method::GET, StatusCode::OK);
        m.cache_lookup(true);
        let open = m.open(Stream::Sse);
        let text = m.render(&Grid {
            tasks: vec![("queued", 4)],
            workers: vec![(("native", "trusted"), 2)],
            gpu_workers: vec![("hardware", 1), ("software", 0)],
            queue_depth: 4,
            price: 1_050_000,
            credits: vec![("minted", 10), ("treasury", 3)],
            cache_entries: 5,
            cache_bytes: 640,
        });
        for line in [
            "runegrid_attempts_started_total 2",
            r#"runegrid_task_outcomes_total{state="verified",acceptance="quorum"} 1"#,
            "runegrid_price_micros 1050000",
            r#"runegrid_credits_micros{holder="treasury"} 3"#,
            "runegrid_store_commit_batch_size_count 1",
            "runegrid_store_commit_seconds_count 1",
            r#"runegrid_http_requests_total{route="/v1/jobs/{id}",method="GET",status="200"} 1"#,
            r#"runegrid_open_connections{kind="sse"} 1"#,
            r#"runegrid_tasks{state="queued"} 4"#,
            r#"runegrid_workers{kind="native",standing="trusted"} 2"#,
            r#"runegrid_gpu_workers{adapter="hardware"} 1"#,
            "runegrid_queue_depth 4",
            "runegrid_cache_entries 5",
            "runegrid_cache_bytes 640",
            r#"runegrid_cache_lookups_total{result="hit"} 1"#,
            r#"runegrid_cache_lookups_total{result="miss"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        drop(open);
        let text = m.render(&Grid::default());
        assert!(text.contains(r#"runegrid_open_connections{kind="sse"} 0"#));
        assert!(!text.contains("runegrid_tasks{"), "{text}");
    }
}
