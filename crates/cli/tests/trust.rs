//! End-to-end tests of trust: adaptive replication, quarantine, audits, stragglers and first
//! results, with real worker processes (some misbehaving on purpose) on loopback.

mod common;

use common::*;
use runegrid_core::{Acceptance, PolicyKind, Standing};
use runegrid_examples::kernels::{monte_carlo_pi, monte_carlo_report};
use runegrid_proto::{JobEvent, JobResults, ResultState, SubmitJob, TaskSpec};
use std::time::Duration;

fn montecarlo_tasks(n: u64, samples: u64, first_seed: u64) -> Vec<TaskSpec> {
    (first_seed..first_seed + n)
        .map(|s| args(&[&samples.to_string(), &s.to_string()]))
        .collect()
}

/// Every task verified with the stdout the native kernel computes.
fn assert_correct(r: &JobResults, samples: u64, first_seed: u64) {
    for (i, t) in r.tasks.iter().enumerate() {
        let seed = first_seed + i as u64;
        let expect = format!(
            "{}\n",
            monte_carlo_report(samples, monte_carlo_pi(samples, seed))
        );
        assert_eq!(t.state, ResultState::Verified, "task {i}: {t:?}");
        assert_eq!(t.stdout.as_deref(), Some(expect.as_str()), "task {i}");
    }
}

