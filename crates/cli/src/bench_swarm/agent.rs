//! One simulated worker: a tokio task that speaks the real worker protocol. It dials its
//! target (the coordinator or a relay) with its own loopback source address when one would run
//! out of ports, answers the challenge with a hello signed by its own ed25519 key (derived from
//! its index, so the same swarm comes back as the same workers), sends a heartbeat at the
//! interval the welcome gives, and answers every assignment at once with a signed result
//! computed by a fixed rule instead of a sandbox. After a connection ends it dials again as the
//! native worker does (`runegrid_worker::Backoff`).

use anyhow::{Context, Result};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use runegrid_core::ExecStatus;
use runegrid_proto::PROTOCOL_VERSION;
use runegrid_proto::worker::{
    Assign, AttemptResult, Capabilities, ToCoordinator, ToWorker, assign_digest, hello_message,
    result_message,
};
use runegrid_worker::Backoff;
use sha2::{Digest as _, Sha256};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// Handshakes in flight at once (in one process) while the swarm grows.
pub(super) const RAMP_CONCURRENCY: usize = 256;
/// Simulated workers dialling one target from one loopback source address (a source address
/// has about 28,000 ephemeral ports towards one listening port, and `connect` may use a port
/// again towards another). The first ones towards each target let `connect` pick their port;
/// the others bind a source address of their own first, and `bind` with port 0 searches the
/// ports in use in the kernel (at 10,000 sockets it took most of this process's CPU, late
/// heartbeats included), so it runs off the runtime. Spread over 10 relays, 100,000 workers
/// never bind: binding them took most of the machine's CPU while a swarm came back after a
/// restart.
const PER_SOURCE_ADDRESS: u32 = 20_000;
/// How long the coordinator may take to answer a dial and each handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where simulated workers dial: the coordinator, or a relay.
pub(super) struct Target {
    addr: SocketAddr,
    ws_url: String,
    /// `http://HOST:PORT`, for blobs.
    pub http: String,
}

impl Target {
    pub fn new(url: &str) -> Result<Target> {
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

/// What the simulated workers of one process share: counters, and the latency samples.
pub(super) struct Swarm {
    /// Worker `i` dials `targets[i % len]`.
    pub targets: Vec<Target>,
    pub token: String,
    pub http: reqwest::Client,
    /// Blob bytes the simulated workers downloaded.
    pub blob_bytes: AtomicU64,
    pub slots: u32,
    pub jitter: bool,
    /// Welcomed and still open.
    pub connected: AtomicI64,
    /// Welcomes since the swarm started.
    pub welcomes: AtomicU64,
    /// Dials or handshakes that failed (and were tried again).
    pub retries: AtomicU64,
    /// Workers the coordinator rejected (they stop).
    pub rejected: AtomicU64,
    pub assigns: AtomicU64,
    pub results: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Why the coordinator last rejected a worker.
    pub rejection: Mutex<Option<String>>,
    /// Whether assignments' stamps are read into `latencies`.
    pub stamps: AtomicBool,
    /// Dispatch latencies seen, in µs.
    pub latencies: Mutex<Vec<u64>>,
    pub ramp: Arc<Semaphore>,
}

/// The simulated workers' tasks; aborted on drop.
pub(super) struct Agents {
    swarm: Arc<Swarm>,
    /// The swarm's index of this process's first worker.
    first: u32,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agents {
    pub fn new(swarm: Arc<Swarm>, first: u32) -> Agents {
        Agents {
            swarm,
            first,
            tasks: Vec::new(),
        }
    }

    /// Starts simulated workers until there are `n` here.
    pub fn grow_to(&mut self, n: u32) {
        for i in self.tasks.len() as u32..n {
            let swarm = self.swarm.clone();
            self.tasks.push(tokio::spawn(agent(swarm, self.first + i)));
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
        // Worker `i` dials target `i % targets`: it is number `i / targets` of those.
        (1 + i / sw.targets.len() as u32 / PER_SOURCE_ADDRESS).min(254) as u8,
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
pub(super) fn now_us() -> u64 {
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
