//! Regressions found by reading and running the grid: each test drives the real `App` (with a
//! real SQLite store) through its public transitions, with workers as channels.

use crate::Config;
use crate::app::App;
use crate::grid::{Submission, WorkerLink};
use crate::programs::ProgramBytes;
use runegrid_core::{
    Acceptance, ExecStatus, JobId, Limits, PolicyKind, Standing, TrustParams, TrustRecord, digest,
};
use runegrid_proto::worker::{Assign, AttemptResult, Capabilities, ToWorker};
use runegrid_store::{NewJob, NewTask, ProgramRecord, SqliteStore, Store};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The instrumented hash of the one program the tests run.
/// The grid's store, once everything it queued is committed.
pub(crate) fn store(g: &Grid) -> SqliteStore {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(g.app.writer.flush());
    SqliteStore::open(&g.dir.path().join("db.sqlite")).unwrap()
}

const PROGRAM: &str = "i";
/// The fuel every fake attempt reports: 2 credits' worth at the base price.
pub(crate) const FUEL: u64 = 2_000_000_000;

pub(crate) struct Fake {
    conn: u64,
    rx: mpsc::UnboundedReceiver<ToWorker>,
    /// Assignments not answered yet.
    pub pending: Vec<Assign>,
    /// Everything the worker received, in order.
    seen: Vec<ToWorker>,
    pub lie: bool,
}

pub(crate) struct Grid {
    pub app: App,
    pub owner: i64,
    pub workers: HashMap<i64, Fake>,
    pub dir: tempfile::TempDir,
    trust: TrustParams,
    /// Whether submitted jobs use the result cache (their tasks' inputs repeat from job to
    /// job, so most tests leave it off).
    pub cache: bool,
}

fn caps() -> Capabilities {
    Capabilities {
        gpu: None,
        cores: 1,
        memory_bytes: 0,
        slots: 1,
        arch: "test".into(),
        os: "test".into(),
        runtime: "test".into(),
        blob_space: 0,
        blobs: vec![],
    }
}

fn answer(a: &Assign, lie: bool) -> AttemptResult {
    let status = ExecStatus::Exited { code: 0 };
    let stdout = if lie {
        format!("lie {}", a.args[0]).into_bytes()
    } else {
        format!("out {}", a.args[0]).into_bytes()
    };
    AttemptResult {
        attempt: a.attempt,
        status,
        digest: digest(&status, FUEL, &stdout),
        stdout,
        fuel: FUEL,
        signature: String::new(),
        stderr: String::new(),
        elapsed_us: 1,
        files: Vec::new(),
    }
}

impl Grid {
    pub fn new(trust: TrustParams) -> Grid {
        Grid::with_credits(
            trust,
            1_000_000_000 * runegrid_core::ledger::MICROS_PER_CREDIT,
        )
    }

    /// A grid whose user account starts with `welcome` micro-credits.
    pub fn with_credits(trust: TrustParams, welcome: i64) -> Grid {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let mut w = SqliteStore::open(&db).unwrap();
        let owner = w
            .create_account("u", "h", runegrid_store::AccountKind::User, welcome)
            .unwrap()
            .id;
        w.put_program(&ProgramRecord {
            sha256: "p".into(),
            instrumented_sha256: PROGRAM.into(),
            instrumented: vec![0, 97, 115, 109],
            original_size: 4,
            owner,
            created_at: 0,
        })
        .unwrap();
        let r = SqliteStore::open(&db).unwrap();
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.trust = trust;
        let app = App::recover(config, Box::new(w), Box::new(r)).unwrap();
        Grid {
            app,
            owner,
            workers: HashMap::new(),
            dir,
            trust,
            cache: false,
        }
    }

    pub fn submit(&self, policy: PolicyKind, tasks: u32) -> JobId {
        self.try_submit(policy, tasks).unwrap()
    }

    pub fn try_submit(
        &self,
        policy: PolicyKind,
        tasks: u32,
    ) -> Result<JobId, crate::grid::HoldError> {
        self.try_submit_bid(policy, tasks, None)
    }

