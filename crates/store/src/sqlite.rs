//! The SQLite backend: one file, WAL mode, nothing to install.

use crate::codec::{
    ATTEMPT_COLS, JOB_COLS, TASK_COLS, TRANSFER_COLS, WORKER_COLS, corrupt, digest_col, from_json,
    status_col, to_json,
};
use crate::records::*;
use crate::{Millis, Result, Store, StoreError};
use runegrid_core::cache::{CacheKey, CachedResult};
use runegrid_core::gpu::GpuOptions;
use runegrid_core::ledger::{EntryKey, Micros, Party, Transfer};
use runegrid_core::{Acceptance, AccountId, Digest, JobId, Limits, PolicyKind};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::BTreeMap;
use std::path::Path;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS programs (
    sha256 TEXT PRIMARY KEY,
    instrumented_sha256 TEXT NOT NULL,
    instrumented BLOB NOT NULL,
    original_size INTEGER NOT NULL,
    owner INTEGER NOT NULL REFERENCES accounts(id),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    program TEXT NOT NULL REFERENCES programs(sha256),
    replicas INTEGER NOT NULL,
    agree INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    limits TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    args TEXT NOT NULL,
    env TEXT NOT NULL,
    stdin BLOB NOT NULL,
    seed INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    stdout BLOB,
    fuel INTEGER,
    digest TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE(job, idx)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    task INTEGER NOT NULL REFERENCES tasks(id),
    job INTEGER NOT NULL REFERENCES jobs(id),
    worker INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    digest TEXT,
    fuel INTEGER,
    signature TEXT,
    error TEXT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job, id);
CREATE TABLE IF NOT EXISTS workers (
    id INTEGER PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    owner INTEGER NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0
);
"#;

/// Schema changes after the first release, applied in order; `PRAGMA user_version` counts how
/// many a database has.
const MIGRATIONS: &[&str] = &[
    // 1: replication policy per job, how each task was accepted, each worker's trust record.
    "ALTER TABLE jobs ADD COLUMN policy TEXT NOT NULL DEFAULT 'quorum';
     ALTER TABLE tasks ADD COLUMN acceptance TEXT;
     ALTER TABLE workers ADD COLUMN trust TEXT NOT NULL DEFAULT '{}';",
    // 2: contributor accounts (browser contributors: run workers, submit nothing).
    "ALTER TABLE accounts ADD COLUMN contributor INTEGER NOT NULL DEFAULT 0;",
    // 3: blobs a job's tasks mount (name → sha256, JSON).
    "ALTER TABLE jobs ADD COLUMN blobs TEXT NOT NULL DEFAULT '{}';",
    // 4: credits: each job's price and hold, each attempt's payee, the journal of transfers (one per key).
    "ALTER TABLE jobs ADD COLUMN price INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE attempts ADD COLUMN owner INTEGER;
     ALTER TABLE jobs ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE transfers (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         key_kind TEXT NOT NULL,
         key_id INTEGER NOT NULL,
         from_kind TEXT NOT NULL,
         from_id INTEGER NOT NULL,
         to_kind TEXT NOT NULL,
         to_id INTEGER NOT NULL,
         amount INTEGER NOT NULL CHECK (amount > 0),
         reason TEXT NOT NULL,
         at INTEGER NOT NULL,
         UNIQUE (key_kind, key_id)
     );
     CREATE INDEX transfers_from ON transfers(from_kind, from_id, seq);
     CREATE INDEX transfers_to ON transfers(to_kind, to_id, seq);",
    // 5: the name an account shows on the contributors' leaderboard (opt-in); a job's bid.
    "ALTER TABLE accounts ADD COLUMN display_name TEXT;
     ALTER TABLE jobs ADD COLUMN max_price INTEGER;",
    // 6: the result cache; whether a job uses it, and how many of its tasks it answered.
    "ALTER TABLE jobs ADD COLUMN cache INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE jobs ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE result_cache (
         key BLOB PRIMARY KEY,
         status TEXT NOT NULL,
         stdout BLOB NOT NULL,
         fuel INTEGER NOT NULL,
         digest TEXT NOT NULL,
         stderr TEXT NOT NULL,
         used_at INTEGER NOT NULL
     );
     CREATE INDEX result_cache_used ON result_cache(used_at);",
    // 7: the records of the files a task's accepted result (or a cached one) left under /out
    // (JSON).
    "ALTER TABLE tasks ADD COLUMN files TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE result_cache ADD COLUMN files TEXT NOT NULL DEFAULT '[]';",
    // 8: a GPU job's options (JSON; NULL for every other job).
    "ALTER TABLE jobs ADD COLUMN gpu TEXT;",
    // 9: the digest a tolerance job's attempt was accepted as, when not its own.
    "ALTER TABLE attempts ADD COLUMN agreed TEXT;",
];

