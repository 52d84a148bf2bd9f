//! Credits end to end: a real coordinator and worker processes, accounts holding, paying and
//! earning, a coordinator killed with SIGKILL in the middle of settling. (Every test's grid
//! also checks its books when it is dropped: see `common`.)

mod common;

use common::*;
use runegrid_core::{JobState, Limits};
use runegrid_proto::ResultState;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Echo tasks that each burn a little fuel.
fn echo_tasks(n: usize) -> Vec<runegrid_proto::TaskSpec> {
    (0..n).map(|i| args(&["20000", &i.to_string()])).collect()
}

fn db(g: &Grid) -> Connection {
    Connection::open(g.data().join("runegrid.sqlite")).unwrap()
}

/// What the journal says each payee got for the job's attempts, and the attempts whose result
/// agreed with their task's accepted one, with the fuel each reported.
struct Settled {
    paid: BTreeMap<i64, (i64, i64)>,
    fees: BTreeMap<i64, i64>,
    agreed: BTreeMap<i64, (i64, u64)>,
    price: u64,
}

fn settled(g: &Grid, job: i64) -> Settled {
    let c = db(g);
    let price: i64 = c
        .query_row("SELECT price FROM jobs WHERE id = ?1", [job], |r| r.get(0))
        .unwrap();
    let mut paid = BTreeMap::new();
    let mut fees = BTreeMap::new();
    let mut s = c
        .prepare(
            "SELECT key_kind, key_id, to_id, amount FROM transfers
             WHERE from_kind = 'escrow' AND from_id = ?1 AND key_kind IN ('payment', 'fee')",
        )
        .unwrap();
    let rows = s
        .query_map([job], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (kind, attempt, to, amount) = row.unwrap();
        if kind == "payment" {
            assert!(paid.insert(attempt, (to, amount)).is_none());
        } else {
            assert!(fees.insert(attempt, amount).is_none());
        }
    }
    let mut s = c
        .prepare(
            "SELECT a.id, a.owner, a.fuel FROM attempts a JOIN tasks t ON a.task = t.id
             WHERE a.job = ?1 AND a.state = 'done' AND t.state = 'verified' AND a.digest = t.digest",
        )
        .unwrap();
    let agreed = s
        .query_map([job], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                (r.get::<_, i64>(1)?, r.get::<_, i64>(2)? as u64),
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    Settled {
        paid,
        fees,
        agreed,
        price: price as u64,
    }
}

/// Exactly the agreeing attempts are paid, each its fuel × the job's price (rounded up), to
/// the owner of the worker that ran it, with the fee on it.
fn assert_paid_exactly(s: &Settled) {
    assert_eq!(
        s.paid.keys().collect::<BTreeSet<_>>(),
        s.agreed.keys().collect::<BTreeSet<_>>(),
        "paid attempts = agreeing attempts"
    );
    for (attempt, (owner, fuel)) in &s.agreed {
        let pay = (*fuel as u128 * s.price as u128).div_ceil(1_000_000_000) as i64;
        assert_eq!(s.paid[attempt], (*owner, pay), "attempt {attempt}");
        let fee = (pay as u128 * 50_000).div_ceil(1_000_000) as i64;
        assert_eq!(
            s.fees.get(attempt).copied().unwrap_or(0),
            fee,
            "fee of {attempt}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_held_paid_for_verified_work_and_released() {
    let mut g = Grid::start_opts(300, &["--welcome-credits", "5"]).await;
    let admin = g.client();
    let alice = admin.create_account("alice", false).await.unwrap();
    let bob = admin.create_account("bob", false).await.unwrap();
    let (alice_token, bob_token) = (alice.token.unwrap(), bob.token.unwrap());
    let alice = g.client_with(&alice_token);
    let bob = g.client_with(&bob_token);
    for i in 0..3 {
        g.worker(&format!("bob-{i}"), 2, &["--token", &bob_token]);
    }
    g.wait_workers(3).await;
    let p = g.upload(runegrid_examples::ECHO).await;
    assert_eq!(alice.credits().await.unwrap().balance, 5_000_000);

    // 12 tasks × 6 attempts × 10^10 fuel is far beyond 5 credits: refused, nothing stored.
    let e = alice
        .submit(&job(&p, echo_tasks(12), 2, 2))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(402), "{e}");
    assert_eq!(e.code(), Some("insufficient_credits"));
    assert!(
        e.to_string()
            .contains("the account has 5 credits available"),
        "{e}"
    );
    assert!(alice.jobs().await.unwrap().is_empty(), "nothing was stored");
    assert_eq!(alice.credits().await.unwrap().balance, 5_000_000);
    // The CLI says the same, and fails.
    let module = g.dir.path().join("echo.wasm");
    std::fs::write(&module, runegrid_examples::ECHO).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["submit", module.to_str().unwrap(), "--arg", "1"])
        .env("RUNEGRID_URL", &g.url)
        .env("RUNEGRID_TOKEN", &alice_token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("insufficient credits"), "{stderr}");

    // A grant through the CLI; only an admin may make one.
    let denied = std::process::Command::new(BIN)
        .args(["credits", "grant", "alice", "1000"])
        .env("RUNEGRID_URL", &g.url)
        .env("RUNEGRID_TOKEN", &alice_token)
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let out = g.cli(&["credits", "grant", "alice", "1000000.5"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        alice.credits().await.unwrap().balance,
        1_000_005_500_000,
        "5 + 1000000.5 credits"
    );

    // Now the job fits: its hold is its worst case at the price of the moment.
    let mut spec = job(&p, echo_tasks(12), 2, 2);
    spec.limits = Limits {
        fuel: 2_000_000_000,
        ..Limits::default()
    };
    let sub = alice.submit(&spec).await.unwrap();
    let cost = sub.cost.expect("the answer shows the price and hold");
    assert!(cost.price >= 500_000 && cost.price <= 2_000_000, "{cost:?}");
    let per_attempt = (2_000_000_000u128 * cost.price as u128).div_ceil(1_000_000_000) as i64;
    let per_attempt = per_attempt + (per_attempt as u128 * 50_000).div_ceil(1_000_000) as i64;
    assert_eq!(cost.held, 12 * 6 * per_attempt);
    let r = g.wait(sub.job).await;
    assert!(r.tasks.iter().all(|t| t.state == ResultState::Verified));

    let s = settled(&g, sub.job);
    assert_eq!(s.agreed.len(), 24, "12 tasks × 2 agreeing replicas");
    assert_paid_exactly(&s);
    let spent: i64 = s.paid.values().map(|(_, a)| a).sum::<i64>() + s.fees.values().sum::<i64>();
    let status = alice.status(sub.job).await.unwrap();
    assert_eq!(status.state, JobState::Done);
    assert_eq!(status.cost.unwrap().spent, spent, "the final cost");
    let a = alice.credits().await.unwrap();
    assert_eq!((a.held, a.spent), (0, spent));
    assert_eq!(
        a.balance,
        1_000_005_500_000 - spent,
        "the rest of the hold came back"
    );
    // Bob's workers earned the payments (and whatever probes the treasury paid them).
    let job_earnings: i64 = s.paid.values().map(|(_, a)| a).sum();
    let b = bob.credits().await.unwrap();
    assert!(b.earned >= job_earnings, "{b:?} vs {job_earnings}");
    let grid_paid: i64 = db(&g)
        .query_row(
            "SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE from_kind = 'treasury' AND reason = 'payment'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(b.earned, job_earnings + grid_paid);

    // Bob, who contributed, tops the leaderboard — by name once he chose one.
    let top = |b: runegrid_proto::Leaderboard| b.contributors[0].clone();
    let first = top(bob.leaderboard().await.unwrap());
    assert_eq!(
        (first.rank, first.name.clone(), first.earned),
        (1, None, b.earned)
    );
    assert_eq!(first.workers, 3);
    assert!(first.tasks_verified >= 24, "{first:?}");
    let out = std::process::Command::new(BIN)
        .args(["account", "display-name", "Bob the Builder"])
        .env("RUNEGRID_URL", &g.url)
        .env("RUNEGRID_TOKEN", &bob_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = runegrid_client::Client::new(&g.url, None);
    assert_eq!(
        top(public.leaderboard().await.unwrap()).name.as_deref(),
        Some("Bob the Builder")
    );
    assert_eq!(
        bob.credits().await.unwrap().display_name.as_deref(),
        Some("Bob the Builder")
    );
    let e = bob.set_display_name(Some("  ")).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_request"));

    // Alice's statement, newest first: the release, the hold, the grant, the welcome.
    let st = alice.ledger(None, 10).await.unwrap();
    let reasons: Vec<String> = st.entries.iter().map(|e| e.reason.to_string()).collect();
    assert_eq!(reasons, ["release", "hold", "grant", "grant"], "{st:?}");
    assert_eq!(st.entries[1].amount, -cost.held);
    assert_eq!(st.entries[0].amount, cost.held - spent);
    let page = alice.ledger(None, 2).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    let rest = alice.ledger(page.next_before, 10).await.unwrap();
    assert_eq!(rest.entries.len(), 2);
    assert_eq!(rest.next_before, None);

    // The CLI's views.
    let out = std::process::Command::new(BIN)
        .args(["account"])
        .env("RUNEGRID_URL", &g.url)
        .env("RUNEGRID_TOKEN", &bob_token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("earned"), "{text}");
    let out = g.cli(&["price", "--json"]);
    let price: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(price["charging"], true);
    assert_eq!(price["fee_ppm"], 50_000);
    let out = g.cli(&["ledger", "check", "--data", g.data().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("the books balance"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_while_settling_neither_pays_twice_nor_loses_a_payment() {
    let mut g = Grid::start().await;
    for i in 0..3 {
        g.worker(&format!("w{i}"), 2, &[]);
    }
    g.wait_workers(3).await;
    let p = g.upload(runegrid_examples::ECHO).await;
    let c = g.client();
    let sub = c.submit(&job(&p, echo_tasks(300), 2, 2)).await.unwrap();
    // Killed with SIGKILL while results are being accepted and paid.
    wait_until("some verified tasks", Duration::from_secs(120), || {
        let c = c.clone();
        async move {
            let s = c.status(sub.job).await.ok()?;
            (s.counts.verified >= 20).then_some(())
        }
    })
    .await;
    g.restart_coordinator().await;
    let r = g.wait(sub.job).await;
    assert!(r.tasks.iter().all(|t| t.state == ResultState::Verified));
    let s = settled(&g, sub.job);
    assert!(s.agreed.len() >= 600, "{}", s.agreed.len());
    assert_paid_exactly(&s);
    let out = g.cli(&["ledger", "check", "--data", g.data().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_grid_charges_nobody_and_still_records_earnings() {
    let mut g = Grid::start_opts(300, &["--free", "--welcome-credits", "0"]).await;
    let admin = g.client();
    let alice = admin.create_account("alice", false).await.unwrap();
    let alice = g.client_with(&alice.token.unwrap());
    g.worker("w0", 2, &[]);
    g.worker("w1", 2, &[]);
    g.wait_workers(2).await;
    let p = g.upload(runegrid_examples::ECHO).await;
    assert_eq!(alice.credits().await.unwrap().balance, 0);
    let sub = alice.submit(&job(&p, echo_tasks(6), 2, 2)).await.unwrap();
    assert_eq!(sub.cost.map(|c| c.held), Some(0));
    g.wait(sub.job).await;
    let a = alice.credits().await.unwrap();
    assert_eq!((a.balance, a.spent), (0, 0));
    assert!(
        admin.credits().await.unwrap().earned > 0,
        "the workers' owner earned"
    );
    let price = admin.price().await.unwrap();
    assert!(!price.charging);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_below_the_price_waits_in_view_and_a_cancel_releases_its_hold() {
    let mut g = Grid::start().await;
    g.worker("w0", 2, &[]);
    g.wait_workers(1).await;
    let module = g.dir.path().join("echo.wasm");
    std::fs::write(&module, runegrid_examples::ECHO).unwrap();
    let c = g.client();
    let before = c.credits().await.unwrap();
    // A bid of one millionth of a credit per 10^9 fuel, below any price the grid can have.
    let out = g.cli(&[
        "submit",
        module.to_str().unwrap(),
        "--arg",
        "1",
        "--max-price",
        "0.000001",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let sub: runegrid_proto::SubmitJobResponse = serde_json::from_slice(&out.stdout).unwrap();
    let s = c.status(sub.job).await.unwrap();
    assert_eq!(s.state, JobState::WaitingForPrice);
    assert_eq!(s.cost.unwrap().max_price, Some(1));
    assert!(s.waiting_for.unwrap().contains("above this job's bid"));
    let text =
        String::from_utf8_lossy(&g.cli(&["status", &sub.job.to_string()]).stdout).into_owned();
    assert!(text.contains("waiting_for_price"), "{text}");
    // It does not run, however long it waits (the price is stepped once a second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = c.status(sub.job).await.unwrap();
    assert_eq!(
        (s.state, s.counts.running, s.counts.verified),
        (JobState::WaitingForPrice, 0, 0)
    );
    assert!(c.credits().await.unwrap().held > before.held);
    let s = c.cancel(sub.job).await.unwrap();
    assert_eq!(s.state, JobState::Cancelled);
    let after = c.credits().await.unwrap();
    assert_eq!((after.held, after.balance), (before.held, before.balance));
}
