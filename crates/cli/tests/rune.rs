//! Rune scripts as remote functions, end to end: `runegrid call` against a real coordinator and
//! real worker processes running the built-in Rune runner.
//!
//! One grid for all the checks: each worker compiles the runner (a few MB of WebAssembly) once,
//! which takes seconds on a small machine.

mod common;

use common::*;
use runegrid_core::{Acceptance, ExecStatus, Limits};
use runegrid_proto::{JobEvent, ResultState, SubmitJob, TaskResult, TaskSpec};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

const SCRIPT: &str = r#"// Functions the tests call.
pub fn add(a, b) {
    println!("adding {} and {}", a, b);
    a + b
}

pub fn describe(x) {
    #{ twice: x * 2, text: `x=${x}`, list: [x, (x, x + 1)] }
}

pub fn overflow(x) {
    let big = 9223372036854775807;
    big + x
}

pub fn boom(why) {
    panic!("failed: {}", why)
}

pub fn spin() {
    print!("about to spin");
    loop { }
}
"#;

/// Runs `runegrid ARGS` against the grid (with a generous time limit: the first calls wait for
/// the workers to compile the runner).
fn cli(g: &Grid, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUNEGRID_URL", &g.url)
        .env("RUNEGRID_TOKEN", &g.token)
        .current_dir(g.dir.path());
    output_within(cmd, Duration::from_secs(180))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rune_scripts_run_on_the_grid() {
    let mut g = Grid::start().await;
    g.worker("w1", 2, &[]);
    g.worker("w2", 2, &[]);
    g.wait_workers(2).await;
    let dir = g.dir.path().to_path_buf();
    std::fs::write(dir.join("script.rn"), SCRIPT).unwrap();

    // A call, replicated on both workers (2 of 2 must agree): the value on stdout, what the
    // script printed on stderr.
    let out = cli(
        &g,
        &[
            "call",
            "script.rn",
            "add",
            "2",
            "40",
            "--replicas",
            "2",
            "--agree",
            "2",
        ],
    );
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), g.logs());
    assert_eq!(text(&out.stdout), "42\n");
    assert!(
        text(&out.stderr).contains("adding 2 and 40\n"),
        "{}",
        text(&out.stderr)
    );
    // The whole task result: both replicas ran and agreed.
    let out = cli(
        &g,
        &[
            "call",
            "script.rn",
            "add",
            "1",
            "2",
            "--policy",
            "quorum",
            "--replicas",
            "2",
            "--agree",
            "2",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t: TaskResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t.state, ResultState::Verified);
    assert_eq!(t.acceptance, Some(Acceptance::Quorum));
    assert_eq!(t.attempts, 2);
    assert_eq!(
        t.stdout.as_deref(),
        Some("adding 1 and 2\n{\"ok\":3}\n"),
        "{t:?}"
    );
    // Arguments that are not JSON are strings; results keep their structure.
    let out = cli(&g, &["call", "script.rn", "add", "hello ", "world"]);
    assert_eq!(
        text(&out.stdout),
        "\"hello world\"\n",
        "{}",
        text(&out.stderr)
    );
    let out = cli(&g, &["call", "script.rn", "describe", "-4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"list": [-4, [-4, -3]], "text": "x=-4", "twice": -8})
    );

    // --map: one task per line, results in input order, a failed call as an error line.
    std::fs::write(
        dir.join("calls.jsonl"),
        "[1, 2]\n[10, 20]\n\n[\"a\", \"b\"]\n[1]\n[100, 200]\n",
    )
    .unwrap();
    let out = cli(&g, &["call", "script.rn", "add", "--map", "calls.jsonl"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{}", text(&out.stdout));
    assert_eq!(lines[0], 3);
    assert_eq!(lines[1], 30);
    assert_eq!(lines[2], "ab");
    assert_eq!(lines[3]["error"]["kind"], "input", "{}", lines[3]);
    assert_eq!(lines[4], 300);
    let printed = text(&out.stderr);
    let (p1, p2) = (
        printed.find("adding 1 and 2").unwrap(),
        printed.find("adding 100 and 200").unwrap(),
    );
    assert!(p1 < p2, "printed text in input order: {printed}");
    std::fs::write(dir.join("good.jsonl"), "[1, 1]\n[2, 2]\n[3, 3]\n").unwrap();
    let out = cli(&g, &["call", "script.rn", "add", "--map", "good.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "2\n4\n6\n");

    // A compile error, with its line and column.
    std::fs::write(dir.join("bad.rn"), "pub fn f() {\n    let x = ;\n}\n").unwrap();
    let out = cli(&g, &["call", "bad.rn", "f"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: bad.rn:2:13: "), "{err}");

    // Runtime errors, placed in the script.
    let out = cli(&g, &["call", "script.rn", "overflow", "1"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: script.rn:13:5: "), "{err}");
    assert!(err.to_lowercase().contains("overflow"), "{err}");
    let out = cli(&g, &["call", "script.rn", "boom", "the reason"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: script.rn:17:5: "), "{err}");
    assert!(err.contains("the reason"), "{err}");

    // A missing function and a wrong argument count are input errors.
    let out = cli(&g, &["call", "script.rn", "nowhere"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: script.rn: the script has no public function `nowhere`"),
        "{err}"
    );
    let out = cli(&g, &["call", "script.rn", "add", "1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("expected 2"));

    // An endless loop runs out of fuel, the same on both replicas; what it printed arrives.
    let out = cli(
        &g,
        &[
            "call",
            "script.rn",
            "spin",
            "--fuel",
            "150000000",
            "--replicas",
            "2",
            "--agree",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("about to spin"), "{err}");
    assert!(
        err.contains("error: script.rn: out of fuel") && err.contains("--fuel"),
        "{err}"
    );

    // The API: `"program": "rune"` names the runner; the job shows its hash, and events and
    // results work as for any job.
    let c = g.client();
    let uploaded = c
        .upload_program(runegrid_runner::RUNE_RUNNER.to_vec())
        .await
        .unwrap();
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: "rune".into(),
        name: Some("api".into()),
        tasks: vec![TaskSpec {
            buffers: Default::default(),
            args: vec![],
            stdin: runegrid_runner::call_stdin(SCRIPT, "add", &[7.into(), 8.into()]),
            env: BTreeMap::new(),
        }],
        policy: None,
        replicas: Some(2),
        agree: Some(2),
        max_attempts: None,
        limits: Limits::default(),
        blobs: BTreeMap::new(),
    };
    let sub = c.submit(&job).await.unwrap();
    let mut events = c.events(sub.job).await.unwrap();
    let mut verified = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(120), events.next())
        .await
        .expect("events in time")
    {
        if let JobEvent::Task { result } = ev.unwrap()
            && result.state == ResultState::Verified
        {
            verified = Some(result);
        }
    }
    let verified = verified.expect("a verified task event");
    let status = c.status(sub.job).await.unwrap();
    assert_eq!(status.program, uploaded.program);
    let results = c.results(sub.job, None).await.unwrap();
    assert_eq!(results.tasks[0], verified);
    let d = runegrid_runner::decode(
        results.tasks[0].status.as_ref().unwrap(),
        &results.tasks[0].stdout_bytes().unwrap(),
    );
    assert_eq!(d.result, Ok(serde_json::json!(15)));
    assert_eq!(d.printed, b"adding 7 and 8\n");
    assert_eq!(
        results.tasks[0].status,
        Some(ExecStatus::Exited { code: 0 })
    );
}
