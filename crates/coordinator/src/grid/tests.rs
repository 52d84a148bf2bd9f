//! Transitions driven directly on a `Grid`, asserting on the effects they record.

use super::{Effects, Grid, NextIds, Submission, WorkerLink};
use crate::programs::ProgramBytes;
use proptest::prelude::*;
use runegrid_core::{Limits, PolicyKind, Standing, TrustParams, TrustRecord, WorkerId};
use runegrid_proto::worker::{Capabilities, ToWorker};
use runegrid_store::{Change, NewJob, NewTask};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

fn grid(params: TrustParams) -> Grid {
    Grid::new(
        params,
        Duration::from_secs(10),
        NextIds {
            job: 1,
            task: 1,
            attempt: 1,
            grant: 1,
        },
        super::CreditTerms {
            free: true,
            ..Default::default()
        },
        crate::metrics::Metrics::new(),
    )
}

fn caps(slots: u32) -> Capabilities {
    Capabilities {
        gpu: None,
        cores: 1,
        memory_bytes: 0,
        slots,
        arch: "test".into(),
        os: "test".into(),
        runtime: "test".into(),
        blob_space: 0,
        blobs: vec![],
    }
}

fn submission(policy: PolicyKind, tasks: u32) -> Submission {
    Submission {
        job: NewJob {
            owner: 1,
            name: "t".into(),
            program: "p".into(),
            policy,
            replicas: 2,
            agree: 2,
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
    }
}

/// Connects a worker; keeps its receiver open (a closed one takes no attempts).
fn connect(
    g: &mut Grid,
    id: WorkerId,
    slots: u32,
    fx: &mut Effects,
) -> mpsc::UnboundedReceiver<ToWorker> {
    let (tx, rx) = mpsc::unbounded_channel();
    g.worker_connected(
        id,
        id,
        TrustRecord::default(),
        &caps(slots),
        WorkerLink::new(tx),
        fx,
    );
    rx
}

fn assigned(fx: &Effects, w: WorkerId) -> Vec<i64> {
    fx.to(w)
        .filter_map(|m| match m {
            ToWorker::Assign(a) => Some(a.attempt),
            _ => None,
        })
        .collect()
}

#[test]
fn accepting_a_job_records_its_creation_then_its_attempts() {
    let mut g = grid(TrustParams::default());
    let mut fx = Effects::default();
    let _rx1 = connect(&mut g, 1, 1, &mut fx);
    let _rx2 = connect(&mut g, 2, 1, &mut fx);
    assert!(fx.changes.is_empty() && fx.messages.is_empty());
    let job = g
        .add_job(submission(PolicyKind::Quorum, 3), &mut fx)
        .unwrap();
    assert!(matches!(fx.changes.as_slice(), [Change::CreateJob { id, .. }] if *id == job));
    assert!(
        fx.messages.is_empty(),
        "nothing is given out before dispatch"
    );
    g.dispatch(&mut fx);
    // Two slots each hold two attempts: 4 attempts, each task's two on distinct workers.
    let (a1, a2) = (assigned(&fx, 1), assigned(&fx, 2));
    assert_eq!((a1.len(), a2.len()), (2, 2));
    let started = fx
        .changes
        .iter()
        .filter(|c| matches!(c, Change::StartAttempt { .. }))
        .count();
    assert_eq!(started, 4);
    assert!(
        matches!(fx.changes[0], Change::CreateJob { .. }),
        "creation first"
    );
}

#[derive(Debug, Clone)]
enum TrustChange {
    Agree,
    Disagree,
    Abandon,
    Release,
}

fn trust_change() -> impl Strategy<Value = TrustChange> {
    prop_oneof![
        3 => Just(TrustChange::Agree),
        2 => Just(TrustChange::Disagree),
        2 => Just(TrustChange::Abandon),
        1 => Just(TrustChange::Release),
    ]
}

proptest! {
    /// Whatever changes a worker's record, a change of standing is told to the worker, and a
    /// quarantined worker holds no attempt afterwards (each taken back with a cancel).
    #[test]
    fn every_change_of_standing_is_acted_on(changes in proptest::collection::vec(trust_change(), 1..40)) {
        let params = TrustParams {
            trust_after: 2,
            quarantine_disagreements: 2,
            quarantine_abandoned: 2,
            ..TrustParams::default()
        };
        let mut g = grid(params);
        let mut fx = Effects::default();
        let _rx1 = connect(&mut g, 1, 2, &mut fx);
        let _rx2 = connect(&mut g, 2, 2, &mut fx);
        g.add_job(submission(PolicyKind::Quorum, 8), &mut fx).unwrap();
        g.dispatch(&mut fx);
        for c in &changes {
            let before = g.standing(1);
            let held = g.attempts.values().filter(|a| a.worker == 1).count();
            let mut fx = Effects::default();
            g.update_trust(1, |r, p| match c {
                TrustChange::Agree => r.record_agreement(),
                TrustChange::Disagree => r.record_disagreement(p),
                TrustChange::Abandon => r.record_abandoned(p),
                TrustChange::Release => r.release(),
            }, &mut fx);
            let after = g.standing(1);
            let told: Vec<&str> = fx.to(1).filter_map(|m| match m {
                ToWorker::Standing { standing, .. } => Some(standing.as_str()),
                _ => None,
            }).collect();
            if after != before {
                prop_assert_eq!(told, vec![after.as_str()]);
            } else {
                prop_assert!(told.is_empty());
            }
            if after == Standing::Quarantined {
                prop_assert!(g.attempts.values().all(|a| a.worker != 1), "a quarantined worker holds nothing");
                if before != after {
                    let cancels = fx.to(1).filter(|m| matches!(m, ToWorker::Cancel { .. })).count();
                    prop_assert_eq!(cancels, held, "each attempt it held is cancelled");
                }
            }
            g.flush_trust(&mut fx);
        }
    }
}

/// `free` holds exactly the connected workers holding fewer attempts than they may.
fn assert_free_in_step(g: &Grid) {
    let expect: std::collections::BTreeSet<WorkerId> = g
        .workers
        .iter()
        .filter(|(id, w)| {
            let speed = g.trust.record(**id).map_or(0.0, |r| r.speed);
            w.busy.len() < runegrid_core::schedule::capacity(w.slots, speed) as usize
        })
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(g.free, expect);
}

#[test]
fn free_workers_follow_attempts_and_connections() {
    let mut g = grid(TrustParams::default());
    let mut fx = Effects::default();
    let mut rxs: Vec<_> = (1..=4).map(|id| connect(&mut g, id, 1, &mut fx)).collect();
    assert_free_in_step(&g);
    g.add_job(submission(PolicyKind::Quorum, 3), &mut fx)
        .unwrap();
    g.dispatch(&mut fx);
    // Six attempts on four workers of capacity two: some are full.
    assert!(g.free.len() < 4);
    assert_free_in_step(&g);
    // Failures free capacity (and dispatch fills it again), a worker going takes its place.
    for id in 1..=2 {
        let held: Vec<_> = g.workers[&id].busy.iter().copied().collect();
        for a in held {
            g.on_failed(id, a, runegrid_core::Loss::Failed(None), "x", &mut fx);
            assert_free_in_step(&g);
        }
    }
    g.dispatch(&mut fx);
    assert_free_in_step(&g);
    let conn = g.workers[&3].conn;
    g.worker_gone(3, conn, runegrid_core::Loss::Disconnected, "gone", &mut fx);
    assert!(!g.free.contains(&3));
    assert_free_in_step(&g);
    // A reconnection replaces the old connection.
    rxs.push(connect(&mut g, 4, 2, &mut fx));
    assert_free_in_step(&g);
}

#[test]
fn among_many_free_workers_dispatch_weighs_a_sample_yet_places_what_only_one_can_run() {
    let mut g = grid(TrustParams::default());
    let mut fx = Effects::default();
    // 3,000 workers offering 1 byte of memory (none can run a task), and the last one, which
    // sets no limit: far more free slots than one sample holds.
    let mut rxs = Vec::new();
    for id in 1..=3000 {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut c = caps(1);
        c.memory_bytes = if id == 3000 { 0 } else { 1 };
        g.worker_connected(
            id,
            id,
            TrustRecord::default(),
            &c,
            WorkerLink::new(tx),
            &mut fx,
        );
        rxs.push(rx);
    }
    g.add_job(submission(PolicyKind::None, 1), &mut fx).unwrap();
    g.dispatch(&mut fx);
    assert_eq!(assigned(&fx, 3000).len(), 1, "the one able worker runs it");
    let all = fx
        .messages
        .iter()
        .filter(|m| matches!(m.msg, ToWorker::Assign(_)))
        .count();
    assert_eq!(all, 1);

    // More tasks than one sample holds: each dispatch pass takes sample after sample, and
    // every task is given out, no worker past its capacity (twice its slot).
    let mut g = grid(TrustParams::default());
    let mut fx = Effects::default();
    let _rxs: Vec<_> = (1..=3000)
        .map(|id| connect(&mut g, id, 1, &mut fx))
        .collect();
    g.add_job(submission(PolicyKind::None, 3000), &mut fx)
        .unwrap();
    g.dispatch(&mut fx);
    let per_worker: Vec<usize> = (1..=3000).map(|w| assigned(&fx, w).len()).collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 3000);
    assert!(per_worker.iter().all(|n| *n <= 2), "{per_worker:?}");
}

