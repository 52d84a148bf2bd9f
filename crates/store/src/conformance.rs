//! The behaviour every [`Store`] backend must show. Each backend's tests call [`run_all`]
//! with a factory for fresh, empty stores; a failed expectation panics.

use crate::records::*;
use crate::{Store, StoreError};
use runegrid_core::cache::{CacheKey, CachedResult};
use runegrid_core::ledger::{EntryKey, Ledger, Party, Reason, Transfer};
use runegrid_core::settlement::hold;
use runegrid_core::{
    Acceptance, Digest, ExecStatus, Limits, OutputFile, PolicyKind, TrustParams, TrustRecord,
};
use std::collections::BTreeMap;

/// Runs every check, each on a fresh store from `fresh`.
pub fn run_all(fresh: &mut dyn FnMut() -> Box<dyn Store>) {
    accounts(fresh().as_mut());
    programs(fresh().as_mut());
    job_lifecycle(fresh().as_mut());
    apply_is_atomic(fresh().as_mut());
    workers(fresh().as_mut());
    journal(fresh().as_mut());
    welcome_credits(fresh().as_mut());
    result_cache(fresh().as_mut());
}

fn job_fixture(s: &mut dyn Store) -> (Account, JobRecord, Vec<TaskRecord>) {
    let acct = s
        .create_account("alice", "hash-a", AccountKind::User, 0)
        .unwrap();
    s.put_program(&ProgramRecord {
        sha256: "p1".into(),
        instrumented_sha256: "i1".into(),
        instrumented: vec![0, 97, 115, 109],
        original_size: 4,
        owner: acct.id,
        created_at: 1,
    })
    .unwrap();
    let new = NewJob {
        owner: acct.id,
        name: "j".into(),
        program: "p1".into(),
        policy: PolicyKind::Adaptive,
        replicas: 3,
        agree: 2,
        max_attempts: 7,
        limits: Limits::default(),
        created_at: 5,
        blobs: BTreeMap::from([("model.gguf".to_string(), "ab".repeat(32))]),
        price: 1_050_000,
        held: 7_777,
        max_price: None,
        state: crate::records::JobState::Active,
        cache: false,
        cached: 2,
        gpu: Some(runegrid_core::gpu::GpuOptions {
            verify: runegrid_core::gpu::GpuVerify::Tolerance {
                tolerance: runegrid_core::Tolerance::new(0.0, 1e-4, 4).unwrap(),
            },
            allow_software: true,
        }),
    };
    let tasks: Vec<NewTask> = (0..3)
        .map(|i| NewTask {
            args: vec![format!("a{i}")],
            env: BTreeMap::from([("K".to_string(), format!("v{i}"))]),
            stdin: vec![i as u8; 3],
            seed: u64::MAX - i,
        })
        .collect();
    let base = s.max_ids().unwrap();
    let id = base.job + 1;
    let ids: Vec<i64> = (1..=3).map(|i| base.task + i).collect();
    s.apply(&[Change::CreateJob {
        id,
        job: Box::new(new),
        tasks: ids.iter().copied().zip(tasks).collect(),
    }])
    .unwrap();
    let after = s.max_ids().unwrap();
    assert_eq!((after.job, after.task), (id, base.task + 3));
    let job = s.job(id).unwrap().expect("job stored");
    let stored = s.tasks(id).unwrap();
    (acct, job, stored)
}