    /// Submits a job bidding at most `max_price` per 10^9 fuel.
    pub fn try_submit_bid(
        &self,
        policy: PolicyKind,
        tasks: u32,
        max_price: Option<u64>,
    ) -> Result<JobId, crate::grid::HoldError> {
        let (replicas, agree) = if policy == PolicyKind::None {
            (1, 1)
        } else {
            (2, 2)
        };
        self.app
            .add_job(Submission {
                job: NewJob {
                    owner: self.owner,
                    name: "t".into(),
                    program: "p".into(),
                    policy,
                    replicas,
                    agree,
                    max_attempts: 6,
                    limits: Limits::default(),
                    created_at: 0,
                    blobs: Default::default(),
                    price: 0,
                    held: 0,
                    max_price,
                    state: runegrid_store::JobState::Active,
                    cache: self.cache,
                    cached: 0,
                    gpu: None,
                },
                tasks: (0..tasks)
                    .map(|i| NewTask {
                        args: vec![i.to_string()],
                        env: Default::default(),
                        stdin: vec![],
                        seed: i as u64,
                    })
                    .collect(),
                owner_name: "u".into(),
                program: Arc::new(ProgramBytes {
                    sha256: PROGRAM.into(),
                    module: vec![0, 97, 115, 109],
                }),
                mounts: Arc::from([]),
            })
            .map(|(id, _)| id)
    }

    /// Connects worker `id` (its own owner account), honest or lying.
    pub fn join(&mut self, id: i64, lie: bool) {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn =
            self.app
                .worker_connected(id, id, TrustRecord::default(), &caps(), WorkerLink::new(tx));
        self.workers.insert(
            id,
            Fake {
                conn,
                rx,
                pending: vec![],
                seen: vec![],
                lie,
            },
        );
    }

    /// The worker says it is leaving (not blamed).
    pub fn leave(&mut self, id: i64) {
        if let Some(w) = self.workers.remove(&id) {
            self.app
                .worker_gone(id, w.conn, runegrid_core::Loss::Left, "test: left");
        }
    }

    pub fn pump(&mut self) {
        for w in self.workers.values_mut() {
            while let Ok(m) = w.rx.try_recv() {
                match &m {
                    ToWorker::Assign(a) => w.pending.push(a.clone()),
                    ToWorker::Cancel { attempt, .. } => w.pending.retain(|a| a.attempt != *attempt),
                    _ => {}
                }
                w.seen.push(m);
            }
        }
    }

    /// Worker `id` answers everything it holds; returns how many it answered.
    pub fn answer(&mut self, id: i64) -> usize {
        self.pump();
        let w = self.workers.get_mut(&id).expect("connected");
        let take: Vec<Assign> = std::mem::take(&mut w.pending);
        let lie = w.lie;
        for a in &take {
            self.app.on_result(id, answer(a, lie));
        }
        take.len()
    }

    /// The listed workers answer until none holds anything.
    pub fn settle(&mut self, ids: &[i64]) {
        for _ in 0..100 {
            let mut n = 0;
            for id in ids {
                n += self.answer(*id);
            }
            if n == 0 {
                return;
            }
        }
        panic!("workers kept getting work");
    }

    /// The same data directory served again, as after a crash right after the last commit
    /// (the process-level tests kill a real coordinator anywhere).
    pub fn restart(&mut self) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.app.writer.flush());
        let db = self.dir.path().join("db.sqlite");
        let w = SqliteStore::open(&db).unwrap();
        let r = SqliteStore::open(&db).unwrap();
        let mut config = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            self.dir.path().to_path_buf(),
        );
        config.trust = self.trust;
        self.app = App::recover(config, Box::new(w), Box::new(r)).unwrap();
        self.workers.clear();
    }

    pub fn done(&self, job: JobId) -> bool {
        self.app.done_flag(job).is_some_and(|(_, d)| *d.borrow())
    }
}

/// Workers 1 and 2 verify two quorum jobs together (so both are trusted after the second, whose
/// task becomes a known-answer probe); then both jobs leave memory.
fn grid_with_a_probe_from_an_evicted_job() -> Grid {
    let mut g = Grid::new(TrustParams {
        trust_after: 2,
        ..TrustParams::default()
    });
    g.join(1, false);
    g.join(2, false);
    let jobs = [
        g.submit(PolicyKind::Quorum, 1),
        g.submit(PolicyKind::Quorum, 1),
    ];
    for job in jobs {
        g.settle(&[1, 2]);
        assert!(g.done(job));
    }
    g.app.evict(&jobs);
    assert!(g.app.job_status(jobs[0]).is_none(), "job left memory");
    g
}

