//! Failover: two coordinators on one PostgreSQL database (a throwaway server this test process
//! starts), one active and one standing by; workers and the client are given both URLs. The
//! active one is killed with SIGKILL again and again while jobs are submitted, and nothing it
//! acknowledged may be lost. Without PostgreSQL installed the test prints a note and passes,
//! unless RUNEGRID_REQUIRE_POSTGRES=1.

mod common;

use common::*;
use runegrid_client::Client;
use runegrid_proto::{JobResults, ResultState};
use runegrid_store::testing;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times the active coordinator is killed.
const KILLS: usize = 4;

struct Coordinator {
    url: String,
    data: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Coordinator {
    fn start(&mut self, logs: &Path, db: &str, name: &str) {
        let listen = self.url.trim_start_matches("http://").to_string();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &listen, "--store", db])
            .args(["--lease-ttl-ms", "1500", "--heartbeat-ms", "300"])
            .args(["--lease-grace-secs", "2"])
            .args(["--welcome-credits", "100000000000"])
            .arg("--data")
            .arg(&self.data)
            .env("RUNEGRID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log(logs, name))
            .stderr(log(logs, name))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    async fn is_active(&self) -> bool {
        reqwest::get(format!("{}/health", self.url))
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// Which coordinator is active (waiting for one to be).
async fn active(cs: &[Coordinator]) -> usize {
    wait_until(
        "an active coordinator",
        Duration::from_secs(120),
        || async {
            for (i, c) in cs.iter().enumerate() {
                if c.is_active().await {
                    return Some(i);
                }
            }
            None
        },
    )
    .await
}

/// The verified outputs of a job, or `None` while it is not finished.
async fn finished(c: &Client, job: i64) -> Option<JobResults> {
    let s = c.status(job).await.ok()?;
    if !s.state.is_finished() {
        return None;
    }
    c.results(job, None).await.ok()
}

fn outputs(r: &JobResults) -> Vec<(ResultState, Option<String>, Option<String>)> {
    r.tasks
        .iter()
        .map(|t| (t.state, t.stdout.clone(), t.digest.map(|d| d.to_string())))
        .collect()
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Worker processes, killed when the test ends; on a failure the logs are printed.
struct Workers(Vec<Child>, PathBuf);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for e in std::fs::read_dir(&self.1).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let start = text.floor_char_boundary(text.len().saturating_sub(6000));
                    eprintln!("==== {}\n{}", e.path().display(), &text[start..]);
                }
            }
        }
    }
}

