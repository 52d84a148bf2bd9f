//! `runegrid`: the one binary — coordinator, worker, and the user's CLI. All of it lives in
//! this library and `src/main.rs` only calls [`main`]: cargo starts compiling a library as soon
//! as its dependencies' metadata is ready, so the CLI's code is compiled alongside the
//! coordinator's instead of after it (a first build's last step is then a link).

mod bench;
mod bench_browser;
mod bench_credits;
mod bench_gpu;
mod bench_infer;
mod bench_programs;
mod bench_swarm;
mod bench_trust;
mod call;
mod chat;
mod commands;
mod credits;
mod demo;
mod gpu;
mod node;
mod procs;
mod relay;
mod webdriver;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    Serve(node::ServeArgs),
    /// Run a native worker that dials a coordinator.
    Worker(node::WorkerArgs),
    /// Run a relay: workers connect to it, and it forwards them to the coordinator over one
    /// connection, caching programs and blobs (the token: the relay operator's).
    Relay(relay::RelayArgs),
    /// Submit a job: a WASI module and its inputs.
    Submit(commands::SubmitArgs),
    /// Call a function of a Rune script on the grid and print what it returns.
    Call(call::CallArgs),
    /// Run a WGSL compute kernel on the grid's GPUs and write its output buffers to files.
    Gpu(gpu::GpuArgs),
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
    /// Your credits: balance, held, earned, spent (`account create`, `account whoami`: manage
    /// accounts).
    Account(credits::AccountArgs),
    /// Your statement: every transfer into or out of your account, newest first (`ledger
    /// check`: verify a data directory's books).
    Ledger(credits::LedgerArgs),
    /// Grant credits (admin).
    #[command(subcommand)]
    Credits(credits::CreditsCmd),
    /// What work costs now.
    Price(credits::PriceArgs),
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

/// The levels of `RUNEGRID_LOG` (`LEVEL` and `TARGET=LEVEL` directives, comma-separated), else
/// `default`; a value that does not parse is reported and `default` used.
fn log_filter(var: Option<&str>, default: &str) -> Targets {
    let default_filter = || default.parse().expect("valid default log directives");
    match var {
        None => default_filter(),
        Some(value) => value.parse().unwrap_or_else(|e| {
            eprintln!(
                "warning: RUNEGRID_LOG={value:?} is not a list of LEVEL or TARGET=LEVEL \
                 directives ({e}); logging at `{default}`"
            );
            default_filter()
        }),
    }
}

/// Runs the command line: parses the arguments, sets up logging, runs the command and exits
/// with its status.
pub fn main() {
    let cli = Cli::parse();
    let default = match cli.command {
        Command::Serve(_) | Command::Worker(_) | Command::Relay(_) => "info",
        _ => "warn",
    };
    let filter = log_filter(std::env::var("RUNEGRID_LOG").ok().as_deref(), default);
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.finish().with(filter).init(),
        LogFormat::Json => logs.json().flatten_event(true).finish().with(filter).init(),
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
        Command::Serve(a) => node::serve(a).await,
        Command::Worker(a) => node::worker(&conn, a).await,
        Command::Relay(a) => relay::run(&conn, a).await,
        Command::Submit(a) => commands::submit(&conn, a).await,
        Command::Call(a) => call::call(&conn, a).await,
        Command::Gpu(a) => gpu::gpu(&conn, a).await,
        Command::Chat(a) => chat::chat(&conn, a).await,
        Command::Status(a) => commands::status(&conn, a).await,
        Command::Results(a) => commands::results(&conn, a).await,
        Command::Jobs(a) => commands::jobs(&conn, a).await,
        Command::Cancel(a) => commands::cancel(&conn, a).await,
        Command::Workers(a) => commands::workers(&conn, a).await,
        Command::Account(a) => credits::account(&conn, a).await,
        Command::Ledger(a) => credits::ledger(&conn, a).await,
        Command::Credits(c) => credits::credits_cmd(&conn, c).await,
        Command::Price(a) => credits::price(&conn, a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Bench(a) => bench::run(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn log_levels_follow_runegrid_log_and_fall_back_to_the_default() {
        let filter = log_filter(Some("warn,runegrid_coordinator=debug"), "info");
        assert!(filter.would_enable("runegrid_coordinator::dispatch", &Level::DEBUG));
        assert!(!filter.would_enable("runegrid_coordinator::dispatch", &Level::TRACE));
        assert!(!filter.would_enable("hyper::proto", &Level::INFO));
        assert!(filter.would_enable("hyper::proto", &Level::WARN));

        let unset = log_filter(None, "info");
        assert!(unset.would_enable("runegrid_worker", &Level::INFO));
        assert!(!unset.would_enable("runegrid_worker", &Level::DEBUG));

        let malformed = log_filter(Some("runegrid_worker=loud"), "warn");
        assert!(malformed.would_enable("runegrid_worker", &Level::WARN));
        assert!(!malformed.would_enable("runegrid_worker", &Level::INFO));
    }
}
