//! `runegrid bench swarm`: how many workers one coordinator holds, and what they cost it.
//!
//! Simulated workers — tokio tasks of this process — speak the real worker protocol to a real
//! coordinator (a child process, [`LocalGrid`]): one WebSocket each, the challenge answered with
//! a hello signed by the worker's own ed25519 key (derived from its index, so the same swarm
//! comes back as the same workers), a heartbeat at the interval the welcome gives, and every
//! assignment answered at once with a signed result computed by a fixed rule — a digest of the
//! task's program hash, arguments, environment, stdin and seed — instead of a sandbox. Two
//! simulated workers given the same task agree, so quorum verification works, and the
//! coordinator checks and accepts each result as it would a real one. They never fetch a
//! program. After a connection ends they dial again as the native worker does
//! (`runegrid_worker::Backoff`).
//!
//! The swarm grows step by step; at each step the bench measures the coordinator's memory (RSS)
//! and CPU with only heartbeats going, the throughput of one job of many tiny tasks, and the
//! dispatch latency: from a task's submission (a stamp in its stdin) to its assignment arriving
//! at a simulated worker, under a paced load of about half that throughput. At the end it kills
//! the coordinator (SIGKILL), starts it again on the same data directory and port, and times
//! until every worker is back.
//!
//! With `--relays N` the simulated workers connect to N relays (`runegrid relay` processes,
//! worker `i` to relay `i mod N`) instead of the coordinator, which then holds N connections
//! for all of them; the bench also reports the relays' upstream WebSocket messages and frames
//! per task, and ends with a job whose tasks mount a blob: each simulated worker given one
//! fetches the blob from its relay (once), and the relays fetch it upstream (once each).

use crate::procs::LocalGrid;
use anyhow::{Context, Result, bail};
use clap::Args;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use runegrid_core::{ExecStatus, Limits, PolicyKind};
use runegrid_proto::worker::{
    Assign, AttemptResult, Capabilities, ToCoordinator, ToWorker, assign_digest, hello_message,
    result_message,
};
use runegrid_proto::{PROTOCOL_VERSION, ResultState, SubmitJob, TaskSpec};
use runegrid_worker::Backoff;
use sha2::{Digest as _, Sha256};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

#[derive(Args)]
pub struct SwarmBenchArgs {
    /// The most simulated workers to ramp up to.
    #[arg(long, default_value_t = 100_000)]
    pub workers: u32,
    /// A smoke run: a few hundred workers, a few seconds a step.
    #[arg(long)]
    pub quick: bool,
    /// Connected workers at each step [default: 1000,10000,50000,100000, up to --workers].
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<u32>,
    /// Tiny tasks in the throughput job of each step.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u32,
    /// Slots each simulated worker announces.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Replicas that must agree on a task: 1 runs the jobs with policy `none`, 2 or more with
    /// a quorum of that many.
    #[arg(long, default_value_t = 1)]
    pub agree: u32,
    /// The heartbeat interval the coordinator asks of workers.
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Seconds over which the idle coordinator's CPU is measured at each step.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// Stop growing the swarm once the coordinator's RSS passes this many MiB.
    #[arg(long, default_value_t = 4096)]
    pub max_rss_mib: u64,
    /// Skip the restart at the end.
    #[arg(long)]
    pub no_restart: bool,
    /// Dial again without jitter (as the native worker did before it had jitter), to compare.
    #[arg(long, hide = true)]
    pub no_jitter: bool,
    /// Keep the grid's data and logs in this directory (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Connect the workers through this many relays (`runegrid relay` processes) instead of
    /// to the coordinator.
    #[arg(long, default_value_t = 0)]
    pub relays: u32,
}

/// Where simulated workers dial: the coordinator, or a relay.
struct Target {
    addr: SocketAddr,
    ws_url: String,
    /// `http://HOST:PORT`, for blobs.
    http: String,
}

impl Target {
    fn new(url: &str) -> Result<Target> {
        let addr: SocketAddr = url
            .strip_prefix("http://")
            .context("an http:// url")?
            .parse()
            .context("the address in the url")?;
        Ok(Target {
            addr,
            ws_url: format!("ws://{addr}/v1/worker"),
            http: format!("http://{addr}"),
        })
    }
}

