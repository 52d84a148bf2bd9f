//! A local grid of real processes: one coordinator and some workers, children of this process.

use anyhow::{Context, Result, bail};
use runegrid_client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A coordinator and workers running as child processes; all are killed on drop.
pub struct LocalGrid {
    pub dir: PathBuf,
    pub url: String,
    pub token: String,
    coordinator: Child,
    /// The extra `serve` flags it was started with (a restart passes them again).
    serve_args: Vec<String>,
    workers: Vec<Child>,
    _tmp: Option<tempfile::TempDir>,
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().context("locating the runegrid binary")
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .with_context(|| format!("creating {name}.log"))
}

/// Starts `runegrid serve` on `listen` with its data in `dir/coordinator`, its log appended to
/// `dir/coordinator.log`.
fn spawn_coordinator(dir: &Path, listen: &str, serve_args: &[String]) -> Result<Child> {
    let data = dir.join("coordinator");
    let _ = std::fs::remove_file(data.join(crate::node::URL_FILE));
    let log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("coordinator.log"))
            .context("opening coordinator.log")
    };
    Command::new(exe()?)
        .args(["serve", "--listen", listen, "--data"])
        .arg(&data)
        .args(serve_args)
        .env(
            "RUNEGRID_LOG",
            std::env::var("RUNEGRID_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log()?)
        .stderr(log()?)
        .spawn()
        .context("starting the coordinator")
}

impl LocalGrid {
    /// Starts a coordinator on a free loopback port with its data under `dir` (a temporary
    /// directory when `None`) and waits until it answers.
    pub async fn start(dir: Option<PathBuf>) -> Result<LocalGrid> {
        LocalGrid::start_with(dir, &[]).await
    }

    /// Like [`LocalGrid::start`], with extra `serve` flags.
    pub async fn start_with(dir: Option<PathBuf>, serve_args: &[&str]) -> Result<LocalGrid> {
        let (dir, tmp) = match dir {
            Some(d) => {
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("runegrid-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let serve_args: Vec<String> = serve_args.iter().map(|a| a.to_string()).collect();
        // A new grid's log starts empty; a restart's is appended to it.
        let _ = std::fs::remove_file(dir.join("coordinator.log"));
        let coordinator = spawn_coordinator(&dir, "127.0.0.1:0", &serve_args)?;
        let mut grid = LocalGrid {
            dir: dir.clone(),
            url: String::new(),
            token: String::new(),
            coordinator,
            serve_args,
            workers: vec![],
            _tmp: tmp,
        };
        grid.url = grid.wait_for_url().await?;
        grid.token = runegrid_coordinator::read_admin_token(&grid.data_dir())
            .context("reading the admin token")?;
        Ok(grid)
    }

    /// Waits until the coordinator wrote the URL it listens on, and returns it.
    async fn wait_for_url(&mut self) -> Result<String> {
        let file = self.data_dir().join(crate::node::URL_FILE);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(url) = std::fs::read_to_string(&file) {
                return Ok(url.trim().to_string());
            }
            if let Some(status) = self.coordinator.try_wait()? {
                bail!(
                    "the coordinator exited ({status}); see {}",
                    self.dir.join("coordinator.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the coordinator did not start within 30 s; see {}",
                    self.dir.join("coordinator.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The coordinator's process id.
    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator.id()
    }

    /// Kills the coordinator (SIGKILL: nothing flushed, as a crash) and waits for it to end.
    pub fn kill_coordinator(&mut self) -> Result<()> {
        self.coordinator.kill().context("killing the coordinator")?;
        self.coordinator.wait()?;
        Ok(())
    }

    /// Starts the coordinator again on the same data directory and address (after
    /// [`LocalGrid::kill_coordinator`]) and waits until it listens.
    pub async fn restart_coordinator(&mut self) -> Result<()> {
        let listen = self
            .url
            .strip_prefix("http://")
            .context("the coordinator's url")?
            .to_string();
        self.coordinator = spawn_coordinator(&self.dir, &listen, &self.serve_args)?;
        self.url = self.wait_for_url().await?;
        Ok(())
    }

    /// The coordinator's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("coordinator")
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.token.clone()))
    }

    /// Starts a worker process with its own data directory.
    pub fn spawn_worker(&mut self, name: &str, slots: u32, extra: &[&str]) -> Result<()> {
        let data = self.dir.join(name);
        let child = Command::new(exe()?)
            .args([
                "worker",
                "--coordinator",
                &self.url,
                "--name",
                name,
                "--slots",
                &slots.to_string(),
                "--data",
            ])
            .arg(&data)
            .args(extra)
            .env("RUNEGRID_TOKEN", &self.token)
            .env(
                "RUNEGRID_LOG",
                std::env::var("RUNEGRID_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, name)?)
            .stderr(log_file(&self.dir, name)?)
            .spawn()
            .with_context(|| format!("starting worker {name}"))?;
        self.workers.push(child);
        Ok(())
    }

    /// Starts a relay process (`runegrid relay`) towards the coordinator, with its data in
    /// `dir/NAME` (killed with the workers); returns its URL once it listens, and its pid.
    pub async fn spawn_relay(&mut self, name: &str) -> Result<(String, u32)> {
        let data = self.dir.join(name);
        let url_file = data.join(crate::relay::URL_FILE);
        let _ = std::fs::remove_file(&url_file);
        let child = Command::new(exe()?)
            .args([
                "relay",
                "--upstream",
                &self.url,
                "--listen",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(&data)
            .env("RUNEGRID_TOKEN", &self.token)
            .env(
                "RUNEGRID_LOG",
                std::env::var("RUNEGRID_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, name)?)
            .stderr(log_file(&self.dir, name)?)
            .spawn()
            .with_context(|| format!("starting relay {name}"))?;
        let pid = child.id();
        self.workers.push(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(url) = std::fs::read_to_string(&url_file) {
                return Ok((url.trim().to_string(), pid));
            }
            if Instant::now() > deadline {
                bail!(
                    "relay {name} did not start within 30 s; see {}",
                    self.dir.join(format!("{name}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` workers are connected.
    pub async fn wait_for_workers(&self, n: usize) -> Result<()> {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let connected = client
                .workers()
                .await?
                .iter()
                .filter(|w| w.connected)
                .count();
            if connected >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {connected} of {n} workers connected within 60 s; see the logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalGrid {
    fn drop(&mut self) {
        for c in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.coordinator))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
