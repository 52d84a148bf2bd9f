//! `runegrid bench browser`: a browser worker against a native one, on this machine.
//!
//! Drives a headless Chromium through chromedriver: opens the contribute page of a local
//! coordinator, times the click on **Start contributing** to the first task accepted (for a new
//! contributor and for a returning one), then runs the same jobs of example kernels on the
//! browser's workers alone and on a native worker with as many slots, and compares.

use crate::procs::LocalGrid;
use crate::webdriver::Session as Browser;
use anyhow::{Context, Result, bail};
use clap::Args;
use runegrid_client::Client;
use runegrid_core::PolicyKind;
use runegrid_proto::{ResultState, SubmitJob, TaskSpec};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BrowserBenchArgs {
    /// Tasks per kernel job (each kernel runs this many tasks on the browser, then natively).
    #[arg(long, default_value_t = 8)]
    pub tasks: u32,
    /// Monte Carlo samples per task.
    #[arg(long, default_value_t = 100_000_000)]
    pub samples: u64,
    /// Matrix size per matmul task.
    #[arg(long, default_value_t = 480)]
    pub matrix: u32,
    /// The chromedriver to start (it finds Chromium itself).
    #[arg(long, default_value = "chromedriver")]
    pub chromedriver: String,
    /// Keep the grid's data and logs in this directory (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// chromedriver as a child process, killed on drop.
pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn start_browser(chromedriver: &str) -> Result<(Driver, Browser)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("starting {chromedriver} (install chromium and chromium-driver)")
        })?;
    let driver = Driver(child);
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
            ],
        },
    });
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Browser::open(&url, caps.clone()).await {
            Ok(b) => return Ok((driver, b)),
            Err(e) if Instant::now() > deadline => {
                bail!("chromedriver did not start a browser session within 30 s: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn browser_workers(url: &str) -> Result<u32> {
    let s: runegrid_proto::GridStats = reqwest::get(format!("{url}/v1/stats"))
        .await?
        .json()
        .await?;
    Ok(s.now.workers_browser)
}

pub(crate) async fn wait_browser_workers(url: &str, want: impl Fn(u32) -> bool) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = browser_workers(url).await?;
        if want(n) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!("the browser's workers did not connect or leave within 60 s ({n} connected)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn job(program: &str, name: &str, tasks: Vec<Vec<String>>) -> SubmitJob {
    SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.to_string(),
        name: Some(name.into()),
        tasks: tasks
            .into_iter()
            .map(|args| TaskSpec {
                args,
                ..TaskSpec::default()
            })
            .collect(),
        policy: Some(PolicyKind::None),
        replicas: None,
        agree: None,
        max_attempts: None,
        limits: Default::default(),
        blobs: Default::default(),
    }
}

/// Runs a job to the end; the time from submission to its last result, and the fuel spent.
async fn timed(c: &Client, job: &SubmitJob) -> Result<(Duration, u64)> {
    let t = Instant::now();
    let sub = c.submit(job).await?;
    let r = c.results(sub.job, Some(Duration::from_secs(600))).await?;
    let el = t.elapsed();
    if let Some(bad) = r.tasks.iter().find(|t| t.state != ResultState::Verified) {
        bail!("a benchmark task did not verify: {bad:?}");
    }
    Ok((el, r.tasks.iter().filter_map(|t| t.fuel).sum()))
}

/// Clicks start and times it to the first accepted result of a job submitted beforehand.
async fn click_to_first_task(b: &Browser, c: &Client, url: &str, program: &str) -> Result<f64> {
    b.goto(&format!("{url}/contribute")).await?;
    let toggle = b.find_id("toggle").await?;
    let sub = c
        .submit(&job(program, "first task", vec![vec!["1000".into()]]))
        .await?;
    let t = Instant::now();
    toggle.click().await?;
    let r = c.results(sub.job, Some(Duration::from_secs(120))).await?;
    let el = t.elapsed();
    if r.tasks[0].state != ResultState::Verified {
        bail!("the first task was not accepted: {:?}", r.tasks[0]);
    }
    Ok(el.as_secs_f64() * 1e3)
}

pub async fn run(a: BrowserBenchArgs) -> Result<i32> {
    let mut grid = LocalGrid::start(a.dir.clone()).await?;
    let (_driver, b) = start_browser(&a.chromedriver).await?;
    let c = grid.client();
    let mc = c
        .upload_program(runegrid_examples::MONTECARLO.to_vec())
        .await?
        .program;
    let mm = c
        .upload_program(runegrid_examples::MATMUL.to_vec())
        .await?
        .program;
    println!(
        "runegrid bench browser: headless Chromium vs a native worker on {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // A new contributor: account, keys and connection are made after the click.
    let first = click_to_first_task(&b, &c, &grid.url, &mc).await?;
    let n = wait_browser_workers(&grid.url, |n| n > 0).await?;
    // A returning one: the page is loaded again; account and keys are in browser storage.
    let again = click_to_first_task(&b, &c, &grid.url, &mc).await?;
    wait_browser_workers(&grid.url, |m| m == n).await?;
    println!(
        "click on start to first task accepted (Monte Carlo, 1000 samples, replicas=1): new contributor {first:.0} ms, returning contributor {again:.0} ms"
    );

    let kernels = [
        (
            "montecarlo",
            &mc,
            format!("{} samples", a.samples),
            (0..a.tasks)
                .map(|s| vec![a.samples.to_string(), s.to_string()])
                .collect::<Vec<_>>(),
        ),
        (
            "matmul",
            &mm,
            format!("{0}×{0}", a.matrix),
            (0..a.tasks)
                .map(|s| vec![a.matrix.to_string(), s.to_string()])
                .collect(),
        ),
    ];
    // Warm up the browser's compiled matmul module (Monte Carlo ran already).
    timed(&c, &job(&mm, "warm-up", vec![vec!["8".into()]; n as usize])).await?;
    let mut in_browser = Vec::new();
    for (name, program, _, tasks) in &kernels {
        in_browser.push(timed(&c, &job(program, name, tasks.clone())).await?);
    }

    // Pause the page; the same jobs on one native worker with as many slots.
    b.find_id("toggle").await?.click().await?;
    wait_browser_workers(&grid.url, |n| n == 0).await?;
    grid.spawn_worker("native", n, &[])?;
    grid.wait_for_workers(1).await?;
    timed(&c, &job(&mm, "warm-up", vec![vec!["8".into()]; n as usize])).await?;
    timed(
        &c,
        &job(&mc, "warm-up", vec![vec!["1000".into()]; n as usize]),
    )
    .await?;
    println!(
        "{} tasks per kernel on {n} browser worker(s), then on a native worker with {n} slot(s):",
        a.tasks
    );
    for ((name, program, size, tasks), (browser, fuel)) in kernels.iter().zip(in_browser) {
        let (native, _) = timed(&c, &job(program, name, tasks.clone())).await?;
        let per_task = |d: Duration| d.as_secs_f64() * 1e3 * n as f64 / a.tasks as f64;
        println!(
            "  {name} ({size}, {:.1} Gfuel/task): browser {:.0} ms/task, native {:.0} ms/task; the browser runs at {:.2}× the native worker's speed",
            fuel as f64 / 1e9 / a.tasks as f64,
            per_task(browser),
            per_task(native),
            native.as_secs_f64() / browser.as_secs_f64()
        );
    }
    b.close().await?;
    Ok(0)
}