/// The bytes of the blob the blob job's tasks mount.
const BLOB_BYTES: usize = 256 << 10;

/// Handshakes in flight at once while the swarm grows.
const RAMP_CONCURRENCY: usize = 256;
/// Simulated workers dialling from one loopback source address (a source address has about
/// 28,000 ephemeral ports towards one listening port). The first ones let `connect` pick their
/// port; the others bind a source address of their own first, and `bind` with port 0 searches
/// the ports in use in the kernel (at 10,000 sockets it took most of this process's CPU, late
/// heartbeats included), so it runs off the runtime.
const PER_SOURCE_ADDRESS: u32 = 20_000;
/// How long the coordinator may take to answer a dial and each handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ramp that connects no new worker for this long has stalled.
const STALL: Duration = Duration::from_secs(30);
/// Linux reports CPU time in /proc in ticks of 1/100 s (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// What the simulated workers share with the bench: counters, and the latency samples.
struct Swarm {
    /// Worker `i` dials `targets[i % len]`.
    targets: Vec<Target>,
    token: String,
    http: reqwest::Client,
    /// Blob bytes the simulated workers downloaded.
    blob_bytes: AtomicU64,
    slots: u32,
    jitter: bool,
    /// Welcomed and still open.
    connected: AtomicI64,
    /// Welcomes since the swarm started.
    welcomes: AtomicU64,
    /// Dials or handshakes that failed (and were tried again).
    retries: AtomicU64,
    /// Workers the coordinator rejected (they stop).
    rejected: AtomicU64,
    assigns: AtomicU64,
    results: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Why the coordinator last rejected a worker.
    rejection: Mutex<Option<String>>,
    /// Whether assignments' stamps are read into `latencies`.
    stamps: AtomicBool,
    /// Dispatch latencies seen, in µs.
    latencies: Mutex<Vec<u64>>,
    ramp: Arc<Semaphore>,
}