#[test]
fn of_two_connections_of_one_worker_the_one_that_said_hello_last_stays() {
    use super::hello_order;
    let mut g = grid(TrustParams::default());
    let link = |tx: &mpsc::UnboundedSender<ToWorker>, hello| WorkerLink {
        tx: tx.clone(),
        heard: Arc::new(super::Heard::now()),
        hello,
    };
    let rejected = |fx: &Effects, tx: &mpsc::UnboundedSender<ToWorker>| {
        fx.on(tx).any(|m| matches!(m, ToWorker::Reject { .. }))
    };
    let mut join = |tx: &mpsc::UnboundedSender<ToWorker>, hello, fx: &mut Effects| {
        g.worker_connected(7, 7, TrustRecord::default(), &caps(1), link(tx, hello), fx);
    };
    // A worker gives up on a slow handshake and dials again: the second hello registers first,
    // the first one's registration finishes after it.
    let (older, newer) = (hello_order(), hello_order());
    let (tx_new, _rx_new) = mpsc::unbounded_channel();
    let (tx_old, _rx_old) = mpsc::unbounded_channel();
    let mut fx = Effects::default();
    join(&tx_new, newer, &mut fx);
    join(&tx_old, older, &mut fx);
    assert!(rejected(&fx, &tx_old), "the older connection is refused");
    assert!(!rejected(&fx, &tx_new), "the newer one stays");

    // In order (a reconnect, or a second process with the same key): the newer replaces.
    let (tx3, _rx3) = mpsc::unbounded_channel();
    let mut fx = Effects::default();
    join(&tx3, hello_order(), &mut fx);
    assert!(rejected(&fx, &tx_new), "the connection it replaced is told");
    assert!(!rejected(&fx, &tx3));
}

