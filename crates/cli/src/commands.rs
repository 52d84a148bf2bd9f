//! The user-facing subcommands.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use runegrid_client::Client;
use runegrid_core::{Limits, PolicyKind};
use runegrid_proto::{JobEvent, JobResults, JobStatus, ResultState, SubmitJob, TaskSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API is and who is calling.
pub struct Conn {
    pub url: String,
    pub token: Option<String>,
}

impl Conn {
    /// A client; the token defaults to the admin token of a local coordinator started from the
    /// current directory with the default data directory.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(&self.url, Some(self.token()?)))
    }

    /// The token to use: given, or the local coordinator's admin token.
    pub fn token(&self) -> Result<String> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => runegrid_coordinator::read_admin_token(&crate::default_data_dir()).map_err(|_| {
                anyhow::anyhow!(
                    "no api token: set RUNEGRID_TOKEN (or --token); a coordinator writes its admin token to DATA/admin.token"
                )
            }),
        }
    }
}

/// A byte count: `1048576`, `512K`, `512M`, `8G`, `1T` (powers of 1024; `KB`, `KiB` and a
/// lowercase suffix too).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count: expected e.g. 1048576, 512M or 8G"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "{s:?} is not a byte count: the suffix must be K, M, G or T"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Args)]
pub struct SubmitArgs {
    /// The WASI module (.wasm, or .wat text).
    pub module: PathBuf,
    /// One task per line: {"args": [...], "stdin": "...", "env": {"K": "V"}} (fields optional).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// An argument of the single task (repeatable; without --input-file).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Stdin of the single task.
    #[arg(long)]
    pub stdin: Option<String>,
    /// Environment variable K=V of every task (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[command(flatten)]
    pub check: CheckArgs,
    /// Fuel per attempt (about one unit per WebAssembly instruction).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Linear memory cap per attempt, in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Wall-clock cap per attempt, in seconds.
    #[arg(long)]
    pub wall_time: Option<f64>,
    /// Stdout cap per attempt, in bytes.
    #[arg(long)]
    pub stdout_bytes: Option<u64>,
    /// Cap on the writable in-memory file system per attempt (`/`, with `/tmp` and `/out`),
    /// in MiB; 0: none, only the read-only blobs under /blobs (default 64).
    #[arg(long)]
    pub scratch_mb: Option<u64>,
    /// Cap on the total size of the files a task leaves under /out (they come back with its
    /// result: `results --files DIR`), in MiB (default 16).
    #[arg(long)]
    pub output_mb: Option<u64>,
    /// A name for the job.
    #[arg(long)]
    pub name: Option<String>,
    /// The most the job pays, in credits per 10^9 fuel: it waits while the grid's price is
    /// higher, and its queued tasks run before those of lower bids (default: today's price).
    #[arg(long, value_name = "CREDITS")]
    pub max_price: Option<String>,
    /// A read-only file every task sees as /blobs/NAME, or at /PATH when given as
    /// `/PATH=FILE` (e.g. `/data/input.csv=input.csv`; repeatable): the file is uploaded once
    /// and workers fetch it by its SHA-256 and keep it.
    #[arg(long = "blob", value_name = "NAME=FILE")]
    pub blobs: Vec<String>,
    /// Where every task's random stream starts (below 2^53). Without it each task gets a
    /// fresh seed and nothing is answered from the result cache; with it, tasks with the same
    /// inputs as ones verified before are answered at once.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Never answer the job's tasks from the result cache, nor keep its results there.
    #[arg(long)]
    pub no_cache: bool,
    /// Wait for the job to finish and print its results.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: print each task's first (unverified) result as it arrives, then its
    /// verified result and any correction.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON (with --wait: the results object).
    #[arg(long)]
    pub json: bool,
}

