//! `runegrid bench credits`: the credit economy under misbehaving workers, and what charging
//! costs.
//!
//! 1. *Liars.* Five workers, each under its own owner account; one (20%) turns liar after
//!    earning trust (`lie-after:N`). Three adaptive jobs run; the books are then checked
//!    (`ledger check`: balanced, every agreeing attempt paid exactly its fuel at its job's
//!    price, every other one netting nothing) and the figures printed: what the liar kept for
//!    its lies (goal 0), each honest owner's earnings against its agreed fuel × price.
//! 2. *Overhead.* Pipelined no-op throughput on a grid that charges against one started with
//!    `--free`, in the same run, alternating, best of each.

use crate::procs::LocalGrid;
use anyhow::{Result, bail};
use clap::Args;
use runegrid_core::{Limits, PolicyKind};
use runegrid_proto::{ResultState, SubmitJob, TaskSpec};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct CreditsBenchArgs {
    /// Tasks in each of the three jobs of the liars' run.
    #[arg(long, default_value_t = 120)]
    pub tasks: u32,
    /// No-op tasks in each throughput job.
    #[arg(long, default_value_t = 20000)]
    pub noop_tasks: u32,
    /// Throughput runs of each kind (charging, free), alternating.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Keep the grids' data and logs under this directory (default: temporary directories).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const WORKERS: usize = 5;

pub async fn run(a: CreditsBenchArgs) -> Result<i32> {
    liars(&a).await?;
    overhead(&a).await?;
    Ok(0)
}

fn sub_dir(a: &CreditsBenchArgs, name: &str) -> Option<PathBuf> {
    a.dir.as_ref().map(|d| d.join(name))
}

async fn liars(a: &CreditsBenchArgs) -> Result<()> {
    let mut grid = LocalGrid::start_with(sub_dir(a, "liars"), &["--trust-after", "5"]).await?;
    let admin = grid.client();
    let mut owners = Vec::new();
    for i in 0..WORKERS {
        let liar = i == WORKERS - 1;
        let name = if liar {
            "owner-liar".to_string()
        } else {
            format!("owner-{}", i + 1)
        };
        let acct = admin.create_account(&name, false).await?;
        let token = acct.token.clone().unwrap_or_default();
        let mut extra = vec!["--token", token.as_str()];
        if liar {
            extra.extend(["--misbehave", "lie-after:8"]);
        }
        grid.spawn_worker(&name, 2, &extra)?;
        owners.push((acct.id, name, liar));
    }
    grid.wait_for_workers(WORKERS).await?;
    let program = admin
        .upload_program(runegrid_examples::MONTECARLO.to_vec())
        .await?
        .program;
    println!(
        "\ncredits under liars: {WORKERS} workers × 2 slots, each its own owner, 1 turning liar after 8 honest results; 3 adaptive jobs of {} Monte Carlo tasks",
        a.tasks
    );
    let mut wrong = 0;
    for j in 0..3u64 {
        let job = SubmitJob {
            gpu: None,
            max_price: None,
            seed: None,
            cache: None,
            program: program.clone(),
            name: Some(format!("bench credits {}", j + 1)),
            tasks: (0..a.tasks as u64)
                .map(|i| TaskSpec {
                    args: vec!["20000".into(), (j * 10_000 + i).to_string()],
                    ..TaskSpec::default()
                })
                .collect(),
            policy: Some(PolicyKind::Adaptive),
            replicas: None,
            agree: None,
            max_attempts: None,
            limits: Limits {
                fuel: 1_000_000_000,
                ..Limits::default()
            },
            blobs: Default::default(),
        };
        let sub = admin.submit(&job).await?;
        let r = admin
            .results(sub.job, Some(Duration::from_secs(600)))
            .await?;
        for (i, t) in r.tasks.iter().enumerate() {
            let seed = j * 10_000 + i as u64;
            let expect = format!(
                "{}\n",
                runegrid_examples::kernels::monte_carlo_report(
                    20000,
                    runegrid_examples::kernels::monte_carlo_pi(20000, seed)
                )
            );
            if t.state != ResultState::Verified || t.stdout.as_deref() != Some(expect.as_str()) {
                wrong += 1;
            }
        }
    }
    // Audits of the liar's lone results may still run: wait until none is queued or running.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = admin.price().await?;
        let busy = admin
            .workers()
            .await?
            .iter()
            .map(|w| w.running)
            .sum::<u32>();
        if p.queued == 0 && busy == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("audits did not finish within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // (The check reads one snapshot while the coordinator keeps running.)
    let books = match runegrid_coordinator::check_books(&grid.data_dir()) {
        Ok(b) => b,
        Err(e) => bail!("the books do not balance: {e}"),
    };
    println!(
        "books: balanced ({} transfers, {} clawbacks; {} paid by the treasury for audits and probes)",
        books.transfers,
        books.clawbacks,
        runegrid_coordinator::credits(books.grid_work)
    );
    println!("  {wrong} wrong results accepted in the end (goal 0)");
    for (id, name, liar) in &owners {
        let o = books.owners.get(id).copied().unwrap_or_default();
        println!(
            "  {name:<11} {:>4} agreeing attempts paid {:>16}; {:>3} disagreeing attempts kept {}{}",
            o.agreed,
            runegrid_coordinator::credits(o.paid_agreed),
            o.disagreed,
            runegrid_coordinator::credits(o.kept_disagreed),
            if *liar {
                "  ← the liar (goal 0 kept)"
            } else {
                ""
            }
        );
    }
    println!(
        "  every agreeing attempt was paid exactly its fuel × its job's price (checked attempt by attempt)"
    );
    Ok(())
}

async fn overhead(a: &CreditsBenchArgs) -> Result<()> {
    println!(
        "\ncharging overhead: pipelined no-op tasks (one job of {}), 2 workers × 2 slots, charging vs --free, best of {}",
        a.noop_tasks, a.rounds
    );
    let mut best = [0f64; 2];
    for round in 0..a.rounds {
        for (k, free) in [false, true].into_iter().enumerate() {
            let tps = throughput(a, free, round).await?;
            best[k] = best[k].max(tps);
        }
    }
    println!(
        "  charging: {:.0} tasks/s; free: {:.0} tasks/s; charging is {:.1}% slower (goal: at most 10%)",
        best[0],
        best[1],
        (1.0 - best[0] / best[1]) * 100.0
    );
    Ok(())
}

async fn throughput(a: &CreditsBenchArgs, free: bool, round: u32) -> Result<f64> {
    let name = format!("{}-{round}", if free { "free" } else { "charging" });
    let mut args = vec!["--welcome-credits", "1000000000"];
    if free {
        args.push("--free");
    }
    let mut grid = LocalGrid::start_with(sub_dir(a, &name), &args).await?;
    for i in 0..2 {
        grid.spawn_worker(&format!("w{i}"), 2, &[])?;
    }
    grid.wait_for_workers(2).await?;
    let client = grid.client();
    let program = client
        .upload_program(runegrid_examples::NOOP.to_vec())
        .await?
        .program;
    let job = |n: u32| SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.clone(),
        name: Some("bench".into()),
        tasks: vec![TaskSpec::default(); n as usize],
        policy: Some(PolicyKind::None),
        replicas: None,
        agree: None,
        max_attempts: None,
        limits: Limits {
            fuel: 1_000_000,
            ..Limits::default()
        },
        blobs: Default::default(),
    };
    for _ in 0..20 {
        client.submit_wait(&job(1), Duration::from_secs(30)).await?;
    }
    let t = Instant::now();
    let sub = client.submit(&job(a.noop_tasks)).await?;
    let r = client
        .results(sub.job, Some(Duration::from_secs(600)))
        .await?;
    let el = t.elapsed().as_secs_f64();
    let ok = r
        .tasks
        .iter()
        .filter(|t| t.state == ResultState::Verified)
        .count();
    if ok != a.noop_tasks as usize {
        bail!("only {ok} of {} no-op tasks verified", a.noop_tasks);
    }
    let tps = a.noop_tasks as f64 / el;
    println!(
        "  {}: {:.0} tasks/s",
        if free { "free    " } else { "charging" },
        tps
    );
    Ok(tps)
}
