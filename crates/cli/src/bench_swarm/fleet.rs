//! The simulated workers live in host processes — `runegrid bench swarm --host SPEC`, children
//! of the bench — up to [`PER_HOST`] each: a process holds only as many sockets as its limit on
//! open files allows (20,000 on this machine), and a swarm of 100,000 needs more. The bench
//! sends each host commands (stdin, one JSON line each) and reads its counters (stdout, one
//! JSON line every [`REPORT_EVERY`]); a host ends when its stdin closes, so it never outlives
//! the bench.

use super::agent::{Agents, RAMP_CONCURRENCY, Swarm, Target};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Semaphore;

/// The most simulated workers one host process runs (each holds a socket; the rest of the
/// limit on open files is left for blob downloads and the runtime).
pub(super) const PER_HOST: u32 = 15_000;
/// How often a host reports its counters.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// What a host runs: workers `first..first + count` of the swarm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HostSpec {
    /// Worker `i` dials `targets[i % len]` (`http://HOST:PORT`).
    pub targets: Vec<String>,
    pub token: String,
    pub slots: u32,
    pub jitter: bool,
    pub first: u32,
    pub count: u32,
}

/// The bench's commands to a host.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum HostCommand {
    /// Run this many of the host's workers (more are started, none stopped).
    Grow(u32),
    /// Whether assignments' stamps are read into latency samples.
    Stamps(bool),
    /// Report at once, with this number: every sample taken before is in that report.
    Sync(u64),
}

/// A host's counters (since it started) and the latency samples taken since its last report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Report {
    pub connected: i64,
    pub welcomes: u64,
    pub retries: u64,
    pub rejected: u64,
    pub assigns: u64,
    pub results: u64,
    pub blob_bytes: u64,
    pub last_error: Option<String>,
    pub rejection: Option<String>,
    pub latencies: Vec<u64>,
    /// The last [`HostCommand::Sync`] done.
    pub sync: u64,
}

fn report(sw: &Swarm, sync: u64) -> Report {
    Report {
        connected: sw.connected.load(Relaxed),
        welcomes: sw.welcomes.load(Relaxed),
        retries: sw.retries.load(Relaxed),
        rejected: sw.rejected.load(Relaxed),
        assigns: sw.assigns.load(Relaxed),
        results: sw.results.load(Relaxed),
        blob_bytes: sw.blob_bytes.load(Relaxed),
        last_error: sw.last_error.lock().expect("not poisoned").clone(),
        rejection: sw.rejection.lock().expect("not poisoned").clone(),
        latencies: std::mem::take(&mut *sw.latencies.lock().expect("not poisoned")),
        sync,
    }
}

/// A host process's life: workers as the bench commands, counters reported until stdin ends.
pub(super) async fn host(spec: HostSpec) -> Result<i32> {
    crate::node::raise_fd_limit();
    let swarm = Arc::new(Swarm {
        targets: spec
            .targets
            .iter()
            .map(|u| Target::new(u))
            .collect::<Result<_>>()?,
        token: spec.token.clone(),
        http: reqwest::Client::new(),
        blob_bytes: AtomicU64::new(0),
        slots: spec.slots,
        jitter: spec.jitter,
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
    let mut agents = Agents::new(swarm.clone(), spec.first);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut tick = tokio::time::interval(REPORT_EVERY);
    let mut sync = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            line = lines.next_line() => match line {
                Ok(Some(l)) => match serde_json::from_str::<HostCommand>(&l)
                    .with_context(|| format!("a command from the bench: {l}"))?
                {
                    HostCommand::Grow(n) => {
                        agents.grow_to(n.min(spec.count));
                        continue;
                    }
                    HostCommand::Stamps(on) => {
                        swarm.stamps.store(on, Relaxed);
                        continue;
                    }
                    HostCommand::Sync(k) => sync = k,
                },
                // The bench is gone.
                Ok(None) | Err(_) => return Ok(0),
            },
        }
        let mut line = serde_json::to_string(&report(&swarm, sync)).expect("reports serialize");
        line.push('\n');
        if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() {
            return Ok(0);
        }
    }
}

/// One host as the bench holds it.
struct Host {
    child: Child,
    stdin: ChildStdin,
    first: u32,
    count: u32,
}

/// What the hosts reported last, and the latency samples gathered from them.
#[derive(Default)]
struct Gathered {
    reports: Vec<Report>,
    /// Hosts whose output ended (the process died).
    gone: Vec<bool>,
    latencies: Vec<u64>,
}

/// The bench's side: the host processes and what they report, summed.
pub(super) struct Fleet {
    hosts: Vec<Host>,
    gathered: Arc<Mutex<Gathered>>,
    sync: u64,
}