fn accounts(s: &mut dyn Store) {
    let a = s
        .create_account("admin", "h1", AccountKind::Admin, 0)
        .unwrap();
    let b = s.create_account("bob", "h2", AccountKind::User, 0).unwrap();
    let c = s
        .create_account("tab", "h4", AccountKind::Contributor, 0)
        .unwrap();
    assert!(c.contributor && !c.admin);
    assert_ne!(a.id, b.id);
    assert!(matches!(
        s.create_account("bob", "h3", AccountKind::User, 0),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.account_by_token("h2").unwrap().unwrap().name, "bob");
    assert!(s.account_by_token("h1").unwrap().unwrap().admin);
    assert!(!s.account_by_token("h2").unwrap().unwrap().contributor);
    assert_eq!(s.account_by_token("h4").unwrap().unwrap(), c);
    assert!(s.account_by_token("nope").unwrap().is_none());
    assert_eq!(s.accounts().unwrap().len(), 3);
}

fn programs(s: &mut dyn Store) {
    let acct = s.create_account("a", "h", AccountKind::User, 0).unwrap();
    let p = ProgramRecord {
        sha256: "abc".into(),
        instrumented_sha256: "def".into(),
        instrumented: vec![1, 2, 3],
        original_size: 10,
        owner: acct.id,
        created_at: 7,
    };
    s.put_program(&p).unwrap();
    // A second upload of the same program is a no-op.
    s.put_program(&ProgramRecord {
        instrumented: vec![9],
        ..p.clone()
    })
    .unwrap();
    assert_eq!(s.program("abc").unwrap(), Some(p));
    assert_eq!(s.program("zzz").unwrap(), None);
}

fn job_lifecycle(s: &mut dyn Store) {
    let (acct, job, tasks) = job_fixture(s);
    assert_eq!(job.state, JobState::Active);
    assert_eq!(job.limits, Limits::default());
    assert_eq!(
        job.gpu.map(|g| (g.verify.to_string(), g.allow_software)),
        Some(("tolerance:rel=1e-4,ulps=4".to_string(), true))
    );
    assert_eq!(job.blobs["model.gguf"], "ab".repeat(32));
    assert_eq!((job.replicas, job.agree, job.max_attempts), (3, 2, 7));
    assert_eq!(tasks[2].seed, u64::MAX - 2);
    assert_eq!(tasks[1].args, vec!["a1".to_string()]);
    assert_eq!(tasks[1].env["K"], "v1");
    assert_eq!(tasks[1].stdin, vec![1, 1, 1]);
    assert!(
        tasks
            .iter()
            .all(|t| t.state == TaskState::Queued && t.outcome.is_none())
    );
    assert_eq!(s.unfinished_jobs().unwrap().len(), 1);
    assert_eq!(s.jobs(Some(acct.id), 10).unwrap().len(), 1);
    assert_eq!(s.jobs(Some(acct.id + 100), 10).unwrap().len(), 0);

    let w = s
        .upsert_worker(&NewWorker {
            public_key: "k".into(),
            owner: acct.id,
            name: "w".into(),
            capabilities: serde_json::json!({"slots": 2}),
            at: 1,
        })
        .unwrap();
    let digest = Digest([7; 32]);
    let status = ExecStatus::Exited { code: 0 };
    s.apply(&[
        Change::StartAttempt {
            id: 10,
            task: tasks[0].id,
            job: job.id,
            worker: w.id,
            owner: 42,
            at: 2,
        },
        Change::StartAttempt {
            id: 11,
            task: tasks[0].id,
            job: job.id,
            worker: w.id,
            owner: 42,
            at: 2,
        },
        Change::TaskState {
            id: tasks[0].id,
            state: TaskState::Running,
            attempts: 2,
        },
    ])
    .unwrap();
    assert_eq!(s.max_ids().unwrap().attempt, 11);
    s.apply(&[
        Change::FinishAttempt {
            id: 10,
            status,
            digest,
            fuel: 99,
            signature: "sig".into(),
            at: 3,
        },
        Change::LoseAttempt {
            id: 11,
            error: "worker vanished".into(),
            at: 3,
        },
        Change::FinishTask {
            id: tasks[0].id,
            state: TaskState::Verified,
            outcome: TaskOutcome {
                status: Some(status),
                stdout: b"out".to_vec(),
                fuel: 99,
                digest: Some(digest),
                error: None,
                acceptance: Some(Acceptance::Trusted),
                files: vec![OutputFile {
                    path: "dir/a.txt".into(),
                    size: 3,
                    sha256: "ab".repeat(32),
                }],
            },
            attempts: 2,
        },
        Change::WorkerSeen {
            id: w.id,
            at: 3,
            completed_delta: 1,
        },
    ])
    .unwrap();
    let att = s.attempts(job.id).unwrap();
    assert_eq!(att.len(), 2);
    assert_eq!(att[0].state, AttemptState::Done);
    assert_eq!(att[0].digest, Some(digest));
    assert_eq!(att[0].agreed, None);
    assert_eq!(att[0].fuel, Some(99));
    assert_eq!(att[1].state, AttemptState::Lost);
    assert_eq!(att[1].error.as_deref(), Some("worker vanished"));
    // A tolerance job's attempt accepted as another's digest keeps its own beside it.
    let other = Digest([7; 32]);
    s.apply(&[Change::AgreeAttempt {
        id: 10,
        agreed: other,
    }])
    .unwrap();
    let att = s.attempts(job.id).unwrap();
    assert_eq!((att[0].digest, att[0].agreed), (Some(digest), Some(other)));
    assert_eq!(att[1].agreed, None);
    let t0 = &s.tasks(job.id).unwrap()[0];
    assert_eq!(t0.state, TaskState::Verified);
    let o = t0.outcome.as_ref().unwrap();
    assert_eq!(
        (o.stdout.as_slice(), o.fuel, o.digest, o.status),
        (&b"out"[..], 99, Some(digest), Some(status))
    );
    assert_eq!(o.acceptance, Some(Acceptance::Trusted));
    assert_eq!(o.files.len(), 1);
    assert_eq!(
        (o.files[0].path.as_str(), o.files[0].size),
        ("dir/a.txt", 3)
    );
    // An audit corrects a finished task in place.
    s.apply(&[Change::CorrectTask {
        id: tasks[0].id,
        state: TaskState::Failed,
        outcome: TaskOutcome {
            status: Some(ExecStatus::Exited { code: 3 }),
            stdout: b"right".to_vec(),
            fuel: 7,
            digest: Some(Digest([9; 32])),
            error: Some("exit code 3".into()),
            acceptance: Some(Acceptance::Audited),
            files: vec![],
        },
    }])
    .unwrap();
    let t0 = &s.tasks(job.id).unwrap()[0];
    assert_eq!((t0.state, t0.attempts), (TaskState::Failed, 2));
    let o = t0.outcome.as_ref().unwrap();
    assert_eq!(o.stdout, b"right");
    assert_eq!(o.acceptance, Some(Acceptance::Audited));
    s.apply(&[Change::CorrectTask {
        id: tasks[0].id,
        state: TaskState::Verified,
        outcome: TaskOutcome {
            status: Some(status),
            stdout: b"out".to_vec(),
            fuel: 99,
            digest: Some(digest),
            error: None,
            acceptance: Some(Acceptance::Trusted),
            files: vec![],
        },
    }])
    .unwrap();
    assert_eq!(job.policy, PolicyKind::Adaptive);
    assert_eq!(s.workers().unwrap()[0].completed, 1);
    assert_eq!(
        s.task_states(job.id).unwrap(),
        vec![(TaskState::Queued, 2), (TaskState::Verified, 1)]
    );

    s.apply(&[Change::FinishJob {
        id: job.id,
        state: JobState::Done,
        at: 9,
    }])
    .unwrap();
    assert_eq!(s.job(job.id).unwrap().unwrap().state, JobState::Done);
    assert_eq!(s.job(job.id).unwrap().unwrap().finished_at, Some(9));
    assert!(s.unfinished_jobs().unwrap().is_empty());
    assert!(s.job(job.id + 1).unwrap().is_none());
}

fn apply_is_atomic(s: &mut dyn Store) {
    let (_, job, tasks) = job_fixture(s);
    s.apply(&[Change::StartAttempt {
        id: 1,
        task: tasks[0].id,
        job: job.id,
        worker: 1,
        owner: 42,
        at: 1,
    }])
    .unwrap();
    // The second change collides with attempt 1: nothing of the batch may remain.
    let r = s.apply(&[
        Change::TaskState {
            id: tasks[1].id,
            state: TaskState::Running,
            attempts: 1,
        },
        Change::StartAttempt {
            id: 1,
            task: tasks[1].id,
            job: job.id,
            worker: 1,
            owner: 42,
            at: 1,
        },
    ]);
    assert!(r.is_err());
    assert_eq!(s.tasks(job.id).unwrap()[1].state, TaskState::Queued);
    assert_eq!(s.attempts(job.id).unwrap().len(), 1);
}

fn workers(s: &mut dyn Store) {
    let a = s.create_account("a", "h", AccountKind::User, 0).unwrap();
    let nw = NewWorker {
        public_key: "key1".into(),
        owner: a.id,
        name: "one".into(),
        capabilities: serde_json::json!({"cores": 2}),
        at: 5,
    };
    let w1 = s.upsert_worker(&nw).unwrap();
    let w2 = s
        .upsert_worker(&NewWorker {
            name: "renamed".into(),
            at: 8,
            ..nw.clone()
        })
        .unwrap();
    assert_eq!(w1.id, w2.id, "a key keeps its worker id");
    assert_eq!(w2.name, "renamed");
    assert_eq!((w2.first_seen, w2.last_seen), (5, 8));
    let w3 = s
        .upsert_worker(&NewWorker {
            public_key: "key2".into(),
            ..nw
        })
        .unwrap();
    assert_ne!(w3.id, w1.id);
    assert_eq!(s.workers().unwrap().len(), 2);
    // A trust record is kept as written and survives a re-registration.
    assert_eq!(w1.trust, TrustRecord::default());
    let mut trust = TrustRecord {
        agreed: 40,
        streak: 12,
        completed: 41,
        speed: 1.25,
        ..TrustRecord::default()
    };
    trust.record_disagreement(&TrustParams::default());
    s.apply(&[Change::WorkerTrust {
        id: w1.id,
        trust: trust.clone(),
    }])
    .unwrap();
    let again = s
        .upsert_worker(&NewWorker {
            public_key: "key1".into(),
            owner: a.id,
            name: "one".into(),
            capabilities: serde_json::json!({}),
            at: 9,
        })
        .unwrap();
    assert_eq!(again.trust, trust);
}

/// Transfers go to the journal in order, once per key, in the transaction of the changes they
/// come with; statements show an account's side, newest first, page by page.
fn journal(s: &mut dyn Store) {
    let (acct, job, _) = job_fixture(s);
    let a = acct.id;
    let grant = Transfer::grant(7, a, 1_000);
    let h = hold(job.id, a, 600);
    let pay = Transfer {
        key: EntryKey::Payment(9_000),
        from: Party::Escrow(job.id),
        to: Party::Account(99),
        amount: 100,
        reason: Reason::Payment,
    };
    s.apply(&[
        Change::Transfer {
            transfer: grant,
            at: 1,
        },
        Change::Transfer { transfer: h, at: 2 },
    ])
    .unwrap();
    // Applying a key again moves nothing, even with another amount.
    s.apply(&[
        Change::Transfer {
            transfer: Transfer { amount: 5, ..grant },
            at: 3,
        },
        Change::Transfer {
            transfer: pay,
            at: 4,
        },
    ])
    .unwrap();
    let all = s.journal(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.transfer).collect::<Vec<_>>(),
        vec![grant, h, pay]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[1].at, 2);
    assert_eq!(s.journal(all[0].seq, 1).unwrap()[0].transfer, h);
    let ledger = Ledger::replay(all.iter().map(|e| &e.transfer)).unwrap();
    ledger.check().unwrap();
    assert_eq!(ledger.balance(Party::Account(a)), 400);

    // A transfer is part of its batch: a failing change takes it back with the rest.
    let before = s.journal(0, 100).unwrap().len();
    let r = s.apply(&[
        Change::Transfer {
            transfer: Transfer::grant(8, a, 10),
            at: 5,
        },
        Change::CreateJob {
            id: job.id,
            job: Box::new(NewJob {
                owner: a,
                name: "dup".into(),
                program: "p1".into(),
                policy: PolicyKind::Quorum,
                replicas: 1,
                agree: 1,
                max_attempts: 1,
                limits: Limits::default(),
                created_at: 1,
                blobs: BTreeMap::new(),
                price: 0,
                held: 0,
                max_price: None,
                state: crate::records::JobState::Active,
                cache: true,
                cached: 0,
                gpu: None,
            }),
            tasks: vec![],
        },
    ]);
    assert!(r.is_err(), "a job id used twice must fail the batch");
    assert_eq!(s.journal(0, 100).unwrap().len(), before);

    // Statements: the account's side only, newest first, paged by sequence number.
    let st = s.statement(a, None, 10).unwrap();
    assert_eq!(
        st.iter().map(|e| e.transfer.key).collect::<Vec<_>>(),
        vec![h.key, grant.key]
    );
    assert_eq!(
        s.statement(a, Some(st[0].seq), 10).unwrap()[0].transfer,
        grant
    );
    assert_eq!(s.statement(99, None, 10).unwrap()[0].transfer, pay);
    assert!(s.statement(12_345, None, 10).unwrap().is_empty());

    // Ids handed out after a restart stay above every paid attempt and every grant.
    let max = s.max_ids().unwrap();
    assert!(max.attempt >= 9_000);
    assert_eq!(max.grant, 7);
    // The job keeps its price and hold.
    let stored = s.job(job.id).unwrap().unwrap();
    assert_eq!((stored.price, stored.held), (1_050_000, 7_777));
}

