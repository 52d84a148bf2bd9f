//! Store throughput of both backends in one run: batches of the changes finished tasks make,
//! each batch one `apply` (one transaction, as the coordinator's writer commits them), at a few
//! batch sizes. Prints changes/s and tasks/s for SQLite (in a temporary directory) and for
//! PostgreSQL: a throwaway server started here with its default settings (the `testing`
//! helper; PostgreSQL must be installed), or the server at `--postgres URL`.
//!
//! `cargo run --release -p runegrid-store --example store_throughput [-- --postgres URL]`
//!
//! A task here is a quorum of two paid attempts, what the coordinator writes for it in all:
//! two attempts started and finished, the task running then verified, a payment and a fee per
//! attempt, the result cached, both workers seen — 13 changes.

use runegrid_core::cache::{CacheKey, CachedResult};
use runegrid_core::ledger::{EntryKey, Party, Reason, Transfer};
use runegrid_core::{Acceptance, Digest, ExecStatus, Limits, PolicyKind};
use runegrid_store::{
    AccountKind, Change, JobState, NewJob, NewTask, NewWorker, PostgresStore, ProgramRecord,
    SqliteStore, Store, TaskOutcome, TaskState, testing,
};
use std::time::Instant;

/// Tasks per transaction, and how many tasks to write at that size.
const RUNS: &[(usize, usize)] = &[(1, 400), (10, 3_000), (100, 20_000)];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let external = args
        .iter()
        .position(|a| a == "--postgres")
        .and_then(|i| args.get(i + 1).cloned());
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{:<40} {:>11} {:>13} {:>10} {:>10} {:>9}",
        "backend", "tasks/batch", "changes/batch", "batches/s", "changes/s", "tasks/s"
    );
    let mut n = 0;
    run("sqlite (WAL, synchronous=NORMAL)", &mut || {
        n += 1;
        Box::new(SqliteStore::open(&dir.path().join(format!("t{n}.sqlite"))).unwrap())
    });

    let server;
    let base: Box<dyn Fn() -> String> = match external {
        Some(url) => Box::new(move || url.clone()),
        None => match testing::PgServer::start(&[]) {
            Ok(s) => {
                server = s;
                Box::new(|| server.create_database().unwrap())
            }
            Err(e) => {
                println!("postgres: not measured ({e})");
                return;
            }
        },
    };
    for (name, options) in [
        ("postgres (synchronous_commit=on)", ""),
        (
            "postgres (synchronous_commit=off)",
            "options=-c%20synchronous_commit%3Doff",
        ),
    ] {
        run(name, &mut || {
            let url = base();
            let url = if options.is_empty() {
                url
            } else if url.contains('?') {
                format!("{url}&{options}")
            } else {
                format!("{url}?{options}")
            };
            Box::new(PostgresStore::open(&url).unwrap())
        });
    }
}

fn run(name: &str, fresh: &mut dyn FnMut() -> Box<dyn Store>) {
    for &(per_batch, tasks) in RUNS {
        let mut s = fresh();
        let (job, first_task, w) = setup(s.as_mut(), tasks);
        let batches: Vec<Vec<Change>> = (0..tasks)
            .collect::<Vec<_>>()
            .chunks(per_batch)
            .map(|chunk| {
                chunk
                    .iter()
                    .flat_map(|&i| task_changes(job, first_task + i as i64, w))
                    .collect()
            })
            .collect();
        let changes: usize = batches.iter().map(Vec::len).sum();
        let started = Instant::now();
        for b in &batches {
            s.apply(b).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<40} {:>11} {:>13} {:>10.0} {:>10.0} {:>9.0}",
            name,
            per_batch,
            changes / batches.len(),
            batches.len() as f64 / secs,
            changes as f64 / secs,
            tasks as f64 / secs
        );
    }
}

