//! Prints what one `create_job` and one `apply` batch cost on this machine's disk.
use runegrid_core::Limits;
use runegrid_store::{Change, NewJob, NewTask, ProgramRecord, SqliteStore, Store};
use std::time::Instant;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| std::env::temp_dir().display().to_string());
    let path =
        std::path::Path::new(&dir).join(format!("commit-cost-{}.sqlite", std::process::id()));
    let mut s = SqliteStore::open(&path).unwrap();
    let a = s
        .create_account("a", "h", runegrid_store::AccountKind::User, 0)
        .unwrap();
    s.put_program(&ProgramRecord {
        sha256: "p".into(),
        instrumented_sha256: "i".into(),
        instrumented: vec![0; 100],
        original_size: 100,
        owner: a.id,
        created_at: 0,
    })
    .unwrap();
    let job = NewJob {
        owner: a.id,
        name: "j".into(),
        program: "p".into(),
        policy: runegrid_core::PolicyKind::None,
        replicas: 1,
        agree: 1,
        max_attempts: 3,
        limits: Limits::default(),
        created_at: 0,
        blobs: Default::default(),
        price: 0,
        held: 0,
        max_price: None,
        state: runegrid_store::JobState::Active,
        cache: true,
        cached: 0,
        gpu: None,
    };
    let task = NewTask {
        args: vec![],
        env: Default::default(),
        stdin: vec![],
        seed: 1,
    };
    let mut next = 0;
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        next += 1;
        s.apply(&[Change::CreateJob {
            id: next,
            job: Box::new(job.clone()),
            tasks: vec![(next, task.clone())],
        }])
        .unwrap();
    }
    println!(
        "one job with one task, committed: {:?} each",
        t.elapsed() / n
    );
    drop(s);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}