/// A connection to a runegrid SQLite database.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        // WAL with synchronous=NORMAL: a commit survives the process being killed (the WAL is
        // in the OS's hands); only a power loss can drop the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteStore { conn })
    }
}

impl SqliteStore {
    /// Reads from here on see one snapshot of the database, whatever other connections
    /// commit meanwhile (for checks that read it in several queries).
    pub fn begin_snapshot(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        Ok(())
    }
}

fn account_row(r: &Row) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        admin: r.get(2)?,
        created_at: r.get(3)?,
        contributor: r.get(4)?,
        display_name: r.get(5)?,
    })
}

fn job_row(r: &Row) -> Result<JobRecord> {
    let limits: String = r.get(7)?;
    let state: String = r.get(9)?;
    Ok(JobRecord {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        program: r.get(3)?,
        replicas: r.get(4)?,
        agree: r.get(5)?,
        max_attempts: r.get(6)?,
        limits: from_json::<Limits>("limits", &limits)?,
        created_at: r.get(8)?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
        finished_at: r.get(10)?,
        policy: {
            let p: String = r.get(11)?;
            PolicyKind::parse(&p).ok_or_else(|| corrupt("job policy", &p))?
        },
        blobs: {
            let b: String = r.get(12)?;
            from_json::<BTreeMap<String, String>>("job blobs", &b)?
        },
        price: r.get::<_, i64>(13)? as u64,
        held: r.get(14)?,
        max_price: r.get::<_, Option<i64>>(15)?.map(|p| p as u64),
        cache: r.get(16)?,
        cached: r.get(17)?,
        gpu: match r.get::<_, Option<String>>(18)? {
            Some(g) => Some(from_json::<GpuOptions>("job gpu options", &g)?),
            None => None,
        },
    })
}

fn journal_row(r: &Row) -> Result<JournalEntry> {
    let kind: String = r.get(1)?;
    let key =
        EntryKey::from_parts(&kind, r.get(2)?).ok_or_else(|| corrupt("transfer key", &kind))?;
    let party = |k: usize| -> Result<Party> {
        let kind: String = r.get(k)?;
        Party::from_parts(&kind, r.get(k + 1)?).ok_or_else(|| corrupt("transfer party", &kind))
    };
    let reason: String = r.get(8)?;
    Ok(JournalEntry {
        seq: r.get(0)?,
        transfer: Transfer {
            key,
            from: party(3)?,
            to: party(5)?,
            amount: r.get(7)?,
            reason: reason.parse().map_err(|e| corrupt("transfer reason", e))?,
        },
        at: r.get(9)?,
    })
}

/// Appends a transfer to the journal unless its key is there already.
fn insert_transfer(tx: &Connection, t: &Transfer, at: Millis) -> Result<()> {
    let (key_kind, key_id) = t.key.to_parts();
    let (from_kind, from_id) = t.from.to_parts();
    let (to_kind, to_id) = t.to.to_parts();
    tx.prepare_cached(
        "INSERT INTO transfers (key_kind, key_id, from_kind, from_id, to_kind, to_id, amount, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (key_kind, key_id) DO NOTHING",
    )?
    .execute(params![
        key_kind,
        key_id,
        from_kind,
        from_id,
        to_kind,
        to_id,
        t.amount,
        t.reason.as_str(),
        at
    ])?;
    Ok(())
}

