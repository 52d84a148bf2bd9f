use runegrid_store::{SqliteStore, Store, conformance};

#[test]
fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run_all(&mut || {
        n += 1;
        Box::new(SqliteStore::open(&dir.path().join(format!("db{n}.sqlite"))).unwrap())
    });
}

#[test]
fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let mut s = SqliteStore::open(&path).unwrap();
        s.create_account("admin", "h", runegrid_store::AccountKind::Admin, 0)
            .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.accounts().unwrap()[0].name, "admin");
}

#[test]
fn unopenable_path_is_a_clear_error() {
    let err = SqliteStore::open(std::path::Path::new("/nonexistent-dir/x/db.sqlite"))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("cannot open the store at /nonexistent-dir/x/db.sqlite"),
        "{err}"
    );
}

/// A database written by the first release (no policy, acceptance or trust columns) opens,
/// gains the new columns and keeps its rows.
#[test]
fn sqlite_migrates_a_first_release_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                token_hash TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL, created_at INTEGER NOT NULL);
             CREATE TABLE jobs (id INTEGER PRIMARY KEY, owner INTEGER NOT NULL, name TEXT NOT NULL,
                program TEXT NOT NULL, replicas INTEGER NOT NULL, agree INTEGER NOT NULL,
                max_attempts INTEGER NOT NULL, limits TEXT NOT NULL, created_at INTEGER NOT NULL,
                state TEXT NOT NULL, finished_at INTEGER);
             CREATE TABLE tasks (id INTEGER PRIMARY KEY, job INTEGER NOT NULL, idx INTEGER NOT NULL,
                args TEXT NOT NULL, env TEXT NOT NULL, stdin BLOB NOT NULL, seed INTEGER NOT NULL,
                state TEXT NOT NULL, status TEXT, stdout BLOB, fuel INTEGER, digest TEXT, error TEXT,
                attempts INTEGER NOT NULL DEFAULT 0, UNIQUE(job, idx));
             CREATE TABLE workers (id INTEGER PRIMARY KEY, public_key TEXT NOT NULL UNIQUE,
                owner INTEGER NOT NULL, name TEXT NOT NULL, capabilities TEXT NOT NULL,
                first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
                completed INTEGER NOT NULL DEFAULT 0);
             INSERT INTO accounts VALUES (1, 'admin', 'h', 1, 0);
             INSERT INTO jobs VALUES (1, 1, 'old', 'p', 3, 2, 7, '{\"fuel\":1,\"memory_bytes\":65536,\"wall_time_ms\":1,\"stdout_bytes\":1}', 0, 'done', 1);
             INSERT INTO workers VALUES (1, 'k', 1, 'w', '{}', 0, 0, 5);",
        )
        .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    let job = s.job(1).unwrap().unwrap();
    assert_eq!(job.policy, runegrid_core::PolicyKind::Quorum);
    // Limits stored before a limit existed read with its default.
    assert_eq!(job.limits.scratch_bytes, 64 << 20);
    let w = &s.workers().unwrap()[0];
    assert_eq!((w.completed, w.trust.agreed), (5, 0));
    drop(s);
    // Opening again applies nothing twice.
    SqliteStore::open(&path).unwrap();
}