/// An account, a program, two workers and a job of `tasks` tasks; returns the job, its first
/// task id and the workers' ids.
fn setup(s: &mut dyn Store, tasks: usize) -> (i64, i64, [i64; 2]) {
    let base = s.max_ids().unwrap();
    let tag = base.job + 1;
    let a = s
        .create_account(
            &format!("bench{tag}"),
            &format!("h{tag}"),
            AccountKind::User,
            0,
        )
        .unwrap();
    s.put_program(&ProgramRecord {
        sha256: "p".into(),
        instrumented_sha256: "i".into(),
        instrumented: vec![0; 1000],
        original_size: 1000,
        owner: a.id,
        created_at: 0,
    })
    .unwrap();
    let w = [0, 1].map(|i| {
        s.upsert_worker(&NewWorker {
            public_key: format!("key{i}"),
            owner: a.id,
            name: format!("w{i}"),
            capabilities: serde_json::json!({"slots": 2}),
            at: 0,
        })
        .unwrap()
        .id
    });
    let job = base.job + 1;
    let first_task = base.task + 1;
    s.apply(&[Change::CreateJob {
        id: job,
        job: Box::new(NewJob {
            owner: a.id,
            name: "bench".into(),
            program: "p".into(),
            policy: PolicyKind::Quorum,
            replicas: 2,
            agree: 2,
            max_attempts: 4,
            limits: Limits::default(),
            created_at: 0,
            blobs: Default::default(),
            price: 1_000_000,
            held: 1_000_000_000,
            max_price: None,
            state: JobState::Active,
            cache: true,
            cached: 0,
            gpu: None,
        }),
        tasks: (0..tasks)
            .map(|i| {
                (
                    first_task + i as i64,
                    NewTask {
                        args: vec!["100000".into(), i.to_string()],
                        env: Default::default(),
                        stdin: vec![],
                        seed: i as u64,
                    },
                )
            })
            .collect(),
    }])
    .unwrap();
    (job, first_task, w)
}

/// What the coordinator writes for one task verified by a quorum of two paid attempts.
fn task_changes(job: i64, task: i64, w: [i64; 2]) -> Vec<Change> {
    let attempts = [task * 2, task * 2 + 1];
    let status = ExecStatus::Exited { code: 0 };
    let digest = Digest([(task % 251) as u8; 32]);
    let stdout = format!("pi ≈ 3.14159 from task {task}\n").into_bytes();
    let mut c = Vec::with_capacity(13);
    for (a, worker) in attempts.iter().zip(w) {
        c.push(Change::StartAttempt {
            id: *a,
            task,
            job,
            worker,
            owner: 1,
            at: 1,
        });
    }
    c.push(Change::TaskState {
        id: task,
        state: TaskState::Running,
        attempts: 2,
    });
    for a in attempts {
        c.push(Change::FinishAttempt {
            id: a,
            status,
            digest,
            fuel: 12_345_678,
            signature: "ab".repeat(64),
            at: 2,
        });
    }
    c.push(Change::FinishTask {
        id: task,
        state: TaskState::Verified,
        outcome: TaskOutcome {
            status: Some(status),
            stdout: stdout.clone(),
            fuel: 12_345_678,
            digest: Some(digest),
            error: None,
            acceptance: Some(Acceptance::Quorum),
            files: vec![],
        },
        attempts: 2,
    });
    for a in attempts {
        for (key, to, amount, reason) in [
            (
                EntryKey::Payment(a),
                Party::Account(1),
                12_345,
                Reason::Payment,
            ),
            (EntryKey::Fee(a), Party::Treasury, 617, Reason::Fee),
        ] {
            c.push(Change::Transfer {
                transfer: Transfer {
                    key,
                    from: Party::Escrow(job),
                    to,
                    amount,
                    reason,
                },
                at: 2,
            });
        }
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&task.to_le_bytes());
    c.push(Change::CachePut {
        key: CacheKey(key),
        result: CachedResult {
            status,
            stdout,
            fuel: 12_345_678,
            digest,
            stderr: String::new(),
            files: vec![],
        },
        at: 2,
    });
    for id in w {
        c.push(Change::WorkerSeen {
            id,
            at: 2,
            completed_delta: 1,
        });
    }
    c
}