/// The simulated workers' tasks; aborted on drop.
struct Agents {
    swarm: Arc<Swarm>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agents {
    /// Starts simulated workers until there are `n`.
    fn grow_to(&mut self, n: u32) {
        for i in self.tasks.len() as u32..n {
            self.tasks.push(tokio::spawn(agent(self.swarm.clone(), i)));
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Why a connection ended before it was welcomed.
enum AgentError {
    /// Dial again after a backoff.
    Retry(String),
    /// The coordinator rejected this worker: stop, as the native worker does.
    Fatal(String),
}

fn retry(e: impl std::fmt::Display) -> AgentError {
    AgentError::Retry(e.to_string())
}

/// Worker `i`'s key: derived from its index (one hash and one scalar multiplication).
fn agent_key(i: u32) -> SigningKey {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(b"runegrid-bench-swarm\n")
        .chain_update(i.to_le_bytes())
        .finalize()
        .into();
    SigningKey::from_bytes(&seed)
}

/// One simulated worker: connects, serves, and dials again with the native worker's backoff.
async fn agent(sw: Arc<Swarm>, i: u32) {
    let key = agent_key(i);
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        (1 + i / PER_SOURCE_ADDRESS).min(254) as u8,
    ));
    let mut backoff = if sw.jitter {
        Backoff::new()
    } else {
        Backoff::without_jitter()
    };
    // Its first handshake waits for a place among those in flight.
    let mut permit = Some(
        sw.ramp
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed"),
    );
    let mut held = std::collections::HashSet::new();
    loop {
        match session(&sw, &key, source, i, &mut permit, &mut held).await {
            Ok(()) => backoff.reset(),
            Err(AgentError::Fatal(e)) => {
                sw.rejected.fetch_add(1, Relaxed);
                *sw.rejection.lock().expect("not poisoned") = Some(e);
                return;
            }
            Err(AgentError::Retry(e)) => {
                sw.retries.fetch_add(1, Relaxed);
                *sw.last_error.lock().expect("not poisoned") = Some(e);
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Counts a welcomed connection while it lasts.
struct Live<'a>(&'a AtomicI64);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn text(msg: &ToCoordinator) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .expect("messages serialize")
            .into(),
    )
}

/// One connection, from the dial until it ends.
async fn session(
    sw: &Swarm,
    key: &SigningKey,
    source: IpAddr,
    i: u32,
    permit: &mut Option<OwnedSemaphorePermit>,
    held: &mut std::collections::HashSet<String>,
) -> Result<(), AgentError> {
    let target = &sw.targets[i as usize % sw.targets.len()];
    let mut socket = tokio::net::TcpSocket::new_v4().map_err(retry)?;
    if source != IpAddr::V4(Ipv4Addr::LOCALHOST) {
        socket = tokio::task::spawn_blocking(move || {
            socket.bind(SocketAddr::new(source, 0)).map(|()| socket)
        })
        .await
        .map_err(retry)?
        .map_err(retry)?;
    }
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.connect(target.addr))
        .await
        .map_err(|_| retry("dial timed out"))?
        .map_err(retry)?;
    tcp.set_nodelay(true).map_err(retry)?;
    let mut req = target
        .ws_url
        .as_str()
        .into_client_request()
        .map_err(retry)?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", sw.token)
            .parse()
            .map_err(|_| AgentError::Fatal("invalid token".into()))?,
    );
    // A small read buffer: thousands of connections share this process's memory.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let ws = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async_with_config(req, tcp, Some(config)),
    )
    .await
    {
        Err(_) => return Err(retry("upgrade timed out")),
        Ok(Ok((ws, _))) => ws,
        Ok(Err(tungstenite::Error::Http(resp))) if matches!(resp.status().as_u16(), 401 | 403) => {
            return Err(AgentError::Fatal(resp.status().to_string()));
        }
        Ok(Err(e)) => return Err(retry(e)),
    };
    let (mut sink, mut stream) = ws.split();
    let nonce = match handshake_message(&mut stream).await {
        Some(ToWorker::Challenge { nonce, .. }) => nonce,
        Some(ToWorker::Reject { message }) => return Err(AgentError::Fatal(message)),
        _ => return Err(retry("no challenge")),
    };
    let hello = ToCoordinator::Hello {
        protocol: PROTOCOL_VERSION,
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(key.sign(&hello_message(&nonce)).to_bytes()),
        name: format!("swarm-{i}"),
        capabilities: Capabilities {
            cores: 1,
            memory_bytes: 4 << 30,
            slots: sw.slots,
            arch: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            runtime: format!("swarm/{}", env!("CARGO_PKG_VERSION")),
            blob_space: 1 << 30,
            blobs: vec![],
            gpu: None,
        },
    };
    sink.send(text(&hello)).await.map_err(retry)?;
    let heartbeat = match handshake_message(&mut stream).await {
        Some(ToWorker::Welcome { heartbeat_ms, .. }) => Duration::from_millis(heartbeat_ms.max(50)),
        Some(ToWorker::Reject { message }) => return Err(AgentError::Fatal(message)),
        _ => return Err(retry("no welcome")),
    };
    permit.take();
    sw.connected.fetch_add(1, Relaxed);
    sw.welcomes.fetch_add(1, Relaxed);
    let _live = Live(&sw.connected);
    // As the native worker: a heartbeat at once, then one every interval.
    let mut ticker = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if sink.send(text(&ToCoordinator::Heartbeat)).await.is_err() {
                    return Ok(());
                }
            }
            msg = stream.next() => {
                let t = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ToWorker>(&t) {
                    Ok(ToWorker::Assign(a)) => {
                        sw.assigns.fetch_add(1, Relaxed);
                        if sw.stamps.load(Relaxed)
                            && let Some(us) = latency_us(&a.stdin)
                        {
                            sw.latencies.lock().expect("not poisoned").push(us);
                        }
                        // A blob is fetched once (as a worker keeps it on disk).
                        for b in &a.blobs {
                            if !held.contains(&b.sha256) {
                                fetch_blob(sw, target, &b.sha256).await.map_err(retry)?;
                                held.insert(b.sha256.clone());
                            }
                        }
                        if sink.send(text(&answer(key, &a))).await.is_err() {
                            return Ok(());
                        }
                        sw.results.fetch_add(1, Relaxed);
                    }
                    Ok(ToWorker::Reject { message }) => return Err(AgentError::Fatal(message)),
                    // Cancellations find nothing running (every answer goes out at once);
                    // standing changes need nothing.
                    _ => {}
                }
            }
        }
    }
}

