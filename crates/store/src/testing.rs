//! A throwaway PostgreSQL server for tests (feature `testing`): `initdb` into a temporary
//! directory, the server listening only on a Unix socket in that directory (no TCP port, so
//! nothing else on the machine — a system cluster on 5432 included — matters), one database
//! per store.
//!
//! - The server programs are found by [`bin_dir`]: the directory of `initdb` on `PATH`, else
//!   the newest `/usr/lib/postgresql/*/bin` (where Debian's `postgresql` package puts them).
//! - `initdb` and `postgres` refuse to run as root: as root, the directory is given to
//!   `nobody` and the programs run as `nobody` through util-linux `setpriv` (the test process
//!   itself stays root; the socket is in a directory it can reach).
//! - [`shared`] starts one server per test process, with durability off (tests need no
//!   crash safety from it), and a watchdog process stops it and removes its directory when
//!   the test process exits, however it exits. A [`PgServer`] from [`PgServer::start`] is
//!   stopped when dropped.
//! - Without PostgreSQL, [`shared`] prints a note and returns `None` (the test skips), unless
//!   `RUNEGRID_REQUIRE_POSTGRES=1`, when it panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable that turns a missing PostgreSQL from a skip into a failure.
pub const REQUIRE_ENV: &str = "RUNEGRID_REQUIRE_POSTGRES";

/// The server's superuser, which the tests connect as (no password: `trust` on the socket).
pub const SUPERUSER: &str = "postgres";

/// The port, which here only names the socket file (`.s.PGSQL.5432`) in the server's own
/// directory.
const PORT: u16 = 5432;

/// Why a throwaway server is not there.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error(
        "no PostgreSQL server programs (initdb on PATH or in /usr/lib/postgresql/*/bin); on Debian: apt-get install postgresql"
    )]
    NotInstalled,
    #[error("{step}: {message}")]
    Failed { step: &'static str, message: String },
}