/// The limits of `submit` and `call`: defaults, with what the flags set (memory, scratch and
/// outputs in MiB, wall time in seconds).
pub fn limits_from(
    fuel: Option<u64>,
    memory_mb: Option<u64>,
    wall_time: Option<f64>,
    stdout_bytes: Option<u64>,
    scratch_mb: Option<u64>,
    output_mb: Option<u64>,
) -> Limits {
    let d = Limits::default();
    Limits {
        fuel: fuel.unwrap_or(d.fuel),
        memory_bytes: memory_mb.map_or(d.memory_bytes, |m| m.saturating_mul(1 << 20)),
        wall_time_ms: wall_time.map_or(d.wall_time_ms, |w| (w * 1000.0) as u64),
        stdout_bytes: stdout_bytes.unwrap_or(d.stdout_bytes),
        scratch_bytes: scratch_mb.map_or(d.scratch_bytes, |m| m.saturating_mul(1 << 20)),
        output_bytes: output_mb.map_or(d.output_bytes, |m| m.saturating_mul(1 << 20)),
    }
}

/// How results are checked, for every command that submits work (`submit`, `call`, `chat`).
#[derive(Args, Debug, Clone, Default)]
pub struct CheckArgs {
    /// How results are checked: adaptive (the default without --replicas/--agree: trusted
    /// workers run tasks alone, spot-checked; others are replicated), quorum (the default with
    /// them: always replicated) or none (one attempt, accepted as reported).
    #[arg(long, value_parser = parse_policy)]
    pub policy: Option<PolicyKind>,
    /// Attempts per task (a call, an answer) on distinct workers (adaptive: for untrusted
    /// workers). Default 2 under adaptive, 3 under quorum.
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Matching results needed to accept a task's result (default: a majority of replicas).
    #[arg(long)]
    pub agree: Option<u32>,
    /// Most attempts per task when replicas disagree (default: replicas + 2 × agree).
    #[arg(long)]
    pub max_attempts: Option<u32>,
}

impl CheckArgs {
    /// Whether any of the flags was given.
    pub fn any(&self) -> bool {
        self.policy.is_some()
            || self.replicas.is_some()
            || self.agree.is_some()
            || self.max_attempts.is_some()
    }
}

pub fn parse_policy(s: &str) -> std::result::Result<PolicyKind, String> {
    PolicyKind::parse(s)
        .ok_or_else(|| format!("unknown policy {s}: expected adaptive, quorum or none"))
}

/// Reads an input file: one JSON task per non-empty line.
pub fn read_inputs(path: &std::path::Path) -> Result<Vec<TaskSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut tasks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: TaskSpec = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a task (expected {{\"args\": [...], \"stdin\": \"...\", \"env\": {{...}}}})", path.display(), i + 1))?;
        tasks.push(t);
    }
    if tasks.is_empty() {
        bail!("{} has no tasks", path.display());
    }
    Ok(tasks)
}