/// The first job acknowledged after `since` to finish, once at least `at_least` were.
async fn first_finished(
    client: &Client,
    acked: &Mutex<Vec<(i64, Instant)>>,
    since: Instant,
    at_least: usize,
    what: &str,
) -> (i64, JobResults) {
    wait_until(what, Duration::from_secs(120), || async {
        let recent: Vec<i64> = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > since)
            .map(|(j, _)| *j)
            .collect();
        if recent.len() < at_least {
            return None;
        }
        for j in recent {
            if let Some(r) = finished(client, j).await {
                return Some((j, r));
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_coordinator_again_and_again_loses_nothing() {
    let Some(db) = testing::database() else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("runegrid-failover-")
        .tempdir()
        .unwrap();
    let logs = dir.path();
    let mut cs: Vec<Coordinator> = ["a", "b"]
        .iter()
        .map(|n| Coordinator {
            url: format!("http://127.0.0.1:{}", free_port()),
            data: logs.join(n),
            child: None,
        })
        .collect();
    cs[0].start(logs, &db, "a");
    let first = active(&cs).await;
    assert_eq!(first, 0);
    cs[1].start(logs, &db, "b");
    // The standby answers every request with where to go.
    let standby = wait_until("the standby's answer", Duration::from_secs(60), || async {
        let r = reqwest::get(format!("{}/v1/jobs", cs[1].url)).await.ok()?;
        (r.status() == 503 && !r.headers()["x-runegrid-active"].is_empty()).then_some(r)
    })
    .await;
    assert_eq!(standby.headers()["x-runegrid-active"], cs[0].url.as_str());
    let body: serde_json::Value = standby.json().await.unwrap();
    assert_eq!(body["error"]["code"], "standby", "{body}");

    let token = std::fs::read_to_string(cs[0].data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let urls = format!("{},{}", cs[0].url, cs[1].url);
    // The second URL first: the client must find the active one.
    let client = Client::new(&format!("{},{}", cs[1].url, cs[0].url), Some(token.clone()));
    let program = client
        .upload_program(runegrid_examples::MONTECARLO.to_vec())
        .await
        .unwrap()
        .program;
    let workers: Vec<Child> = (0..2)
        .map(|i| {
            let name = format!("w{i}");
            Command::new(BIN)
                .args(["worker", "--coordinator", &urls, "--slots", "2"])
                .args(["--name", &name])
                .arg("--data")
                .arg(logs.join(&name))
                .env("RUNEGRID_TOKEN", &token)
                .env("RUNEGRID_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log(logs, &name))
                .stderr(log(logs, &name))
                .spawn()
                .unwrap()
        })
        .collect();
    let workers = Workers(workers, logs.to_path_buf());

    // Load: a job every 100 ms, each acknowledged one remembered with when it was.
    let acked: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (c, acked, refused, stop, program) = (
            client.clone(),
            acked.clone(),
            refused.clone(),
            stop.clone(),
            program.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let tasks = (0..2)
                    .map(|t| args(&["3000000", &(n * 10 + t).to_string()]))
                    .collect();
                match c.submit(&job(&program, tasks, 2, 2)).await {
                    Ok(r) => acked.lock().unwrap().push((r.job, Instant::now())),
                    Err(e) => refused.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut verified_before: BTreeMap<i64, JobResults> = BTreeMap::new();
    let mut recoveries = Vec::new();
    // Jobs acknowledged but not finished when a coordinator was killed, over all kills.
    let mut in_flight = Vec::new();
    for round in 0..KILLS {
        // Work flows: jobs acknowledged from now on finish verified (a few of them first, so
        // that the kill comes with work queued and running).
        let since = Instant::now();
        let flowing = first_finished(&client, &acked, since, 8, "jobs to flow").await;
        assert!(
            flowing
                .1
                .tasks
                .iter()
                .all(|t| t.state == ResultState::Verified),
            "{:?}",
            flowing.1
        );
        // What is verified now must read the same after the kill.
        let so_far = acked.lock().unwrap().clone();
        for (j, _) in so_far {
            if verified_before.contains_key(&j) {
                continue;
            }
            if let Some(r) = finished(&client, j).await {
                verified_before.insert(j, r);
            }
        }
        let a = active(&cs).await;
        // Killed with a job just acknowledged and not finished.
        let pending = wait_until("a job in flight", Duration::from_secs(60), || {
            let (c, acked) = (client.clone(), acked.clone());
            async move {
                let (j, _) = *acked.lock().unwrap().last()?;
                let s = c.status(j).await.ok()?;
                (!s.state.is_finished()).then_some(j)
            }
        })
        .await;
        cs[a].kill();
        in_flight.push(pending);
        let killed = Instant::now();
        let name = if a == 0 { "a" } else { "b" };
        cs[a].start(logs, &db, name);
        // Until a job acknowledged after the kill is verified.
        let (j, r) =
            first_finished(&client, &acked, killed, 1, "work to flow after the kill").await;
        assert!(
            r.tasks.iter().all(|t| t.state == ResultState::Verified),
            "job {j}: {r:?}"
        );
        // What was reported finished before the kill is finished now, not run again.
        for (j, before) in &verified_before {
            let now = client.results(*j, None).await.unwrap();
            assert_eq!(outputs(before), outputs(&now), "job {j} after kill {round}");
        }
        // (Either may be active now: the one restarted races the standby for the lease.)
        recoveries.push(killed.elapsed());
        eprintln!(
            "round {round}: killed {name}; work flowed again (job {j}) after {:?}",
            killed.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();

    // Every acknowledged job finishes verified; what was verified before a kill is unchanged.
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0;
    for (j, _) in &acked {
        let r = wait_until(
            &format!("job {j} to finish"),
            Duration::from_secs(180),
            || finished(&client, *j),
        )
        .await;
        if !r.tasks.iter().all(|t| t.state == ResultState::Verified) {
            lost += 1;
            eprintln!("job {j} did not verify: {r:?}");
        }
        if let Some(before) = verified_before.get(j) {
            assert_eq!(
                outputs(before),
                outputs(&r),
                "job {j}'s verified results changed"
            );
        }
    }
    eprintln!(
        "failover: {KILLS} kills of the active coordinator; {} jobs acknowledged, {} refused \
         during takeovers, {lost} lost; jobs {in_flight:?} unfinished at a kill; {} verified before a \
         kill and unchanged; work flowing again after {:?}",
        acked.len(),
        refused.lock().unwrap().len(),
        verified_before.len(),
        recoveries
    );
    for why in refused.lock().unwrap().iter() {
        eprintln!("refused (not acknowledged, so not counted): {why}");
    }
    assert_eq!(lost, 0);
    assert!(acked.len() > KILLS * 5, "too little load: {}", acked.len());

    drop(workers);
    for c in &mut cs {
        c.kill();
    }
    // The books balance after all those kills.
    let check = Command::new(BIN)
        .args(["ledger", "check", "--store", &db, "--data"])
        .arg(&cs[0].data)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A relay given both coordinators (the standby's URL first) follows a failover: it finds the
/// active one, and when that one is killed it dials the standby that took over; its worker
/// comes back through it and work verifies again. Its HTTP proxy follows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_follows_a_failover_and_its_workers_come_back() {
    let Some(db) = testing::database() else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("runegrid-relay-failover-")
        .tempdir()
        .unwrap();
    let logs = dir.path();
    let mut cs: Vec<Coordinator> = ["a", "b"]
        .iter()
        .map(|n| Coordinator {
            url: format!("http://127.0.0.1:{}", free_port()),
            data: logs.join(n),
            child: None,
        })
        .collect();
    cs[0].start(logs, &db, "a");
    assert_eq!(active(&cs).await, 0);
    cs[1].start(logs, &db, "b");
    wait_until("the standby's answer", Duration::from_secs(60), || async {
        let r = reqwest::get(format!("{}/v1/jobs", cs[1].url)).await.ok()?;
        (r.status() == 503 && r.headers()["x-runegrid-active"] == cs[0].url.as_str()).then_some(())
    })
    .await;
    let token = std::fs::read_to_string(cs[0].data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // The standby first: the relay must follow its hint to the active one.
    let upstream = format!("{},{}", cs[1].url, cs[0].url);
    let relay_data = logs.join("relay");
    let relay = Command::new(BIN)
        .args(["relay", "--upstream", &upstream, "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(&relay_data)
        .env("RUNEGRID_TOKEN", &token)
        .env("RUNEGRID_LOG", "info,runegrid_relay=debug")
        .stdin(Stdio::null())
        .stdout(log(logs, "relay"))
        .stderr(log(logs, "relay"))
        .spawn()
        .unwrap();
    let mut procs = Workers(vec![relay], logs.to_path_buf());
    let relay_url = wait_until("the relay url file", Duration::from_secs(30), || async {
        std::fs::read_to_string(relay_data.join("relay.url")).ok()
    })
    .await
    .trim()
    .to_string();
    let stats = || async {
        reqwest::get(format!("{relay_url}/relay/stats"))
            .await
            .ok()?
            .json::<runegrid_relay::RelayStats>()
            .await
            .ok()
    };
    let s = wait_until("the relay upstream", Duration::from_secs(60), || async {
        stats().await.filter(|s| s.upstream_connected)
    })
    .await;
    assert_eq!(s.upstream, cs[0].url, "{s:?}");
    assert_eq!(s.upstream_connects, 1, "{s:?}");

    procs.0.push(
        Command::new(BIN)
            .args(["worker", "--coordinator", &relay_url, "--slots", "2"])
            .args(["--name", "behind"])
            .arg("--data")
            .arg(logs.join("behind"))
            .env("RUNEGRID_TOKEN", &token)
            .env("RUNEGRID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log(logs, "behind"))
            .stderr(log(logs, "behind"))
            .spawn()
            .unwrap(),
    );
    let client = Client::new(&format!("{},{}", cs[0].url, cs[1].url), Some(token.clone()));
    let program = client
        .upload_program(runegrid_examples::MONTECARLO.to_vec())
        .await
        .unwrap()
        .program;
    let run = |seed: u64| {
        let (client, program) = (client.clone(), program.clone());
        async move {
            let tasks = (0..2)
                .map(|t| args(&["300000", &(seed * 10 + t).to_string()]))
                .collect();
            let j = client
                .submit(&job(&program, tasks, 1, 1))
                .await
                .unwrap()
                .job;
            let r = wait_until(
                &format!("job {j} to finish"),
                Duration::from_secs(120),
                || finished(&client, j),
            )
            .await;
            assert!(
                r.tasks.iter().all(|t| t.state == ResultState::Verified),
                "job {j}: {r:?}"
            );
        }
    };
    run(1).await;

    cs[0].kill();
    assert_eq!(active(&cs).await, 1);
    // The relay dials again, finds the standby that took over, and its worker comes back.
    let s = wait_until(
        "the relay upstream to the new active coordinator",
        Duration::from_secs(60),
        || async {
            stats()
                .await
                .filter(|s| s.upstream_connected && s.upstream == cs[1].url && s.sessions >= 1)
        },
    )
    .await;
    assert!(s.upstream_connects >= 2, "{s:?}");
    run(2).await;
    let s = stats().await.unwrap();
    assert!(s.sessions_opened >= 2, "{s:?}");
    // The relay's HTTP proxy goes to the coordinator it is connected to (the old one is dead).
    let page = reqwest::get(format!("{relay_url}/contribute"))
        .await
        .unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    drop(procs);
}
