//! `runegrid`: the one binary — coordinator, worker, and the user's CLI.

mod bench;
mod bench_browser;
mod bench_infer;
mod bench_trust;
mod call;
mod chat;
mod commands;
mod demo;
mod procs;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "runegrid",
    version,
    about = "A compute grid made of other people's idle machines"
)]
struct Cli {
    /// Coordinator URL.
    #[arg(
        long,
        global = true,
        env = "RUNEGRID_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// API token (default: the admin token of a coordinator started from this directory).
    #[arg(long, global = true, env = "RUNEGRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How logs are written to stderr: `text` for people, `json` (one object a line) for log
    /// collectors. Levels come from RUNEGRID_LOG (e.g. `info,runegrid_coordinator=debug`).
    #[arg(
        long,
        global = true,
        env = "RUNEGRID_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator.
    Serve(commands::ServeArgs),
    /// Run a native worker that dials a coordinator.
    Worker(commands::WorkerArgs),
    /// Submit a job: a WASI module and its inputs.
    Submit(commands::SubmitArgs),
    /// Call a function of a Rune script on the grid and print what it returns.
    Call(call::CallArgs),
    /// Chat with a language model running on the grid (tokens stream, then the answer is
    /// verified).
    Chat(chat::ChatArgs),
    /// Show a job's progress.
    Status(commands::JobArgs),
    /// Show a job's results.
    Results(commands::ResultsArgs),
    /// List your jobs.
    Jobs(commands::JsonArgs),
    /// Cancel a job.
    Cancel(commands::JobArgs),
    /// List workers.
    Workers(commands::WorkersArgs),
    /// Manage accounts (admin).
    #[command(subcommand)]
    Account(commands::AccountCmd),
    /// Start a local grid (a coordinator and workers) and run an example job on it.
    Demo(demo::DemoArgs),
    /// Measure round trips, throughput and sandbox overhead on a local grid (`bench trust`:
    /// verification under misbehaving workers; `bench browser`: a browser worker vs a native one).
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where `serve` keeps its data unless told otherwise.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(".runegrid/coordinator")
}

pub fn default_listen() -> SocketAddr {
    "127.0.0.1:7070".parse().expect("valid address")
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNEGRID_LOG").unwrap_or_else(|_| {
        let default = match cli.command {
            Command::Serve(_) | Command::Worker(_) => "info",
            _ => "warn",
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    let conn = commands::Conn {
        url: cli.url,
        token: cli.token,
    };
    match cli.command {
        Command::Serve(a) => commands::serve(a).await,
        Command::Worker(a) => commands::worker(&conn, a).await,
        Command::Submit(a) => commands::submit(&conn, a).await,
        Command::Call(a) => call::call(&conn, a).await,
        Command::Chat(a) => chat::chat(&conn, a).await,
        Command::Status(a) => commands::status(&conn, a).await,
        Command::Results(a) => commands::results(&conn, a).await,
        Command::Jobs(a) => commands::jobs(&conn, a).await,
        Command::Cancel(a) => commands::cancel(&conn, a).await,
        Command::Workers(a) => commands::workers(&conn, a).await,
        Command::Account(a) => commands::account(&conn, a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Bench(a) => bench::run(a).await,
    }
}