/// An account's welcome credits are granted with it, once.
fn welcome_credits(s: &mut dyn Store) {
    let a = s
        .create_account("new", "hn", AccountKind::User, 5_000)
        .unwrap();
    let b = s
        .create_account("none", "hx", AccountKind::User, 0)
        .unwrap();
    assert!(
        s.create_account("new", "hy", AccountKind::User, 5_000)
            .is_err()
    );
    let all = s.journal(0, 100).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].transfer, Transfer::welcome(a.id, 5_000));
    assert!(s.statement(b.id, None, 10).unwrap().is_empty());
    // A leaderboard name is opt-in, and may be withdrawn.
    assert_eq!(s.accounts().unwrap()[0].display_name, None);
    s.apply(&[Change::DisplayName {
        account: a.id,
        name: Some("Ada".into()),
    }])
    .unwrap();
    let named = s.accounts().unwrap();
    assert_eq!(named[0].display_name.as_deref(), Some("Ada"));
    assert_eq!(named[1].display_name, None);
    s.apply(&[Change::DisplayName {
        account: a.id,
        name: None,
    }])
    .unwrap();
    assert_eq!(s.accounts().unwrap()[0].display_name, None);
}

/// Cached results: stored, replaced under the same key, read back least recently used first
/// (a use moves an entry to the back), evicted; a job keeps whether it uses the cache and how
/// many of its tasks it answered.
fn result_cache(s: &mut dyn Store) {
    let (_, job, _) = job_fixture(s);
    assert!(!job.cache);
    assert_eq!(job.cached, 2);
    assert!(s.cached_results().unwrap().is_empty());
    let result = |n: u8| CachedResult {
        status: ExecStatus::Exited { code: i32::from(n) },
        stdout: vec![n; usize::from(n)],
        fuel: u64::MAX - u64::from(n),
        digest: Digest([n; 32]),
        stderr: format!("summary {n}"),
        files: (0..n % 2)
            .map(|i| OutputFile {
                path: format!("out-{n}-{i}.txt"),
                size: u64::from(n),
                sha256: format!("{n:02x}").repeat(32),
            })
            .collect(),
    };
    let key = |n: u8| CacheKey([n; 32]);
    s.apply(&[
        Change::CachePut {
            key: key(1),
            result: result(1),
            at: 10,
        },
        Change::CachePut {
            key: key(2),
            result: result(2),
            at: 11,
        },
        Change::CachePut {
            key: key(3),
            result: result(3),
            at: 12,
        },
    ])
    .unwrap();
    let keys = |s: &mut dyn Store| -> Vec<CacheKey> {
        s.cached_results().unwrap().iter().map(|e| e.key).collect()
    };
    assert_eq!(keys(s), [key(1), key(2), key(3)]);
    let all = s.cached_results().unwrap();
    assert_eq!(all[1].result, result(2));
    assert_eq!(all[1].used_at, 11);
    // A use moves it last; an older use time never moves it back.
    s.apply(&[Change::CacheUse {
        key: key(1),
        at: 20,
    }])
    .unwrap();
    s.apply(&[Change::CacheUse { key: key(1), at: 5 }]).unwrap();
    assert_eq!(keys(s), [key(2), key(3), key(1)]);
    // Replaced under the same key.
    s.apply(&[Change::CachePut {
        key: key(2),
        result: result(9),
        at: 30,
    }])
    .unwrap();
    assert_eq!(keys(s), [key(3), key(1), key(2)]);
    assert_eq!(s.cached_results().unwrap()[2].result, result(9));
    s.apply(&[
        Change::CacheEvict { key: key(3) },
        Change::CacheEvict { key: key(7) },
    ])
    .unwrap();
    assert_eq!(keys(s), [key(1), key(2)]);
}
