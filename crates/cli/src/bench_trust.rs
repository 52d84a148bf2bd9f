//! `runegrid bench trust`: verification under misbehaving workers, on a local grid of real
//! processes. Prints executions per accepted task, wrong results accepted, how long liars take
//! to be quarantined, what colluders achieve, and makespan with stragglers.

use crate::procs::LocalGrid;
use anyhow::{Result, bail};
use clap::Args;
use runegrid_client::Client;
use runegrid_core::{Acceptance, PolicyKind, Standing};
use runegrid_examples::kernels::{monte_carlo_pi, monte_carlo_report};
use runegrid_proto::{JobResults, ResultState, SubmitJob, TaskSpec, WorkerInfo};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TrustBenchArgs {
    /// Worker processes per grid (1 slot each).
    #[arg(long, default_value_t = 10)]
    pub workers: u32,
    /// Tasks per job.
    #[arg(long, default_value_t = 300)]
    pub tasks: u32,
    /// Agreements every honest worker should have before executions per task are measured.
    #[arg(long, default_value_t = 150)]
    pub record: u64,
    /// Measured rounds (jobs) of the tiny-task scenario.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Run only these scenarios (comma-separated: liars, sometimes, colluders, stragglers,
    /// vanishing, tiny); all by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Scenario>,
    /// Keep each grid's data and logs under this directory.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// The scenarios of `bench trust`, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// 20% independent liars.
    Liars,
    /// 20% sometimes-wrong liars.
    Sometimes,
    /// Growing shares of colluders.
    Colluders,
    /// 10% slow workers, makespan against a clean grid.
    Stragglers,
    /// One worker that exits mid-task.
    Vanishing,
    /// Sub-millisecond tasks on trusted workers: executions per task in steady state.
    Tiny,
}

/// Monte Carlo samples per task in the verification scenarios (about a millisecond).
const SAMPLES: u64 = 20_000;
/// Samples per task in the tiny-task scenario (well under a millisecond).
const TINY_SAMPLES: u64 = 2_000;
/// Samples per task in the straggler scenario (tens of milliseconds).
const LONG_SAMPLES: u64 = 4_000_000;

fn expected(samples: u64, seed: u64) -> String {
    format!(
        "{}\n",
        monte_carlo_report(samples, monte_carlo_pi(samples, seed))
    )
}

/// A job that makes no progress for this long has stalled (its workers can no longer reach a
/// quorum); it is cancelled and its unfinished tasks reported.
const STALL: Duration = Duration::from_secs(45);

struct Run {
    results: JobResults,
    makespan: Duration,
    wrong: usize,
    attempts: u64,
    /// Tasks left unfinished by a stalled job, and what the job was waiting for.
    stalled: usize,
    waiting: Option<String>,
}

impl Run {
    fn stall_note(&self) -> String {
        if self.stalled == 0 {
            return String::new();
        }
        format!(
            "; STALLED with {} tasks unfinished ({})",
            self.stalled,
            self.waiting.as_deref().unwrap_or("no quorum reachable")
        )
    }
}

async fn run_job(
    c: &Client,
    program: &str,
    policy: PolicyKind,
    samples: u64,
    seeds: std::ops::Range<u64>,
) -> Result<Run> {
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.to_string(),
        name: Some("bench trust".into()),
        tasks: seeds
            .clone()
            .map(|s| TaskSpec {
                args: vec![samples.to_string(), s.to_string()],
                ..TaskSpec::default()
            })
            .collect(),
        policy: Some(policy),
        replicas: None,
        agree: None,
        max_attempts: None,
        limits: Default::default(),
        blobs: Default::default(),
    };
    let started = Instant::now();
    let sub = c.submit(&job).await?;
    let finished = |t: &runegrid_proto::TaskResult| t.state.is_final();
    let mut progress = (0, Instant::now());
    loop {
        let r = c.results(sub.job, Some(Duration::from_secs(5))).await?;
        let done = r.tasks.iter().filter(|t| finished(t)).count();
        if done > progress.0 {
            progress = (done, Instant::now());
        }
        let stuck = progress.1.elapsed() > STALL;
        if done == r.tasks.len() || stuck {
            let makespan = started.elapsed();
            let waiting = if stuck {
                let w = c.status(sub.job).await?.waiting_for;
                c.cancel(sub.job).await?;
                w
            } else {
                None
            };
            let wrong = r
                .tasks
                .iter()
                .zip(seeds.clone())
                .filter(|(t, s)| {
                    finished(t) && t.stdout.as_deref() != Some(expected(samples, *s).as_str())
                })
                .count();
            let attempts = r.tasks.iter().map(|t| t.attempts as u64).sum();
            let stalled = r.tasks.len() - done;
            return Ok(Run {
                results: r,
                makespan,
                wrong,
                attempts,
                stalled,
                waiting,
            });
        }
    }
}