fn failed(step: &'static str, message: impl std::fmt::Display) -> TestServerError {
    TestServerError::Failed {
        step,
        message: message.to_string(),
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> Option<PathBuf> {
    let complete = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| d.join(p).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if complete(&d) {
                return Some(d);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// Whether this process runs as root (then the server runs as `nobody`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn id_of(flag: &str, user: &str) -> Result<u32, TestServerError> {
    let o = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| failed("id", e))?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|_| failed("id", format!("no user {user}")))
}

/// A running throwaway server.
pub struct PgServer {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    /// The uid and gid the server runs as, when not this process's.
    run_as: Option<(u32, u32)>,
    pid: u32,
    watchdog: Option<Child>,
    next_db: AtomicU32,
}

impl PgServer {
    /// Initializes a cluster in a new temporary directory and starts it, with `settings`
    /// (`postgresql.conf` names and values) added to its configuration.
    pub fn start(settings: &[(&str, &str)]) -> Result<PgServer, TestServerError> {
        let bin = bin_dir().ok_or(TestServerError::NotInstalled)?;
        let run_as = if is_root() {
            Some((id_of("-u", "nobody")?, id_of("-g", "nobody")?))
        } else {
            None
        };
        // The socket's path must stay short (about 100 bytes) and, as root, reachable by
        // nobody: /tmp is both.
        let base = if run_as.is_some() || std::env::temp_dir().as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("runegrid-pg-")
            .tempdir_in(&base)
            .map_err(|e| failed("creating its directory", e))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| failed("giving its directory to nobody", e))?;
        }
        let mut server = PgServer {
            dir: Some(dir),
            bin,
            run_as,
            pid: 0,
            watchdog: None,
            next_db: AtomicU32::new(0),
        };
        server.init_and_start(settings)?;
        Ok(server)
    }

    fn init_and_start(&mut self, settings: &[(&str, &str)]) -> Result<(), TestServerError> {
        let dir = self.dir().to_path_buf();
        let data = dir.join("data");
        self.run(
            "initdb",
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--no-locale".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        let mut conf = format!(
            "\n# runegrid tests\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {PORT}\n",
            dir.display()
        );
        for (k, v) in settings {
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(|e| failed("configuring", e))?;
        std::io::Write::write_all(&mut f, conf.as_bytes()).map_err(|e| failed("configuring", e))?;
        let log = dir.join("server.log");
        let started = self.run(
            "pg_ctl start",
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "120".as_ref(),
                "start".as_ref(),
            ],
        );
        if let Err(e) = started {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(failed("starting the server", format!("{e}\n{log}")));
        }
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .ok_or_else(|| failed("starting the server", "no postmaster.pid"))?;
        self.pid = pid;
        // Stops the server and removes its directory once this process is gone, even when it
        // was killed; in a process group of its own, so that a signal to the tests' group
        // (`timeout`) does not take it too.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done
if [ -d "$2" ]; then kill -QUIT "$1" 2>/dev/null; sleep 2; rm -rf "$2"; fi"#,
            )
            .arg(std::process::id().to_string())
            .arg(pid.to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(|e| failed("starting its watchdog", e))?;
        self.watchdog = Some(watchdog);
        Ok(())
    }

    /// Runs one of the server programs, as the server's user.
    fn run(
        &self,
        step: &'static str,
        program: &str,
        args: &[&std::ffi::OsStr],
    ) -> Result<(), TestServerError> {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(step, format!("cannot run {}: {e}", exe.display())))?;
        if !out.status.success() {
            return Err(failed(
                step,
                format!(
                    "{} exited with {}:\n{}{}",
                    exe.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        Ok(())
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("server directory").path()
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The URL of `database` on this server (it connects through the Unix socket).
    pub fn url(&self, database: &str) -> String {
        let host: String = self
            .dir()
            .to_string_lossy()
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("postgresql://{SUPERUSER}@{host}:{PORT}/{database}")
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> Result<String, TestServerError> {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("runegrid_test_{n}");
        crate::postgres::query_text(
            &self.url("postgres"),
            &format!("CREATE DATABASE {name} STRATEGY = FILE_COPY"),
        )
        .map_err(|e| failed("creating a database", e))?;
        Ok(self.url(&name))
    }

    /// Stops the server at once (no checkpoint) and removes its directory.
    pub fn stop(&mut self) {
        if self.dir.is_none() {
            return;
        }
        let data = self.dir().join("data");
        let _ = self.run(
            "pg_ctl stop",
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.dir = None;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `RUNEGRID_REQUIRE_POSTGRES=1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// This test process's server (durability off), started on first use. `None`, after a note
/// on stderr, when PostgreSQL is not installed and not required; panics when it is required
/// and missing, or installed and does not start.
pub fn shared() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            match PgServer::start(&[
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ]) {
                Ok(s) => Some(s),
                Err(TestServerError::NotInstalled) if !required() => {
                    eprintln!(
                        "note: skipping the PostgreSQL tests: {} (set {REQUIRE_ENV}=1 to fail instead)",
                        TestServerError::NotInstalled
                    );
                    None
                }
                Err(e) => panic!("cannot start a throwaway PostgreSQL server: {e}"),
            }
        })
        .as_ref()
}

/// A new, empty database on [`shared`]'s server: its URL, or `None` when the tests skip.
pub fn database() -> Option<String> {
    shared().map(|s| {
        s.create_database()
            .unwrap_or_else(|e| panic!("throwaway PostgreSQL server: {e}"))
    })
}

/// The tables of the database at `url` and their columns (for comparing schemas).
pub fn columns(
    url: &str,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>, TestServerError>
{
    let rows = crate::postgres::query_text(
        url,
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .map_err(|e| failed("reading the schema", e))?;
    let mut out = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for r in rows {
        if let [Some(t), Some(c)] = &r[..] {
            out.entry(t.clone()).or_default().insert(c.clone());
        }
    }
    Ok(out)
}

/// Runs `sql` on the database at `url` (outside a transaction), for tests that reach past the
/// store: ending its connections, reading the schema version.
pub fn execute(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, TestServerError> {
    crate::postgres::query_text(url, sql).map_err(|e| failed("running sql", e))
}
