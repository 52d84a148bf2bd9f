//! A coordinator keeping its records in PostgreSQL (`serve --store postgres://…`), on a
//! throwaway server this test process starts (`runegrid_store::testing`; without PostgreSQL
//! installed the test prints a note and passes, unless RUNEGRID_REQUIRE_POSTGRES=1).

mod common;

use common::*;
use runegrid_proto::{ResultState, TaskSpec};
use runegrid_store::{PostgresStore, Store, TaskState, testing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_postgres_store_survives_a_coordinator_kill() {
    let Some(url) = testing::database() else {
        return;
    };
    let mut g = Grid::start_opts(300, &["--store", &url]).await;
    let p = g.upload(runegrid_examples::MONTECARLO).await;
    let c = g.client();
    let tasks: Vec<TaskSpec> = (1..=4).map(|s| args(&["100000", &s.to_string()])).collect();
    // Accepted while no worker is around...
    let queued = c.submit(&job(&p, tasks, 2, 2)).await.unwrap();
    // ...and one running when the coordinator is killed.
    g.worker("w1", 1, &[]);
    g.worker("w2", 1, &[]);
    g.wait_workers(2).await;
    let heavy = c
        .submit(&job(&p, vec![args(&["20000000", "9"]); 2], 2, 2))
        .await
        .unwrap();
    g.restart_coordinator().await;
    g.wait_workers(2).await;
    for id in [queued.job, heavy.job] {
        let r = g.wait(id).await;
        assert!(
            r.tasks.iter().all(|t| t.state == ResultState::Verified),
            "{r:?}"
        );
    }
    // The records are in PostgreSQL, not in a SQLite file in the data directory.
    assert!(!g.data().join(runegrid_coordinator::DB_FILE).exists());
    let mut s = PostgresStore::open(&url).unwrap();
    let tasks = s.tasks(queued.job).unwrap();
    assert_eq!(tasks.len(), 4);
    assert!(tasks.iter().all(|t| t.state == TaskState::Verified));
    // (Dropping the grid checks the books there: `ledger check --store URL`.)
}

/// Failover's blobs: coordinator A, on PostgreSQL, acknowledges two blobs and is killed with
/// SIGKILL; coordinator B starts on the same database with a data directory of its own (its
/// blob directory empty) and serves both — one to `GET /v1/blobs/{sha256}`, the other to a
/// worker running a job that mounts it — fetched from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_acknowledged_by_one_coordinator_are_served_by_another() {
    use sha2::{Digest as _, Sha256};
    let Some(url) = testing::database() else {
        return;
    };
    // Weights given to `--model`: copied into the database by the first coordinator only.
    let model_dir = tempfile::tempdir().unwrap();
    let model = model_dir.path().join("weights.bin");
    let weights: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&model, &weights).unwrap();
    let model_sha = hex::encode(Sha256::digest(&weights));
    let model_arg = model.to_str().unwrap();
    let mut g = Grid::start_opts(300, &["--store", &url, "--model", model_arg]).await;
    let p = g.upload(runegrid_examples::FILES).await;
    // Lines in reverse order, over 2 MiB: three chunks in the database.
    let lines: Vec<String> = (0..200_000)
        .rev()
        .map(|i| format!("line {i:07}\n"))
        .collect();
    let text = lines.concat();
    let mut sorted = lines.clone();
    sorted.sort();
    let sorted = sorted.concat();
    assert!(text.len() > 2 * runegrid_store::CHUNK_BYTES);
    let other: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let c = g.client();
    let mounted = c.upload_blob(text.clone().into_bytes()).await.unwrap();
    let fetched = c
        .put_blob(&hex::encode(Sha256::digest(&other)), other.clone())
        .await
        .unwrap();
    assert!(g.data().join("blobs").join(&mounted.sha256).is_file());

    // A is gone; B has never seen the blobs.
    g.replace_coordinator("coordinator-b").await;
    let b_blobs = g.data().join("blobs");
    assert!(g.data().ends_with("coordinator-b"));
    assert!(!b_blobs.join(&mounted.sha256).exists());
    assert!(!b_blobs.join(&fetched.sha256).exists());

    let get = |sha: String| {
        let (base, token) = (g.url.clone(), g.token.clone());
        async move {
            let r = reqwest::Client::new()
                .get(format!("{base}/v1/blobs/{sha}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    let (status, body) = get(fetched.sha256.clone()).await;
    assert_eq!(status, 200);
    assert!(body == other, "B served other bytes ({} bytes)", body.len());
    assert!(
        b_blobs.join(&fetched.sha256).is_file(),
        "kept in B's directory"
    );
    // A blob in neither place is still 404.
    let (status, _) = get(hex::encode(Sha256::digest(b"never uploaded"))).await;
    assert_eq!(status, 404);

    // A job mounting the other blob runs on a worker against B.
    g.worker("w1", 1, &[]);
    g.wait_workers(1).await;
    let mut j = job(
        &p,
        vec![args(&["sort", "/blobs/data.txt", "/out/sorted.txt"])],
        1,
        1,
    );
    j.blobs.insert("data.txt".into(), mounted.sha256.clone());
    let r = g.run(&j).await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", g.logs());
    assert_eq!(t.files.len(), 1, "{t:?}");
    assert_eq!(t.files[0].sha256, hex::encode(Sha256::digest(&sorted)));
    assert!(b_blobs.join(&mounted.sha256).is_file());
    let log = std::fs::read_to_string(g.dir.path().join("coordinator.log")).unwrap();
    assert_eq!(
        log.matches("blob fetched from postgres").count(),
        2,
        "{log}"
    );
    // Both coordinators imported the weights; the database got them once.
    assert!(b_blobs.join(&model_sha).is_file());
    let stored = |sha: &str| {
        log.lines()
            .filter(|l| l.contains("blob stored in postgres") && l.contains(sha))
            .count()
    };
    assert_eq!(stored(&model_sha), 1, "{log}");
    assert_eq!(stored(&mounted.sha256), 1, "{log}");
    // The two uploads, the weights, and the job's output file.
    let n = testing::execute(&url, "SELECT COUNT(*) FROM blobs").unwrap();
    assert_eq!(n, vec![vec![Some("4".to_string())]]);
}
