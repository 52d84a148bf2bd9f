//! The PostgreSQL backend on a throwaway server this test process starts (`testing`): the
//! conformance suite SQLite passes, and what is PostgreSQL's own (migrations on a shared
//! server, a closed connection, calls from async code). Without PostgreSQL installed these
//! tests print a note and pass, unless RUNEGRID_REQUIRE_POSTGRES=1.

use runegrid_core::Limits;
use runegrid_store::{
    AccountKind, Change, JobState, Lease, NewJob, NewTask, PostgresStore, ProgramRecord,
    SqliteStore, Store, StoreError, conformance, testing,
};
use std::time::Duration;

fn open(url: &str) -> PostgresStore {
    PostgresStore::open(url).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn postgres_conformance() {
    let Some(server) = testing::shared() else {
        return;
    };
    conformance::run_all(&mut || Box::new(open(&server.create_database().unwrap())));
}

#[test]
fn postgres_survives_reopen_and_migrates_once() {
    let Some(url) = testing::database() else {
        return;
    };
    {
        let mut s = open(&url);
        s.create_account("admin", "h", AccountKind::Admin, 0)
            .unwrap();
    }
    let mut s = open(&url);
    assert_eq!(s.accounts().unwrap()[0].name, "admin");
    let version = testing::execute(&url, "SELECT version FROM runegrid_schema").unwrap();
    assert_eq!(
        version,
        vec![vec![Some(
            runegrid_store::POSTGRES_SCHEMA_VERSION.to_string()
        )]]
    );
}

/// A writer and a reader (or two coordinators) opening a new database at once: one creates
/// the schema, the other waits for it.
#[test]
fn concurrent_opens_of_a_new_database_migrate_it_once() {
    let Some(url) = testing::database() else {
        return;
    };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&url).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
}

/// Every table and column of the SQLite schema exists in PostgreSQL's, and no other (but
/// PostgreSQL's blob tables: with SQLite, blobs are files): a SQLite migration without its
/// PostgreSQL twin fails here.
#[test]
fn both_backends_have_the_same_tables_and_columns() {
    let Some(url) = testing::database() else {
        return;
    };
    drop(open(&url));
    let mut pg = testing::columns(&url).unwrap();
    pg.remove("runegrid_schema");
    pg.remove("runegrid_lease");
    assert!(pg.remove("blobs").is_some() && pg.remove("blob_chunks").is_some());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    let mut sqlite = std::collections::BTreeMap::new();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in tables {
        let cols: std::collections::BTreeSet<String> = c
            .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        sqlite.insert(t, cols);
    }
    assert_eq!(pg, sqlite);
}

fn job(owner: i64) -> NewJob {
    NewJob {
        owner,
        name: "j".into(),
        program: "p".into(),
        policy: runegrid_core::PolicyKind::Quorum,
        replicas: 1,
        agree: 1,
        max_attempts: 3,
        limits: Limits::default(),
        created_at: 0,
        blobs: Default::default(),
        price: 0,
        held: 0,
        max_price: None,
        state: JobState::Active,
        cache: true,
        cached: 0,
        gpu: None,
    }
}

fn with_program(s: &mut dyn Store) -> i64 {
    let a = s.create_account("a", "h", AccountKind::User, 0).unwrap();
    s.put_program(&ProgramRecord {
        sha256: "p".into(),
        instrumented_sha256: "i".into(),
        instrumented: vec![1, 2, 3],
        original_size: 3,
        owner: a.id,
        created_at: 0,
    })
    .unwrap();
    a.id
}

/// A batch far larger than any socket buffer goes through the pipeline (every statement
/// sent before the first answer is read) and commits whole.
#[test]
fn a_large_batch_is_pipelined_and_committed() {
    let Some(url) = testing::database() else {
        return;
    };
    let mut s = open(&url);
    let owner = with_program(&mut s);
    let n = 20_000i64;
    let tasks = (1..=n)
        .map(|i| {
            (
                i,
                NewTask {
                    args: vec![format!("{i}")],
                    env: Default::default(),
                    stdin: vec![7; 64],
                    seed: i as u64,
                },
            )
        })
        .collect();
    s.apply(&[Change::CreateJob {
        id: 1,
        job: Box::new(job(owner)),
        tasks,
    }])
    .unwrap();
    let stored = s.tasks(1).unwrap();
    assert_eq!(stored.len(), n as usize);
    assert_eq!(stored[n as usize - 1].args, vec![n.to_string()]);
    // A failure late in a large batch takes back all of it.
    let tasks = (n + 1..=2 * n)
        .map(|i| {
            (
                if i == 2 * n { 1 } else { i },
                NewTask {
                    args: vec![],
                    env: Default::default(),
                    stdin: vec![],
                    seed: 0,
                },
            )
        })
        .collect();
    let r = s.apply(&[Change::CreateJob {
        id: 2,
        job: Box::new(job(owner)),
        tasks,
    }]);
    assert!(matches!(r, Err(StoreError::Postgres(_))), "{r:?}");
    // The message says what the server said, not only "db error".
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("duplicate key value"), "{msg}");
    assert!(s.job(2).unwrap().is_none());
    assert_eq!(s.max_ids().unwrap().task, n);
    // The connection is still good.
    assert_eq!(s.tasks(1).unwrap().len(), n as usize);
}