pub async fn submit(conn: &Conn, a: SubmitArgs) -> Result<i32> {
    let client = conn.client()?;
    let module =
        std::fs::read(&a.module).with_context(|| format!("reading {}", a.module.display()))?;
    let mut env = BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: expected K=V"))?;
        env.insert(k.to_string(), v.to_string());
    }
    let mut tasks = match &a.input_file {
        Some(p) => {
            if !a.args.is_empty() || a.stdin.is_some() {
                bail!(
                    "--arg and --stdin describe a single task; put them in the input file instead"
                );
            }
            read_inputs(p)?
        }
        None => vec![TaskSpec {
            buffers: Default::default(),
            args: a.args.clone(),
            stdin: a.stdin.clone().unwrap_or_default(),
            env: BTreeMap::new(),
        }],
    };
    for t in &mut tasks {
        for (k, v) in &env {
            t.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let limits = limits_from(
        a.fuel,
        a.memory_mb,
        a.wall_time,
        a.stdout_bytes,
        a.scratch_mb,
        a.output_mb,
    );
    let mut blobs = BTreeMap::new();
    for spec in &a.blobs {
        let (name, file) = spec
            .split_once('=')
            .with_context(|| format!("--blob {spec}: expected NAME=FILE"))?;
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        let info = client.upload_blob(bytes).await?;
        blobs.insert(name.to_string(), info.sha256);
    }
    let program = client.upload_program(module).await?;
    let n = tasks.len();
    let max_price = match &a.max_price {
        Some(p) => Some(crate::credits::parse_credits(p).context("--max-price")? as u64),
        None => None,
    };
    let job = SubmitJob {
        gpu: None,
        max_price,
        program: program.program,
        name: a.name.clone().or_else(|| {
            a.module
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        }),
        tasks,
        policy: a.check.policy,
        replicas: a.check.replicas,
        agree: a.check.agree,
        max_attempts: a.check.max_attempts,
        limits,
        blobs,
        seed: a.seed,
        cache: a.no_cache.then_some(false),
    };
    let (policy, replicas, agree) = job.resolved_policy().map_err(anyhow::Error::msg)?;
    let sub = client.submit(&job).await?;
    if !a.wait {
        if a.json {
            println!("{}", serde_json::to_string(&sub)?);
        } else {
            println!(
                "job {} submitted: {} tasks{}",
                sub.job,
                n,
                held_note(&sub.cost)
            );
        }
        return Ok(0);
    }
    if !a.json {
        let how = match policy {
            PolicyKind::None => "each run once, unreplicated".to_string(),
            PolicyKind::Quorum => format!("{agree} of {replicas} replicas must agree"),
            PolicyKind::Adaptive => format!(
                "adaptive: trusted workers alone with spot checks, others {agree} of {replicas}"
            ),
        };
        eprintln!(
            "job {} submitted: {} tasks, {how}{}",
            sub.job,
            n,
            held_note(&sub.cost)
        );
    }
    let results = if a.watch && !a.json {
        watch(&client, sub.job).await?
    } else {
        wait_with_progress(&client, sub.job, !a.json).await?
    };
    print_results(&results, a.json)?;
    Ok(exit_code(&results))
}

/// 0 when every task verified, 3 when some failed or were cancelled.
pub fn exit_code(r: &JobResults) -> i32 {
    if r.tasks.iter().all(|t| t.state == ResultState::Verified) {
        0
    } else {
        3
    }
}

/// Follows the job's events (with a progress bar when `bar`) until it is done, then fetches
/// the results.
pub async fn wait_with_progress(client: &Client, job: i64, bar: bool) -> Result<JobResults> {
    let status = client.status(job).await?;
    let pb = if bar {
        let pb = ProgressBar::new(status.counts.total());
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {msg}",
            )
            .expect("valid template"),
        );
        pb.enable_steady_tick(Duration::from_millis(120));
        Some(pb)
    } else {
        None
    };
    let mut last_hint = std::time::Instant::now();
    loop {
        // The event stream ends when the job is done; if it breaks, reconnect.
        let mut events = client.events(job).await?;
        let mut done = false;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
            let ev = match ev {
                Ok(Some(ev)) => ev?,
                Ok(None) => break,
                Err(_) => {
                    // Quiet for a while: say why, if the coordinator knows.
                    if let (Some(pb), Ok(st)) = (&pb, client.status(job).await) {
                        pb.set_message(st.waiting_for.unwrap_or_default());
                    }
                    continue;
                }
            };
            match ev {
                JobEvent::Progress { counts } => {
                    if let Some(pb) = &pb {
                        pb.set_position(counts.finished());
                        if last_hint.elapsed() > Duration::from_secs(1) {
                            pb.set_message(format!(
                                "{} verified, {} failed",
                                counts.verified, counts.failed
                            ));
                            last_hint = std::time::Instant::now();
                        }
                    }
                }
                JobEvent::Done { counts, .. } => {
                    if let Some(pb) = &pb {
                        pb.set_position(counts.finished());
                        pb.finish_with_message(format!(
                            "{} verified, {} failed",
                            counts.verified, counts.failed
                        ));
                    }
                    done = true;
                    break;
                }
                _ => {}
            }
        }
        if done || client.status(job).await?.state.is_finished() {
            break;
        }
    }
    Ok(client.results(job, None).await?)
}