/// A new worker on an idle grid gets a known-answer probe; the coordinator must be able to send
/// it the probe's program even though the probe's job left memory, and must not give the same
/// probe to the same worker twice.
#[test]
fn probe_of_an_evicted_job_is_served_and_not_repeated() {
    let mut g = grid_with_a_probe_from_an_evicted_job();
    g.join(3, false);
    g.pump();
    let probe = g.workers[&3].pending.first().cloned().expect("a probe");
    assert_eq!(probe.program, PROGRAM);
    let served = g.app.program_for(3, &probe.program);
    assert!(
        served.is_some_and(|p| p.module == [0, 97, 115, 109]),
        "the probe's program is served"
    );
    assert_eq!(g.answer(3), 1);
    let standing = g.app.trust_of(3).unwrap();
    assert_eq!(standing.agreed, 1, "the probe passed: {standing:?}");
    g.pump();
    assert!(
        g.workers[&3]
            .pending
            .iter()
            .all(|a| (a.job, a.seed) != (probe.job, probe.seed)),
        "the same probe was given twice: {:?}",
        g.workers[&3].pending
    );
}

/// Output of an attempt whose job left memory (a probe's) is taken without a panic, and the
/// grid keeps working after it.
#[test]
fn output_of_a_probe_whose_job_left_memory_is_taken() {
    let mut g = grid_with_a_probe_from_an_evicted_job();
    g.join(3, false);
    g.pump();
    let probe = g.workers[&3].pending.first().cloned().expect("a probe");
    g.app.on_output(3, probe.attempt, b"out 0");
    assert_eq!(g.answer(3), 1);
    let job = g.submit(PolicyKind::Quorum, 2);
    g.settle(&[1, 2, 3]);
    assert!(g.done(job), "the grid still works");
}

/// A worker quarantined by an audit's correction is told so, and its running attempts are taken
/// back for other workers — as when a quorum quarantines it.
#[test]
fn quarantine_by_an_audit_takes_back_the_workers_attempts() {
    let mut g = Grid::new(TrustParams {
        trust_after: 1,
        spot_scale: 0.0,
        min_spot_rate: 0.0,
        quarantine_disagreements: 2,
        quarantine_error_rate: 0.0,
        ..TrustParams::default()
    });
    const LIAR: i64 = 1;
    // The liar and an honest worker agree once: both are trusted.
    g.join(LIAR, false);
    g.join(2, false);
    let j = g.submit(PolicyKind::Quorum, 1);
    g.settle(&[LIAR, 2]);
    assert!(g.done(j));
    // Alone, the trusted liar's lie is accepted on its word.
    g.leave(2);
    g.workers.get_mut(&LIAR).unwrap().lie = true;
    let j = g.submit(PolicyKind::Adaptive, 1);
    g.settle(&[LIAR]);
    assert!(g.done(j));
    let (_, r) = g.app.job_results(j).unwrap();
    assert_eq!(r.tasks[0].acceptance, Some(Acceptance::Trusted));
    // Caught once by a quorum: doubtful, its lone result audited.
    g.join(2, false);
    let j = g.submit(PolicyKind::Quorum, 1);
    g.answer(LIAR);
    g.answer(2);
    // It takes work it will never answer.
    let held = g.submit(PolicyKind::Quorum, 2);
    g.pump();
    let holding: Vec<i64> = g.workers[&LIAR].pending.iter().map(|a| a.attempt).collect();
    assert!(!holding.is_empty(), "the liar holds attempts");
    // A third worker settles the quorum and, with the second, the audit: the audit's correction
    // is the liar's second disagreement, which quarantines it.
    g.join(3, false);
    g.settle(&[2, 3]);
    assert!(g.done(j));
    let record = g.app.trust_of(LIAR).unwrap();
    assert!(record.quarantine.is_some(), "quarantined: {record:?}");
    g.pump();
    let liar = &g.workers[&LIAR];
    assert!(
        liar.seen.iter().any(|m| matches!(
            m,
            ToWorker::Standing { standing, .. } if *standing == Standing::Quarantined
        )),
        "the liar is told it is quarantined: {:?}",
        liar.seen
    );
    for a in &holding {
        assert!(
            liar.seen
                .iter()
                .any(|m| matches!(m, ToWorker::Cancel { attempt, .. } if attempt == a)),
            "attempt {a} is taken back from the quarantined worker"
        );
    }
    g.settle(&[2, 3]);
    assert!(g.done(held), "its attempts ran elsewhere");
}
