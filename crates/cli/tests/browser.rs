//! Browser workers in a real, headless Chromium (driven through chromedriver) against a real
//! coordinator and real native workers.
//!
//! Needs `chromium` and `chromedriver` on PATH (`.ci/run` installs Debian's `chromium` and
//! `chromium-driver`). Without them these tests fail, unless `RUNEGRID_SKIP_BROWSER=1`.

mod common;

use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use runegrid_core::{Acceptance, PolicyKind};
use runegrid_examples::kernels::{monte_carlo_pi, monte_carlo_report};
use runegrid_proto::{GridStats, ResultState, SubmitJob};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Driver {
    child: Child,
    browser: Option<Browser>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip() -> bool {
    if std::env::var("RUNEGRID_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("RUNEGRID_SKIP_BROWSER=1: browser test skipped");
        return true;
    }
    false
}

/// Chromium's flags for the tests (WebGPU off).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// Chromium's flags with WebGPU on (on Linux `requestAdapter()` gives null without
/// `--enable-unsafe-webgpu`; with no GPU it is SwiftShader, a software adapter).
const WEBGPU_CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--enable-unsafe-webgpu",
    "--window-size=1280,1000",
];

/// Starts chromedriver and a headless Chromium session.
async fn browser(grid: &Grid) -> Driver {
    browser_with(grid, CHROMIUM_ARGS).await
}

/// Starts chromedriver and a headless Chromium session with these flags.
async fn browser_with(grid: &Grid, chromium_args: &[&str]) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed (apt-get install chromium chromium-driver), or set RUNEGRID_SKIP_BROWSER=1");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": chromium_args,
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let b = wait_until(
        "chromedriver to accept a session",
        Duration::from_secs(30),
        || {
            let (url, caps) = (url.clone(), caps.clone());
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        },
    )
    .await;
    let _ = grid;
    Driver {
        child,
        browser: Some(b),
    }
}

