//! The grid state under worker churn: workers join, vanish and answer in random orders, and no
//! task is ever lost. Drives the real `App` (with a real SQLite store) through its public
//! transitions; workers are channels, as the WebSocket tasks would be.

use crate::Config;
use crate::app::App;
use crate::grid::{Submission, WorkerLink};
use crate::programs::ProgramBytes;
use proptest::prelude::*;
use runegrid_core::{ExecStatus, Limits, PolicyKind, TrustRecord, digest};
use runegrid_proto::worker::{AttemptResult, Capabilities, ToWorker};
use runegrid_store::{NewJob, NewTask, ProgramRecord, SqliteStore, Store, TaskState};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

struct FakeWorker {
    conn: u64,
    rx: mpsc::UnboundedReceiver<ToWorker>,
    pending: Vec<runegrid_proto::worker::Assign>,
}

#[derive(Debug, Clone)]
enum Ev {
    Join(i64),
    Leave(i64),
    Answer(i64, usize),
    Tick,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        2 => (1i64..6).prop_map(Ev::Join),
        1 => (1i64..6).prop_map(Ev::Leave),
        4 => ((1i64..6), 1usize..4).prop_map(|(w, n)| Ev::Answer(w, n)),
        1 => Just(Ev::Tick),
    ]
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

fn answer(a: &runegrid_proto::worker::Assign) -> AttemptResult {
    let status = ExecStatus::Exited { code: 0 };
    let stdout = format!("out {}", a.args[0]).into_bytes();
    AttemptResult {
        attempt: a.attempt,
        status,
        digest: digest(&status, 7, &stdout),
        stdout,
        fuel: 7,
        signature: String::new(),
        stderr: String::new(),
        elapsed_us: 1,
        files: Vec::new(),
    }
}

struct World {
    app: App,
    workers: HashMap<i64, FakeWorker>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(policy: PolicyKind, tasks: u32) -> (World, i64) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let mut w = SqliteStore::open(&db).unwrap();
        let owner = w
            .create_account(
                "u",
                "h",
                runegrid_store::AccountKind::User,
                1_000_000_000 * runegrid_core::ledger::MICROS_PER_CREDIT,
            )
            .unwrap()
            .id;
        w.put_program(&ProgramRecord {
            sha256: "p".into(),
            instrumented_sha256: "i".into(),
            instrumented: vec![0, 97, 115, 109],
            original_size: 4,
            owner,
            created_at: 0,
        })
        .unwrap();
        let r = SqliteStore::open(&db).unwrap();
        let config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let app = App::recover(config, Box::new(w), Box::new(r)).unwrap();
        let (replicas, agree) = if policy == PolicyKind::None {
            (1, 1)
        } else {
            (2, 2)
        };
        let (job, _) = app
            .add_job(Submission {
                job: NewJob {
                    owner,
                    name: "churn".into(),
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
                    max_price: None,
                    state: runegrid_store::JobState::Active,
                    cache: false,
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
                    sha256: "i".into(),
                    module: vec![],
                }),
                mounts: Arc::from([]),
            })
            .unwrap();
        (
            World {
                app,
                workers: HashMap::new(),
                _dir: dir,
            },
            job,
        )
    }

    fn join(&mut self, id: i64) {
        if self.workers.contains_key(&id) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = self.app.worker_connected(
            id,
            id % 2,
            TrustRecord::default(),
            &caps(),
            WorkerLink::new(tx),
        );
        self.workers.insert(
            id,
            FakeWorker {
                conn,
                rx,
                pending: vec![],
            },
        );
    }

    fn leave(&mut self, id: i64) {
        if let Some(w) = self.workers.remove(&id) {
            self.app.worker_gone(
                id,
                w.conn,
                runegrid_core::Loss::Disconnected,
                "test: vanished",
            );
        }
    }

    fn pump(&mut self) {
        for w in self.workers.values_mut() {
            while let Ok(m) = w.rx.try_recv() {
                match m {
                    ToWorker::Assign(a) => w.pending.push(a),
                    ToWorker::Cancel { attempt, .. } => w.pending.retain(|a| a.attempt != attempt),
                    _ => {}
                }
            }
        }
    }

    fn answer(&mut self, id: i64, n: usize) {
        self.pump();
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let take: Vec<_> = w.pending.drain(..n.min(w.pending.len())).collect();
        for a in take {
            self.app.on_result(id, answer(&a));
        }
    }
}

fn check_nothing_lost(app: &App, job: i64) -> Result<(), TestCaseError> {
    let lost = app.tasks_without_progress(job);
    prop_assert!(
        lost.is_empty(),
        "tasks neither final, queued nor running: {:?}",
        lost
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever order workers come, go and answer in, every unfinished task is queued or has
    /// a running attempt; and once three workers stay, every task is verified with the right
    /// output (or failed because its attempts were lost as often as its quorum tolerates).
    #[test]
    fn no_task_is_lost_when_workers_come_and_go(
        events in proptest::collection::vec(ev(), 0..60),
        adaptive in any::<bool>(),
    ) {
        let policy = if adaptive { PolicyKind::Adaptive } else { PolicyKind::Quorum };
        let (mut w, job) = World::new(policy, 12);
        for e in &events {
            match e {
                Ev::Join(id) => w.join(*id),
                Ev::Leave(id) => w.leave(*id),
                Ev::Answer(id, n) => w.answer(*id, *n),
                Ev::Tick => { w.app.tick(); }
            }
            check_nothing_lost(&w.app, job)?;
        }
        for id in [100, 101, 102] {
            w.join(id);
        }
        for _ in 0..500 {
            if w.app.done_flag(job).is_some_and(|(_, d)| *d.borrow()) {
                break;
            }
            let ids: Vec<i64> = w.workers.keys().copied().collect();
            for id in ids {
                w.answer(id, 8);
            }
            check_nothing_lost(&w.app, job)?;
        }
        let (_, r) = w.app.job_results(job).expect("job in memory");
        for t in &r.tasks {
            // A task whose attempts vanished as often as its quorum tolerates fails by design
            // (it could be what brings its workers down), and only that way.
            if t.state.as_str() == TaskState::Failed.as_str()
                && t.error.as_deref().is_some_and(|e| e.contains("attempts were lost"))
            {
                continue;
            }
            prop_assert_eq!(t.state.as_str(), TaskState::Verified.as_str(), "{:?}", t);
            prop_assert_eq!(t.stdout.clone().unwrap(), format!("out {}", t.index));
        }
    }
}