fn adaptive(program: &str, tasks: Vec<TaskSpec>) -> SubmitJob {
    SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: program.to_string(),
        name: Some("adaptive".into()),
        tasks,
        policy: None,
        replicas: None,
        agree: None,
        max_attempts: None,
        limits: Default::default(),
        blobs: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_replication_trusts_a_record_and_trust_survives_a_restart() {
    let mut g = Grid::start_opts(300, &["--trust-after", "4"]).await;
    for i in 0..3 {
        g.worker(&format!("w{i}"), 1, &[]);
    }
    g.wait_workers(3).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();

    // New workers: results are replicated (2 of 2 by default) until workers earn trust.
    let r = g.run(&adaptive(&p, montecarlo_tasks(24, 2000, 1))).await;
    assert_correct(&r, 2000, 1);
    assert_eq!(
        c.status(r.job).await.unwrap().policy,
        PolicyKind::Adaptive,
        "adaptive is the default policy"
    );
    // Nobody is trusted before 4 agreements, so at least the first 4 tasks were replicated.
    let replicated = r
        .tasks
        .iter()
        .filter(|t| t.acceptance == Some(Acceptance::Quorum))
        .count();
    assert!(replicated >= 4, "{replicated} replicated");
    g.wait_worker("a worker to earn trust", |w| {
        w.standing == Standing::Trusted
    })
    .await;

    // Once trusted, most tasks run once, with spot checks.
    let r = g.run(&adaptive(&p, montecarlo_tasks(40, 2000, 100))).await;
    assert_correct(&r, 2000, 100);
    let alone = r
        .tasks
        .iter()
        .filter(|t| t.acceptance == Some(Acceptance::Trusted))
        .count();
    let attempts: u32 = r.tasks.iter().map(|t| t.attempts).sum();
    assert!(alone > 0, "no task was accepted on a trusted worker's word");
    assert!(
        attempts < 2 * 40,
        "{attempts} attempts for 40 tasks: no cheaper than replicating everything"
    );
    // Trust is stored: after a kill -9 and restart, the record is still there.
    let before: Vec<_> = c
        .workers()
        .await
        .unwrap()
        .into_iter()
        .filter(|w| w.standing == Standing::Trusted)
        .map(|w| w.id)
        .collect();
    // Trust records are written within a tick; wait until the store has them.
    wait_until(
        "trust records to reach the store",
        Duration::from_secs(30),
        || {
            let data = g.data();
            let before = before.clone();
            async move {
                let db = rusqlite::Connection::open(data.join("runegrid.sqlite")).ok()?;
                let mut stmt = db.prepare("SELECT id, trust FROM workers").ok()?;
                let rows: Vec<(i64, String)> = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .ok()?
                    .collect::<Result<_, _>>()
                    .ok()?;
                let params = runegrid_core::TrustParams {
                    trust_after: 4,
                    ..Default::default()
                };
                before
                    .iter()
                    .all(|id| {
                        rows.iter().any(|(w, t)| {
                            w == id
                                && serde_json::from_str::<runegrid_core::TrustRecord>(t).is_ok_and(
                                    |t| t.standing(&params) == runegrid_core::Standing::Trusted,
                                )
                        })
                    })
                    .then_some(())
            }
        },
    )
    .await;
    g.restart_coordinator().await;
    g.wait_workers(3).await;
    let after = g.client().workers().await.unwrap();
    for id in &before {
        let w = after.iter().find(|w| w.id == *id).unwrap();
        assert_eq!(w.standing, Standing::Trusted, "{w:?}");
        assert!(w.agreed >= 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_is_quarantined_and_only_its_owner_sees_why() {
    let mut g = Grid::start().await;
    let admin = g.client();
    let mallory = admin.create_account("mallory", false).await.unwrap();
    let alice = admin.create_account("alice", false).await.unwrap();
    let mallory_token = mallory.token.unwrap();
    for i in 0..2 {
        g.worker(&format!("honest-{i}"), 2, &[]);
    }
    g.worker(
        "liar",
        2,
        &["--misbehave", "lie", "--token", &mallory_token],
    );
    g.wait_workers(3).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    // Fixed quorum of 3 on 3 workers: tasks meet the liar's answer against two honest ones
    // (unless the honest ones agree before the liar answers), until it is quarantined.
    let mallory_client = g.client_with(&mallory_token);
    let mut round = 0;
    loop {
        let first = 1 + round * 100;
        let r = g
            .run(&job(&p, montecarlo_tasks(8, 200_000, first), 3, 2))
            .await;
        assert_correct(&r, 200_000, first);
        let ws = mallory_client.workers().await.unwrap();
        if ws[0].standing == Standing::Quarantined {
            break;
        }
        round += 1;
        assert!(round < 30, "the liar was never quarantined: {:?}", ws[0]);
    }

    let mine = g.client_with(&mallory_token).workers().await.unwrap();
    assert_eq!(mine.len(), 1, "an owner lists only its own workers");
    // A liar that never agreed earned nothing; the honest workers' owner did.
    assert_eq!(mallory_client.credits().await.unwrap().earned, 0);
    assert!(admin.credits().await.unwrap().earned > 0);
    let liar = &mine[0];
    assert_eq!(liar.standing, Standing::Quarantined, "{liar:?}");
    let reason = liar.quarantine.as_deref().unwrap();
    assert!(reason.contains("disagreed with the consensus"), "{reason}");
    let theirs = g
        .client_with(&alice.token.unwrap())
        .workers()
        .await
        .unwrap();
    assert!(theirs.is_empty(), "another account sees nobody's workers");

    // A quarantined worker gets no work: a new job runs on the honest ones only.
    let before = liar.agreed + liar.disagreed + liar.abandoned;
    let r = g.run(&job(&p, montecarlo_tasks(6, 2000, 50), 2, 2)).await;
    assert_correct(&r, 2000, 50);
    let liar_now = admin
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == liar.id)
        .unwrap();
    assert_eq!(
        liar_now.agreed + liar_now.disagreed + liar_now.abandoned,
        before,
        "the quarantined liar got work"
    );

    // The CLI shows it, and an administrator can lift the quarantine.
    let out = g.cli(&["workers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("worker {} is quarantined", liar.id)),
        "{text}"
    );
    assert!(
        g.client_with(&mallory_token)
            .release_worker(liar.id)
            .await
            .is_err()
    );
    let out = g.cli(&["workers", "--release", &liar.id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("now new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_worker_that_turns_liar_is_audited_and_its_results_corrected() {
    // No spot checks, so the turncoat's lies are accepted alone until a quorum job meets it.
    let mut g = Grid::start_opts(
        300,
        &[
            "--trust-after",
            "3",
            "--spot-scale",
            "0",
            "--min-spot-rate",
            "0",
        ],
    )
    .await;
    g.worker("honest-1", 2, &[]);
    g.worker("turncoat", 2, &["--misbehave", "lie-after:6"]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();

    // 1. Replicated while new (2 of 2 on the two workers): the turncoat answers these 6 tasks
    //    honestly and is trusted (no probes: a probe's answer needs a trusted voucher, and both
    //    workers are trusted by the time one exists). From its 7th answer on it lies.
    let r = g.run(&adaptive(&p, montecarlo_tasks(6, 2000, 1))).await;
    assert_correct(&r, 2000, 1);
    wait_until("both workers trusted", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let ws = c.workers().await.ok()?;
            (ws.iter()
                .filter(|w| w.standing == Standing::Trusted)
                .count()
                == 2)
                .then_some(())
        }
    })
    .await;

    // 2. Trusted: tasks run alone, and the turncoat starts lying. A long last task keeps the
    //    job active, so its followers see the corrections.
    let mut tasks = montecarlo_tasks(60, 2000, 100);
    tasks.push(args(&["10000000000", "7"]));
    let mut j = adaptive(&p, tasks);
    j.limits.fuel = runegrid_core::Limits::MAX_FUEL;
    j.limits.wall_time_ms = 600_000;
    let sub = c.submit(&j).await.unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stream = c.events(sub.job).await.unwrap();
    let sink = events.clone();
    let follower = tokio::spawn(async move {
        while let Some(Ok(ev)) = stream.next().await {
            sink.lock().unwrap().push(ev);
        }
    });
    let forged = |r: &JobResults| {
        r.tasks[..60]
            .iter()
            .filter(|t| t.stdout.as_deref().is_some_and(|s| s.contains("forged")))
            .count()
    };
    let lied = wait_until("the short tasks to finish", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let r = c.results(sub.job, None).await.ok()?;
            r.tasks[..60]
                .iter()
                .all(|t| t.state == ResultState::Verified)
                .then(|| forged(&r))
        }
    })
    .await;
    assert!(lied > 0, "the turncoat's lies were not accepted alone");

    // 3. A fixed-quorum job meets the turncoat against two honest workers: caught.
    g.worker("honest-2", 2, &[]);
    g.wait_workers(3).await;
    let r = g.run(&job(&p, montecarlo_tasks(4, 2000, 900), 3, 2)).await;
    assert_correct(&r, 2000, 900);

    // The audit re-runs what the turncoat had accepted alone and corrects every lie; the job's
    // followers are told.
    wait_until("the lies to be corrected", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let r = c.results(sub.job, None).await.ok()?;
            (forged(&r) == 0).then_some(())
        }
    })
    .await;
    let r = c.results(sub.job, None).await.unwrap();
    let mut short = r.clone();
    short.tasks.truncate(60);
    assert_correct(&short, 2000, 100);
    let audited = short
        .tasks
        .iter()
        .filter(|t| t.acceptance == Some(Acceptance::Audited))
        .count();
    assert_eq!(audited, lied, "every lie corrected, nothing else changed");
    let corrections = wait_until(
        "the corrections in the event stream",
        Duration::from_secs(30),
        || {
            let events = events.clone();
            async move {
                let evs = events.lock().unwrap();
                let n = evs
                    .iter()
                    .filter(|e| matches!(e, JobEvent::Corrected { .. }))
                    .count();
                (n >= lied).then(|| evs.clone())
            }
        },
    )
    .await;
    for e in corrections {
        if let JobEvent::Corrected {
            result,
            previous_digest,
        } = e
        {
            assert_eq!(result.acceptance, Some(Acceptance::Audited));
            assert!(previous_digest.is_some());
            assert!(!result.stdout.as_deref().unwrap().contains("forged"));
        }
    }
    let turncoat = c
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == "turncoat")
        .unwrap();
    assert_eq!(turncoat.standing, Standing::Quarantined, "{turncoat:?}");
    c.cancel(sub.job).await.unwrap();
    follower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_get_a_backup_and_the_first_answer_wins() {
    let mut g = Grid::start().await;
    g.worker("fast-1", 1, &[]);
    g.worker("fast-2", 1, &[]);
    g.worker("slow", 1, &["--misbehave", "slow:40"]);
    g.wait_workers(3).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    // Tasks of some milliseconds: 40 times that is well past the straggler rule's slack (a
    // worker only a few milliseconds late is no straggler).
    let mut j = adaptive(&p, montecarlo_tasks(24, 2_000_000, 1));
    j.policy = Some(PolicyKind::None);
    let r = g.run(&j).await;
    assert_correct(&r, 2_000_000, 1);
    assert!(
        r.tasks.iter().any(|t| t.attempts >= 2),
        "no task got a backup attempt"
    );
    assert!(
        r.tasks
            .iter()
            .all(|t| t.acceptance == Some(Acceptance::Unreplicated))
    );
    let slow = g
        .client()
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == "slow")
        .unwrap();
    assert!(
        slow.speed > 2.0,
        "the slow worker was not measured slow: {slow:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_result_is_shown_unverified_then_verified() {
    let mut g = Grid::start().await;
    g.worker("quick", 1, &[]);
    g.worker("slow", 1, &["--misbehave", "slow:10"]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();
    let sub = c
        .submit(&job(&p, montecarlo_tasks(1, 2_000_000, 5), 2, 2))
        .await
        .unwrap();
    let mut events = c.events(sub.job).await.unwrap();
    let mut states = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("events keep coming")
    {
        match ev.unwrap() {
            JobEvent::Task { result } => {
                if result.state == ResultState::Unverified {
                    // The API shows the same state while the quorum is pending.
                    let now = c.results(sub.job, None).await.unwrap();
                    assert!(
                        [ResultState::Unverified, ResultState::Verified]
                            .contains(&now.tasks[0].state),
                        "{:?}",
                        now.tasks[0]
                    );
                    assert!(result.acceptance.is_none());
                }
                assert!(result.stdout.is_some());
                states.push(result.state);
            }
            JobEvent::Done { .. } => break,
            _ => {}
        }
    }
    assert_eq!(states, vec![ResultState::Unverified, ResultState::Verified]);
    let r = g.wait(sub.job).await;
    assert_correct(&r, 2_000_000, 5);
}

/// `runegrid bench trust` runs its scenarios end to end on a small grid and reports no wrong
/// result accepted from independent liars.
#[test]
fn the_trust_benchmark_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "bench",
        "trust",
        "--workers",
        "5",
        "--tasks",
        "20",
        "--record",
        "5",
        "--dir",
    ]);
    cmd.arg(dir.path());
    let out = output_within(cmd, Duration::from_secs(600));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = |name: &str| -> Vec<u64> {
        let section = text
            .split("\n\n")
            .find(|s| s.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} section in:\n{text}"));
        section
            .split("wrong results accepted: ")
            .skip(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(wrong("independent liars"), vec![0, 0], "{text}");
    // Warm-up, each of the 5 rounds, and the steady state.
    assert_eq!(wrong("tiny tasks"), vec![0; 7], "{text}");
    for part in [
        "executions per accepted task",
        "colluding",
        "makespan",
        "vanishing",
        "tiny tasks",
    ] {
        assert!(text.contains(part), "missing {part} in:\n{text}");
    }
}
