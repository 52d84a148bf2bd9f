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
        s.create_account("admin", "h", true).unwrap();
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
