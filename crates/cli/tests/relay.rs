//! Relays end to end: a real coordinator, real `runegrid relay` processes, real workers behind
//! them. The coordinator sees each worker on its own; programs and blobs cross the relay's
//! upstream once for all its workers; a relay that alters results is caught and dropped while
//! honest paths verify the job.

mod common;

use common::*;
use runegrid_core::Standing;
use runegrid_proto::ResultState;
use runegrid_relay::RelayStats;
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A relay process; killed on drop.
struct Relay {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let start = text.len().saturating_sub(4000);
            eprintln!(
                "==== {}\n{}",
                self.log.display(),
                &text[text.floor_char_boundary(start)..]
            );
        }
    }
}

impl Relay {
    /// A relay run by the admin.
    async fn start(g: &Grid, name: &str, extra: &[&str]) -> Relay {
        Relay::start_as(g, name, &g.token, extra).await
    }

    /// A relay run by the account of `token`.
    async fn start_as(g: &Grid, name: &str, token: &str, extra: &[&str]) -> Relay {
        let data = g.dir.path().join(name);
        let log = g.dir.path().join(format!("{name}.out"));
        let child = Command::new(BIN)
            .args(["relay", "--upstream", &g.url, "--listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(&data)
            .args(extra)
            .env("RUNEGRID_TOKEN", token)
            .env("RUNEGRID_LOG", "info,runegrid_relay=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap().try_clone().unwrap())
            .spawn()
            .unwrap();
        let file = data.join("relay.url");
        let url = wait_until("the relay url file", Duration::from_secs(30), || {
            let f = file.clone();
            async move { std::fs::read_to_string(&f).ok() }
        })
        .await;
        let relay = Relay {
            child,
            url: url.trim().to_string(),
            log,
        };
        wait_until(
            "the relay's upstream connection",
            Duration::from_secs(30),
            || async { relay.stats().await.filter(|s| s.upstream_connected) },
        )
        .await;
        relay
    }

    async fn stats(&self) -> Option<RelayStats> {
        reqwest::get(format!("{}/relay/stats", self.url))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
}

/// A counter's value in the coordinator's `/metrics`.
async fn metric(g: &Grid, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", g.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{text}"))
}

const DATA: &str = "pear\napple\nfig\nbanana\n";
const SORTED: &str = "apple\nbanana\nfig\npear\n";

/// `n` tasks sorting the blob `data.txt`, `replicas` of each to agree.
async fn sort_job(g: &Grid, n: u32, replicas: u32) -> runegrid_proto::SubmitJob {
    let p = g.upload(runegrid_examples::FILES).await;
    let blob = g
        .client()
        .upload_blob(DATA.as_bytes().to_vec())
        .await
        .unwrap();
    let tasks = (0..n)
        .map(|k| args(&["sort", "/blobs/data.txt", &format!("/out/sorted-{k}.txt")]))
        .collect();
    let mut j = job(&p, tasks, replicas, replicas);
    j.blobs.insert("data.txt".into(), blob.sha256);
    j
}

fn assert_sorted(r: &runegrid_proto::JobResults, logs: &str) {
    for t in &r.tasks {
        assert_eq!(t.state, ResultState::Verified, "{t:?}\n{logs}");
        assert_eq!(t.files.len(), 1, "{t:?}");
        assert_eq!(t.files[0].sha256, hex::encode(Sha256::digest(SORTED)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_behind_a_relay_are_each_on_the_grid_and_share_its_downloads() {
    let mut g = Grid::start().await;
    let relay = Relay::start(&g, "relay", &[]).await;
    let names = ["r1", "r2", "r3"];
    for name in names {
        g.worker(name, 1, &["--coordinator", &relay.url]);
    }
    g.wait_workers(3).await;
    // Each worker individually: its own record, key and owner.
    let ws = g.client().workers().await.unwrap();
    let mut seen: Vec<&str> = ws
        .iter()
        .filter(|w| w.connected)
        .map(|w| w.name.as_str())
        .collect();
    seen.sort();
    assert_eq!(seen, names);
    let mut keys: Vec<&str> = ws.iter().map(|w| w.public_key.as_str()).collect();
    keys.dedup();
    assert_eq!(keys.len(), 3);

    // Every task replicated on all three: each worker needs the program and the blob.
    let r = g.run(&sort_job(&g, 2, 3).await).await;
    assert_sorted(&r, &g.logs());
    let ws = g.client().workers().await.unwrap();
    for w in &ws {
        assert_eq!((w.agreed, w.disagreed), (2, 0), "{w:?}");
    }

    let s = relay.stats().await.unwrap();
    assert_eq!(s.sessions, 3, "{s:?}");
    // The program crossed the upstream once, for three workers.
    assert_eq!((s.programs_fetched, s.programs_from_cache), (1, 2), "{s:?}");
    assert_eq!(
        s.program_bytes_from_cache,
        2 * s.program_bytes_fetched,
        "{s:?}"
    );
    // The blob too: fetched upstream once, served three times.
    assert_eq!(s.blob_bytes_fetched, DATA.len() as u64, "{s:?}");
    assert_eq!(s.blob_bytes_served, 3 * DATA.len() as u64, "{s:?}");
    // Many workers' messages share the upstream's WebSocket messages.
    assert!(s.upstream_frames_sent >= s.upstream_messages_sent, "{s:?}");
    assert_eq!((s.results_rejected, s.results_altered), (0, 0), "{s:?}");

    // The relay serves the contribute page (forwarded from the coordinator).
    let page = reqwest::get(format!("{}/contribute", relay.url))
        .await
        .unwrap();
    assert!(page.status().is_success());
    assert!(page.text().await.unwrap().contains("contribute.js"));
}

/// A relay that changes an assignment's inputs on the way (its seed): the worker computes and
/// signs a result of another task, valid on its own, but its signature covers the digest of
/// the assignment it ran, not of the one the coordinator sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_alters_inputs_is_caught() {
    let mut g = Grid::start().await;
    let operator = g
        .client()
        .create_account("input-operator", false)
        .await
        .unwrap();
    let liar = Relay::start_as(
        &g,
        "alterer",
        &operator.token.unwrap(),
        &["--misbehave", "alter-input"],
    )
    .await;
    g.worker("victim", 1, &["--coordinator", &liar.url]);
    g.worker("d1", 1, &[]);
    g.wait_workers(2).await;
    let job = g.client().submit(&sort_job(&g, 8, 2).await).await.unwrap();
    wait_until("the alterer caught", Duration::from_secs(60), || async {
        (metric(&g, "runegrid_relays_caught_total").await >= 1.0).then_some(())
    })
    .await;
    // The relay's own check of the worker's result passed (it checks against the assignment
    // it forwarded): only the coordinator, which knows what it sent, can tell.
    let s = wait_until(
        "the alterer refused upstream",
        Duration::from_secs(30),
        || async { liar.stats().await.filter(|s| !s.upstream_connected) },
    )
    .await;
    assert!(s.inputs_altered >= 1, "{s:?}");
    assert_eq!((s.results_rejected, s.results_altered), (0, 0), "{s:?}");
    assert_eq!(s.upstream_connects, 1, "{s:?}");

    let honest = Relay::start(&g, "honest", &[]).await;
    g.worker("h1", 1, &["--coordinator", &honest.url]);
    let r = g.wait(job.job).await;
    assert_sorted(&r, &g.logs());
    let ws = g.client().workers().await.unwrap();
    let victim = ws.iter().find(|w| w.name == "victim").unwrap();
    assert_eq!((victim.agreed, victim.disagreed), (0, 0), "{victim:?}");
    assert_ne!(victim.standing, Standing::Quarantined, "{victim:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_alters_results_is_caught_and_honest_paths_verify() {
    let mut g = Grid::start().await;
    let operator = g
        .client()
        .create_account("liar-operator", false)
        .await
        .unwrap();
    let liar = Relay::start_as(
        &g,
        "liar",
        &operator.token.unwrap(),
        &["--misbehave", "flip-result"],
    )
    .await;
    g.worker("victim", 1, &["--coordinator", &liar.url]);
    g.worker("d1", 1, &[]);
    g.wait_workers(2).await;
    // Two distinct workers must agree on each task: with only these two, every task goes to
    // the worker behind the liar.
    let job = g.client().submit(&sort_job(&g, 8, 2).await).await.unwrap();
    wait_until("the liar caught", Duration::from_secs(60), || async {
        (metric(&g, "runegrid_relays_caught_total").await >= 1.0).then_some(())
    })
    .await;
    let s = liar.stats().await.unwrap();
    assert!(s.results_altered >= 1, "{s:?}");
    // Its operator may not connect a relay for a while: the liar stays away.
    let refused = wait_until(
        "the liar refused upstream",
        Duration::from_secs(30),
        || async { liar.stats().await.filter(|s| !s.upstream_connected) },
    )
    .await;
    assert_eq!(refused.upstream_connects, 1, "{refused:?}");

    // Honest paths: a relay that forwards results as they are, and its workers.
    let honest = Relay::start(&g, "honest", &[]).await;
    g.worker("h1", 1, &["--coordinator", &honest.url]);
    g.worker("h2", 1, &["--coordinator", &honest.url]);
    let r = g.wait(job.job).await;
    assert_sorted(&r, &g.logs());

    // The worker behind the liar is not blamed for what the relay did.
    let ws = g.client().workers().await.unwrap();
    let victim = ws.iter().find(|w| w.name == "victim").unwrap();
    assert_eq!((victim.agreed, victim.disagreed), (0, 0), "{victim:?}");
    assert_ne!(victim.standing, Standing::Quarantined, "{victim:?}");
    // The honest relay never rejected or altered anything.
    let h = honest.stats().await.unwrap();
    assert_eq!((h.results_rejected, h.results_altered), (0, 0), "{h:?}");
    assert!(h.sessions_opened >= 2, "{h:?}");
}

/// A relay that reports its worker's attempts as failed (its results replaced by unsigned
/// `failed` messages in the worker's name): the coordinator finds no signature of the worker's
/// on them, drops the relay and blames the worker for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_forges_failures_is_caught_and_the_worker_not_blamed() {
    let mut g = Grid::start().await;
    let operator = g
        .client()
        .create_account("forger-operator", false)
        .await
        .unwrap();
    let forger = Relay::start_as(
        &g,
        "forger",
        &operator.token.unwrap(),
        &["--misbehave", "forge-failure"],
    )
    .await;
    g.worker("victim", 1, &["--coordinator", &forger.url]);
    let d1 = g.worker("d1", 1, &[]);
    g.wait_workers(2).await;
    let job = g.client().submit(&sort_job(&g, 8, 2).await).await.unwrap();
    wait_until("the forger caught", Duration::from_secs(60), || async {
        (metric(&g, "runegrid_relays_caught_total").await >= 1.0).then_some(())
    })
    .await;
    let s = wait_until(
        "the forger refused upstream",
        Duration::from_secs(30),
        || async { forger.stats().await.filter(|s| !s.upstream_connected) },
    )
    .await;
    assert!(s.failures_forged >= 1, "{s:?}");
    assert_eq!(s.upstream_connects, 1, "{s:?}");

    let honest = Relay::start(&g, "honest", &[]).await;
    g.worker("h1", 1, &["--coordinator", &honest.url]);
    let r = g.wait(job.job).await;
    assert_sorted(&r, &g.logs());
    // The victim's good results never arrived, and what arrived in its name was no failure of
    // its own: it is not blamed.
    let ws = g.client().workers().await.unwrap();
    let victim = ws.iter().find(|w| w.name == "victim").unwrap();
    assert_eq!(
        (victim.agreed, victim.disagreed, victim.abandoned),
        (0, 0, 0),
        "{victim:?}"
    );
    assert_ne!(victim.standing, Standing::Quarantined, "{victim:?}");

    // A worker's own failure (out of wall time: not its fault) passes an honest relay, signed:
    // the coordinator takes it as the worker's, blames no one and catches no relay.
    let hostile = g.upload(runegrid_examples::HOSTILE).await;
    let mut j = common::job(&hostile, vec![args(&["loop"])], 1, 1);
    j.limits = runegrid_core::Limits {
        fuel: runegrid_core::Limits::MAX_FUEL,
        wall_time_ms: 300,
        ..runegrid_core::Limits::default()
    };
    g.kill_worker(d1); // only h1, behind the honest relay, is left to run it
    let r = g.run(&j).await;
    assert_eq!(r.tasks[0].state, ResultState::Failed, "{r:?}");
    assert!(
        r.tasks[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("attempts were lost")),
        "{:?}",
        r.tasks[0]
    );
    assert_eq!(metric(&g, "runegrid_relays_caught_total").await, 1.0);
    let ws = g.client().workers().await.unwrap();
    let h1 = ws.iter().find(|w| w.name == "h1").unwrap();
    assert_eq!(h1.abandoned, 0, "{h1:?}");
    let h = honest.stats().await.unwrap();
    assert_eq!((h.results_rejected, h.failures_forged), (0, 0), "{h:?}");
    assert!(h.upstream_connected, "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_dials_again_and_its_workers_come_back_after_a_coordinator_restart() {
    let mut g = Grid::start().await;
    let relay = Relay::start(&g, "relay", &[]).await;
    g.worker("r1", 1, &["--coordinator", &relay.url]);
    g.worker("r2", 1, &["--coordinator", &relay.url]);
    g.wait_workers(2).await;
    g.restart_coordinator().await;
    // The relay connects again, its workers dial it again and are each back on the grid.
    wait_until(
        "the relay back upstream",
        Duration::from_secs(60),
        || async {
            relay
                .stats()
                .await
                .filter(|s| s.upstream_connected && s.upstream_connects >= 2)
        },
    )
    .await;
    g.wait_workers(2).await;
    let r = g.run(&sort_job(&g, 2, 2).await).await;
    assert_sorted(&r, &g.logs());
    let s = relay.stats().await.unwrap();
    assert!(s.sessions_opened >= 4, "{s:?}");
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits until exactly `n` workers are connected.
async fn wait_connected(g: &Grid, n: usize) {
    let c = g.client();
    wait_until(
        &format!("exactly {n} connected workers"),
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move {
                let ws = c.workers().await.ok()?;
                (ws.iter().filter(|w| w.connected).count() == n).then_some(())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_keeps_its_workers_liveness_and_the_coordinator_keeps_the_relays() {
    // Heartbeats every 300 ms: silent after 900 ms.
    let mut g = Grid::start_with(300).await;
    let relay = Relay::start(&g, "relay", &[]).await;
    let workers: Vec<usize> = (0..4)
        .map(|k| g.worker(&format!("r{k}"), 1, &["--coordinator", &relay.url]))
        .collect();
    g.wait_workers(4).await;

    // Idle, the workers' heartbeats end at the relay: over 10 intervals, 4 workers send ~40,
    // and upstream goes only the relay's own (one every half interval when nothing else goes).
    let s0 = relay.stats().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let s1 = relay.stats().await.unwrap();
    let frames = s1.upstream_frames_sent - s0.upstream_frames_sent;
    let kept = s1.heartbeats_kept - s0.heartbeats_kept;
    assert!(
        kept > 0 && frames < kept,
        "{frames} frames upstream while {kept} heartbeats came: {s0:?} {s1:?}"
    );
    // And the coordinator, hearing only the relay, kept all four.
    let ws = g.client().workers().await.unwrap();
    assert_eq!(ws.iter().filter(|w| w.connected).count(), 4, "{ws:?}");

    // A worker that goes silent: the relay ends its session, the coordinator drops it.
    let frozen = g.worker_pid(workers[0]);
    signal(frozen, "-STOP");
    wait_connected(&g, 3).await;
    signal(frozen, "-CONT");
    let s = relay.stats().await.unwrap();
    assert_eq!(s.silent_workers, 1, "{s:?}");
    // It dials the relay again and is back.
    g.wait_workers(4).await;

    // A relay that goes silent: the coordinator drops every worker behind it, and they are
    // back once it answers again.
    signal(relay.child.id(), "-STOP");
    wait_connected(&g, 0).await;
    signal(relay.child.id(), "-CONT");
    g.wait_workers(4).await;
    let r = g.run(&sort_job(&g, 4, 2).await).await;
    assert_sorted(&r, &g.logs());
}

/// A job's event stream read through a relay arrives as it happens: the first event while no
/// worker is there to run the job (a buffering proxy would send nothing until the job ended),
/// then the tasks' results and the end once a worker runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_event_stream_through_a_relay_arrives_as_it_happens() {
    use runegrid_core::JobState;
    use runegrid_proto::JobEvent;
    let mut g = Grid::start().await;
    let relay = Relay::start(&g, "relay", &[]).await;
    let job = g.client().submit(&sort_job(&g, 2, 1).await).await.unwrap();
    let through = runegrid_client::Client::new(&relay.url, Some(g.token.clone()));
    // (A proxy that buffers would answer nothing: the stream ends only with the job.)
    let mut events = tokio::time::timeout(Duration::from_secs(60), through.events(job.job))
        .await
        .expect("the stream's answer within 60 s")
        .unwrap();
    // No worker anywhere: the job cannot end, yet its first event is here.
    match next_event(&mut events).await {
        Some(JobEvent::Progress { counts }) => {
            assert_eq!((counts.total(), counts.verified), (2, 0), "{counts:?}")
        }
        other => panic!("expected the first progress event, got {other:?}"),
    }
    let status = g.client().status(job.job).await.unwrap();
    assert!(!status.state.is_finished(), "{status:?}");

    g.worker("w", 1, &["--coordinator", &relay.url]);
    let mut tasks = std::collections::BTreeSet::new();
    let end = loop {
        match next_event(&mut events).await {
            Some(JobEvent::Task { result }) if result.state == ResultState::Verified => {
                tasks.insert(result.index);
            }
            Some(JobEvent::Done { state, counts }) => break (state, counts),
            Some(_) => {}
            None => panic!("the stream ended without its done event"),
        }
    };
    assert_eq!(end.0, JobState::Done, "{end:?}");
    assert_eq!(end.1.verified, 2, "{end:?}");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(
        next_event(&mut events).await.is_none(),
        "the stream ends after done"
    );
}

/// The next event of a stream (`None` once it ended), failing the test after 60 s.
async fn next_event(events: &mut runegrid_client::EventStream) -> Option<runegrid_proto::JobEvent> {
    tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("an event within 60 s")
        .map(|e| e.unwrap())
}
