//! `runegrid demo`: a whole grid on this machine, running the shipped tile renderer.

use crate::commands::{print_results, wait_with_progress};
use crate::procs::LocalGrid;
use anyhow::{Context, Result, bail};
use clap::Args;
use runegrid_examples::tiles;
use runegrid_proto::{ResultState, SubmitJob, TaskSpec};
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
    /// Honest worker processes to start.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Extra workers that lie on purpose (the quorum outvotes them).
    #[arg(long, default_value_t = 0)]
    pub liars: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Image width in pixels.
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 400)]
    pub height: u32,
    /// Tile edge in pixels (one task per tile).
    #[arg(long, default_value_t = 80)]
    pub tile: u32,
    /// Attempts per tile.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Matching results needed per tile.
    #[arg(long, default_value_t = 2)]
    pub agree: u32,
    /// Where to write the assembled image.
    #[arg(long, default_value = "runegrid-demo.png")]
    pub out: PathBuf,
    /// Keep the grid's data and logs in this directory (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub async fn run(a: DemoArgs) -> Result<i32> {
    if a.workers + a.liars < a.replicas {
        bail!(
            "{} replicas need at least {} workers",
            a.replicas,
            a.replicas
        );
    }
    println!(
        "runegrid demo: a coordinator and {} worker processes on this machine",
        a.workers + a.liars
    );
    let mut grid = LocalGrid::start(a.dir.clone()).await?;
    println!(
        "  coordinator  {} (data and logs in {})",
        grid.url,
        grid.dir.display()
    );
    for i in 0..a.workers {
        grid.spawn_worker(&format!("worker-{}", i + 1), a.slots, &[])?;
    }
    for i in 0..a.liars {
        grid.spawn_worker(&format!("liar-{}", i + 1), a.slots, &["--misbehave", "lie"])?;
    }
    grid.wait_for_workers((a.workers + a.liars) as usize)
        .await?;
    println!(
        "  workers      {} connected ({} slot(s) each{})",
        a.workers + a.liars,
        a.slots,
        if a.liars > 0 {
            format!(", {} of them lying on purpose", a.liars)
        } else {
            String::new()
        }
    );
    let client = grid.client();

    // 1. The tile renderer.
    let plan = tiles::plan(a.width, a.height, a.tile);
    let program = client
        .upload_program(runegrid_examples::RENDER.to_vec())
        .await?;
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.program,
        name: Some("demo: render".into()),
        tasks: plan
            .iter()
            .map(|t| TaskSpec {
                args: tiles::args(a.width, a.height, t, 500),
                ..TaskSpec::default()
            })
            .collect(),
        policy: Some(runegrid_core::PolicyKind::Quorum),
        replicas: Some(a.replicas),
        agree: Some(a.agree),
        max_attempts: None,
        limits: Default::default(),
        blobs: Default::default(),
    };
    let sub = client.submit(&job).await?;
    println!(
        "\njob {}: render a {}×{} Mandelbrot in {} tiles; each tile runs on {} workers and {} must agree",
        sub.job,
        a.width,
        a.height,
        plan.len(),
        a.replicas,
        a.agree
    );
    let started = std::time::Instant::now();
    let results = wait_with_progress(&client, sub.job, true).await?;
    let elapsed = started.elapsed();
    let mut parts = Vec::new();
    let mut failed = Vec::new();
    let mut attempts = 0;
    let mut fuel = 0;
    for (t, r) in plan.iter().zip(&results.tasks) {
        attempts += r.attempts;
        fuel += r.fuel.unwrap_or(0);
        if r.state != ResultState::Verified {
            failed.push(format!(
                "tile {} ({}): {}",
                r.index,
                r.state,
                r.error.clone().unwrap_or_default()
            ));
            continue;
        }
        let bytes = r.stdout_bytes().context("tile output")?;
        let (_, _, rgb) = tiles::parse_ppm(&bytes).with_context(|| format!("tile {}", r.index))?;
        parts.push((*t, rgb));
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("  {f}");
        }
        bail!("{} of {} tiles were not verified", failed.len(), plan.len());
    }
    let png = tiles::assemble_png(a.width, a.height, &parts)?;
    std::fs::write(&a.out, png).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "verified {} of {} tiles in {:.2} s: {} attempts, {} units of fuel per replica in all",
        parts.len(),
        plan.len(),
        elapsed.as_secs_f64(),
        attempts,
        fuel
    );
    println!("wrote {}", a.out.display());

    // 2. A numeric kernel: Monte Carlo estimates of pi, one seed per task.
    let program = client
        .upload_program(runegrid_examples::MONTECARLO.to_vec())
        .await?;
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.program,
        name: Some("demo: monte carlo".into()),
        tasks: (1..=6)
            .map(|seed| TaskSpec {
                args: vec!["2000000".into(), seed.to_string()],
                ..TaskSpec::default()
            })
            .collect(),
        policy: Some(runegrid_core::PolicyKind::Quorum),
        replicas: Some(a.replicas),
        agree: Some(a.agree),
        max_attempts: None,
        limits: Default::default(),
        blobs: Default::default(),
    };
    let sub = client.submit(&job).await?;
    println!(
        "\njob {}: estimate pi with 2,000,000 samples under 6 seeds",
        sub.job
    );
    let results = wait_with_progress(&client, sub.job, true).await?;
    print_results(&results, false)?;

    println!("\nworkers:");
    for w in client.workers().await? {
        println!(
            "  {:<10} completed {:>4} attempts, {:>4} agreed, {:>3} disagreed: {}{}",
            w.name,
            w.completed,
            w.agreed,
            w.disagreed,
            w.standing,
            w.quarantine.map(|q| format!(" ({q})")).unwrap_or_default()
        );
    }
    if a.liars > 0 {
        println!(
            "(a liar's results disagree with the quorum and are discarded; after 3 disagreements it is quarantined)"
        );
    }
    Ok(0)
}