fn task_row(r: &Row) -> Result<TaskRecord> {
    let args: String = r.get(3)?;
    let env: String = r.get(4)?;
    let state: String = r.get(7)?;
    let state = TaskState::parse(&state).ok_or_else(|| corrupt("task state", &state))?;
    let status = status_col(r.get(8)?)?;
    let stdout: Option<Vec<u8>> = r.get(9)?;
    let fuel: Option<i64> = r.get(10)?;
    let digest = digest_col(r.get(11)?)?;
    let error: Option<String> = r.get(12)?;
    let acceptance: Option<String> = r.get(14)?;
    let acceptance = acceptance
        .map(|a| Acceptance::parse(&a).ok_or_else(|| corrupt("task acceptance", &a)))
        .transpose()?;
    let files: String = r.get(15)?;
    let files = from_json("task files", &files)?;
    let outcome = if state.is_final() {
        Some(TaskOutcome {
            status,
            stdout: stdout.unwrap_or_default(),
            fuel: fuel.unwrap_or(0) as u64,
            digest,
            error,
            acceptance,
            files,
        })
    } else {
        None
    };
    Ok(TaskRecord {
        id: r.get(0)?,
        job: r.get(1)?,
        index: r.get(2)?,
        args: from_json("task args", &args)?,
        env: from_json("task env", &env)?,
        stdin: r.get(5)?,
        seed: r.get::<_, i64>(6)? as u64,
        state,
        outcome,
        attempts: r.get(13)?,
    })
}

fn attempt_row(r: &Row) -> Result<AttemptRecord> {
    let state: String = r.get(4)?;
    Ok(AttemptRecord {
        id: r.get(0)?,
        task: r.get(1)?,
        job: r.get(2)?,
        worker: r.get(3)?,
        state: AttemptState::parse(&state).ok_or_else(|| corrupt("attempt state", &state))?,
        status: status_col(r.get(5)?)?,
        digest: digest_col(r.get(6)?)?,
        fuel: r.get::<_, Option<i64>>(7)?.map(|f| f as u64),
        signature: r.get(8)?,
        error: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        owner: r.get(12)?,
        agreed: digest_col(r.get(13)?)?,
    })
}

fn worker_row(r: &Row) -> Result<WorkerRecord> {
    let caps: String = r.get(4)?;
    Ok(WorkerRecord {
        id: r.get(0)?,
        public_key: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        capabilities: from_json("worker capabilities", &caps)?,
        first_seen: r.get(5)?,
        last_seen: r.get(6)?,
        completed: r.get::<_, i64>(7)? as u64,
        trust: {
            let t: String = r.get(8)?;
            from_json("worker trust", &t)?
        },
    })
}

fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    f: fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn create_account(
        &mut self,
        name: &str,
        token_hash: &str,
        kind: AccountKind,
        welcome: Micros,
    ) -> Result<Account> {
        let admin = kind == AccountKind::Admin;
        let contributor = kind == AccountKind::Contributor;
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let tx = self.conn.transaction()?;
        let res = tx.execute(
            "INSERT INTO accounts (name, token_hash, admin, created_at, contributor) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, token_hash, admin, created_at, contributor],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::Conflict(format!("account {name}")));
            }
            r => r?,
        };
        let id = tx.last_insert_rowid();
        if welcome > 0 {
            insert_transfer(&tx, &Transfer::welcome(id, welcome), created_at)?;
        }
        tx.commit()?;
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
            .conn
            .prepare_cached(
                "SELECT id, name, admin, created_at, contributor, display_name FROM accounts WHERE token_hash = ?1",
            )?
            .query_row([token_hash], account_row)
            .optional()?)
    }

    fn accounts(&mut self) -> Result<Vec<Account>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, admin, created_at, contributor, display_name FROM accounts ORDER BY id",
        )?;
        let rows = stmt.query_map([], account_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn put_program(&mut self, p: &ProgramRecord) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO programs (sha256, instrumented_sha256, instrumented, original_size, owner, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![p.sha256, p.instrumented_sha256, p.instrumented, p.original_size, p.owner, p.created_at],
        )?;
        Ok(())
    }

    fn program(&mut self, sha256: &str) -> Result<Option<ProgramRecord>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT sha256, instrumented_sha256, instrumented, original_size, owner, created_at
                 FROM programs WHERE sha256 = ?1",
            )?
            .query_row([sha256], |r| {
                Ok(ProgramRecord {
                    sha256: r.get(0)?,
                    instrumented_sha256: r.get(1)?,
                    instrumented: r.get(2)?,
                    original_size: r.get(3)?,
                    owner: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })
            .optional()?)
    }

    fn job(&mut self, id: JobId) -> Result<Option<JobRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))?;
        Ok(collect(&mut stmt, [id], job_row)?.pop())
    }

    fn jobs(&mut self, owner: Option<AccountId>, limit: u32) -> Result<Vec<JobRecord>> {
        match owner {
            Some(o) => {
                let mut stmt = self.conn.prepare_cached(&format!(
                    "SELECT {JOB_COLS} FROM jobs WHERE owner = ?1 ORDER BY id DESC LIMIT ?2"
                ))?;
                collect(&mut stmt, params![o, limit], job_row)
            }
            None => {
                let mut stmt = self.conn.prepare_cached(&format!(
                    "SELECT {JOB_COLS} FROM jobs ORDER BY id DESC LIMIT ?1"
                ))?;
                collect(&mut stmt, params![limit], job_row)
            }
        }
    }

    fn tasks(&mut self, job: JobId) -> Result<Vec<TaskRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TASK_COLS} FROM tasks WHERE job = ?1 ORDER BY idx"
        ))?;
        collect(&mut stmt, [job], task_row)
    }

    fn task_states(&mut self, job: JobId) -> Result<Vec<(TaskState, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, COUNT(*) FROM tasks WHERE job = ?1 GROUP BY state ORDER BY state",
        )?;
        let mut rows = stmt.query([job])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let state: String = r.get(0)?;
            let n: i64 = r.get(1)?;
            out.push((
                TaskState::parse(&state).ok_or_else(|| corrupt("task state", &state))?,
                n as u64,
            ));
        }
        Ok(out)
    }

    fn attempts(&mut self, job: JobId) -> Result<Vec<AttemptRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE job = ?1 ORDER BY id"
        ))?;
        collect(&mut stmt, [job], attempt_row)
    }

    fn unfinished_jobs(&mut self) -> Result<Vec<JobRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE state IN ('active', 'waiting_for_price') ORDER BY id"
        ))?;
        collect(&mut stmt, [], job_row)
    }

    fn apply(&mut self, changes: &[Change]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for c in changes {
            match c {
                Change::CreateJob { id, job, tasks } => {
                    tx.prepare_cached(
                        "INSERT INTO jobs (id, owner, name, program, replicas, agree, max_attempts, limits, created_at, state, policy, blobs, price, held, max_price, cache, cached, gpu)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?14, ?10, ?11, ?12, ?13, ?15, ?16, ?17, ?18)",
                    )?
                    .execute(params![
                        id,
                        job.owner,
                        job.name,
                        job.program,
                        job.replicas,
                        job.agree,
                        job.max_attempts,
                        to_json(&job.limits),
                        job.created_at,
                        job.policy.as_str(),
                        to_json(&job.blobs),
                        job.price as i64,
                        job.held,
                        job.state.as_str(),
                        job.max_price.map(|p| p as i64),
                        job.cache,
                        job.cached,
                        job.gpu.as_ref().map(to_json)
                    ])?;
                    let mut stmt = tx.prepare_cached(
                        "INSERT INTO tasks (id, job, idx, args, env, stdin, seed, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued')",
                    )?;
                    for (i, (tid, t)) in tasks.iter().enumerate() {
                        stmt.execute(params![
                            tid,
                            id,
                            i as i64,
                            to_json(&t.args),
                            to_json(&t.env),
                            t.stdin,
                            t.seed as i64
                        ])?;
                    }
                }
                Change::StartAttempt {
                    id,
                    task,
                    job,
                    worker,
                    owner,
                    at,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO attempts (id, task, job, worker, state, started_at, owner) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                    )?
                    .execute(params![id, task, job, worker, at, owner])?;
                }
                Change::FinishAttempt {
                    id,
                    status,
                    digest,
                    fuel,
                    signature,
                    at,
                } => {
                    tx.prepare_cached(
                        "UPDATE attempts SET state = 'done', status = ?2, digest = ?3, fuel = ?4, signature = ?5, finished_at = ?6 WHERE id = ?1",
                    )?
                    .execute(params![id, to_json(status), digest.to_hex(), *fuel as i64, signature, at])?;
                }
                Change::AgreeAttempt { id, agreed } => {
                    tx.prepare_cached("UPDATE attempts SET agreed = ?2 WHERE id = ?1")?
                        .execute(params![id, agreed.to_hex()])?;
                }
                Change::LoseAttempt { id, error, at } => {
                    tx.prepare_cached(
                        "UPDATE attempts SET state = 'lost', error = ?2, finished_at = ?3 WHERE id = ?1 AND state = 'running'",
                    )?
                    .execute(params![id, error, at])?;
                }
                Change::CancelAttempt { id, at } => {
                    tx.prepare_cached(
                        "UPDATE attempts SET state = 'cancelled', finished_at = ?2 WHERE id = ?1 AND state = 'running'",
                    )?
                    .execute(params![id, at])?;
                }
                Change::TaskState {
                    id,
                    state,
                    attempts,
                } => {
                    tx.prepare_cached("UPDATE tasks SET state = ?2, attempts = ?3 WHERE id = ?1")?
                        .execute(params![id, state.as_str(), attempts])?;
                }
                Change::FinishTask {
                    id,
                    state,
                    outcome,
                    attempts,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET state = ?2, status = ?3, stdout = ?4, fuel = ?5, digest = ?6, error = ?7, attempts = ?8, acceptance = ?9, files = ?10 WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        state.as_str(),
                        outcome.status.as_ref().map(to_json),
                        outcome.stdout,
                        outcome.fuel as i64,
                        outcome.digest.map(|d| d.to_hex()),
                        outcome.error,
                        attempts,
                        outcome.acceptance.map(|a| a.as_str()),
                        to_json(&outcome.files)
                    ])?;
                }
                Change::CorrectTask { id, state, outcome } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET state = ?2, status = ?3, stdout = ?4, fuel = ?5, digest = ?6, error = ?7, acceptance = ?8, files = ?9 WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        state.as_str(),
                        outcome.status.as_ref().map(to_json),
                        outcome.stdout,
                        outcome.fuel as i64,
                        outcome.digest.map(|d| d.to_hex()),
                        outcome.error,
                        outcome.acceptance.map(|a| a.as_str()),
                        to_json(&outcome.files)
                    ])?;
                }
                Change::FinishJob { id, state, at } => {
                    tx.prepare_cached(
                        "UPDATE jobs SET state = ?2, finished_at = ?3 WHERE id = ?1",
                    )?
                    .execute(params![id, state.as_str(), at])?;
                }
                Change::WorkerSeen {
                    id,
                    at,
                    completed_delta,
                } => {
                    tx.prepare_cached(
                        "UPDATE workers SET last_seen = max(last_seen, ?2), completed = completed + ?3 WHERE id = ?1",
                    )?
                    .execute(params![id, at, completed_delta])?;
                }
                Change::WorkerTrust { id, trust } => {
                    tx.prepare_cached("UPDATE workers SET trust = ?2 WHERE id = ?1")?
                        .execute(params![id, to_json(trust)])?;
                }
                Change::Transfer { transfer, at } => insert_transfer(&tx, transfer, *at)?,
                Change::StartJob { id, price } => {
                    tx.prepare_cached(
                        "UPDATE jobs SET state = 'active', price = ?2 WHERE id = ?1 AND state = 'waiting_for_price'",
                    )?
                    .execute(params![id, *price as i64])?;
                }
                Change::DisplayName { account, name } => {
                    tx.prepare_cached("UPDATE accounts SET display_name = ?2 WHERE id = ?1")?
                        .execute(params![account, name])?;
                }
                Change::CachePut { key, result, at } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO result_cache (key, status, stdout, fuel, digest, stderr, used_at, files) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        &key.0[..],
                        to_json(&result.status),
                        result.stdout,
                        result.fuel as i64,
                        result.digest.to_hex(),
                        result.stderr,
                        at,
                        to_json(&result.files)
                    ])?;
                }
                Change::CacheUse { key, at } => {
                    tx.prepare_cached(
                        "UPDATE result_cache SET used_at = max(used_at, ?2) WHERE key = ?1",
                    )?
                    .execute(params![&key.0[..], at])?;
                }
                Change::CacheEvict { key } => {
                    tx.prepare_cached("DELETE FROM result_cache WHERE key = ?1")?
                        .execute(params![&key.0[..]])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn max_ids(&mut self) -> Result<MaxIds> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM jobs), (SELECT COALESCE(MAX(id), 0) FROM tasks),
                    MAX((SELECT COALESCE(MAX(id), 0) FROM attempts),
                        (SELECT COALESCE(MAX(key_id), 0) FROM transfers WHERE key_kind IN ('payment', 'fee', 'clawback'))),
                    (SELECT COALESCE(MAX(key_id), 0) FROM transfers WHERE key_kind = 'grant')",
            [],
            |r| {
                Ok(MaxIds {
                    job: r.get(0)?,
                    task: r.get(1)?,
                    attempt: r.get(2)?,
                    grant: r.get::<_, i64>(3)? as u64,
                })
            },
        )?)
    }

    fn journal(&mut self, after: i64, limit: u32) -> Result<Vec<JournalEntry>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TRANSFER_COLS} FROM transfers WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        collect(&mut stmt, params![after, limit], journal_row)
    }

    fn statement(
        &mut self,
        account: AccountId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JournalEntry>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TRANSFER_COLS} FROM transfers
             WHERE seq < ?2 AND ((from_kind = 'account' AND from_id = ?1) OR (to_kind = 'account' AND to_id = ?1))
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        collect(
            &mut stmt,
            params![account, before.unwrap_or(i64::MAX), limit],
            journal_row,
        )
    }

    fn cached_results(&mut self) -> Result<Vec<CacheEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, status, stdout, fuel, digest, stderr, used_at, files FROM result_cache ORDER BY used_at, key",
        )?;
        collect(&mut stmt, [], |r| {
            let key: Vec<u8> = r.get(0)?;
            let status: String = r.get(1)?;
            let digest: String = r.get(4)?;
            let files: String = r.get(7)?;
            Ok(CacheEntry {
                key: CacheKey(
                    key.try_into()
                        .map_err(|_| corrupt("cache key", "not 32 bytes"))?,
                ),
                result: CachedResult {
                    status: from_json("cached status", &status)?,
                    stdout: r.get(2)?,
                    fuel: r.get::<_, i64>(3)? as u64,
                    digest: Digest::from_hex(&digest)
                        .ok_or_else(|| corrupt("cached digest", &digest))?,
                    stderr: r.get(5)?,
                    files: from_json("cached files", &files)?,
                },
                used_at: r.get(6)?,
            })
        })
    }

    fn upsert_worker(&mut self, w: &NewWorker) -> Result<WorkerRecord> {
        self.conn.execute(
            "INSERT INTO workers (public_key, owner, name, capabilities, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(public_key) DO UPDATE SET owner = ?2, name = ?3, capabilities = ?4, last_seen = ?5",
            params![w.public_key, w.owner, w.name, to_json(&w.capabilities), w.at],
        )?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {WORKER_COLS} FROM workers WHERE public_key = ?1"
        ))?;
        collect(&mut stmt, [&w.public_key], worker_row)?
            .pop()
            .ok_or_else(|| corrupt("worker", "vanished after upsert"))
    }

    fn workers(&mut self) -> Result<Vec<WorkerRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {WORKER_COLS} FROM workers ORDER BY id"))?;
        collect(&mut stmt, [], worker_row)
    }
}
