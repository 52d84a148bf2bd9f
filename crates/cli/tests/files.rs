//! Files end to end: tasks write under `/out` in their in-memory file system, replicas compare
//! the files too, and the user gets them back — listed in the results, downloaded through the
//! API and with `runegrid results --files DIR`, after a coordinator SIGKILL as before it.

mod common;

use common::*;
use runegrid_core::{Acceptance, ExecStatus};
use runegrid_proto::ResultState;
use sha2::{Digest as _, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_files_are_verified_kept_and_downloadable() {
    let mut g = Grid::start().await;
    g.worker("w1", 2, &[]);
    g.worker("w2", 2, &[]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::FILES).await;
    let data = "pear\napple\nfig\nbanana\n";
    let blob = g
        .client()
        .upload_blob(data.as_bytes().to_vec())
        .await
        .unwrap();

    let mut j = job(
        &p,
        vec![
            args(&["sort", "/blobs/data.txt", "/out/sorted.txt"]),
            args(&["tour"]),
        ],
        2,
        2,
    );
    j.blobs.insert("data.txt".into(), blob.sha256.clone());
    let r = g.run(&j).await;
    for t in &r.tasks {
        assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", g.logs());
        assert_eq!(t.acceptance, Some(Acceptance::Quorum));
    }
    let sorted = &r.tasks[0].files;
    assert_eq!(sorted.len(), 1);
    assert_eq!(sorted[0].path, "sorted.txt");
    assert_eq!(sorted[0].size, data.len() as u64);
    let want = "apple\nbanana\nfig\npear\n";
    assert_eq!(sorted[0].sha256, hex::encode(Sha256::digest(want)));
    let paths: Vec<&str> = r.tasks[1].files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["parts/part-0", "parts/part-1", "parts/part-2", "report.txt"]
    );

    // Through the API, byte for byte; a path the result does not list is 404.
    let c = g.client();
    assert_eq!(
        c.task_file(r.job, 0, "sorted.txt").await.unwrap(),
        want.as_bytes()
    );
    assert_eq!(
        c.task_file(r.job, 1, "parts/part-2").await.unwrap(),
        vec![b'2'; 20]
    );
    let missing = c.task_file(r.job, 0, "nope.txt").await.unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");
    let other = g.client_with("not-a-token");
    assert!(other.task_file(r.job, 0, "sorted.txt").await.is_err());

    // The CLI lists them and writes them under DIR/TASK/PATH.
    let out = g.cli(&["results", &r.job.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("task 0: 1 file under /out (22 bytes): sorted.txt"),
        "{text}"
    );
    let dir = g.data().join("downloaded");
    let out = g.cli(&[
        "results",
        &r.job.to_string(),
        "--files",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("wrote 5 files (69 bytes) under"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("0/sorted.txt")).unwrap(),
        want
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("1/report.txt")).unwrap(),
        "the tour is over\n"
    );

    // A seeded job's files are kept in the result cache: the same job again is answered at
    // once, files included.
    let mut seeded = j.clone();
    seeded.seed = Some(3);
    let first = g.run(&seeded).await;
    let cached = g.run(&seeded).await;
    for (a, b) in cached.tasks.iter().zip(&first.tasks) {
        assert_eq!(a.acceptance, Some(Acceptance::Cached), "{a:?}");
        assert_eq!(a.files, b.files);
    }
    assert_eq!(
        c.task_file(cached.job, 0, "sorted.txt").await.unwrap(),
        want.as_bytes()
    );

    // `submit --blob /PATH=FILE` mounts an input at a path of its own.
    let wasm = g.data().join("files.wasm");
    std::fs::write(&wasm, runegrid_examples::FILES).unwrap();
    let input = g.data().join("input.txt");
    std::fs::write(&input, data).unwrap();
    let blob = format!("/data/input.txt={}", input.display());
    let out = g.cli(&[
        "submit",
        wasm.to_str().unwrap(),
        "--arg",
        "sort",
        "--arg",
        "/data/input.txt",
        "--arg",
        "/out/sorted.txt",
        "--blob",
        &blob,
        "--wait",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub: runegrid_proto::JobResults = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sub.tasks[0].files, r.tasks[0].files);
    // A mount that cannot be: refused at submission, with why.
    let bad = format!("/tmp={}", input.display());
    let out = g.cli(&["submit", wasm.to_str().unwrap(), "--blob", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid_blobs") && err.contains("directory of every task's root"),
        "{err}"
    );

    // Past the output limit: `output_limit`, and no files.
    let mut small = job(&p, vec![args(&["tour"])], 2, 2);
    small.limits.output_bytes = 40;
    let s = g.run(&small).await;
    assert_eq!(s.tasks[0].status, Some(ExecStatus::OutputLimit));
    assert!(s.tasks[0].files.is_empty());

    // After a SIGKILL the results come from the store, files included.
    g.restart_coordinator().await;
    let again = g.client().results(r.job, None).await.unwrap();
    assert_eq!(again.tasks[0].files, r.tasks[0].files);
    assert_eq!(
        g.client().task_file(r.job, 0, "sorted.txt").await.unwrap(),
        want.as_bytes()
    );
}