#[test]
fn an_attempt_waiting_behind_its_workers_slots_gets_its_turn_when_one_ends() {
    let mut g = grid(TrustParams::default());
    let mut fx = Effects::default();
    let _rx = connect(&mut g, 1, 1, &mut fx);
    g.add_job(submission(PolicyKind::None, 3), &mut fx).unwrap();
    g.dispatch(&mut fx);
    // One slot, two attempts held: the second waits its turn at the worker.
    let held = assigned(&fx, 1);
    assert_eq!(held.len(), 2);
    let turn = |g: &Grid, a: i64| g.attempts[&a].turn;
    assert!(turn(&g, held[0]).is_some());
    assert!(turn(&g, held[1]).is_none());
    // The straggler walk passes over it however long it waits.
    g.check_stragglers();
    g.on_failed(1, held[0], runegrid_core::Loss::Failed(None), "x", &mut fx);
    let first_ended = std::time::Instant::now();
    let got = turn(&g, held[1]).expect("its turn came when the first ended");
    assert!(got <= first_ended && got >= g.attempts[&held[1]].started);
    // The attempt given out in the freed place waits behind it.
    let next = assigned(&fx, 1)[2];
    assert!(turn(&g, next).is_none());
}

#[test]
fn a_worker_that_turns_slow_holds_fewer_attempts() {
    let mut g = grid(TrustParams::default());
    let mut fx = Effects::default();
    let _rx = connect(&mut g, 1, 1, &mut fx);
    g.add_job(submission(PolicyKind::None, 1), &mut fx).unwrap();
    g.dispatch(&mut fx);
    assert!(g.free.contains(&1), "one attempt of two held");
    g.update_trust(1, |r, _| r.record_speed(10.0), &mut fx);
    assert!(!g.free.contains(&1), "slow: one attempt per slot");
    assert_free_in_step(&g);
}

#[test]
fn an_attempt_counts_from_its_turn_or_from_when_the_ones_before_it_would_have_ended() {
    use std::time::Instant;
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let attempt = |turn: Option<Duration>, behind| super::AttemptMem {
        task: 1,
        job: 1,
        worker: 1,
        owner: 1,
        deadline: t0,
        started: t0,
        turn: turn.map(|d| t0 + d),
        behind,
        backup: false,
        streamed: false,
    };
    let since = |turn, behind, mean| {
        attempt(turn, behind)
            .running_since(mean)
            .map(|at: Instant| at.duration_since(t0).as_secs_f64() * 1000.0)
    };
    let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 0.01);
    // Waiting its turn: not running yet.
    assert_eq!(since(None, 1, Some(10.0)), None);
    // Ran at once: from its start.
    assert!(near(since(Some(ms(0)), 0, Some(10.0)), 0.0));
    // Behind one attempt that ended in about the mean: from its turn.
    assert!(near(since(Some(ms(9)), 1, Some(10.0)), 9.0));
    // Behind one whose result came far later than the mean (a worker that delivers late, one
    // result every mean): from when that one would have ended.
    assert!(near(since(Some(ms(700)), 1, Some(70.0)), 70.0));
    assert!(near(since(Some(ms(700)), 2, Some(70.0)), 140.0));
    // No mean yet: its turn.
    assert!(near(since(Some(ms(700)), 1, None), 700.0));
}
