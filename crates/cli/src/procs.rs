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
        let data = dir.join("coordinator");
        let _ = std::fs::remove_file(data.join(crate::node::URL_FILE));
        let coordinator = Command::new(exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(serve_args)
            .env(
                "RUNEGRID_LOG",
                std::env::var("RUNEGRID_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file(&dir, "coordinator")?)
            .stderr(log_file(&dir, "coordinator")?)
            .spawn()
            .context("starting the coordinator")?;
        let mut grid = LocalGrid {
            dir: dir.clone(),
            url: String::new(),
            token: String::new(),
            coordinator,
            workers: vec![],
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(url) = std::fs::read_to_string(data.join(crate::node::URL_FILE)) {
                grid.url = url.trim().to_string();
                break;
            }
            if let Some(status) = grid.coordinator.try_wait()? {
                bail!(
                    "the coordinator exited ({status}); see {}",
                    dir.join("coordinator.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the coordinator did not start within 30 s; see {}",
                    dir.join("coordinator.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        grid.token =
            runegrid_coordinator::read_admin_token(&data).context("reading the admin token")?;
        Ok(grid)
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
