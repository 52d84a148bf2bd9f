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