/// Downloads a blob as a worker does (`GET /v1/blobs/{sha256}`), counting its bytes.
async fn fetch_blob(sw: &Swarm, target: &Target, sha: &str) -> Result<(), String> {
    let resp = sw
        .http
        .get(format!("{}/v1/blobs/{sha}", target.http))
        .bearer_auth(&sw.token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("blob {sha}: {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if hex::encode(Sha256::digest(&bytes)) != sha {
        return Err(format!("blob {sha}: wrong bytes"));
    }
    sw.blob_bytes.fetch_add(bytes.len() as u64, Relaxed);
    Ok(())
}

/// The relays' figures, summed.
async fn relay_totals(sw: &Swarm, relays: &[String]) -> runegrid_relay::RelayStats {
    let mut t = runegrid_relay::RelayStats::default();
    for url in relays {
        let Ok(r) = sw.http.get(format!("{url}/relay/stats")).send().await else {
            continue;
        };
        let Ok(s) = r.json::<runegrid_relay::RelayStats>().await else {
            continue;
        };
        t.upstream_messages_sent += s.upstream_messages_sent;
        t.upstream_messages_received += s.upstream_messages_received;
        t.upstream_frames_sent += s.upstream_frames_sent;
        t.upstream_frames_received += s.upstream_frames_received;
        t.upstream_bytes_sent += s.upstream_bytes_sent;
        t.upstream_bytes_received += s.upstream_bytes_received;
        t.blob_bytes_fetched += s.blob_bytes_fetched;
        t.blob_bytes_served += s.blob_bytes_served;
        t.sessions += s.sessions;
    }
    t
}

/// Upstream messages and frames (both ways) between two [`relay_totals`].
fn upstream_traffic(a: &runegrid_relay::RelayStats, b: &runegrid_relay::RelayStats) -> (u64, u64) {
    (
        (b.upstream_messages_sent + b.upstream_messages_received)
            - (a.upstream_messages_sent + a.upstream_messages_received),
        (b.upstream_frames_sent + b.upstream_frames_received)
            - (a.upstream_frames_sent + a.upstream_frames_received),
    )
}

/// The coordinator's next message during the handshake.
async fn handshake_message<S>(stream: &mut S) -> Option<ToWorker>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(&t).ok(),
        _ => None,
    }
}

/// The signed result of an assignment by the fixed rule: exit 0, stdout a digest of everything
/// the task's answer may depend on, fuel from its stdin's length.
fn answer(key: &SigningKey, a: &Assign) -> ToCoordinator {
    let mut h = Sha256::new();
    h.update(a.program.as_bytes());
    for s in a.args.iter().chain(a.env.iter().flat_map(|(k, v)| [k, v])) {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.update(&a.stdin);
    h.update(a.seed.to_le_bytes());
    let stdout = format!("{}\n", hex::encode(&h.finalize()[..8])).into_bytes();
    let status = ExecStatus::Exited { code: 0 };
    let fuel = 1000 + a.stdin.len() as u64;
    let digest = runegrid_core::digest(&status, fuel, &stdout);
    let signature = hex::encode(
        key.sign(&result_message(a.attempt, &assign_digest(a), &digest))
            .to_bytes(),
    );
    ToCoordinator::Result(AttemptResult {
        attempt: a.attempt,
        status,
        stdout,
        fuel,
        digest,
        signature,
        stderr: String::new(),
        elapsed_us: 10,
        files: vec![],
    })
}

/// Microseconds since the Unix epoch (comparable between the bench's submissions and the
/// simulated workers).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The stdin of a latency task: `swarm-lat STAMP_US ...`.
fn latency_us(stdin: &[u8]) -> Option<u64> {
    let stamp: u64 = std::str::from_utf8(stdin)
        .ok()?
        .strip_prefix("swarm-lat ")?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(now_us().saturating_sub(stamp))
}

/// What /proc says about a process.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    /// User and system CPU time, in ticks.
    cpu_ticks: u64,
    rss_bytes: u64,
    open_fds: u64,
}

fn proc_sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    ProcSample {
        cpu_ticks: field(14) + field(15),
        rss_bytes: rss_kib * 1024,
        open_fds,
    }
}

/// A process's soft limit on open files.
fn open_file_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU time of each of a process's threads, in ticks, by thread name (summed over threads
/// sharing a name).
fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, n)| n).to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += ticks,
            None => out.push((name, ticks)),
        }
    }
    out
}