/// Prints every task event of a job until it is done (first results unverified, then verified
/// results and corrections), then fetches the results.
pub async fn watch(client: &Client, job: i64) -> Result<JobResults> {
    let describe = |r: &runegrid_proto::TaskResult| {
        let out = match (&r.error, &r.stdout) {
            (Some(e), _) => format!("error: {}", first_line(e, 80)),
            (None, Some(s)) => first_line(s, 60),
            _ => String::new(),
        };
        let how = r.acceptance.map(|a| format!(" ({a})")).unwrap_or_default();
        format!("task {} {}{how}: {out}", r.index, r.state)
    };
    loop {
        let mut events = client.events(job).await?;
        while let Some(ev) = events.next().await {
            match ev? {
                JobEvent::Task { result } => println!("{}", describe(&result)),
                JobEvent::Corrected {
                    result,
                    previous_digest,
                } => println!(
                    "{} — corrected by an audit (was {})",
                    describe(&result),
                    previous_digest.map(|d| d.short()).unwrap_or_default()
                ),
                JobEvent::Done { .. } => return Ok(client.results(job, None).await?),
                _ => {}
            }
        }
        if client.status(job).await?.state.is_finished() {
            return Ok(client.results(job, None).await?);
        }
    }
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

pub fn print_results(r: &JobResults, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let verified = r
        .tasks
        .iter()
        .filter(|t| t.state == ResultState::Verified)
        .count();
    println!(
        "job {}: {} tasks, {} verified",
        r.job,
        r.tasks.len(),
        verified
    );
    println!(
        "{:>6}  {:<10} {:<12} {:>4} {:>14} {:>8}  {:<12}  output",
        "task", "state", "accepted", "exit", "fuel", "attempts", "digest"
    );
    for t in &r.tasks {
        let out = match (&t.error, &t.stdout, &t.stdout_base64) {
            (Some(e), _, _) => format!("error: {}", first_line(e, 80)),
            (None, _, Some(_)) => format!(
                "({} bytes of binary output)",
                t.stdout_bytes().map_or(0, |b| b.len())
            ),
            (None, Some(s), None) => first_line(s, 60),
            _ => String::new(),
        };
        println!(
            "{:>6}  {:<10} {:<12} {:>4} {:>14} {:>8}  {:<12}  {}",
            t.index,
            t.state,
            t.acceptance.map_or("-", |a| a.as_str()),
            t.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            t.fuel.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
            t.attempts,
            t.digest.map(|d| d.short()).unwrap_or_else(|| "-".into()),
            out
        );
    }
    // Errors in full, where the table had to cut them.
    for t in &r.tasks {
        if let Some(e) = t
            .error
            .as_deref()
            .filter(|e| e.chars().count() > 80 || e.contains('\n'))
        {
            println!("task {}: {}", t.index, e);
        }
    }
    // Output files: listed; `results --files DIR` downloads them.
    for t in r.tasks.iter().filter(|t| !t.files.is_empty()) {
        let total: u64 = t.files.iter().map(|f| f.size).sum();
        println!(
            "task {}: {} file{} under /out ({total} bytes): {}",
            t.index,
            t.files.len(),
            if t.files.len() == 1 { "" } else { "s" },
            t.files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct JobArgs {
    pub job: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ResultsArgs {
    pub job: i64,
    #[arg(long)]
    pub json: bool,
    /// Wait for the job to finish first.
    #[arg(long)]
    pub wait: bool,
    /// Download the files each task left under /out into DIR/TASK/PATH.
    #[arg(long, value_name = "DIR")]
    pub files: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct JsonArgs {
    #[arg(long)]
    pub json: bool,
}

fn print_status(s: &JobStatus) {
    let c = s.counts;
    println!(
        "job {} ({}) {}, policy {}: {} tasks — {} verified, {} failed, {} running, {} queued{}",
        s.job,
        if s.name.is_empty() {
            "unnamed"
        } else {
            &s.name
        },
        s.state,
        s.policy,
        c.total(),
        c.verified,
        c.failed,
        c.running,
        c.queued,
        if c.cancelled > 0 {
            format!(", {} cancelled", c.cancelled)
        } else {
            String::new()
        }
    );
    if let Some(w) = &s.waiting_for {
        println!("  waiting: {w}");
    }
    if s.cached > 0 {
        println!(
            "  answered from the result cache: {} of {} tasks (no attempt, nothing paid)",
            s.cached,
            c.total()
        );
    }
    print_cost(s);
}

/// A job's cost so far, or its final cost (nothing for a job from before credits).
fn print_cost(s: &JobStatus) {
    if let Some(c) = &s.cost {
        let credits = runegrid_coordinator::credits;
        if !s.state.is_finished() {
            println!(
                "  cost so far: {} (held {} at {} per 10^9 fuel)",
                credits(c.spent),
                credits(c.held),
                credits(c.price as i64)
            );
        } else {
            println!(
                "  cost: {} at {} per 10^9 fuel",
                credits(c.spent),
                credits(c.price as i64)
            );
        }
    }
}

/// `; price P per 10^9 fuel, H held` for a submission's confirmation.
fn held_note(cost: &Option<runegrid_proto::JobCost>) -> String {
    let credits = runegrid_coordinator::credits;
    match cost {
        Some(c) if c.held > 0 => format!(
            "; price {} per 10^9 fuel, {} held until it finishes",
            credits(c.price as i64),
            credits(c.held)
        ),
        Some(c) => format!(
            "; price {} per 10^9 fuel (this grid does not charge)",
            credits(c.price as i64)
        ),
        None => String::new(),
    }
}

pub async fn status(conn: &Conn, a: JobArgs) -> Result<i32> {
    let s = conn.client()?.status(a.job).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_status(&s);
    }
    Ok(0)
}

pub async fn cancel(conn: &Conn, a: JobArgs) -> Result<i32> {
    let s = conn.client()?.cancel(a.job).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_status(&s);
    }
    Ok(0)
}

pub async fn results(conn: &Conn, a: ResultsArgs) -> Result<i32> {
    let client = conn.client()?;
    let r = if a.wait {
        wait_with_progress(&client, a.job, !a.json).await?
    } else {
        client.results(a.job, None).await?
    };
    print_results(&r, a.json)?;
    if let Some(dir) = &a.files {
        download_files(&client, &r, dir, !a.json).await?;
    }
    if !a.json
        && let Ok(s) = client.status(a.job).await
    {
        print_cost(&s);
    }
    Ok(exit_code(&r))
}

/// Writes every task's output files to `dir/TASK/PATH`.
async fn download_files(
    client: &runegrid_client::Client,
    r: &JobResults,
    dir: &std::path::Path,
    say: bool,
) -> Result<()> {
    let (mut count, mut bytes) = (0u64, 0u64);
    for t in &r.tasks {
        for f in &t.files {
            // Paths come from the coordinator: only plain components below the task's folder.
            let parts: Vec<&str> = f.path.split('/').collect();
            if parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\\'))
            {
                bail!("task {}: refusing the file path {:?}", t.index, f.path);
            }
            let data = client
                .task_file(r.job, t.index, &f.path)
                .await
                .with_context(|| format!("downloading {} of task {}", f.path, t.index))?;
            let to = parts
                .iter()
                .fold(dir.join(t.index.to_string()), |p, c| p.join(c));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&to, &data).with_context(|| format!("writing {}", to.display()))?;
            count += 1;
            bytes += data.len() as u64;
        }
    }
    if say {
        println!(
            "wrote {count} file{} ({bytes} bytes) under {}",
            if count == 1 { "" } else { "s" },
            dir.display()
        );
    }
    Ok(())
}

pub async fn jobs(conn: &Conn, a: JsonArgs) -> Result<i32> {
    let jobs = conn.client()?.jobs().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
    } else if jobs.is_empty() {
        println!("no jobs");
    } else {
        for j in &jobs {
            print_status(j);
        }
    }
    Ok(0)
}

#[derive(Args)]
pub struct WorkersArgs {
    #[arg(long)]
    pub json: bool,
    /// Lift the quarantine of the worker with this id (admin only): it starts over as new.
    #[arg(long, value_name = "ID")]
    pub release: Option<i64>,
}

pub async fn workers(conn: &Conn, a: WorkersArgs) -> Result<i32> {
    if let Some(id) = a.release {
        let w = conn.client()?.release_worker(id).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&w)?);
        } else {
            println!("worker {} ({}) released: now {}", w.id, w.name, w.standing);
        }
        return Ok(0);
    }
    let ws = conn.client()?.workers().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&ws)?);
        return Ok(0);
    }
    if ws.is_empty() {
        println!("no workers have connected yet");
        return Ok(0);
    }
    println!(
        "{:>4}  {:<20} {:<10} {:<9} {:>5} {:>7} {:>9}  {:<11} {:>5} {:>6} {:>5} {:>5}  key",
        "id",
        "name",
        "owner",
        "state",
        "slots",
        "running",
        "completed",
        "standing",
        "score",
        "agreed",
        "disag",
        "speed"
    );
    for w in &ws {
        println!(
            "{:>4}  {:<20} {:<10} {:<9} {:>5} {:>7} {:>9}  {:<11} {:>5.2} {:>6} {:>5} {:>5}  {}…",
            w.id,
            first_line(&w.name, 20),
            first_line(&w.owner, 10),
            if w.connected { "connected" } else { "offline" },
            w.slots,
            w.running,
            w.completed,
            w.standing,
            w.score,
            w.agreed,
            w.disagreed,
            if w.speed > 0.0 {
                format!("{:.1}", w.speed)
            } else {
                "-".into()
            },
            &w.public_key[..12.min(w.public_key.len())]
        );
    }
    for w in &ws {
        let Some(gpu) = w.capabilities.get("gpu").filter(|g| g.is_object()) else {
            continue;
        };
        let text = |k: &str| {
            gpu.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        println!(
            "worker {} GPU: {} ({}, {} {}){}",
            w.id,
            text("name"),
            text("backend"),
            text("driver"),
            text("driver_info"),
            if gpu.get("software").and_then(|v| v.as_bool()) == Some(true) {
                ", software: only for jobs that allow it"
            } else {
                ""
            }
        );
    }
    for w in ws.iter().filter(|w| w.quarantine.is_some()) {
        println!(
            "worker {} is quarantined: {}",
            w.id,
            w.quarantine.as_deref().unwrap_or_default()
        );
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum AccountCmd {
    /// Create an account and print its token (admin only).
    Create {
        name: String,
        /// Make it an admin.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the account of the current token.
    Whoami,
    /// Show this account by NAME on the dashboard's contributors' leaderboard (without NAME:
    /// listed without a name).
    DisplayName { name: Option<String> },
}

/// `account create`, `account whoami`.
pub async fn account(conn: &Conn, a: AccountCmd) -> Result<i32> {
    let client = conn.client()?;
    match a {
        AccountCmd::Create { name, admin, json } => {
            let acct = client.create_account(&name, admin).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&acct)?);
            } else {
                println!("account {} created (id {})", acct.name, acct.id);
                println!("token: {}", acct.token.unwrap_or_default());
            }
        }
        AccountCmd::DisplayName { name } => {
            client.set_display_name(name.as_deref()).await?;
            match name {
                Some(n) => println!("shown on the leaderboard as {n}"),
                None => println!("shown on the leaderboard without a name"),
            }
        }
        AccountCmd::Whoami => {
            let me = client.me().await?;
            println!(
                "{} (id {}{})",
                me.name,
                me.id,
                if me.admin { ", admin" } else { "" }
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("8G"), Ok(runegrid_worker::DEFAULT_BLOB_SPACE));
        assert_eq!(parse_bytes("8gib"), Ok(8 << 30));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        for bad in ["", "G", "8X", "-1", "1.5G", "99999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
