//! Test harness: a real coordinator and real worker processes on loopback ports.
#![allow(dead_code)]

use runegrid_client::Client;
use runegrid_proto::{JobResults, SubmitJob, TaskSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `runegrid` binary cargo built for these tests (unset under `cargo check`).
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_runegrid") {
    Some(p) => p,
    None => "runegrid",
};

/// Runs `cmd` to completion, killing it and failing the test (with what it printed) when it
/// runs past `timeout`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {timeout:?}; it printed:\n{}\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub struct Grid {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub heartbeat_ms: u64,
    /// Extra `serve` flags.
    pub serve_args: Vec<String>,
    /// The coordinator's data directory, under `dir`.
    data_name: String,
    coordinator: Option<Child>,
    workers: Vec<Option<Child>>,
}

/// The log file `DIR/NAME.log` a process writes to (appended to across restarts).
pub fn log(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap()
}

impl Grid {
    pub async fn start() -> Grid {
        Grid::start_with(300).await
    }

    pub async fn start_with(heartbeat_ms: u64) -> Grid {
        Grid::start_opts(heartbeat_ms, &[]).await
    }

    /// A grid whose coordinator gets extra `serve` flags. Unless they say otherwise, accounts
    /// start with credits enough for any test (jobs at the largest fuel limit hold a million
    /// credits an attempt); `tests/credits.rs` is where credits run short.
    pub async fn start_opts(heartbeat_ms: u64, serve_args: &[&str]) -> Grid {
        let mut serve_args: Vec<String> = serve_args.iter().map(|s| s.to_string()).collect();
        if !serve_args.iter().any(|a| a == "--welcome-credits") {
            serve_args.extend(["--welcome-credits".into(), "100000000000".into()]);
        }
        let dir = tempfile::Builder::new()
            .prefix("runegrid-test-")
            .tempdir()
            .unwrap();
        let mut g = Grid {
            dir,
            url: String::new(),
            token: String::new(),
            heartbeat_ms,
            serve_args,
            data_name: "coordinator".into(),
            coordinator: None,
            workers: vec![],
        };
        g.start_coordinator("127.0.0.1:0").await;
        g
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join(&self.data_name)
    }

