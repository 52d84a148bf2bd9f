//! End-to-end tests: a real coordinator, real worker processes, real sockets.

mod common;

use common::*;
use runegrid_core::{ExecStatus, JobState, Limits};
use runegrid_proto::{JobEvent, JobResults, ResultState, TaskSpec};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_is_verified_end_to_end_through_the_cli() {
    let mut g = Grid::start().await;
    for i in 0..3 {
        g.worker(&format!("w{i}"), 2, &[]);
    }
    g.wait_workers(3).await;
    let module = g.dir.path().join("echo.wasm");
    std::fs::write(&module, runegrid_examples::ECHO).unwrap();
    let inputs = g.dir.path().join("inputs.jsonl");
    std::fs::write(
        &inputs,
        "{\"args\": [\"100000\"], \"stdin\": \"7\\n\", \"env\": {\"K\": \"V\"}}\n\n{\"args\": [\"a\", \"b\"]}\n{}\n",
    )
    .unwrap();
    let out = g.cli(&[
        "submit",
        module.to_str().unwrap(),
        "--input-file",
        inputs.to_str().unwrap(),
        "--replicas",
        "3",
        "--agree",
        "2",
        "--wait",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: JobResults = serde_json::from_slice(&out.stdout).expect("one json object");
    assert_eq!(r.tasks.len(), 3);
    for t in &r.tasks {
        assert_eq!(t.state, ResultState::Verified, "{t:?}");
        assert_eq!(t.exit_code, Some(0));
        assert!(t.attempts >= 2);
        assert!(t.fuel.unwrap() > 0);
        assert!(t.error.is_none());
        assert!(t.digest.is_some());
    }
    assert_eq!(
        r.tasks[0].stdout.as_deref(),
        Some("arg[1]=100000\nenv K=V\nstdin=7\n")
    );
    assert_eq!(
        r.tasks[1].stdout.as_deref(),
        Some("arg[1]=a\narg[2]=b\nstdin=")
    );
    // The raw JSON keeps the documented field names.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "index",
        "state",
        "exit_code",
        "stdout",
        "fuel",
        "digest",
        "attempts",
        "error",
    ] {
        assert!(v["tasks"][0].get(k).is_some(), "missing field {k}");
    }
    // status and results subcommands agree.
    let job = r.job.to_string();
    let st = g.cli(&["status", &job, "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["state"], "done");
    assert_eq!(st["counts"]["verified"], 3);
    let res = g.cli(&["results", &job, "--json"]);
    let res: JobResults = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(res, r);
    let ws = g.cli(&["workers"]);
    assert!(String::from_utf8_lossy(&ws.stdout).contains("connected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_stdout_and_results() {
    let mut g = Grid::start().await;
    let p = g.upload(runegrid_examples::ECHO).await;
    let c = g.client();
    let sub = c
        .submit(&job(&p, vec![args(&["hello"])], 1, 1))
        .await
        .unwrap();
    let mut events = c.events(sub.job).await.unwrap();
    // Start the worker only after subscribing, so nothing is missed.
    g.worker("w", 1, &[]);
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("event in time")
    {
        seen.push(ev.unwrap());
    }
    let stdout: String = seen
        .iter()
        .filter_map(|e| match e {
            JobEvent::Stdout { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert!(
        stdout.contains("arg[1]=hello"),
        "streamed stdout: {stdout:?}"
    );
    assert!(
        seen.iter().any(
            |e| matches!(e, JobEvent::Task { result } if result.state == ResultState::Verified)
        )
    );
    assert!(matches!(seen.last(), Some(JobEvent::Done { state, .. }) if *state == JobState::Done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_worker_is_outvoted() {
    let mut g = Grid::start().await;
    g.worker("honest-1", 2, &[]);
    g.worker("liar", 2, &["--misbehave", "lie"]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();
    let tasks = (1..=6).map(|s| args(&["20000", &s.to_string()])).collect();
    let sub = c.submit(&job(&p, tasks, 3, 2)).await.unwrap();
    // With one honest worker and one liar every task is split 1:1; the liar has answered all.
    g.wait_worker("the liar to answer every task", |w| {
        w.name == "liar" && w.completed >= 6
    })
    .await;
    assert_eq!(
        c.status(sub.job).await.unwrap().counts.verified,
        0,
        "no quorum without a third worker"
    );
    g.worker("honest-2", 2, &[]);
    let r = g.wait(sub.job).await;
    for (i, t) in r.tasks.iter().enumerate() {
        assert_eq!(t.state, ResultState::Verified, "{t:?}");
        assert_eq!(t.attempts, 3);
        let expect = runegrid_examples::kernels::monte_carlo_report(
            20000,
            runegrid_examples::kernels::monte_carlo_pi(20000, i as u64 + 1),
        );
        assert_eq!(t.stdout.as_deref(), Some(format!("{expect}\n").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disagreement_without_quorum_fails_with_a_reason() {
    let mut g = Grid::start().await;
    g.worker("honest", 1, &[]);
    g.worker("liar", 1, &["--misbehave", "lie"]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::ECHO).await;
    let mut j = job(&p, vec![args(&["x"])], 2, 2);
    j.max_attempts = Some(2);
    let r = g.run(&j).await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Failed);
    let e = t.error.as_deref().unwrap();
    assert!(
        e.starts_with("replicas disagreed: 2 results in 2 groups"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_its_attempts_and_the_job_completes() {
    let mut g = Grid::start().await;
    let victim = g.worker("victim", 2, &[]);
    g.wait_workers(1).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();
    let tasks = (1..=4)
        .map(|s| args(&["30000000", &s.to_string()]))
        .collect();
    let sub = c.submit(&job(&p, tasks, 1, 1)).await.unwrap();
    // Kill the only worker while it is running attempts.
    g.wait_worker("the victim to run attempts", |w| w.running > 0)
        .await;
    g.kill_worker(victim);
    g.worker("rescuer", 2, &[]);
    let r = g.wait(sub.job).await;
    assert!(
        r.tasks.iter().all(|t| t.state == ResultState::Verified),
        "{r:?}"
    );
    assert!(
        r.tasks.iter().any(|t| t.attempts >= 2),
        "some attempt was lost and redone: {r:?}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_worker_misses_heartbeats_and_its_attempts_move() {
    let mut g = Grid::start_with(200).await;
    let frozen = g.worker("frozen", 2, &[]);
    g.wait_workers(1).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();
    let tasks = (1..=2)
        .map(|s| args(&["30000000", &s.to_string()]))
        .collect();
    let sub = c.submit(&job(&p, tasks, 1, 1)).await.unwrap();
    g.wait_worker("attempts on the worker", |w| w.running > 0)
        .await;
    let pid = g.worker_pid(frozen).to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    g.worker("alive", 2, &[]);
    let r = g.wait(sub.job).await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(
        r.tasks.iter().all(|t| t.state == ResultState::Verified),
        "{r:?}"
    );
    assert!(r.tasks.iter().all(|t| t.attempts >= 2), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_survives_a_coordinator_kill() {
    let mut g = Grid::start().await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();
    let tasks: Vec<TaskSpec> = (1..=5).map(|s| args(&["100000", &s.to_string()])).collect();
    // Accepted while no worker is around.
    let queued = c.submit(&job(&p, tasks.clone(), 2, 2)).await.unwrap();
    // And one that is running when the coordinator dies.
    g.worker("w1", 1, &[]);
    g.worker("w2", 1, &[]);
    g.wait_workers(2).await;
    let heavy = c
        .submit(&job(&p, vec![args(&["20000000", "9"]); 3], 2, 2))
        .await
        .unwrap();
    g.restart_coordinator().await;
    // Workers reconnect by themselves.
    g.wait_workers(2).await;
    let r = g.wait(queued.job).await;
    assert!(
        r.tasks.iter().all(|t| t.state == ResultState::Verified),
        "{r:?}"
    );
    for (i, t) in r.tasks.iter().enumerate() {
        let expect = runegrid_examples::kernels::monte_carlo_report(
            100000,
            runegrid_examples::kernels::monte_carlo_pi(100000, i as u64 + 1),
        );
        assert_eq!(t.stdout.as_deref(), Some(format!("{expect}\n").as_str()));
    }
    let r = g.wait(heavy.job).await;
    assert!(
        r.tasks.iter().all(|t| t.state == ResultState::Verified),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_get_clear_errors_and_workers_keep_serving() {
    let mut g = Grid::start().await;
    g.worker("w1", 2, &[]);
    g.worker("w2", 2, &[]);
    g.wait_workers(2).await;
    let c = g.client();

    // Rejected at upload.
    let e = c
        .upload_program(b"\0asm\x01\0\0\0garbage".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_module"), "{e}");
    assert_eq!(e.status(), Some(400));
    let e = c
        .upload_program(b"not wasm at all".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_module"), "{e}");
    let forbidden = br#"(module (import "env" "open_socket" (func)) (memory (export "memory") 1) (func (export "_start")))"#;
    let e = c.upload_program(forbidden.to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Some("forbidden_import"), "{e}");
    assert!(e.to_string().contains("env.open_socket"), "{e}");

    // Rejected at submission.
    let p = g.upload(runegrid_examples::HOSTILE).await;
    let mut bad = job(&p, vec![args(&["loop"])], 2, 2);
    bad.limits.fuel = 0;
    let e = c.submit(&bad).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_limits"));
    assert!(e.to_string().contains("fuel"), "{e}");
    let e = c.submit(&job(&p, vec![], 2, 2)).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_job"));
    let e = c.submit(&job(&p, vec![args(&[])], 2, 3)).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_policy"));
    let e = c
        .submit(&job(&"0".repeat(64), vec![args(&[])], 1, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("unknown_program"));

    // Run, and fail the same way on every replica.
    let mut j = job(
        &p,
        vec![
            args(&["loop"]),
            args(&["membomb"]),
            args(&["spew"]),
            args(&["panic"]),
            args(&["exit", "7"]),
            args(&["recurse"]),
        ],
        2,
        2,
    );
    j.limits = Limits {
        fuel: 50_000_000,
        memory_bytes: 32 << 20,
        stdout_bytes: 10_000,
        ..Limits::default()
    };
    let r = g.run(&j).await;
    let expect = [
        ExecStatus::OutOfFuel,
        ExecStatus::MemoryLimit,
        ExecStatus::StdoutLimit,
        ExecStatus::Trap {
            trap: runegrid_core::TrapKind::Unreachable,
        },
        ExecStatus::Exited { code: 7 },
        ExecStatus::StackOverflow,
    ];
    for (t, want) in r.tasks.iter().zip(expect) {
        assert_eq!(t.state, ResultState::Failed, "{t:?}");
        assert_eq!(t.status, Some(want), "{t:?}");
        assert!(
            t.digest.is_some(),
            "the failure itself was agreed on: {t:?}"
        );
        assert!(t.error.as_deref().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(r.tasks[0].fuel, Some(50_000_000));
    assert!(r.tasks[0].error.as_deref().unwrap().contains("out of fuel"));
    assert_eq!(r.tasks[2].stdout.as_ref().map(|s| s.len()), Some(10_000));
    assert!(
        r.tasks[3].error.as_deref().unwrap().contains("panicked"),
        "stderr reaches the user: {:?}",
        r.tasks[3].error
    );
    assert_eq!(r.tasks[4].exit_code, Some(7));

    // Wall time: not deterministic, so the attempt is lost, and the task fails after retries.
    let abandoned = |ws: Vec<runegrid_proto::WorkerInfo>| ws.iter().map(|w| w.abandoned).sum();
    let before: u64 = abandoned(c.workers().await.unwrap());
    let mut j = job(&p, vec![args(&["loop"])], 1, 1);
    j.limits = Limits {
        fuel: Limits::MAX_FUEL,
        wall_time_ms: 300,
        ..Limits::default()
    };
    let r = g.run(&j).await;
    assert_eq!(r.tasks[0].state, ResultState::Failed);
    assert!(
        r.tasks[0]
            .error
            .as_deref()
            .unwrap()
            .contains("attempts were lost"),
        "{:?}",
        r.tasks[0]
    );
    // Running out of wall time is the task's doing, not the workers' (`FailureKind::WallTime`).
    assert_eq!(abandoned(c.workers().await.unwrap()), before);

    // The workers are still serving.
    let p = g.upload(runegrid_examples::ECHO).await;
    let r = g.run(&job(&p, vec![args(&["still", "here"])], 2, 2)).await;
    assert_eq!(r.tasks[0].state, ResultState::Verified);
    let ws = c.workers().await.unwrap();
    assert_eq!(ws.iter().filter(|w| w.connected).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_isolated() {
    let mut g = Grid::start().await;
    let admin = g.client();
    let alice = admin.create_account("alice", false).await.unwrap();
    let bob = admin.create_account("bob", false).await.unwrap();
    let alice = g.client_with(alice.token.as_deref().unwrap());
    let bob = g.client_with(bob.token.as_deref().unwrap());
    assert_eq!(alice.me().await.unwrap().name, "alice");

    let p = alice
        .upload_program(runegrid_examples::ECHO.to_vec())
        .await
        .unwrap()
        .program;
    let mut j = job(&p, vec![args(&["secret"])], 1, 1);
    j.tasks[0].env = BTreeMap::from([("TOKEN".to_string(), "s3cr3t".to_string())]);
    let sub = alice.submit(&j).await.unwrap();

    for e in [
        bob.status(sub.job).await.unwrap_err(),
        bob.results(sub.job, None).await.unwrap_err(),
        bob.cancel(sub.job).await.map(|_| ()).unwrap_err(),
        bob.events(sub.job).await.map(|_| ()).unwrap_err(),
    ] {
        assert_eq!(e.status(), Some(404), "{e}");
    }
    assert!(bob.jobs().await.unwrap().is_empty());
    assert_eq!(alice.jobs().await.unwrap().len(), 1);
    let e = bob.create_account("mallory", true).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    let e = g.client_with("rg_wrong").status(sub.job).await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    let e = runegrid_client::Client::new(&g.url, None)
        .status(sub.job)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));

    // Alice's job still runs to completion and she sees it.
    g.worker("w", 1, &[]);
    let r = alice
        .results(sub.job, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(r.tasks[0].state, ResultState::Verified);
    assert!(
        r.tasks[0]
            .stdout
            .as_deref()
            .unwrap()
            .contains("env TOKEN=s3cr3t")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_calls_return_their_results() {
    let mut g = Grid::start().await;
    g.worker("w", 2, &[]);
    g.wait_workers(1).await;
    let p = g.upload(runegrid_examples::ECHO).await;
    let c = g.client();
    for i in 0..20 {
        let r = c
            .submit_wait(
                &job(&p, vec![args(&[&i.to_string()])], 1, 1),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let res = r.results.expect("results in the answer");
        assert_eq!(res.tasks[0].state, ResultState::Verified);
        assert_eq!(
            res.tasks[0].stdout.as_deref(),
            Some(format!("arg[1]={i}\nstdin=").as_str())
        );
        // Waiting on a finished job answers at once.
        let again = c
            .results(r.job, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(again, res);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_key_are_told_apart() {
    let mut g = Grid::start().await;
    let data = g.dir.path().join("shared-key");
    let data = data.to_str().unwrap().to_string();
    let first = g.worker("first", 1, &["--data", &data]);
    g.wait_workers(1).await;
    g.worker("second", 1, &["--data", &data]);
    // The older connection is replaced and its process exits with a clear error.
    let status = wait_until("the first worker to exit", Duration::from_secs(30), || {
        let s = g.try_wait_worker(first);
        async move { s }
    })
    .await;
    assert!(!status.success());
    let log = std::fs::read_to_string(g.dir.path().join("first.log")).unwrap();
    assert!(
        log.contains("each worker process needs its own data directory"),
        "{log}"
    );
    let ws = g.client().workers().await.unwrap();
    assert_eq!(ws.len(), 1);
    assert!(ws[0].connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_results_survive_a_coordinator_kill() {
    let mut g = Grid::start().await;
    g.worker("w1", 1, &[]);
    g.worker("w2", 1, &[]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::MATMUL).await;
    let tasks = (1..=4).map(|s| args(&["40", &s.to_string()])).collect();
    let before = g.run(&job(&p, tasks, 2, 2)).await;
    assert!(
        before
            .tasks
            .iter()
            .all(|t| t.state == ResultState::Verified),
        "{before:?}"
    );
    g.restart_coordinator().await;
    // Read back from the store (a task whose result had not been committed runs again and,
    // being deterministic, must give the same answer).
    let after = g.wait(before.job).await;
    for (a, b) in after.tasks.iter().zip(&before.tasks) {
        assert_eq!(
            (&a.state, &a.stdout, a.fuel, a.digest),
            (&b.state, &b.stdout, b.fuel, b.digest)
        );
    }
    let st = g.client().status(before.job).await.unwrap();
    assert_eq!(st.state, JobState::Done);
    assert_eq!(st.counts.verified, 4);
}

/// Prints `first`, computes for a while, prints `second`.
const TWO_PRINTS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "first\n")
  (data (i32.const 32) "second\n")
  (func $print (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $i i64)
    (call $print (i32.const 16) (i32.const 6))
    (block $done
      (loop $more
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br_if $done (i64.ge_u (local.get $i) (i64.const 600000000)))
        (br $more)))
    (call $print (i32.const 32) (i32.const 7))))"#;

async fn next(events: &mut runegrid_client::EventStream) -> Option<JobEvent> {
    tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("event in time")
        .map(|e| e.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_follower_gets_no_partial_stdout() {
    let mut g = Grid::start().await;
    let p = g.upload(TWO_PRINTS.as_bytes()).await;
    let c = g.client();
    let sub = c
        .submit(&job(&p, vec![TaskSpec::default()], 1, 1))
        .await
        .unwrap();
    let mut early = c.events(sub.job).await.unwrap();
    g.worker("w", 1, &[]);
    let mut early_stdout = String::new();
    while !early_stdout.contains("first") {
        match next(&mut early).await {
            Some(JobEvent::Stdout { data, .. }) => early_stdout.push_str(&data),
            Some(_) => {}
            None => panic!("the job ended before its first print reached a follower"),
        }
    }
    // A follower arriving mid-attempt: a chunk would be the attempt's output without its start.
    let mut late = c.events(sub.job).await.unwrap();
    let mut late_events = Vec::new();
    while let Some(e) = next(&mut late).await {
        late_events.push(e);
    }
    while let Some(e) = next(&mut early).await {
        if let JobEvent::Stdout { data, .. } = e {
            early_stdout.push_str(&data);
        }
    }
    assert_eq!(early_stdout, "first\nsecond\n");
    assert!(
        !late_events
            .iter()
            .any(|e| matches!(e, JobEvent::Stdout { .. })),
        "{late_events:?}"
    );
    assert!(
        late_events
            .iter()
            .any(|e| matches!(e, JobEvent::Task { result }
            if result.state == ResultState::Verified && result.stdout.as_deref() == Some("first\nsecond\n"))),
        "{late_events:?}"
    );
}
