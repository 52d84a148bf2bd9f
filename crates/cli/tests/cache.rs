//! The result cache end to end: real coordinator and worker processes, a repeated job answered
//! from verified results with no attempt, through the CLI and the API, after a SIGKILL, and
//! counted in `/metrics`.

mod common;

use common::*;
use runegrid_core::Acceptance;
use runegrid_proto::{JobResults, ResultState};
use rusqlite::Connection;
use std::time::Duration;

fn seeded(program: &str, n: usize, seed: Option<u64>) -> runegrid_proto::SubmitJob {
    let tasks = (0..n).map(|i| args(&["2000", &i.to_string()])).collect();
    let mut j = job(program, tasks, 2, 2);
    j.seed = seed;
    j
}

fn acceptances(r: &JobResults) -> Vec<Option<Acceptance>> {
    r.tasks.iter().map(|t| t.acceptance).collect()
}

fn stdouts(r: &JobResults) -> Vec<Option<Vec<u8>>> {
    r.tasks.iter().map(|t| t.stdout_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_seeded_job_is_answered_from_the_cache_even_after_a_kill() {
    let mut g = Grid::start().await;
    g.worker("w1", 2, &[]);
    g.worker("w2", 2, &[]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::ECHO).await;

    let first = g.run(&seeded(&p, 4, Some(7))).await;
    assert!(first.tasks.iter().all(|t| t.state == ResultState::Verified));
    assert!(
        acceptances(&first)
            .iter()
            .all(|a| *a == Some(Acceptance::Quorum))
    );

    let again = g.run(&seeded(&p, 4, Some(7))).await;
    assert_eq!(acceptances(&again), vec![Some(Acceptance::Cached); 4]);
    assert_eq!(stdouts(&again), stdouts(&first));
    for (a, b) in again.tasks.iter().zip(&first.tasks) {
        assert_eq!((a.fuel, a.digest, a.attempts), (b.fuel, b.digest, 0));
    }
    let st = g.client().status(again.job).await.unwrap();
    assert_eq!((st.cached, st.counts.verified), (4, 4));

    // Another seed, or no seed at all (fresh seeds), is another input: it runs.
    for seed in [Some(8), None] {
        let other = g.run(&seeded(&p, 4, seed)).await;
        assert!(
            acceptances(&other)
                .iter()
                .all(|a| *a == Some(Acceptance::Quorum)),
            "{seed:?}: {other:?}"
        );
    }

    // Three jobs of 4 tasks verified by a quorum (seeds 7, 8 and fresh ones): 12 results
    // kept. Once they are committed, a SIGKILL loses none of them.
    let db = g.data().join("runegrid.sqlite");
    wait_until("cached results committed", Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            let c = Connection::open(db).ok()?;
            let n: i64 = c
                .query_row("SELECT count(*) FROM result_cache", [], |r| r.get(0))
                .ok()?;
            (n >= 12).then_some(())
        }
    })
    .await;
    g.restart_coordinator().await;
    g.wait_workers(2).await;
    let after = g.run(&seeded(&p, 4, Some(7))).await;
    assert_eq!(acceptances(&after), vec![Some(Acceptance::Cached); 4]);
    assert_eq!(stdouts(&after), stdouts(&first));

    let metrics = reqwest::get(format!("{}/metrics", g.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"runegrid_cache_lookups_total{result="hit"} 4"#),
        "{metrics}"
    );
    assert!(metrics.contains("runegrid_cache_entries 12"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_a_seed_says_what_the_cache_answered_and_can_opt_out() {
    let mut g = Grid::start().await;
    g.worker("w1", 1, &[]);
    g.worker("w2", 1, &[]);
    g.wait_workers(2).await;
    let module = g.dir.path().join("echo.wasm");
    std::fs::write(&module, runegrid_examples::ECHO).unwrap();
    let m = module.to_str().unwrap();
    let submit = |extra: &[&str]| {
        let mut a = vec![
            "submit", m, "--arg", "hello", "--seed", "42", "--wait", "--json",
        ];
        a.extend_from_slice(extra);
        let out = g.cli(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<JobResults>(&out.stdout).expect("results as json")
    };
    let first = submit(&[]);
    assert_eq!(acceptances(&first), [Some(Acceptance::Quorum)]);
    let opted_out = submit(&["--no-cache"]);
    assert_eq!(acceptances(&opted_out), [Some(Acceptance::Quorum)]);
    let cached = submit(&[]);
    assert_eq!(acceptances(&cached), [Some(Acceptance::Cached)]);
    assert_eq!(stdouts(&cached), stdouts(&first));
    let out = g.cli(&["status", &cached.job.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("answered from the result cache: 1 of 1 tasks"),
        "{text}"
    );
    // `results` ends with what the job cost: nothing, for a job the cache answered.
    let out = g.cli(&["results", &cached.job.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  cost: 0 credits at "), "{text}");
    let out = g.cli(&["submit", m, "--seed", "9007199254740992"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seed 9007199254740992 is too large"), "{err}");
}