    async fn start_coordinator(&mut self, listen: &str) {
        let data = self.data();
        let url_file = data.join("coordinator.url");
        let _ = std::fs::remove_file(&url_file);
        let child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                listen,
                "--heartbeat-ms",
                &self.heartbeat_ms.to_string(),
                "--lease-grace-secs",
                "2",
                "--data",
            ])
            .arg(&data)
            .args(&self.serve_args)
            .env("RUNEGRID_LOG", "info,runegrid_coordinator=debug")
            .stdin(Stdio::null())
            .stdout(log(self.dir.path(), "coordinator"))
            .stderr(log(self.dir.path(), "coordinator"))
            .spawn()
            .unwrap();
        self.coordinator = Some(child);
        // A first start pre-initializes the Rune runner: tens of seconds on a busy 2-core machine.
        self.url = wait_until("the coordinator url file", Duration::from_secs(180), || {
            let f = url_file.clone();
            async move {
                std::fs::read_to_string(&f)
                    .ok()
                    .map(|s| s.trim().to_string())
            }
        })
        .await;
        // A coordinator on a database that has its admin already writes no token file.
        if let Ok(token) = std::fs::read_to_string(data.join("admin.token")) {
            self.token = token.trim().to_string();
        }
    }

    /// Kills the coordinator with SIGKILL and starts it again on the same port and data.
    pub async fn restart_coordinator(&mut self) {
        let mut c = self.coordinator.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        let listen = self.url.trim_start_matches("http://").to_string();
        self.start_coordinator(&listen).await;
    }

    /// Kills the coordinator with SIGKILL and starts another on the same port and `serve`
    /// flags (a `--store` database) with a data directory of its own, `DIR/data_name`.
    pub async fn replace_coordinator(&mut self, data_name: &str) {
        let mut c = self.coordinator.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        self.data_name = data_name.into();
        let listen = self.url.trim_start_matches("http://").to_string();
        self.start_coordinator(&listen).await;
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.token.clone()))
    }

    pub fn client_with(&self, token: &str) -> Client {
        Client::new(&self.url, Some(token.to_string()))
    }

    /// Starts a worker process (dialling the coordinator unless `extra` has a `--coordinator`,
    /// e.g. a relay's); returns its index.
    pub fn worker(&mut self, name: &str, slots: u32, extra: &[&str]) -> usize {
        let mut cmd = Command::new(BIN);
        cmd.args(["worker", "--name", name, "--slots", &slots.to_string()]);
        if !extra.contains(&"--coordinator") {
            cmd.args(["--coordinator", &self.url]);
        }
        if !extra.contains(&"--data") {
            cmd.arg("--data").arg(self.dir.path().join(name));
        }
        let child = cmd
            .args(extra)
            .env("RUNEGRID_TOKEN", &self.token)
            .env("RUNEGRID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log(self.dir.path(), name))
            .stderr(log(self.dir.path(), name))
            .spawn()
            .unwrap();
        self.workers.push(Some(child));
        self.workers.len() - 1
    }

    pub fn kill_worker(&mut self, i: usize) {
        let mut c = self.workers[i].take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// The exit status of a worker process, if it has exited.
    pub fn try_wait_worker(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.workers[i].as_mut().unwrap().try_wait().unwrap()
    }

    pub fn worker_pid(&self, i: usize) -> u32 {
        self.workers[i].as_ref().unwrap().id()
    }

    pub async fn wait_workers(&self, n: usize) {
        let c = self.client();
        wait_until(
            &format!("{n} connected workers"),
            Duration::from_secs(60),
            || {
                let c = c.clone();
                async move {
                    let ws = c.workers().await.ok()?;
                    (ws.iter().filter(|w| w.connected).count() >= n).then_some(())
                }
            },
        )
        .await
    }

    /// Waits until some worker's record satisfies `pred`.
    pub async fn wait_worker(
        &self,
        what: &str,
        pred: impl Fn(&runegrid_proto::WorkerInfo) -> bool,
    ) {
        let c = self.client();
        let pred = &pred;
        wait_until(what, Duration::from_secs(60), || {
            let c = c.clone();
            async move { c.workers().await.ok()?.iter().any(pred).then_some(()) }
        })
        .await
    }

    pub async fn upload(&self, module: &[u8]) -> String {
        self.client()
            .upload_program(module.to_vec())
            .await
            .unwrap()
            .program
    }

    /// Submits and waits for the job (up to 120 s).
    pub async fn run(&self, job: &SubmitJob) -> JobResults {
        let c = self.client();
        let sub = c.submit(job).await.unwrap();
        self.wait(sub.job).await
    }

    pub async fn wait(&self, job: i64) -> JobResults {
        let c = self.client();
        wait_until(
            &format!("job {job} to finish"),
            Duration::from_secs(120),
            || {
                let c = c.clone();
                async move {
                    let s = c.status(job).await.ok()?;
                    s.state.is_finished().then_some(())
                }
            },
        )
        .await;
        c.results(job, None).await.unwrap()
    }

    /// The environment that points the CLI at this grid.
    pub fn cli_env(&self) -> [(&'static str, String); 2] {
        [
            ("RUNEGRID_URL", self.url.clone()),
            ("RUNEGRID_TOKEN", self.token.clone()),
        ]
    }

    /// Runs the CLI against this grid.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("RUNEGRID_URL", &self.url)
            .env("RUNEGRID_TOKEN", &self.token)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// The logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                out.push_str(&format!("==== {}\n", e.path().display()));
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let start = text.len().saturating_sub(4000);
                out.push_str(&text[text.floor_char_boundary(start)..]);
            }
        }
        out
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        for c in self
            .workers
            .iter_mut()
            .flatten()
            .chain(self.coordinator.as_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            return;
        }
        // Whatever the test did, the coordinator was just killed with SIGKILL: its books must
        // balance.
        let mut check = Command::new(BIN);
        check.args(["ledger", "check", "--data"]).arg(self.data());
        // A coordinator whose records are elsewhere (`serve --store URL`) is checked there.
        if let Some(i) = self.serve_args.iter().position(|a| a == "--store") {
            check.args(&self.serve_args[i..=i + 1]);
        }
        let check = check.output().unwrap();
        if !check.status.success() {
            eprintln!("{}", self.logs());
            panic!(
                "the books do not balance after the test: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}

pub fn job(program: &str, tasks: Vec<TaskSpec>, replicas: u32, agree: u32) -> SubmitJob {
    SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.to_string(),
        name: Some("test".into()),
        tasks,
        policy: None,
        replicas: Some(replicas),
        agree: Some(agree),
        max_attempts: None,
        limits: Default::default(),
        blobs: Default::default(),
    }
}

pub fn args(a: &[&str]) -> TaskSpec {
    TaskSpec {
        args: a.iter().map(|s| s.to_string()).collect(),
        ..TaskSpec::default()
    }
}

/// Whether this machine has a Vulkan adapter for GPU tests; without one the caller skips,
/// saying so, unless `RUNEGRID_REQUIRE_GPU` is set (CI), which makes it a failure.
pub fn have_gpu() -> bool {
    let found = !runegrid_gpu::adapters().is_empty();
    if !found {
        assert!(
            std::env::var_os("RUNEGRID_REQUIRE_GPU").is_none(),
            "RUNEGRID_REQUIRE_GPU is set but there is no Vulkan adapter (apt-get install mesa-vulkan-drivers)"
        );
        eprintln!("note: skipping a GPU test: no Vulkan adapter");
    }
    found
}