async fn grid(
    a: &TrustBenchArgs,
    name: &str,
    kinds: &[(&str, u32)],
) -> Result<(LocalGrid, String)> {
    let dir = a.dir.as_ref().map(|d| d.join(name));
    let mut g = LocalGrid::start_with(dir, &[]).await?;
    let mut n = 0;
    for (kind, count) in kinds {
        for i in 0..*count {
            let extra: Vec<&str> = if *kind == "honest" {
                vec![]
            } else {
                vec!["--misbehave", kind]
            };
            let label = kind.replace([':', '.'], "_");
            g.spawn_worker(&format!("{label}-{i}"), 1, &extra)?;
            n += 1;
        }
    }
    g.wait_for_workers(n).await?;
    let p = g
        .client()
        .upload_program(runegrid_examples::MONTECARLO.to_vec())
        .await?
        .program;
    Ok((g, p))
}

fn is_honest(w: &WorkerInfo) -> bool {
    w.name.starts_with("honest")
}

/// Runs jobs until every honest worker has `record` agreements (or 40 jobs), timing when each
/// misbehaving worker gets quarantined. Returns (jobs run, wrong accepted, detection times).
async fn warm_up(
    c: &Client,
    p: &str,
    tasks: u32,
    record: u64,
    seed: &mut u64,
) -> Result<(u32, usize, u64, HashMap<String, Duration>)> {
    let started = Instant::now();
    let mut detected: HashMap<String, Duration> = HashMap::new();
    let mut wrong = 0;
    let mut jobs = 0;
    let mut accepted = 0u64;
    loop {
        let sub = *seed..*seed + tasks as u64;
        *seed += tasks as u64;
        let job = tokio::spawn({
            let (c, p) = (c.clone(), p.to_string());
            async move { run_job(&c, &p, PolicyKind::Adaptive, SAMPLES, sub).await }
        });
        while !job.is_finished() {
            for w in c.workers().await? {
                if w.standing == Standing::Quarantined && !is_honest(&w) {
                    detected.entry(w.name).or_insert_with(|| started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = job.await??;
        if r.stalled > 0 {
            bail!("a warm-up job stalled{}", r.stall_note());
        }
        wrong += r.wrong;
        accepted += r.results.tasks.len() as u64;
        jobs += 1;
        let ws = c.workers().await?;
        let ready = ws
            .iter()
            .filter(|w| is_honest(w))
            .all(|w| w.agreed >= record);
        if ready || jobs >= 40 {
            for w in ws {
                if w.standing == Standing::Quarantined && !is_honest(&w) {
                    detected.entry(w.name).or_insert_with(|| started.elapsed());
                }
            }
            return Ok((jobs, wrong, accepted, detected));
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn liars(a: &TrustBenchArgs, kind: &str, label: &str) -> Result<()> {
    let bad = (a.workers as f64 * 0.2).round() as u32;
    let (g, p) = grid(a, label, &[("honest", a.workers - bad), (kind, bad)]).await?;
    let c = g.client();
    let mut seed = 1;
    let (jobs, warm_wrong, warm_tasks, detected) =
        warm_up(&c, &p, a.tasks, a.record, &mut seed).await?;
    let measured = run_job(
        &c,
        &p,
        PolicyKind::Adaptive,
        SAMPLES,
        seed..seed + a.tasks as u64,
    )
    .await?;
    let ws = c.workers().await?;
    let min_record = ws
        .iter()
        .filter(|w| is_honest(w))
        .map(|w| w.agreed)
        .min()
        .unwrap_or(0);
    println!(
        "\n{label}: {} workers, {bad} of them `{kind}` (20%), adaptive policy",
        a.workers
    );
    println!("  warm-up: {jobs} jobs, {warm_tasks} tasks, wrong results accepted: {warm_wrong}");
    let mut times: Vec<_> = detected.iter().collect();
    times.sort();
    for (name, t) in &times {
        println!("  {name} quarantined after {}", ms(**t));
    }
    let missed = ws
        .iter()
        .filter(|w| !is_honest(w) && w.standing != Standing::Quarantined)
        .count();
    if missed > 0 {
        println!("  {missed} misbehaving worker(s) not quarantined (yet)");
    }
    println!(
        "  measured job ({} tasks, honest records ≥ {min_record} agreements): {:.3} executions per accepted task, wrong results accepted: {}{}",
        a.tasks,
        measured.attempts as f64 / a.tasks as f64,
        measured.wrong,
        measured.stall_note()
    );
    let alone = measured
        .results
        .tasks
        .iter()
        .filter(|t| t.acceptance == Some(Acceptance::Trusted))
        .count();
    println!(
        "  accepted on a trusted worker's word alone: {alone} of {}",
        a.tasks
    );
    Ok(())
}

async fn colluders(a: &TrustBenchArgs) -> Result<()> {
    println!(
        "\ncolluders: {} workers, a share of them all `collude` (the same wrong answer), adaptive policy, {} jobs × {} tasks",
        a.workers, 3, a.tasks
    );
    for k in 1..=a.workers / 2 {
        let (g, p) = grid(
            a,
            &format!("collude-{k}"),
            &[("honest", a.workers - k), ("collude", k)],
        )
        .await?;
        let c = g.client();
        let mut wrong = 0;
        let mut total = 0;
        let mut note = String::new();
        for j in 0..3u64 {
            let first = 1 + j * a.tasks as u64;
            let r = run_job(
                &c,
                &p,
                PolicyKind::Adaptive,
                SAMPLES,
                first..first + a.tasks as u64,
            )
            .await?;
            wrong += r.wrong;
            total += r.results.tasks.len() - r.stalled;
            if r.stalled > 0 {
                // The honest workers left can no longer outvote the colluders: stop here.
                note = r.stall_note();
                break;
            }
        }
        let ws = c.workers().await?;
        let q_bad = ws
            .iter()
            .filter(|w| !is_honest(w) && w.standing == Standing::Quarantined)
            .count();
        let q_good = ws
            .iter()
            .filter(|w| is_honest(w) && w.standing == Standing::Quarantined)
            .count();
        let t_bad = ws
            .iter()
            .filter(|w| !is_honest(w) && w.standing == Standing::Trusted)
            .count();
        println!(
            "  {:>3.0}% colluding: wrong results accepted {wrong} of {total} ({:.2}%); colluders quarantined {q_bad}/{k}, trusted {t_bad}; honest workers quarantined {q_good}/{}{note}",
            100.0 * k as f64 / a.workers as f64,
            100.0 * wrong as f64 / total.max(1) as f64,
            a.workers - k
        );
    }
    Ok(())
}

async fn stragglers(a: &TrustBenchArgs) -> Result<()> {
    let slow = (a.workers as f64 * 0.1).round().max(1.0) as u32;
    let tasks = a.tasks.min(200) as u64;
    let mut spans = Vec::new();
    for (label, kinds) in [
        ("clean", vec![("honest", a.workers)]),
        (
            "stragglers",
            vec![("honest", a.workers - slow), ("slow:10", slow)],
        ),
    ] {
        let (g, p) = grid(a, &format!("stragglers-{label}"), &kinds).await?;
        let c = g.client();
        // Warm every worker up (program fetched and compiled) before timing.
        run_job(&c, &p, PolicyKind::None, 1000, 1..1 + 4 * a.workers as u64).await?;
        let r = run_job(&c, &p, PolicyKind::None, LONG_SAMPLES, 1..1 + tasks).await?;
        if r.wrong > 0 || r.stalled > 0 {
            bail!(
                "{} wrong results in the straggler run{}",
                r.wrong,
                r.stall_note()
            );
        }
        spans.push((label, r.makespan, r.attempts));
    }
    println!(
        "\nstragglers: {} workers, {slow} of them `slow:10` (10× slow), {tasks} tasks of ~{} samples, policy none",
        a.workers, LONG_SAMPLES
    );
    for (label, span, attempts) in &spans {
        println!("  {label:<10} makespan {} ({attempts} attempts)", ms(*span));
    }
    println!(
        "  ratio {:.2}× (goal ≤ 1.25×)",
        spans[1].1.as_secs_f64() / spans[0].1.as_secs_f64()
    );
    Ok(())
}

async fn vanishing(a: &TrustBenchArgs) -> Result<()> {
    let (g, p) = grid(a, "vanish", &[("honest", a.workers - 1), ("vanish:0.2", 1)]).await?;
    let c = g.client();
    let r = run_job(&c, &p, PolicyKind::Adaptive, SAMPLES, 1..1 + a.tasks as u64).await?;
    let verified = r
        .results
        .tasks
        .iter()
        .filter(|t| t.state == ResultState::Verified)
        .count();
    println!(
        "\nvanishing: {} workers, 1 `vanish:0.2` (exits mid-task): {verified}/{} verified, {} wrong, {:.3} executions per task, makespan {}{}",
        a.workers,
        a.tasks,
        r.wrong,
        r.attempts as f64 / a.tasks as f64,
        ms(r.makespan),
        r.stall_note()
    );
    Ok(())
}

/// Tiny tasks on a grid whose workers are all trusted, with records long enough for the lowest
/// spot-check rate: executions per accepted task should come down to 1 + that rate (spot
/// replicas), with next to no straggler backups.
async fn tiny(a: &TrustBenchArgs) -> Result<()> {
    const WORKERS: u32 = 4;
    const SLOTS: u32 = 2;
    let params = runegrid_core::TrustParams::default();
    // The streak at which a trusted worker's spot-check rate reaches its floor.
    let floor_record =
        (params.spot_scale * params.trust_after as f64 / params.min_spot_rate).ceil() as u64;
    let record = a.record.max(floor_record);
    let dir = a.dir.as_ref().map(|d| d.join("tiny"));
    let mut g = LocalGrid::start_with(dir, &[]).await?;
    for i in 0..WORKERS {
        g.spawn_worker(&format!("honest-{i}"), SLOTS, &[])?;
    }
    g.wait_for_workers(WORKERS as usize).await?;
    let c = g.client();
    let p = c
        .upload_program(runegrid_examples::MONTECARLO.to_vec())
        .await?
        .program;
    // Warm-up: every task replicated, so every worker's streak grows by half a job's tasks.
    let mut seed = 1;
    let mut warm_jobs = 0;
    let mut wrong = 0;
    loop {
        let ws = c.workers().await?;
        let trusted = ws.iter().all(|w| w.standing == Standing::Trusted);
        if (trusted && ws.iter().all(|w| w.agreed >= record)) || warm_jobs >= 200 {
            break;
        }
        let r = run_job(
            &c,
            &p,
            PolicyKind::Quorum,
            TINY_SAMPLES,
            seed..seed + a.tasks as u64,
        )
        .await?;
        if r.stalled > 0 {
            bail!("a tiny-task warm-up job stalled{}", r.stall_note());
        }
        seed += a.tasks as u64;
        wrong += r.wrong;
        warm_jobs += 1;
    }
    let ws = c.workers().await?;
    let min_record = ws.iter().map(|w| w.agreed).min().unwrap_or(0);
    println!(
        "\ntiny tasks: {WORKERS} honest workers × {SLOTS} slots, all trusted (records ≥ {min_record} agreements after {warm_jobs} warm-up jobs under policy quorum, wrong results accepted: {wrong}), {} tasks of {TINY_SAMPLES} samples per job, adaptive policy, spot-check floor {:.0}%",
        a.tasks,
        params.min_spot_rate * 100.0
    );
    let (mut steady_attempts, mut steady_tasks, mut steady_spot, mut steady_backups) =
        (0u64, 0u64, 0u64, 0u64);
    let mut round_wrong = 0;
    for round in 1..=a.rounds {
        let r = run_job(
            &c,
            &p,
            PolicyKind::Adaptive,
            TINY_SAMPLES,
            seed..seed + a.tasks as u64,
        )
        .await?;
        seed += a.tasks as u64;
        let (mut spot, mut backups, mut retried) = (0u64, 0u64, 0usize);
        for t in &r.results.tasks {
            // A task accepted by a quorum on this grid of trusted workers was drawn for a spot
            // check: one replica is the check; anything beyond what acceptance needs is a
            // straggler backup (or a retry of a lost attempt).
            let needed = match t.acceptance {
                Some(Acceptance::Quorum | Acceptance::Audited) => {
                    spot += 1;
                    2
                }
                _ => 1,
            };
            backups += (t.attempts as u64).saturating_sub(needed);
            retried += usize::from(t.attempts > 1);
        }
        round_wrong += r.wrong;
        let tasks = r.results.tasks.len() as u64;
        println!(
            "  round {round}: {:.3} executions per accepted task ({retried} of {tasks} tasks ran more than once: {spot} spot-checked, {backups} straggler backups), wrong results accepted: {}, makespan {}{}",
            r.attempts as f64 / tasks.max(1) as f64,
            r.wrong,
            ms(r.makespan),
            r.stall_note()
        );
        if round > 1 || a.rounds == 1 {
            steady_attempts += r.attempts;
            steady_tasks += tasks;
            steady_spot += spot;
            steady_backups += backups;
        }
    }
    let share = |n: u64| 100.0 * n as f64 / steady_tasks.max(1) as f64;
    println!(
        "  steady state (rounds {}–{}): {:.3} executions per accepted task over {steady_tasks} tasks (goal ≤ {:.2}): spot replicas {steady_spot} ({:.1}%, drawn at {:.0}%), straggler backups {steady_backups} ({:.1}%); wrong results accepted: {round_wrong}",
        2.min(a.rounds),
        a.rounds,
        steady_attempts as f64 / steady_tasks.max(1) as f64,
        1.0 + params.min_spot_rate,
        share(steady_spot),
        params.min_spot_rate * 100.0,
        share(steady_backups),
    );
    Ok(())
}

pub async fn run(a: TrustBenchArgs) -> Result<i32> {
    let wants = |s: Scenario| a.only.is_empty() || a.only.contains(&s);
    let needs_workers = [
        Scenario::Liars,
        Scenario::Sometimes,
        Scenario::Colluders,
        Scenario::Stragglers,
        Scenario::Vanishing,
    ]
    .into_iter()
    .any(wants);
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if needs_workers && a.workers < 5 {
        bail!("--workers must be at least 5 (the scenarios use shares of 10% and 20%)");
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if needs_workers {
        println!(
            "runegrid bench trust: local grids of {} worker processes (1 slot each) on {cores} cores",
            a.workers
        );
    } else {
        println!("runegrid bench trust on {cores} cores");
    }
    if wants(Scenario::Liars) {
        liars(&a, "lie", "independent liars").await?;
    }
    if wants(Scenario::Sometimes) {
        liars(&a, "lie:0.3", "sometimes-wrong liars").await?;
    }
    if wants(Scenario::Colluders) {
        colluders(&a).await?;
    }
    if wants(Scenario::Stragglers) {
        stragglers(&a).await?;
    }
    if wants(Scenario::Vanishing) {
        vanishing(&a).await?;
    }
    if wants(Scenario::Tiny) {
        tiny(&a).await?;
    }
    Ok(0)
}