/// The busiest threads between two [`thread_ticks`], as `name 57%` over `secs`.
fn busiest(before: &[(String, u64)], after: &[(String, u64)], secs: f64) -> String {
    let mut d: Vec<(String, u64)> = after
        .iter()
        .map(|(n, t)| {
            let b = before.iter().find(|(m, _)| m == n).map_or(0, |(_, t)| *t);
            (n.clone(), t.saturating_sub(b))
        })
        .filter(|(_, t)| *t > 0)
        .collect();
    d.sort_by_key(|x| std::cmp::Reverse(x.1));
    d.iter()
        .take(4)
        .map(|(n, t)| format!("{n} {:.0}%", *t as f64 / TICKS_PER_SEC / secs * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One step's figures.
struct Row {
    workers: u32,
    ramp_per_sec: f64,
    rss: u64,
    kib_per_worker: f64,
    idle_cpu: f64,
    cpu_per_1k: f64,
    tasks_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    samples: usize,
}

/// A job of `n` tiny tasks, each stdin from `stdin(k)`.
fn job(program: &str, n: u32, agree: u32, stdin: impl Fn(u32) -> String) -> SubmitJob {
    SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.to_string(),
        name: Some("swarm".into()),
        tasks: (0..n)
            .map(|k| TaskSpec {
                stdin: stdin(k),
                ..TaskSpec::default()
            })
            .collect(),
        policy: Some(if agree <= 1 {
            PolicyKind::None
        } else {
            PolicyKind::Quorum
        }),
        replicas: (agree > 1).then_some(agree),
        agree: (agree > 1).then_some(agree),
        max_attempts: None,
        limits: Limits::default(),
        blobs: Default::default(),
    }
}

/// Waits for a job's results; returns how many of its tasks were verified.
async fn verified(client: &runegrid_client::Client, job: i64) -> Result<u64> {
    let r = client.results(job, Some(Duration::from_secs(600))).await?;
    Ok(r.tasks
        .iter()
        .filter(|t| t.state == ResultState::Verified)
        .count() as u64)
}

pub async fn run(a: SwarmBenchArgs) -> Result<i32> {
    let raised = crate::node::raise_fd_limit();
    let (tasks, idle_secs, latency_secs) = if a.quick {
        (a.tasks.min(2000), a.idle_secs.min(2), 1)
    } else {
        (a.tasks, a.idle_secs, 3)
    };
    let mut steps: Vec<u32> = if !a.steps.is_empty() {
        a.steps.clone()
    } else if a.quick {
        vec![200, a.workers.min(500)]
    } else {
        [1_000, 10_000, 50_000, 100_000]
            .into_iter()
            .filter(|s| *s < a.workers)
            .chain([a.workers])
            .collect()
    };
    steps.sort_unstable();
    steps.dedup();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut grid = LocalGrid::start_with(
        a.dir.clone(),
        &[
            "--welcome-credits",
            "1000000000",
            "--heartbeat-ms",
            &a.heartbeat_ms.to_string(),
        ],
    )
    .await?;
    let client = grid.client();
    let program = client
        .upload_program(runegrid_examples::NOOP.to_vec())
        .await?
        .program;
    let mut relays = Vec::new();
    for r in 0..a.relays {
        relays.push(grid.spawn_relay(&format!("relay-{r}")).await?);
    }
    let targets = if relays.is_empty() {
        vec![Target::new(&grid.url)?]
    } else {
        relays
            .iter()
            .map(|u| Target::new(u))
            .collect::<Result<_>>()?
    };
    let swarm = Arc::new(Swarm {
        targets,
        token: grid.token.clone(),
        http: reqwest::Client::new(),
        blob_bytes: AtomicU64::new(0),
        slots: a.slots,
        jitter: !a.no_jitter,
        connected: AtomicI64::new(0),
        welcomes: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        assigns: AtomicU64::new(0),
        results: AtomicU64::new(0),
        last_error: Mutex::new(None),
        rejection: Mutex::new(None),
        stamps: AtomicBool::new(false),
        latencies: Mutex::new(Vec::new()),
        ramp: Arc::new(Semaphore::new(RAMP_CONCURRENCY)),
    });
    let mut agents = Agents {
        swarm: swarm.clone(),
        tasks: Vec::new(),
    };
    let me = std::process::id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = grid.coordinator_pid();
    let base = proc_sample(pid);
    // What both processes can open: a socket per worker on each side, and some to spare.
    let coord_limit = open_file_limit(pid).unwrap_or(1024);
    let own_limit = open_file_limit(me).unwrap_or(1024);
    let fd_cap = coord_limit
        .saturating_sub(base.open_fds + 64)
        .min(own_limit.saturating_sub(proc_sample(me).open_fds + 64)) as u32;
    let policy = if a.agree <= 1 {
        "policy none".to_string()
    } else {
        format!("quorum of {}", a.agree)
    };
    println!(
        "runegrid bench swarm: 1 coordinator (heartbeats every {} ms) and simulated workers × {} slot(s) in this process, {cores} cores shared by both",
        a.heartbeat_ms, a.slots
    );
    println!(
        "open files: coordinator {coord_limit}, bench {own_limit} (raised to {}): at most {fd_cap} workers; coordinator RSS with no worker {:.0} MiB",
        raised.map_or("?".into(), |n| n.to_string()),
        mib(base.rss_bytes)
    );
    if a.relays > 0 {
        println!(
            "through {} relays (runegrid relay processes on this machine): the coordinator holds {} connections for all the workers",
            a.relays, a.relays
        );
    }
    println!(
        "throughput: one job of {tasks} tiny tasks ({policy}); dispatch latency: task submitted → assignment at a worker, at half that rate for {latency_secs} s"
    );
    println!();
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "workers",
        "ramp/s",
        "RSS MiB",
        "KiB/wkr",
        "idle CPU",
        "CPU/1k",
        "tasks/s",
        "p50 ms",
        "p99 ms"
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut bound: Option<String> = None;
    let (mut submitted, mut verified_total) = (0u64, 0u64);
    for &step in &steps {
        let want = step.min(fd_cap);
        if want < step {
            bound = Some(format!(
                "file descriptors: {step} workers need {step} sockets on each side; the limit on open files ({coord_limit} in the coordinator, {own_limit} here, the hard limits, which an unprivileged process cannot raise) leaves room for {fd_cap}"
            ));
        }
        if rows.last().is_some_and(|r| r.workers >= want) {
            break;
        }
        // Ramp.
        let before = swarm.connected.load(Relaxed).max(0) as u32;
        let t = Instant::now();
        agents.grow_to(want);
        let mut last_progress = (before, Instant::now());
        let mut stopped = None;
        loop {
            let now = swarm.connected.load(Relaxed).max(0) as u32;
            if now >= want {
                break;
            }
            if now > last_progress.0 {
                last_progress = (now, Instant::now());
            }
            let s = proc_sample(pid);
            if s.rss_bytes > a.max_rss_mib << 20 {
                stopped = Some(format!(
                    "memory: the coordinator's RSS passed {} MiB at {now} workers",
                    a.max_rss_mib
                ));
                break;
            }
            if last_progress.1.elapsed() > STALL {
                let why = swarm
                    .last_error
                    .lock()
                    .expect("not poisoned")
                    .clone()
                    .unwrap_or_default();
                stopped = Some(format!(
                    "connections: none connected for {} s at {now} workers (last error: {why})",
                    STALL.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = swarm.connected.load(Relaxed).max(0) as u32;
        let ramp_per_sec = (held.saturating_sub(before)) as f64 / t.elapsed().as_secs_f64();
        if stopped.is_some() {
            bound = stopped;
            if held <= rows.last().map_or(0, |r| r.workers) {
                break;
            }
        }
        // Idle: heartbeats only.
        tokio::time::sleep(Duration::from_millis(a.heartbeat_ms.min(2000))).await;
        let s0 = proc_sample(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let s1 = proc_sample(pid);
        let idle_cpu =
            (s1.cpu_ticks - s0.cpu_ticks) as f64 / TICKS_PER_SEC / t0.elapsed().as_secs_f64()
                * 100.0;
        let rss = s1.rss_bytes;
        // Throughput.
        let th0 = thread_ticks(pid);
        let (c0, own0) = (proc_sample(pid).cpu_ticks, proc_sample(me).cpu_ticks);
        let up0 = relay_totals(&swarm, &relays).await;
        let t = Instant::now();
        let sub = client
            .submit(&job(&program, tasks, a.agree, |k| {
                format!("swarm {held} {k}")
            }))
            .await?;
        let ok = verified(&client, sub.job).await?;
        let el = t.elapsed().as_secs_f64();
        let tasks_per_sec = tasks as f64 / el;
        submitted += tasks as u64;
        verified_total += ok;
        let up1 = relay_totals(&swarm, &relays).await;
        let threads = busiest(&th0, &thread_ticks(pid), el);
        let coord_cpu = (proc_sample(pid).cpu_ticks - c0) as f64 / TICKS_PER_SEC / el * 100.0;
        let own_cpu = (proc_sample(me).cpu_ticks - own0) as f64 / TICKS_PER_SEC / el * 100.0;
        // Dispatch latency at about half the throughput, 10 tasks a job.
        let per_job = 10u32;
        let jobs_per_sec = (tasks_per_sec / 2.0 / per_job as f64).clamp(1.0, 500.0);
        let n_jobs = (jobs_per_sec * latency_secs as f64).ceil() as u32;
        swarm.latencies.lock().expect("not poisoned").clear();
        swarm.stamps.store(true, Relaxed);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / jobs_per_sec));
        let mut submissions = tokio::task::JoinSet::new();
        let agree = a.agree;
        for j in 0..n_jobs {
            tick.tick().await;
            let (client, program) = (client.clone(), program.clone());
            submissions.spawn(async move {
                let stamp = now_us();
                let job = job(&program, per_job, agree, |k| {
                    format!("swarm-lat {stamp} {held} {j} {k}")
                });
                let sub = client.submit(&job).await?;
                verified(&client, sub.job).await
            });
        }
        while let Some(r) = submissions.join_next().await {
            verified_total += r??;
        }
        submitted += (n_jobs * per_job) as u64;
        swarm.stamps.store(false, Relaxed);
        let mut lat = std::mem::take(&mut *swarm.latencies.lock().expect("not poisoned"));
        lat.sort_unstable();
        let row = Row {
            workers: held,
            ramp_per_sec,
            rss,
            kib_per_worker: rss.saturating_sub(base.rss_bytes) as f64 / 1024.0 / held as f64,
            idle_cpu,
            cpu_per_1k: idle_cpu / held as f64 * 1000.0,
            tasks_per_sec,
            p50_us: pct(&lat, 0.5),
            p99_us: pct(&lat, 0.99),
            samples: lat.len(),
        };
        println!(
            "{:>8} {:>8.0} {:>8.0} {:>8.1} {:>8.1}% {:>9.2}% {:>9.0} {:>9.2} {:>9.2}",
            row.workers,
            row.ramp_per_sec,
            mib(row.rss),
            row.kib_per_worker,
            row.idle_cpu,
            row.cpu_per_1k,
            row.tasks_per_sec,
            row.p50_us as f64 / 1e3,
            row.p99_us as f64 / 1e3
        );
        println!(
            "         throughput: coordinator {coord_cpu:.0}% CPU ({threads}), bench {own_cpu:.0}%; {} latency samples",
            row.samples
        );
        if !relays.is_empty() {
            let (msgs, frames) = upstream_traffic(&up0, &up1);
            println!(
                "         upstream (all relays, both ways): {:.2} WebSocket messages and {:.2} frames per task",
                msgs as f64 / tasks as f64,
                frames as f64 / tasks as f64
            );
        }
        rows.push(row);
        if bound.is_some() {
            break;
        }
    }
    let Some(last) = rows.last() else {
        bail!("no step completed: {}", bound.unwrap_or_default());
    };
    let (held, rss) = (last.workers, last.rss);
    println!();
    println!(
        "{verified_total} of {submitted} tasks verified; {} assignments answered; {} dials retried, {} workers connected in all",
        swarm.results.load(Relaxed),
        swarm.retries.load(Relaxed),
        swarm.welcomes.load(Relaxed),
    );
    if let Some(why) = swarm.rejection.lock().expect("not poisoned").clone() {
        println!(
            "{} workers were rejected by the coordinator and stopped (the last: {why})",
            swarm.rejected.load(Relaxed)
        );
    }
    // Where memory and CPU would bind, from the largest step.
    let budget = (a.max_rss_mib << 20).saturating_sub(base.rss_bytes) as f64;
    let mem_at = budget / (last.kib_per_worker * 1024.0).max(1.0);
    let cpu_at = cores as f64 * 100.0 / last.cpu_per_1k.max(1e-9) * 1000.0;
    println!(
        "most workers held: {held} at {:.0} MiB RSS; binds first: {}",
        mib(rss),
        bound.as_deref().unwrap_or("nothing up to --workers")
    );
    println!(
        "  extrapolated from {held} workers: memory ({} MiB) at ~{:.0} workers ({:.1} KiB each), CPU for heartbeats alone ({cores} cores) at ~{:.0} workers ({:.2}% of a core per 1,000)",
        a.max_rss_mib, mem_at, last.kib_per_worker, cpu_at, last.cpu_per_1k
    );
    if !relays.is_empty() {
        blobs_through_relays(&client, &swarm, &relays, &program, held).await?;
    }
    if !a.no_restart {
        restart(&mut grid, &swarm, held, a.no_jitter).await?;
    }
    Ok(0)
}

/// A job mounting one blob, a task for each of up to 2,000 workers: the bytes the workers
/// downloaded from their relays against those the relays fetched upstream.
async fn blobs_through_relays(
    client: &runegrid_client::Client,
    swarm: &Swarm,
    relays: &[String],
    program: &str,
    held: u32,
) -> Result<()> {
    let blob: Vec<u8> = (0..BLOB_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let info = client.upload_blob(blob).await?;
    let before = relay_totals(swarm, relays).await;
    let got0 = swarm.blob_bytes.load(Relaxed);
    let n = held.min(2000);
    let mut j = job(program, n, 1, |k| format!("swarm-blob {k}"));
    j.blobs.insert("data".into(), info.sha256.clone());
    let sub = client.submit(&j).await?;
    let ok = verified(client, sub.job).await?;
    let after = relay_totals(swarm, relays).await;
    let served = after.blob_bytes_served - before.blob_bytes_served;
    let fetched = after.blob_bytes_fetched - before.blob_bytes_fetched;
    let got = swarm.blob_bytes.load(Relaxed) - got0;
    println!(
        "blob job: {ok} of {n} tasks mounting a {} KiB blob verified; workers downloaded {:.1} MiB from their relays ({} workers), the relays fetched {:.1} MiB upstream: {:.1} MiB ({:.0}%) the coordinator did not send",
        BLOB_BYTES >> 10,
        mib(got),
        got / BLOB_BYTES as u64,
        mib(fetched),
        mib(served.saturating_sub(fetched)),
        if served == 0 {
            0.0
        } else {
            served.saturating_sub(fetched) as f64 / served as f64 * 100.0
        }
    );
    Ok(())
}

/// Kills the coordinator, starts it again on the same data and port, and times until all
/// `n` workers are back.
async fn restart(grid: &mut LocalGrid, swarm: &Swarm, n: u32, no_jitter: bool) -> Result<()> {
    let welcomes0 = swarm.welcomes.load(Relaxed);
    let t0 = Instant::now();
    grid.kill_coordinator()?;
    grid.restart_coordinator().await?;
    let listening = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    // Welcomes every 100 ms, for the peak rate over any second.
    let mut marks: Vec<(Instant, u64)> = vec![(Instant::now(), welcomes0)];
    let mut peak = 0u64;
    loop {
        let w = swarm.welcomes.load(Relaxed);
        let now = Instant::now();
        marks.push((now, w));
        if let Some((_, w1)) = marks
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= Duration::from_secs(1))
        {
            peak = peak.max(w - w1);
        }
        if w - welcomes0 >= n as u64 && swarm.connected.load(Relaxed) >= n as i64 {
            break;
        }
        if now > deadline {
            bail!(
                "after the restart only {} of {n} workers came back within 300 s",
                w - welcomes0
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = t0.elapsed();
    println!(
        "restart (SIGKILL, same data and port): all {n} workers back {:.1} s after the kill; the coordinator listened again after {:.1} s, the workers came back over {:.1} s, at most {peak} in one second ({})",
        all.as_secs_f64(),
        listening.as_secs_f64(),
        (all - listening).as_secs_f64(),
        if no_jitter {
            "backoff without jitter"
        } else {
            "the native worker's backoff, with full jitter"
        }
    );
    Ok(())
}