impl Fleet {
    /// Starts enough hosts for `workers` simulated workers, `spec`'s others as given; their
    /// logs go to `dir/swarm-host-K.log`.
    pub async fn start(spec: &HostSpec, workers: u32, dir: &Path) -> Result<Fleet> {
        let exe = std::env::current_exe().context("locating the runegrid binary")?;
        let n = workers.div_ceil(PER_HOST).max(1);
        let gathered = Arc::new(Mutex::new(Gathered {
            reports: vec![Report::default(); n as usize],
            gone: vec![false; n as usize],
            latencies: Vec::new(),
        }));
        let mut hosts = Vec::new();
        for k in 0..n {
            let first = k * PER_HOST;
            let spec = HostSpec {
                first,
                count: PER_HOST.min(workers - first),
                ..spec.clone()
            };
            let log = std::fs::File::create(dir.join(format!("swarm-host-{k}.log")))
                .context("creating a host's log")?;
            let mut child = Command::new(&exe)
                .args(["bench", "swarm", "--host"])
                .arg(serde_json::to_string(&spec).expect("specs serialize"))
                .env(
                    "RUNEGRID_LOG",
                    std::env::var("RUNEGRID_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting a swarm host process")?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let g = gathered.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let Ok(mut r) = serde_json::from_str::<Report>(&l) else {
                        continue;
                    };
                    let mut g = g.lock().expect("not poisoned");
                    let samples = std::mem::take(&mut r.latencies);
                    g.latencies.extend(samples);
                    g.reports[k as usize] = r;
                }
                g.lock().expect("not poisoned").gone[k as usize] = true;
            });
            hosts.push(Host {
                child,
                stdin,
                first,
                count: spec.count,
            });
        }
        Ok(Fleet {
            hosts,
            gathered,
            sync: 0,
        })
    }

    async fn send(host: &mut Host, cmd: &HostCommand) -> Result<()> {
        let mut line = serde_json::to_string(cmd).expect("commands serialize");
        line.push('\n');
        host.stdin
            .write_all(line.as_bytes())
            .await
            .context("a swarm host process ended (see its swarm-host-K.log)")
    }

    /// Runs workers `0..n` (spread over the hosts in order).
    pub async fn grow_to(&mut self, n: u32) -> Result<()> {
        for h in &mut self.hosts {
            let local = n.saturating_sub(h.first).min(h.count);
            Self::send(h, &HostCommand::Grow(local)).await?;
        }
        Ok(())
    }

    /// Whether the workers read assignments' stamps into latency samples.
    pub async fn stamps(&mut self, on: bool) -> Result<()> {
        for h in &mut self.hosts {
            Self::send(h, &HostCommand::Stamps(on)).await?;
        }
        Ok(())
    }

    /// Waits until every host reported after this call: their samples taken before it are in.
    pub async fn sync(&mut self) -> Result<()> {
        self.sync += 1;
        let k = self.sync;
        for h in &mut self.hosts {
            Self::send(h, &HostCommand::Sync(k)).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check()?;
            if self.with(|g| g.reports.iter().all(|r| r.sync >= k)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the swarm's host processes did not report within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Gathered) -> T) -> T {
        f(&mut self.gathered.lock().expect("not poisoned"))
    }

    /// An error when a host process died.
    pub fn check(&self) -> Result<()> {
        if let Some(k) = self.with(|g| g.gone.iter().position(|x| *x)) {
            bail!("swarm host process {k} ended early: see swarm-host-{k}.log");
        }
        Ok(())
    }

    /// The latency samples gathered since the last call.
    pub fn take_latencies(&self) -> Vec<u64> {
        self.with(|g| std::mem::take(&mut g.latencies))
    }

    /// Every host's last report, summed (the errors: any host's).
    pub fn totals(&self) -> Report {
        self.with(|g| {
            let mut t = Report::default();
            for r in &g.reports {
                t.connected += r.connected;
                t.welcomes += r.welcomes;
                t.retries += r.retries;
                t.rejected += r.rejected;
                t.assigns += r.assigns;
                t.results += r.results;
                t.blob_bytes += r.blob_bytes;
                t.last_error = t.last_error.or_else(|| r.last_error.clone());
                t.rejection = t.rejection.or_else(|| r.rejection.clone());
            }
            t
        })
    }

    /// Welcomed and open now, over all hosts.
    pub fn connected(&self) -> u32 {
        self.totals().connected.max(0) as u32
    }

    /// The hosts' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.hosts.iter().filter_map(|h| h.child.id()).collect()
    }
}
