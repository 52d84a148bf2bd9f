//! The PostgreSQL backend: the SQLite backend's records and semantics on a server the
//! operator runs (`serve --store postgres://…`).
//!
//! The [`Store`] trait is synchronous, and the coordinator calls it from its writer thread,
//! from blocking tasks, and at startup from async code itself. So the connection's socket is
//! driven by a tokio runtime of its own, on a thread of its own (`runegrid-postgres`), and a
//! call waits for its answer with `pollster::block_on`, which, unlike a tokio runtime's
//! `block_on`, may run on any thread (on a tokio worker it blocks that thread for the call, as
//! a call to SQLite does).
//!
//! `apply` is one transaction whose statements are pipelined: all are sent before the first
//! answer is awaited, so a batch of changes costs a few round trips and one commit, however
//! many changes it holds (group commit, as with SQLite).
//!
//! When the server closes the connection (it restarted), the next call connects again.

use crate::codec::{
    ATTEMPT_COLS, JOB_COLS, TASK_COLS, TRANSFER_COLS, WORKER_COLS, corrupt, digest_col, from_json,
    status_col, to_json,
};
use crate::records::*;
use crate::{Result, Store, StoreError};
use runegrid_core::cache::{CacheKey, CachedResult};
use runegrid_core::gpu::GpuOptions;
use runegrid_core::ledger::{EntryKey, Micros, Party, Transfer};
use runegrid_core::{Acceptance, AccountId, Digest, JobId, Limits, PolicyKind};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, GenericClient, NoTls, Row, Statement};

mod blobs;
mod schema;
pub use blobs::{BlobDbError, CHUNK_BYTES, PostgresBlobs, Put};

use schema::MIGRATIONS;

/// How many migrations a database brought up to date has had.
pub const POSTGRES_SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The advisory lock under which a connection brings the schema up to date, so that two
/// coordinators (or a writer and a reader) opening a new database at once do not both
/// create it. Any constant: "runegrid" in ASCII.
const MIGRATION_LOCK: i64 = 0x7275_6e65_6772_6964;

/// How long opening a connection may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a runegrid PostgreSQL database.
pub struct PostgresStore {
    client: Client,
    config: Config,
    /// Prepared statements by their SQL (prepared once per connection).
    statements: HashMap<String, Statement>,
    /// The URL without its password, for messages.
    location: String,
    /// The lease every write must still hold (a coordinator on a shared database).
    fence: Option<Fence>,
}

/// The lease a connection's writes are fenced by: each write transaction first checks, in
/// the database, that this holder still holds the lease at this epoch, and fails with
/// [`StoreError::LeaseLost`] otherwise — so a coordinator that lost its lease (paused,
/// cut off, slow to notice) cannot write after a standby took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: i64,
}

const FENCE_SQL: &str = "SELECT runegrid_fence($1, $2)";
/// The SQLSTATE `runegrid_fence` raises.
pub(crate) const FENCE_FAILED: &str = "RG001";

/// A statement's parameter, borrowed from the changes where it can be.
type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