async fn stats(grid: &Grid) -> GridStats {
    reqwest::get(format!("{}/v1/stats", grid.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn text(b: &Browser, id: &str) -> String {
    b.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// Opens the contribute page and starts contributing; waits until the browser's workers are
/// connected.
async fn contribute(grid: &Grid, b: &Browser) -> u32 {
    b.goto(&format!("{}/contribute", grid.url)).await.unwrap();
    b.find(Locator::Id("toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        "the browser's workers to connect",
        Duration::from_secs(30),
        || async { Some(stats(grid).await.now.workers_browser).filter(|n| *n > 0) },
    )
    .await
}

fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_and_native_workers_agree_and_the_dashboard_shows_the_job() {
    if skip() {
        return;
    }
    let mut grid = Grid::start().await;
    let mut d = browser(&grid).await;
    let b = d.browser.take().unwrap();
    let n = contribute(&grid, &b).await;
    // One native worker: every task runs once in the browser and once natively (a quorum of
    // two distinct workers), so each verified task is a browser and a native answer agreeing.
    grid.worker("native-1", 1, &[]);
    grid.wait_workers(1 + n as usize).await;

    let c = grid.client();
    let mc = grid.upload(runegrid_examples::MONTECARLO).await;
    let seeds: Vec<u64> = (1..=12).collect();
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: mc,
        name: Some("browser-and-native".into()),
        tasks: seeds
            .iter()
            .map(|s| args(&["200000", &s.to_string()]))
            .collect(),
        policy: Some(PolicyKind::Quorum),
        replicas: Some(2),
        agree: Some(2),
        max_attempts: Some(2),
        limits: Default::default(),
        blobs: Default::default(),
    };
    let r = grid.run(&job).await;
    for (t, s) in r.tasks.iter().zip(&seeds) {
        assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", grid.logs());
        assert_eq!(
            t.stdout.as_deref(),
            Some(
                format!(
                    "{}\n",
                    monte_carlo_report(200000, monte_carlo_pi(200000, *s))
                )
                .as_str()
            )
        );
    }
    let workers = c.workers().await.unwrap();
    let browser_done: u64 = workers
        .iter()
        .filter(|w| {
            w.capabilities["runtime"]
                .as_str()
                .unwrap_or("")
                .starts_with("browser")
        })
        .map(|w| w.agreed)
        .sum();
    assert_eq!(browser_done, seeds.len() as u64, "{workers:?}");

    // The Credits card shows what this browser's account earned for those verified results:
    // one agreeing attempt per task, paid by the job.
    let shown = wait_until("the credits card", Duration::from_secs(30), || async {
        let micros = b
            .execute(
                "return document.getElementById('credits').dataset.micros || '0'",
                vec![],
            )
            .await
            .ok()?;
        let micros: i64 = micros.as_str()?.parse().ok()?;
        (micros > 0).then_some(micros)
    })
    .await;
    let status = c.status(r.job).await.unwrap();
    let cost = status.cost.unwrap();
    assert!(shown > 0 && shown < cost.spent, "{shown} of {cost:?}");
    assert!(!text(&b, "credits").await.contains('–'));

    // The program is kept in the browser's storage for the next visit.
    let cached = b
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const req = indexedDB.open("runegrid");
            req.onsuccess = () => {
              const r = req.result.transaction("program_index").objectStore("program_index").getAllKeys();
              r.onsuccess = () => done(r.result);
              r.onerror = () => done(String(r.error));
            };
            req.onerror = () => done(String(req.error));"#,
            vec![],
        )
        .await
        .unwrap();
    // (Workers run the metered module, named by its own hash.)
    assert_eq!(
        cached.as_array().map(|keys| keys.len()),
        Some(1),
        "the program is not in the browser's cache: {cached}"
    );

    // Clocks, randomness and traps agree too.
    let hostile = grid.upload(runegrid_examples::HOSTILE).await;
    let mut job = job.clone();
    job.program = hostile;
    job.name = Some("hostile-mix".into());
    job.tasks = vec![
        args(&["clock"]),
        args(&["random"]),
        args(&["panic"]),
        args(&["exit", "7"]),
        args(&["recurse"]),
        args(&["divzero"]),
    ];
    let r = grid.run(&job).await;
    for t in &r.tasks {
        assert!(
            t.state == ResultState::Verified
                || t.error.as_deref().is_some_and(|e| !e.contains("disagree")),
            "browser and native disagreed: {t:?}"
        );
        assert_eq!(t.attempts, 2, "{t:?}");
    }

    // Rune scripts run in the browser too (the built-in runner is an ordinary WASI module),
    // and agree with the native worker to the byte.
    let script = "pub fn f(n) { let s = 0.0; for i in 0..n { s += 1.0 / (i + 1) as f64; } println!(\"n={n}\"); [n, s] }";
    let mut job = job.clone();
    job.program = runegrid_runner::PROGRAM_NAME.into();
    job.name = Some("rune".into());
    job.tasks = (1..=3)
        .map(|n| runegrid_proto::TaskSpec {
            stdin: runegrid_runner::call_stdin(script, "f", &[serde_json::json!(n * 1000)]),
            ..Default::default()
        })
        .collect();
    let r = grid.run(&job).await;
    for (t, n) in r.tasks.iter().zip(1..=3) {
        assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", grid.logs());
        let out = t.stdout.as_deref().unwrap();
        assert!(
            out.starts_with(&format!("n={}\n{{\"ok\":[{},", n * 1000, n * 1000)),
            "{out}"
        );
    }

    // The dashboard, signed in as the job's owner, lists the job.
    b.goto(&format!("{}/", grid.url)).await.unwrap();
    let token = b.find(Locator::Id("token")).await.unwrap();
    token.send_keys(&grid.token).await.unwrap();
    b.find(Locator::Css("#signin button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let row = b
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("tr.job"))
        .await
        .unwrap();
    row.click().await.unwrap();
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#results table"))
        .await
        .unwrap();
    let verified: u64 = wait_until(
        "the dashboard's counts",
        Duration::from_secs(20),
        || async { text(&b, "verified").await.parse().ok().filter(|v| *v >= 12) },
    )
    .await;
    assert!(verified >= 12);
    let rows = b.find_all(Locator::Css("tr.job")).await.unwrap();
    assert_eq!(rows.len(), 3, "every job is listed");
    let png = b.screenshot().await.unwrap();
    let path = artifacts().join("dashboard.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_module_is_stopped_in_the_browser_and_hiding_or_closing_the_page_releases_its_leases()
 {
    if skip() {
        return;
    }
    let grid = Grid::start().await;
    let mut d = browser(&grid).await;
    let b = d.browser.take().unwrap();
    let n = contribute(&grid, &b).await;
    grid.wait_workers(n as usize).await;
    let hostile = grid.upload(runegrid_examples::HOSTILE).await;

    // A loop stops at its fuel limit, in the browser, with the same status a native worker
    // gives; the page stays responsive.
    let limits = runegrid_core::Limits {
        fuel: 200_000_000,
        ..Default::default()
    };
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: hostile.clone(),
        name: Some("loop".into()),
        tasks: vec![args(&["loop"])],
        policy: Some(PolicyKind::None),
        replicas: None,
        agree: None,
        max_attempts: None,
        limits,
        blobs: Default::default(),
    };
    let r = grid.run(&job).await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Failed, "{t:?}");
    assert_eq!(
        t.status,
        Some(runegrid_core::ExecStatus::OutOfFuel),
        "{t:?}"
    );
    assert_eq!(t.fuel, Some(200_000_000));
    assert_eq!(text(&b, "state").await, "running");

    // A long task is running in the browser when the page closes: the coordinator hears it
    // and queues the task again at once, long before its 10-minute lease would expire.
    let limits = runegrid_core::Limits {
        fuel: runegrid_core::Limits::MAX_FUEL,
        wall_time_ms: 600_000,
        ..Default::default()
    };
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        name: Some("long".into()),
        tasks: vec![args(&["loop"])],
        limits,
        ..job
    };
    let c = grid.client();
    let sub = c.submit(&job).await.unwrap();
    wait_until(
        "the long task to run in the browser",
        Duration::from_secs(20),
        || async {
            let s = c.status(sub.job).await.unwrap();
            (s.counts.running == 1).then_some(())
        },
    )
    .await;
    // Hiding the tab (another tab comes to the front) stops its workers with a `leaving`
    // message: the lease is released at once; showing it again resumes them.
    let page = b.window().await.unwrap();
    let other = b.new_window(true).await.unwrap();
    b.switch_to_window(other.handle).await.unwrap();
    wait_until(
        "the hidden page's lease to be released",
        Duration::from_secs(15),
        || async {
            let s = c.status(sub.job).await.unwrap();
            let st = stats(&grid).await;
            (s.counts.running == 0 && s.counts.queued == 1 && st.now.workers_browser == 0)
                .then_some(())
        },
    )
    .await;
    b.close_window().await.unwrap();
    b.switch_to_window(page).await.unwrap();
    wait_until(
        "the shown page to take the task again",
        Duration::from_secs(20),
        || async {
            let s = c.status(sub.job).await.unwrap();
            (s.counts.running == 1).then_some(())
        },
    )
    .await;
    assert_eq!(text(&b, "state").await, "running");

    b.close().await.unwrap();
    wait_until(
        "the closed page's lease to be released",
        Duration::from_secs(15),
        || async {
            let s = c.status(sub.job).await.unwrap();
            let st = stats(&grid).await;
            (s.counts.running == 0 && s.counts.queued == 1 && st.now.workers_browser == 0)
                .then_some(())
        },
    )
    .await;
    c.cancel(sub.job).await.unwrap();
}

#[tokio::test]
async fn stats_and_pages_are_served() {
    let grid = Grid::start().await;
    let s = stats(&grid).await;
    assert_eq!(s.now.workers_browser, 0);
    assert_eq!(s.interval_ms, 2000);
    for (path, needle) in [
        ("/", "Dashboard"),
        ("/contribute", "Start contributing"),
        ("/web/worker.js", "runegrid-result-v2"),
        ("/web/exec.js", "random_get"),
        ("/web/exec_fs.js", "path_open"),
        ("/web/exec_memory.js", "ENOTCAPABLE"),
        ("/web/gpu.js", "__runegrid_status"),
    ] {
        let r = reqwest::get(format!("{}{path}", grid.url)).await.unwrap();
        assert!(r.status().is_success(), "{path}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    let r = reqwest::get(format!("{}/web/nope.js", grid.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Anonymous contributors get an account that runs workers but cannot submit work.
    let made: runegrid_proto::AccountInfo = reqwest::Client::new()
        .post(format!("{}/v1/contributors", grid.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(made.contributor);
    let contributor = grid.client_with(made.token.as_deref().unwrap());
    let e = contributor
        .upload_program(runegrid_examples::NOOP.to_vec())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot submit"), "{e}");
}

/// `runegrid bench browser` runs end to end (small jobs) and prints both figures.
#[test]
fn the_browser_benchmark_runs() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "bench",
        "browser",
        "--tasks",
        "2",
        "--samples",
        "100000",
        "--matrix",
        "24",
        "--dir",
    ]);
    cmd.arg(dir.path());
    let out = output_within(cmd, Duration::from_secs(300));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "click on start to first task accepted",
        "returning contributor",
        "montecarlo",
        "matmul",
        "native worker's speed",
    ] {
        assert!(text.contains(part), "missing {part} in:\n{text}");
    }
}

/// The SHA-256 of the blobs in the browser's storage (IndexedDB "blob_index").
async fn stored_blobs(b: &Browser) -> Vec<String> {
    let keys = b
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const req = indexedDB.open("runegrid");
            req.onsuccess = () => {
              const db = req.result;
              if (!db.objectStoreNames.contains("blob_index")) { db.close(); return done([]); }
              const r = db.transaction("blob_index").objectStore("blob_index").getAllKeys();
              r.onsuccess = () => { db.close(); done(r.result); };
              r.onerror = () => done(String(r.error));
            };
            req.onerror = () => done(String(req.error));"#,
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(keys.clone()).unwrap_or_else(|_| panic!("blob_index: {keys}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_worker_mounts_blobs_kept_in_its_storage() {
    if skip() {
        return;
    }
    let mut grid = Grid::start().await;
    let mut d = browser(&grid).await;
    let b = d.browser.take().unwrap();
    let n = contribute(&grid, &b).await;
    let native = grid.worker("native-1", 1, &[]);
    grid.wait_workers(1 + n as usize).await;
    let c = grid.client();
    let echo = grid.upload(runegrid_examples::ECHO).await;
    let data = b"a blob for the browser\n".to_vec();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    c.put_blob(&sha, data.clone()).await.unwrap();

    // A browser and a native worker both mount it (2 of 2 must agree).
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: echo.clone(),
        name: Some("blob".into()),
        tasks: vec![args(&["cat:/blobs/data.txt"])],
        policy: Some(PolicyKind::Quorum),
        replicas: Some(2),
        agree: Some(2),
        max_attempts: Some(2),
        limits: Default::default(),
        blobs: [("data.txt".to_string(), sha.clone())].into(),
    };
    let r = grid.run(&job).await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", grid.logs());
    assert!(
        t.stdout
            .as_deref()
            .unwrap()
            .contains("cat /blobs/data.txt=a blob for the browser\n"),
        "{t:?}"
    );
    let browser_agreed = |ws: &[runegrid_proto::WorkerInfo]| -> u64 {
        ws.iter()
            .filter(|w| {
                w.capabilities["runtime"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("browser")
            })
            .map(|w| w.agreed)
            .sum()
    };
    assert_eq!(browser_agreed(&c.workers().await.unwrap()), 1);
    assert_eq!(stored_blobs(&b).await, vec![sha.clone()]);

    // A task writing files under /out: the browser sends them with its result, the
    // coordinator checks them against the digest, and they come back byte for byte.
    let files = grid.upload(runegrid_examples::FILES).await;
    let sorted = grid
        .run(&SubmitJob {
            gpu: None,
            program: files,
            name: Some("files".into()),
            tasks: vec![args(&["sort", "/blobs/data.txt", "/out/sorted.txt"])],
            ..job.clone()
        })
        .await;
    let t = &sorted.tasks[0];
    assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", grid.logs());
    assert_eq!(t.files.len(), 1, "{t:?}");
    assert_eq!(
        c.task_file(sorted.job, 0, "sorted.txt").await.unwrap(),
        data
    );
    assert_eq!(browser_agreed(&c.workers().await.unwrap()), 2);

    // The coordinator's copy is damaged: fetching it again now would be refused. The page is
    // opened again (new workers, same storage): they advertise the blob, load it from IndexedDB
    // (hashing it once) and agree with the native worker's cached copy.
    std::fs::write(
        grid.data().join("blobs").join(&sha),
        b"a blob for the BROWSER\n",
    )
    .unwrap();
    b.goto("about:blank").await.unwrap();
    wait_until(
        "the page's workers to leave",
        Duration::from_secs(20),
        || async { (stats(&grid).await.now.workers_browser == 0).then_some(()) },
    )
    .await;
    let n = contribute(&grid, &b).await;
    grid.wait_workers(1 + n as usize).await;
    let ws = c.workers().await.unwrap();
    let advertised = ws
        .iter()
        .filter(|w| {
            w.capabilities["runtime"]
                .as_str()
                .unwrap_or("")
                .starts_with("browser")
        })
        .all(|w| {
            w.capabilities["blobs"]
                .as_array()
                .is_some_and(|h| h.iter().any(|s| s == &sha))
        });
    assert!(advertised, "{ws:?}");
    let r = grid
        .run(&SubmitJob {
            gpu: None,
            max_price: None,
            seed: None,
            cache: None,
            name: Some("blob-again".into()),
            ..job.clone()
        })
        .await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", grid.logs());
    assert!(
        t.stdout
            .as_deref()
            .unwrap()
            .contains("=a blob for the browser\n"),
        "{t:?}"
    );

    // A blob that does not match its hash is refused by the browser: the attempt fails saying
    // why, and nothing is stored.
    grid.kill_worker(native);
    let other = b"another blob\n".to_vec();
    let other_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&other));
    c.put_blob(&other_sha, other).await.unwrap();
    std::fs::write(
        grid.data().join("blobs").join(&other_sha),
        b"ANOTHER blob\n",
    )
    .unwrap();
    let r = grid
        .run(&SubmitJob {
            gpu: None,
            max_price: None,
            seed: None,
            cache: None,
            name: Some("tampered".into()),
            policy: Some(PolicyKind::None),
            replicas: None,
            agree: None,
            max_attempts: Some(1),
            blobs: [("data.txt".to_string(), other_sha.clone())].into(),
            ..job.clone()
        })
        .await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Failed, "{t:?}");
    let err = t.error.as_deref().unwrap_or_default();
    assert!(
        err.contains("blob data.txt: ") && err.contains(&other_sha) && err.contains("rejected"),
        "{err}"
    );
    assert_eq!(stored_blobs(&b).await, vec![sha.clone()]);
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_worker_answers_a_chat_request_like_a_native_one() {
    if skip() {
        return;
    }
    let Some(model) = runegrid_infer::model_for_tests() else {
        eprintln!("skipped: no model file (run scripts/fetch-model.sh)");
        return;
    };
    let mut grid = Grid::start_opts(300, &["--model", model.to_str().unwrap()]).await;
    let mut d = browser(&grid).await;
    let b = d.browser.take().unwrap();
    let n = contribute(&grid, &b).await;
    grid.worker("native-1", 1, &[]);
    grid.wait_workers(1 + n as usize).await;
    // Replicas go to distinct owners first: one to the page (a contributor account), one to the
    // native worker (the admin's). Both must produce the same tokens.
    let req = runegrid_proto::chat::ChatRequest {
        model: "smollm2-135m-instruct".into(),
        messages: vec![runegrid_proto::chat::ChatMessage::new(
            "user",
            "What is the capital of France? Answer in one sentence.",
        )],
        max_tokens: Some(8),
        temperature: Some(0.0),
        runegrid: Some(runegrid_proto::chat::ChatGridOptions {
            replicas: Some(2),
            agree: Some(2),
            max_attempts: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = tokio::time::timeout(Duration::from_secs(240), grid.client().chat(&req))
        .await
        .expect("an answer within 240 s")
        .unwrap_or_else(|e| panic!("{e}\n{}", grid.logs()));
    assert_eq!(
        answer.choices[0].message.text().unwrap(),
        "The capital of France is Paris."
    );
    assert_eq!(answer.runegrid.acceptance, Some(Acceptance::Quorum));
    let ws = grid.client().workers().await.unwrap();
    let browser_agreed: u64 = ws
        .iter()
        .filter(|w| {
            w.capabilities["runtime"]
                .as_str()
                .unwrap_or("")
                .starts_with("browser")
        })
        .map(|w| w.agreed)
        .sum();
    assert_eq!(browser_agreed, 1, "{ws:?}");
    b.close().await.unwrap();
}

const ADD_KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> sum: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&sum)) { sum[id.x] = a[id.x] * 3u + b[id.x]; }
}
"#;

fn words(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_worker_runs_a_gpu_kernel_and_agrees_with_a_native_one() {
    use base64::Engine as _;
    if skip() {
        return;
    }
    if runegrid_gpu::adapters().is_empty() {
        assert!(
            std::env::var_os("RUNEGRID_REQUIRE_GPU").is_none(),
            "RUNEGRID_REQUIRE_GPU is set but there is no Vulkan adapter (apt-get install mesa-vulkan-drivers)"
        );
        eprintln!("note: skipping the browser GPU test: no Vulkan adapter for the native worker");
        return;
    }
    let mut grid = Grid::start().await;
    let mut d = browser_with(&grid, WEBGPU_CHROMIUM_ARGS).await;
    let b = d.browser.take().unwrap();
    let n = contribute(&grid, &b).await;
    // One native worker (lavapipe, found on its own): every task runs once in the browser and
    // once natively, so each verified task is a browser and a native answer agreeing.
    grid.worker("native-gpu", 1, &[]);
    grid.wait_workers(1 + n as usize).await;
    grid.wait_worker("a browser worker showing its GPU", |w| {
        w.connected
            && w.capabilities["runtime"]
                .as_str()
                .unwrap_or("")
                .starts_with("browser")
            && w.capabilities["gpu"]["backend"] == "webgpu"
    })
    .await;
    // The browser's version is part of its adapter's driver (it compiles the WGSL).
    let ws = grid.client().workers().await.unwrap();
    let browser = ws
        .iter()
        .find(|w| w.capabilities["gpu"]["backend"] == "webgpu")
        .unwrap();
    let info = browser.capabilities["gpu"]["driver_info"]
        .as_str()
        .unwrap_or("");
    assert!(info.contains("chrome "), "{info}");
    grid.wait_worker("the native worker showing its GPU", |w| {
        w.name == "native-gpu" && w.capabilities.get("gpu").is_some()
    })
    .await;

    let c = grid.client();
    let len = 300u32;
    let kernel = serde_json::json!({
        "shader": ADD_KERNEL,
        "buffers": [
            {"name": "a", "binding": 0, "role": "input"},
            {"name": "b", "binding": 1, "role": "input"},
            {"name": "sum", "binding": 2, "role": "output", "size": 4 * len},
        ],
        "dispatches": [[len.div_ceil(64), 1, 1]],
    });
    let info = c
        .upload_program(serde_json::to_vec(&kernel).unwrap())
        .await
        .unwrap();
    assert_eq!(info.kind, runegrid_proto::ProgramKind::Gpu);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let count = 4u32;
    let tasks = (0..count)
        .map(|t| runegrid_proto::TaskSpec {
            buffers: std::collections::BTreeMap::from([
                (
                    "a".to_string(),
                    b64(&words(&(0..len).map(|i| i + t).collect::<Vec<_>>())),
                ),
                (
                    "b".to_string(),
                    b64(&words(&vec![u32::MAX - t; len as usize])),
                ),
            ]),
            ..runegrid_proto::TaskSpec::default()
        })
        .collect();
    let add_job = SubmitJob {
        policy: Some(PolicyKind::Quorum),
        gpu: Some(runegrid_proto::GpuJob {
            verify: None,
            allow_software: true,
        }),
        max_attempts: Some(2),
        ..job(&info.program, tasks, 2, 2)
    };
    let r = grid.run(&add_job).await;
    for (t, res) in r.tasks.iter().enumerate() {
        assert_eq!(
            res.state,
            ResultState::Verified,
            "task {t}: {res:?}\n{}",
            grid.logs()
        );
        assert_eq!(
            res.status,
            Some(runegrid_core::ExecStatus::Exited { code: 0 })
        );
        assert!(res.fuel.unwrap_or(0) > 0, "a GPU task's fuel is its work");
        let t = t as u32;
        let sum = c.task_file(r.job, t, "sum").await.unwrap();
        let want: Vec<u32> = (0..len)
            .map(|i| (i + t).wrapping_mul(3).wrapping_add(u32::MAX - t))
            .collect();
        assert_eq!(sum, words(&want), "task {t}");
    }
    let workers = c.workers().await.unwrap();
    let browser_agreed: u64 = workers
        .iter()
        .filter(|w| {
            w.capabilities["runtime"]
                .as_str()
                .unwrap_or("")
                .starts_with("browser")
        })
        .map(|w| w.agreed)
        .sum();
    let native_agreed: u64 = workers
        .iter()
        .filter(|w| w.name == "native-gpu")
        .map(|w| w.agreed)
        .sum();
    assert_eq!(browser_agreed, u64::from(count), "{workers:?}");
    assert_eq!(native_agreed, u64::from(count), "{workers:?}");

    // A float kernel: SwiftShader's `sin` and lavapipe's differ in the last bits, so under
    // `exact` a browser and a native replica (distinct owners, so one of each) disagree.
    let sin = serde_json::json!({
        "shader": "@group(0) @binding(0) var<storage, read> x: array<f32>;\n\
                   @group(0) @binding(1) var<storage, read_write> y: array<f32>;\n\
                   @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                   if (id.x < arrayLength(&y)) { y[id.x] = sin(x[id.x]); } }",
        "buffers": [
            {"name": "x", "binding": 0, "role": "input"},
            {"name": "y", "binding": 1, "role": "output", "size": 4096},
        ],
        "dispatches": [[16, 1, 1]],
    });
    let sin = c
        .upload_program(serde_json::to_vec(&sin).unwrap())
        .await
        .unwrap()
        .program;
    let xs: Vec<u8> = (0..1024)
        .flat_map(|i| (i as f32 * 0.37).to_le_bytes())
        .collect();
    let float_job = |verify: &str| SubmitJob {
        policy: Some(PolicyKind::Quorum),
        gpu: Some(runegrid_proto::GpuJob {
            verify: Some(verify.into()),
            allow_software: true,
        }),
        max_attempts: Some(2),
        ..job(
            &sin,
            vec![runegrid_proto::TaskSpec {
                buffers: std::collections::BTreeMap::from([("x".to_string(), b64(&xs))]),
                ..runegrid_proto::TaskSpec::default()
            }],
            2,
            2,
        )
    };
    let r = grid.run(&float_job("exact")).await;
    let res = &r.tasks[0];
    assert_eq!(res.state, ResultState::Failed, "{res:?}");
    assert!(
        res.error.as_deref().unwrap_or("").contains("disagreed"),
        "{res:?}"
    );

    // Under a tolerance the same two engines agree: SwiftShader's `sin` is up to ~70,000 ULP
    // (4e-3) from lavapipe's, within 1e-2 of it. Each replica is paid and trusted as agreeing.
    let agreed_before: u64 = c.workers().await.unwrap().iter().map(|w| w.agreed).sum();
    let r = grid.run(&float_job("tolerance:abs=1e-2")).await;
    let res = &r.tasks[0];
    assert_eq!(res.state, ResultState::Verified, "{res:?}");
    let ys = c.task_file(r.job, 0, "y").await.unwrap();
    assert_eq!(ys.len(), 4096);
    for (i, y) in ys.chunks_exact(4).enumerate() {
        let y = f32::from_le_bytes(y.try_into().unwrap());
        let want = (i as f32 * 0.37).sin();
        assert!((y - want).abs() < 1e-2, "y[{i}] = {y}, sin = {want}");
    }
    let agreed_after: u64 = c.workers().await.unwrap().iter().map(|w| w.agreed).sum();
    assert_eq!(agreed_after, agreed_before + 2);
    // Too tight a tolerance: the two still disagree.
    let r = grid.run(&float_job("tolerance:ulps=1")).await;
    assert_eq!(r.tasks[0].state, ResultState::Failed, "{:?}", r.tasks[0]);

    // Under `homogeneous` both replicas run on one adapter class and agree. With two native
    // workers and two browser workers, either class can take both attempts.
    grid.worker("native-gpu-2", 1, &[]);
    grid.wait_worker("the second native worker", |w| {
        w.name == "native-gpu-2" && w.connected
    })
    .await;
    // A second browser (its own profile, so its own worker key) for a second SwiftShader.
    let mut d2 = browser_with(&grid, WEBGPU_CHROMIUM_ARGS).await;
    let b2 = d2.browser.take().unwrap();
    b2.goto(&format!("{}/contribute", grid.url)).await.unwrap();
    b2.find(Locator::Id("toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let before = n;
    wait_until(
        "a second browser's workers to connect",
        Duration::from_secs(30),
        || async { Some(stats(&grid).await.now.workers_browser).filter(|k| *k > before) },
    )
    .await;
    let r = grid.run(&float_job("homogeneous")).await;
    assert_eq!(r.tasks[0].state, ResultState::Verified, "{:?}", r.tasks[0]);
    let _ = b2.close().await;
}