/// The coordinator calls its store from async code at startup, from blocking tasks and from
/// plain threads: none of them may panic (a tokio runtime's `block_on` would, inside another
/// runtime).
#[test]
fn calls_from_async_code_blocking_tasks_and_threads_work() {
    let Some(url) = testing::database() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let u = url.clone();
    let n = rt.block_on(async move {
        // Straight from async code.
        let mut s = PostgresStore::open(&u).unwrap();
        s.create_account("async", "h1", AccountKind::User, 0)
            .unwrap();
        // From a blocking task.
        let s = tokio::task::spawn_blocking(move || {
            s.create_account("blocking", "h2", AccountKind::User, 0)
                .unwrap();
            s
        })
        .await
        .unwrap();
        // From a plain thread.
        let mut s = std::thread::spawn(move || {
            let mut s = s;
            s.create_account("thread", "h3", AccountKind::User, 0)
                .unwrap();
            s
        })
        .join()
        .unwrap();
        s.accounts().unwrap().len()
    });
    assert_eq!(n, 3);
    // And on a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = rt.block_on(async move { open(&url).accounts().unwrap().len() });
    assert_eq!(n, 3);
}

/// A connection the server closed (a restart, an administrator) is replaced on the next call.
#[test]
fn a_closed_connection_is_opened_again() {
    let Some(url) = testing::database() else {
        return;
    };
    let mut s = open(&url);
    s.create_account("a", "h", AccountKind::User, 0).unwrap();
    let db = url.rsplit('/').next().unwrap().to_string();
    testing::execute(
        &url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ),
    )
    .unwrap();
    // The connection notices the server's goodbye on its own thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match s.accounts() {
            Ok(a) => {
                assert_eq!(a.len(), 1);
                break;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "still failing after a reconnect: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    s.create_account("b", "h2", AccountKind::User, 0).unwrap();
}

#[test]
fn an_unreachable_server_is_a_clear_error_without_the_password() {
    let err = PostgresStore::open("postgres://me:secret@%2Fnonexistent-dir:5432/grid")
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot open the store at postgres://me@%2Fnonexistent-dir:5432/grid: "),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert!(PostgresStore::open("not a url at all ===").is_err());
}

/// One coordinator at a time holds the lease; a standby takes it only once it is released or
/// its deadline passes, and from then on the old holder's fenced writes fail.
#[test]
fn the_lease_passes_from_one_holder_to_the_next_and_fences_the_old_one() {
    let Some(url) = testing::database() else {
        return;
    };
    let ttl = Duration::from_secs(30);
    let mut a = Lease::open(&url, "a", "http://a", ttl).unwrap();
    let mut b = Lease::open(&url, "b", "http://b", ttl).unwrap();
    assert_eq!(b.current().unwrap(), None);
    let fence_a = a.try_acquire().unwrap().expect("a free lease is taken");
    assert_eq!(fence_a.epoch, 1);
    assert_eq!(b.try_acquire().unwrap(), None, "a held lease is not taken");
    assert!(a.renew().unwrap());
    let held = b.current().unwrap().unwrap();
    assert_eq!(
        (held.holder.as_str(), held.advertise.as_str()),
        ("a", "http://a")
    );
    assert!(held.remaining_ms > 20_000, "{held:?}");

    let mut store_a = open(&url);
    store_a.set_fence(fence_a);
    let owner = with_program(&mut store_a);
    store_a
        .apply(&[Change::CreateJob {
            id: 1,
            job: Box::new(job(owner)),
            tasks: vec![],
        }])
        .unwrap();

    // A released lease is taken at once, at the next epoch.
    a.release().unwrap();
    let fence_b = b.try_acquire().unwrap().expect("a released lease is taken");
    assert_eq!(fence_b.epoch, 2);
    assert!(!a.renew().unwrap(), "the old holder cannot renew");
    // Every kind of write of the old holder fails, and nothing of it is stored.
    let late = Change::CreateJob {
        id: 2,
        job: Box::new(job(owner)),
        tasks: vec![],
    };
    assert!(matches!(
        store_a.apply(std::slice::from_ref(&late)),
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        store_a.create_account("late", "hl", AccountKind::User, 5),
        Err(StoreError::LeaseLost)
    ));
    assert!(store_a.job(2).unwrap().is_none());
    assert_eq!(store_a.accounts().unwrap().len(), 1);
    let mut store_b = open(&url);
    store_b.set_fence(fence_b);
    store_b.apply(&[late]).unwrap();
    assert!(store_b.job(2).unwrap().is_some());
}

/// A holder that stops renewing loses the lease when its deadline passes.
#[test]
fn a_lease_not_renewed_expires_and_is_taken_over() {
    let Some(url) = testing::database() else {
        return;
    };
    let mut a = Lease::open(&url, "a", "http://a", Duration::from_millis(300)).unwrap();
    let mut b = Lease::open(&url, "b", "http://b", Duration::from_secs(30)).unwrap();
    let fence_a = a.try_acquire().unwrap().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let fence_b = loop {
        if let Some(f) = b.try_acquire().unwrap() {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "never taken over");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(fence_b.epoch, fence_a.epoch + 1);
    assert!(!a.renew().unwrap());
    let mut store_a = open(&url);
    store_a.set_fence(fence_a);
    assert!(matches!(
        store_a.create_account("x", "hx", AccountKind::User, 0),
        Err(StoreError::LeaseLost)
    ));
}