macro_rules! params {
    ($($v:expr),* $(,)?) => { vec![$(Box::new($v) as Param<'_>),*] };
}

mod changes;
use changes::{INSERT_TRANSFER, change_ops, transfer_params};

/// Waits for a future on the calling thread (the connection's own thread does the I/O).
fn block<F: Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`, or
    /// libpq's `key=value` form; a host starting with `/`, percent-encoded in a URL, is a
    /// directory holding the server's Unix socket) and brings its schema up to date. The
    /// connection is not encrypted: use a Unix socket or a network you trust.
    pub fn open(url: &str) -> Result<PostgresStore> {
        let location = redact_url(url);
        let fail = |message: String| StoreError::Open {
            path: location.clone(),
            message,
        };
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            fail(format!("not a postgres connection string: {}", message(&e)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("runegrid");
        }
        let client = connect(config.clone()).map_err(&fail)?;
        let mut store = PostgresStore {
            client,
            config,
            statements: HashMap::new(),
            location: location.clone(),
            fence: None,
        };
        store.migrate().map_err(|e| fail(e.to_string()))?;
        Ok(store)
    }

    /// Fences this connection's writes by a lease (see [`Fence`]).
    pub fn set_fence(&mut self, fence: Fence) {
        self.fence = Some(fence);
    }

    /// Where the database is (its URL without the password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Reads from here on see one snapshot of the database, whatever other connections
    /// commit meanwhile (for checks that read it in several queries).
    pub fn begin_snapshot(&mut self) -> Result<()> {
        self.reconnect_if_closed()?;
        block(
            self.client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        )?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        block(async {
            let tx = self.client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            // Without "relation already exists, skipping" notices on every open.
            tx.batch_execute("SET LOCAL client_min_messages = warning")
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS runegrid_schema (version BIGINT NOT NULL)",
            )
            .await?;
            let version: i64 = match tx
                .query_opt("SELECT version FROM runegrid_schema", &[])
                .await?
            {
                Some(r) => r.try_get(0)?,
                None => {
                    tx.execute("INSERT INTO runegrid_schema (version) VALUES (0)", &[])
                        .await?;
                    0
                }
            };
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
                tx.batch_execute(m).await?;
                tx.execute(
                    "UPDATE runegrid_schema SET version = $1",
                    &[&((i + 1) as i64)],
                )
                .await?;
                tracing::info!(version = i + 1, "postgres schema migrated");
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A closed connection (the server restarted, or dropped us) is replaced before a call.
    fn reconnect_if_closed(&mut self) -> Result<()> {
        if !self.client.is_closed() {
            return Ok(());
        }
        tracing::warn!(store = %self.location, "postgres connection closed; connecting again");
        self.client = connect(self.config.clone()).map_err(|message| StoreError::Open {
            path: self.location.clone(),
            message,
        })?;
        self.statements.clear();
        Ok(())
    }

    pub(crate) fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.reconnect_if_closed()?;
        let PostgresStore {
            client, statements, ..
        } = self;
        block(async {
            let st = prepared(client, statements, sql).await?;
            Ok(client.query(&st, params).await?)
        })
    }

    /// A write outside `apply`: with a fence, in a transaction the fence checks first.
    fn write(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        if self.fence.is_none() {
            return self.query(sql, params);
        }
        self.reconnect_if_closed()?;
        let PostgresStore {
            client,
            statements,
            fence,
            ..
        } = self;
        block(async {
            let tx = client.transaction().await?;
            check_fence(&tx, statements, fence).await?;
            let st = prepared(&tx, statements, sql).await?;
            let rows = tx.query(&st, params).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }

    fn query_map<T>(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        f: fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }
}

/// A PostgreSQL error and its causes ("db error: ERROR: duplicate key value violates…",
/// "error connecting to server: Connection refused").
pub(crate) fn message(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Connects on a new thread that then drives the connection until it closes.
fn connect(config: Config) -> Result<Client, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("runegrid-postgres".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start a runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                match config.connect(NoTls).await {
                    Ok((client, connection)) => {
                        let _ = tx.send(Ok(client));
                        if let Err(e) = connection.await {
                            tracing::error!(error = %message(&e), "postgres connection failed");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(message(&e)));
                    }
                }
            });
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the connection thread ended".to_string())?
}

/// Connects to `url`, runs `sql` (statements separated by semicolons, outside a
/// transaction) and disconnects; returns the rows as text. For administration and tests
/// (`CREATE DATABASE`), not for records.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) fn query_text(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let config: Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| message(&e))?;
    let client = connect(config)?;
    let messages = block(client.simple_query(sql)).map_err(|e| message(&e))?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}

/// A PostgreSQL connection string without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // URL form: the user info ends at the last '@' before the path.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let user = rest[..at].split(':').next().unwrap_or_default();
            return format!("{scheme}://{user}@{}", &rest[at + 1..]);
        }
        return url.to_string();
    }
    // key=value form.
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn prepared(
    client: &impl GenericClient,
    cache: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(st) = cache.get(sql) {
        return Ok(st.clone());
    }
    let st = client.prepare(sql).await?;
    cache.insert(sql.to_string(), st.clone());
    Ok(st)
}

/// Fails with [`StoreError::LeaseLost`] unless the fence's lease is still held (nothing to
/// check without a fence).
async fn check_fence(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    fence: &Option<Fence>,
) -> Result<()> {
    if let Some(f) = fence {
        let st = prepared(tx, statements, FENCE_SQL).await?;
        tx.execute(&st, &[&f.holder, &f.epoch]).await?;
    }
    Ok(())
}

/// Runs statements in order, each sent before the answer to the first is awaited: a request
/// goes out when its future is first polled, and the server answers in order.
async fn pipeline(
    tx: &tokio_postgres::Transaction<'_>,
    ops: &[(Statement, Vec<Param<'_>>)],
) -> Result<(), tokio_postgres::Error> {
    let mut pending: Vec<_> = ops
        .iter()
        .map(|(st, params)| {
            Box::pin(tx.execute_raw(st, params.iter().map(|p| &**p as &(dyn ToSql + Sync))))
        })
        .collect();
    let mut done: Vec<Option<Result<u64, tokio_postgres::Error>>> =
        pending.iter().map(|_| None).collect();
    // One pass polling each in order sends every request.
    std::future::poll_fn(|cx| {
        for (f, d) in pending.iter_mut().zip(done.iter_mut()) {
            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                *d = Some(r);
            }
        }
        Poll::Ready(())
    })
    .await;
    for (f, d) in pending.into_iter().zip(done) {
        match d {
            Some(r) => r?,
            None => f.await?,
        };
    }
    Ok(())
}

fn u32_col(r: &Row, i: usize, what: &str) -> Result<u32> {
    let v: i64 = r.try_get(i)?;
    u32::try_from(v).map_err(|_| corrupt(what, v))
}

fn account_row(r: &Row) -> Result<Account> {
    Ok(Account {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        admin: r.try_get(2)?,
        created_at: r.try_get(3)?,
        contributor: r.try_get(4)?,
        display_name: r.try_get(5)?,
    })
}

fn job_row(r: &Row) -> Result<JobRecord> {
    let limits: String = r.try_get(7)?;
    let state: String = r.try_get(9)?;
    let policy: String = r.try_get(11)?;
    let blobs: String = r.try_get(12)?;
    Ok(JobRecord {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        name: r.try_get(2)?,
        program: r.try_get(3)?,
        replicas: u32_col(r, 4, "job replicas")?,
        agree: u32_col(r, 5, "job agree")?,
        max_attempts: u32_col(r, 6, "job max attempts")?,
        limits: from_json::<Limits>("limits", &limits)?,
        created_at: r.try_get(8)?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
        finished_at: r.try_get(10)?,
        policy: PolicyKind::parse(&policy).ok_or_else(|| corrupt("job policy", &policy))?,
        blobs: from_json::<BTreeMap<String, String>>("job blobs", &blobs)?,
        price: r.try_get::<_, i64>(13)? as u64,
        held: r.try_get(14)?,
        max_price: r.try_get::<_, Option<i64>>(15)?.map(|p| p as u64),
        cache: r.try_get(16)?,
        cached: u32_col(r, 17, "job cached")?,
        gpu: match r.try_get::<_, Option<String>>(18)? {
            Some(g) => Some(from_json::<GpuOptions>("job gpu options", &g)?),
            None => None,
        },
    })
}

fn journal_row(r: &Row) -> Result<JournalEntry> {
    let kind: String = r.try_get(1)?;
    let key =
        EntryKey::from_parts(&kind, r.try_get(2)?).ok_or_else(|| corrupt("transfer key", &kind))?;
    let party = |k: usize| -> Result<Party> {
        let kind: String = r.try_get(k)?;
        Party::from_parts(&kind, r.try_get(k + 1)?).ok_or_else(|| corrupt("transfer party", &kind))
    };
    let reason: String = r.try_get(8)?;
    Ok(JournalEntry {
        seq: r.try_get(0)?,
        transfer: Transfer {
            key,
            from: party(3)?,
            to: party(5)?,
            amount: r.try_get(7)?,
            reason: reason.parse().map_err(|e| corrupt("transfer reason", e))?,
        },
        at: r.try_get(9)?,
    })
}

fn task_row(r: &Row) -> Result<TaskRecord> {
    let args: String = r.try_get(3)?;
    let env: String = r.try_get(4)?;
    let state: String = r.try_get(7)?;
    let state = TaskState::parse(&state).ok_or_else(|| corrupt("task state", &state))?;
    let acceptance: Option<String> = r.try_get(14)?;
    let acceptance = acceptance
        .map(|a| Acceptance::parse(&a).ok_or_else(|| corrupt("task acceptance", &a)))
        .transpose()?;
    let files: String = r.try_get(15)?;
    let outcome = if state.is_final() {
        Some(TaskOutcome {
            status: status_col(r.try_get(8)?)?,
            stdout: r.try_get::<_, Option<Vec<u8>>>(9)?.unwrap_or_default(),
            fuel: r.try_get::<_, Option<i64>>(10)?.unwrap_or(0) as u64,
            digest: digest_col(r.try_get(11)?)?,
            error: r.try_get(12)?,
            acceptance,
            files: from_json("task files", &files)?,
        })
    } else {
        None
    };
    Ok(TaskRecord {
        id: r.try_get(0)?,
        job: r.try_get(1)?,
        index: u32_col(r, 2, "task index")?,
        args: from_json("task args", &args)?,
        env: from_json("task env", &env)?,
        stdin: r.try_get(5)?,
        seed: r.try_get::<_, i64>(6)? as u64,
        state,
        outcome,
        attempts: u32_col(r, 13, "task attempts")?,
    })
}

fn attempt_row(r: &Row) -> Result<AttemptRecord> {
    let state: String = r.try_get(4)?;
    Ok(AttemptRecord {
        id: r.try_get(0)?,
        task: r.try_get(1)?,
        job: r.try_get(2)?,
        worker: r.try_get(3)?,
        state: AttemptState::parse(&state).ok_or_else(|| corrupt("attempt state", &state))?,
        status: status_col(r.try_get(5)?)?,
        digest: digest_col(r.try_get(6)?)?,
        fuel: r.try_get::<_, Option<i64>>(7)?.map(|f| f as u64),
        signature: r.try_get(8)?,
        error: r.try_get(9)?,
        started_at: r.try_get(10)?,
        finished_at: r.try_get(11)?,
        owner: r.try_get(12)?,
        agreed: digest_col(r.try_get(13)?)?,
    })
}

fn worker_row(r: &Row) -> Result<WorkerRecord> {
    let caps: String = r.try_get(4)?;
    let trust: String = r.try_get(8)?;
    Ok(WorkerRecord {
        id: r.try_get(0)?,
        public_key: r.try_get(1)?,
        owner: r.try_get(2)?,
        name: r.try_get(3)?,
        capabilities: from_json("worker capabilities", &caps)?,
        first_seen: r.try_get(5)?,
        last_seen: r.try_get(6)?,
        completed: r.try_get::<_, i64>(7)? as u64,
        trust: from_json("worker trust", &trust)?,
    })
}

fn cache_row(r: &Row) -> Result<CacheEntry> {
    let key: Vec<u8> = r.try_get(0)?;
    let status: String = r.try_get(1)?;
    let digest: String = r.try_get(4)?;
    let files: String = r.try_get(7)?;
    Ok(CacheEntry {
        key: CacheKey(
            key.try_into()
                .map_err(|_| corrupt("cache key", "not 32 bytes"))?,
        ),
        result: CachedResult {
            status: from_json("cached status", &status)?,
            stdout: r.try_get(2)?,
            fuel: r.try_get::<_, i64>(3)? as u64,
            digest: Digest::from_hex(&digest).ok_or_else(|| corrupt("cached digest", &digest))?,
            stderr: r.try_get(5)?,
            files: from_json("cached files", &files)?,
        },
        used_at: r.try_get(6)?,
    })
}

const ACCOUNT_COLS: &str = "id, name, admin, created_at, contributor, display_name";

impl Store for PostgresStore {
    fn create_account(
        &mut self,
        name: &str,
        token_hash: &str,
        kind: AccountKind,
        welcome: Micros,
    ) -> Result<Account> {
        self.reconnect_if_closed()?;
        let admin = kind == AccountKind::Admin;
        let contributor = kind == AccountKind::Contributor;
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let PostgresStore {
            client,
            statements,
            fence,
            ..
        } = self;
        let id: i64 = block(async {
            let tx = client.transaction().await?;
            check_fence(&tx, statements, fence).await?;
            let insert = prepared(
                &tx,
                statements,
                "INSERT INTO accounts (name, token_hash, admin, created_at, contributor) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .await?;
            let row = match tx
                .query_one(
                    &insert,
                    &[&name, &token_hash, &admin, &created_at, &contributor],
                )
                .await
            {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(StoreError::Conflict(format!("account {name}")));
                }
                r => r?,
            };
            let id: i64 = row.try_get(0)?;
            if welcome > 0 {
                let st = prepared(&tx, statements, INSERT_TRANSFER).await?;
                pipeline(
                    &tx,
                    &[(
                        st,
                        transfer_params(&Transfer::welcome(id, welcome), created_at),
                    )],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(id)
        })?;
        Ok(Account {
            id,
            name: name.into(),
            admin,
            contributor,
            created_at,
            display_name: None,
        })
    }

    fn account_by_token(&mut self, token_hash: &str) -> Result<Option<Account>> {
        Ok(self
            .query_map(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE token_hash = $1"),
                &[&token_hash],
                account_row,
            )?
            .pop())
    }

    fn accounts(&mut self) -> Result<Vec<Account>> {
        self.query_map(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY id"),
            &[],
            account_row,
        )
    }

    fn put_program(&mut self, p: &ProgramRecord) -> Result<()> {
        self.write(
            "INSERT INTO programs (sha256, instrumented_sha256, instrumented, original_size, owner, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
            &[
                &p.sha256,
                &p.instrumented_sha256,
                &p.instrumented,
                &p.original_size,
                &p.owner,
                &p.created_at,
            ],
        )?;
        Ok(())
    }

    fn program(&mut self, sha256: &str) -> Result<Option<ProgramRecord>> {
        Ok(self
            .query_map(
                "SELECT sha256, instrumented_sha256, instrumented, original_size, owner, created_at
                 FROM programs WHERE sha256 = $1",
                &[&sha256],
                |r| {
                    Ok(ProgramRecord {
                        sha256: r.try_get(0)?,
                        instrumented_sha256: r.try_get(1)?,
                        instrumented: r.try_get(2)?,
                        original_size: r.try_get(3)?,
                        owner: r.try_get(4)?,
                        created_at: r.try_get(5)?,
                    })
                },
            )?
            .pop())
    }

    fn job(&mut self, id: JobId) -> Result<Option<JobRecord>> {
        Ok(self
            .query_map(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
                &[&id],
                job_row,
            )?
            .pop())
    }

    fn jobs(&mut self, owner: Option<AccountId>, limit: u32) -> Result<Vec<JobRecord>> {
        let limit = i64::from(limit);
        match owner {
            Some(o) => self.query_map(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE owner = $1 ORDER BY id DESC LIMIT $2"),
                &[&o, &limit],
                job_row,
            ),
            None => self.query_map(
                &format!("SELECT {JOB_COLS} FROM jobs ORDER BY id DESC LIMIT $1"),
                &[&limit],
                job_row,
            ),
        }
    }

    fn tasks(&mut self, job: JobId) -> Result<Vec<TaskRecord>> {
        self.query_map(
            &format!("SELECT {TASK_COLS} FROM tasks WHERE job = $1 ORDER BY idx"),
            &[&job],
            task_row,
        )
    }

    fn task_states(&mut self, job: JobId) -> Result<Vec<(TaskState, u64)>> {
        // Ordered bytewise, as SQLite orders text, whatever the database's collation.
        self.query_map(
            r#"SELECT state, COUNT(*) FROM tasks WHERE job = $1 GROUP BY state ORDER BY state COLLATE "C""#,
            &[&job],
            |r| {
                let state: String = r.try_get(0)?;
                let n: i64 = r.try_get(1)?;
                Ok((
                    TaskState::parse(&state).ok_or_else(|| corrupt("task state", &state))?,
                    n as u64,
                ))
            },
        )
    }

    fn attempts(&mut self, job: JobId) -> Result<Vec<AttemptRecord>> {
        self.query_map(
            &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE job = $1 ORDER BY id"),
            &[&job],
            attempt_row,
        )
    }

    fn unfinished_jobs(&mut self) -> Result<Vec<JobRecord>> {
        self.query_map(
            &format!(
                "SELECT {JOB_COLS} FROM jobs WHERE state IN ('active', 'waiting_for_price') ORDER BY id"
            ),
            &[],
            job_row,
        )
    }

    fn apply(&mut self, changes: &[Change]) -> Result<()> {
        self.reconnect_if_closed()?;
        let mut ops = Vec::with_capacity(changes.len() + 1);
        if let Some(f) = &self.fence {
            ops.push((FENCE_SQL, params![f.holder.clone(), f.epoch]));
        }
        for c in changes {
            change_ops(c, &mut ops);
        }
        let PostgresStore {
            client, statements, ..
        } = self;
        block(async {
            let mut prepared_ops = Vec::with_capacity(ops.len());
            for (sql, params) in ops {
                prepared_ops.push((prepared(client, statements, sql).await?, params));
            }
            let tx = client.transaction().await?;
            pipeline(&tx, &prepared_ops).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn max_ids(&mut self) -> Result<MaxIds> {
        let rows = self.query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM jobs), (SELECT COALESCE(MAX(id), 0) FROM tasks),
                    GREATEST((SELECT COALESCE(MAX(id), 0) FROM attempts),
                        (SELECT COALESCE(MAX(key_id), 0) FROM transfers WHERE key_kind IN ('payment', 'fee', 'clawback'))),
                    (SELECT COALESCE(MAX(key_id), 0) FROM transfers WHERE key_kind = 'grant')",
            &[],
        )?;
        let r = rows.first().ok_or_else(|| corrupt("max ids", "no row"))?;
        Ok(MaxIds {
            job: r.try_get(0)?,
            task: r.try_get(1)?,
            attempt: r.try_get(2)?,
            grant: r.try_get::<_, i64>(3)? as u64,
        })
    }

    fn journal(&mut self, after: i64, limit: u32) -> Result<Vec<JournalEntry>> {
        self.query_map(
            &format!("SELECT {TRANSFER_COLS} FROM transfers WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&after, &i64::from(limit)],
            journal_row,
        )
    }

    fn statement(
        &mut self,
        account: AccountId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JournalEntry>> {
        self.query_map(
            &format!(
                "SELECT {TRANSFER_COLS} FROM transfers
                 WHERE seq < $2 AND ((from_kind = 'account' AND from_id = $1) OR (to_kind = 'account' AND to_id = $1))
                 ORDER BY seq DESC LIMIT $3"
            ),
            &[&account, &before.unwrap_or(i64::MAX), &i64::from(limit)],
            journal_row,
        )
    }

    fn cached_results(&mut self) -> Result<Vec<CacheEntry>> {
        self.query_map(
            "SELECT key, status, stdout, fuel, digest, stderr, used_at, files FROM result_cache ORDER BY used_at, key",
            &[],
            cache_row,
        )
    }

    fn upsert_worker(&mut self, w: &NewWorker) -> Result<WorkerRecord> {
        self.write(
            &format!(
                "INSERT INTO workers (public_key, owner, name, capabilities, first_seen, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (public_key) DO UPDATE SET owner = $2, name = $3, capabilities = $4, last_seen = $5
                 RETURNING {WORKER_COLS}"
            ),
            &[
                &w.public_key,
                &w.owner,
                &w.name,
                &to_json(&w.capabilities),
                &w.at,
            ],
        )?
        .first()
        .map(worker_row)
        .transpose()?
        .ok_or_else(|| corrupt("worker", "no row returned by its upsert"))
    }

    fn workers(&mut self) -> Result<Vec<WorkerRecord>> {
        self.query_map(
            &format!("SELECT {WORKER_COLS} FROM workers ORDER BY id"),
            &[],
            worker_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url as redact;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://me:secret@db.example:5432/grid"),
            "postgres://me@db.example:5432/grid"
        );
        assert_eq!(
            redact("postgresql://me@%2Ftmp%2Fsock/grid"),
            "postgresql://me@%2Ftmp%2Fsock/grid"
        );
        assert_eq!(redact("postgres:///grid"), "postgres:///grid");
        assert_eq!(
            redact("host=/tmp user=me password=secret dbname=grid"),
            "host=/tmp user=me password=*** dbname=grid"
        );
    }
}
