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

mod agent;
mod fleet;
mod procfs;

use crate::procs::LocalGrid;
use agent::now_us;
use anyhow::{Context, Result, bail};
use clap::Args;
use fleet::{Fleet, HostSpec};
use procfs::{busiest, open_file_limit, proc_sample, thread_ticks};
use runegrid_core::{Limits, PolicyKind};
use runegrid_proto::{ResultState, SubmitJob, TaskSpec};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    /// Run as one of the bench's host processes of simulated workers (given by the bench).
    #[arg(long, hide = true)]
    pub host: Option<String>,
}

/// The bytes of the blob the blob job's tasks mount.
const BLOB_BYTES: usize = 256 << 10;
/// A ramp that connects no new worker for this long has stalled.
const STALL: Duration = Duration::from_secs(30);
/// Linux reports CPU time in /proc in ticks of 1/100 s (USER_HZ).
pub(super) const TICKS_PER_SEC: f64 = 100.0;

/// The relays' figures, summed.
async fn relay_totals(http: &reqwest::Client, relays: &[String]) -> runegrid_relay::RelayStats {
    let mut t = runegrid_relay::RelayStats::default();
    for url in relays {
        let Ok(r) = http.get(format!("{url}/relay/stats")).send().await else {
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

/// The CPU time of some processes, summed, in ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().map(|p| proc_sample(*p).cpu_ticks).sum()
}

pub async fn run(a: SwarmBenchArgs) -> Result<i32> {
    if let Some(spec) = &a.host {
        let spec: HostSpec = serde_json::from_str(spec).context("--host: a host spec")?;
        return fleet::host(spec).await;
    }
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
    let mut relay_pids = Vec::new();
    for r in 0..a.relays {
        let (url, pid) = grid.spawn_relay(&format!("relay-{r}")).await?;
        relays.push(url);
        relay_pids.push(pid);
    }
    let http = reqwest::Client::new();
    let me = std::process::id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = grid.coordinator_pid();
    let base = proc_sample(pid);
    // Sockets: one per worker in whatever holds the workers' connections — the coordinator, or
    // each relay for its share (worker `i` dials relay `i mod N`) — and some to spare. The
    // simulated workers' side grows by host processes as needed.
    let spare = |pid: u32| {
        open_file_limit(pid)
            .unwrap_or(1024)
            .saturating_sub(proc_sample(pid).open_fds + 64)
    };
    let coord_limit = open_file_limit(pid).unwrap_or(1024);
    let fd_cap = if relay_pids.is_empty() {
        spare(pid)
    } else {
        relay_pids.iter().map(|p| spare(*p)).min().unwrap_or(0) * relay_pids.len() as u64
    }
    .min(u64::from(u32::MAX)) as u32;
    let most = steps.last().copied().unwrap_or(0).min(fd_cap);
    let spec = HostSpec {
        targets: if relays.is_empty() {
            vec![grid.url.clone()]
        } else {
            relays.clone()
        },
        token: grid.token.clone(),
        slots: a.slots,
        jitter: !a.no_jitter,
        first: 0,
        count: 0,
    };
    let mut fleet = Fleet::start(&spec, most, &grid.dir).await?;
    let policy = if a.agree <= 1 {
        "policy none".to_string()
    } else {
        format!("quorum of {}", a.agree)
    };
    println!(
        "runegrid bench swarm: 1 coordinator (heartbeats every {} ms) and simulated workers × {} slot(s) in {} host process(es) of up to {} each, {cores} cores shared by all",
        a.heartbeat_ms,
        a.slots,
        fleet.pids().len(),
        fleet::PER_HOST
    );
    if a.relays > 0 {
        println!(
            "through {} relays (runegrid relay processes on this machine): the coordinator holds {} connections for all the workers, and hears their heartbeats from the relays",
            a.relays, a.relays
        );
    }
    println!(
        "open files: coordinator {coord_limit} (raised to {}): at most {fd_cap} workers {}; coordinator RSS with no worker {:.0} MiB",
        raised.map_or("?".into(), |n| n.to_string()),
        if relays.is_empty() {
            "connected to it"
        } else {
            "through the relays (each holds a socket per worker)"
        },
        mib(base.rss_bytes)
    );
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
                "file descriptors: {step} workers need {step} sockets {}; the limit on open files (the hard limit, which an unprivileged process cannot raise) leaves room for {fd_cap}",
                if relays.is_empty() {
                    "in the coordinator"
                } else {
                    "over the relays"
                }
            ));
        }
        if rows.last().is_some_and(|r| r.workers >= want) {
            break;
        }
        // Ramp.
        let before = fleet.connected();
        let t = Instant::now();
        fleet.grow_to(want).await?;
        let mut last_progress = (before, Instant::now());
        let mut stopped = None;
        loop {
            fleet.check()?;
            let now = fleet.connected();
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
                let why = fleet.totals().last_error.unwrap_or_default();
                stopped = Some(format!(
                    "connections: none connected for {} s at {now} workers (last error: {why})",
                    STALL.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = fleet.connected();
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
        let r0 = cpu_ticks(&relay_pids);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let s1 = proc_sample(pid);
        let idle_secs_taken = t0.elapsed().as_secs_f64();
        let idle_cpu =
            (s1.cpu_ticks - s0.cpu_ticks) as f64 / TICKS_PER_SEC / idle_secs_taken * 100.0;
        let relays_idle_cpu =
            (cpu_ticks(&relay_pids) - r0) as f64 / TICKS_PER_SEC / idle_secs_taken * 100.0;
        let rss = s1.rss_bytes;
        // Throughput.
        let th0 = thread_ticks(pid);
        let bench_pids: Vec<u32> = fleet.pids().into_iter().chain([me]).collect();
        let (c0, own0, rl0) = (
            proc_sample(pid).cpu_ticks,
            cpu_ticks(&bench_pids),
            cpu_ticks(&relay_pids),
        );
        let up0 = relay_totals(&http, &relays).await;
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
        let up1 = relay_totals(&http, &relays).await;
        let threads = busiest(&th0, &thread_ticks(pid), el);
        let coord_cpu = (proc_sample(pid).cpu_ticks - c0) as f64 / TICKS_PER_SEC / el * 100.0;
        let own_cpu = (cpu_ticks(&bench_pids) - own0) as f64 / TICKS_PER_SEC / el * 100.0;
        let relays_cpu = (cpu_ticks(&relay_pids) - rl0) as f64 / TICKS_PER_SEC / el * 100.0;
        // Dispatch latency at about half the throughput, 10 tasks a job.
        let per_job = 10u32;
        let jobs_per_sec = (tasks_per_sec / 2.0 / per_job as f64).clamp(1.0, 500.0);
        let n_jobs = (jobs_per_sec * latency_secs as f64).ceil() as u32;
        fleet.sync().await?;
        fleet.take_latencies();
        fleet.stamps(true).await?;
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
        fleet.stamps(false).await?;
        fleet.sync().await?;
        let mut lat = fleet.take_latencies();
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
            println!(
                "         relays (all): idle {relays_idle_cpu:.1}% CPU ({:.2}% per 1,000 workers), {relays_cpu:.0}% during the throughput job",
                relays_idle_cpu / held as f64 * 1000.0
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
    let totals = fleet.totals();
    println!(
        "{verified_total} of {submitted} tasks verified; {} assignments answered; {} dials retried, {} workers connected in all",
        totals.results, totals.retries, totals.welcomes,
    );
    if let Some(why) = totals.rejection {
        println!(
            "{} workers were rejected by the coordinator and stopped (the last: {why})",
            totals.rejected
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
        blobs_through_relays(&client, &http, &fleet, &relays, &program, held).await?;
    }
    if !a.no_restart {
        restart(&mut grid, &fleet, held, a.no_jitter).await?;
    }
    Ok(0)
}

/// A job mounting one blob, a task for each of up to 2,000 workers: the bytes the workers
/// downloaded from their relays against those the relays fetched upstream.
async fn blobs_through_relays(
    client: &runegrid_client::Client,
    http: &reqwest::Client,
    fleet: &Fleet,
    relays: &[String],
    program: &str,
    held: u32,
) -> Result<()> {
    let blob: Vec<u8> = (0..BLOB_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let info = client.upload_blob(blob).await?;
    let before = relay_totals(http, relays).await;
    let got0 = fleet.totals().blob_bytes;
    let n = held.min(2000);
    let mut j = job(program, n, 1, |k| format!("swarm-blob {k}"));
    j.blobs.insert("data".into(), info.sha256.clone());
    let sub = client.submit(&j).await?;
    let ok = verified(client, sub.job).await?;
    let after = relay_totals(http, relays).await;
    let served = after.blob_bytes_served - before.blob_bytes_served;
    let fetched = after.blob_bytes_fetched - before.blob_bytes_fetched;
    let got = fleet.totals().blob_bytes - got0;
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
async fn restart(grid: &mut LocalGrid, fleet: &Fleet, n: u32, no_jitter: bool) -> Result<()> {
    let welcomes0 = fleet.totals().welcomes;
    let t0 = Instant::now();
    grid.kill_coordinator()?;
    grid.restart_coordinator().await?;
    let listening = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    // Welcomes every 100 ms, for the peak rate over any second.
    let mut marks: Vec<(Instant, u64)> = vec![(Instant::now(), welcomes0)];
    let mut peak = 0u64;
    loop {
        fleet.check()?;
        let t = fleet.totals();
        let w = t.welcomes;
        let now = Instant::now();
        marks.push((now, w));
        if let Some((_, w1)) = marks
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= Duration::from_secs(1))
        {
            peak = peak.max(w - w1);
        }
        if w - welcomes0 >= n as u64 && t.connected >= n as i64 {
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
