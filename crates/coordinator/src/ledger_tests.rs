//! Credits through the real `App` and a real SQLite store: holds, payments for agreeing
//! attempts only, clawbacks after audits, releases, refusals, restarts. After every scenario
//! the journal in the store is replayed and must balance and match what the grid holds.

use crate::regression_tests::{FUEL, Grid, store};
use runegrid_core::ledger::{EntryKey, Ledger, Party, Reason};
use runegrid_core::price::{PriceParams, charge};
use runegrid_core::{AccountId, JobId, Limits, PolicyKind, TrustParams};
use runegrid_store::{AttemptState, JobState, JournalEntry, Store, TaskState};
use std::collections::{BTreeMap, BTreeSet};

/// Waits for the writer, then reads the whole journal.
fn journal(g: &Grid) -> Vec<JournalEntry> {
    store(g).journal(0, u32::MAX).unwrap()
}

/// The journal balances, every finished job's escrow is empty, and the grid's books say what
/// the journal says.
fn check_books(g: &Grid) -> Ledger {
    let entries = journal(g);
    let ledger = Ledger::replay(entries.iter().map(|e| &e.transfer)).unwrap();
    ledger.check().unwrap();
    crate::books::check_store(&mut store(g)).unwrap();
    g.app.check_ledger().unwrap();
    let mut s = store(g);
    for j in s.jobs(None, 1000).unwrap() {
        if j.state.is_finished() {
            assert_eq!(
                ledger.balance(Party::Escrow(j.id)),
                0,
                "job {} released",
                j.id
            );
        }
    }
    for (party, balance) in ledger.balances() {
        if let Party::Account(a) = party {
            assert_eq!(g.app.account_credits(a).balance, balance, "account {a}");
        }
    }
    ledger
}

fn price_of(g: &Grid, job: JobId) -> u64 {
    store(g).job(job).unwrap().unwrap().price
}

/// Every attempt whose result matches its task's accepted digest, by owner (workers are their
/// own owners here).
fn agreeing_attempts(g: &Grid, job: JobId) -> BTreeSet<(i64, AccountId)> {
    let mut s = store(g);
    let tasks: BTreeMap<i64, _> = s
        .tasks(job)
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    s.attempts(job)
        .unwrap()
        .into_iter()
        .filter(|a| {
            a.state == AttemptState::Done
                && tasks[&a.task].state == TaskState::Verified
                && tasks[&a.task].outcome.as_ref().and_then(|o| o.digest) == a.digest
        })
        .map(|a| (a.id, a.worker))
        .collect()
}

fn payments(entries: &[JournalEntry], from: Party) -> BTreeMap<i64, (Party, i64)> {
    entries
        .iter()
        .filter(|e| e.transfer.reason == Reason::Payment && e.transfer.from == from)
        .map(|e| match e.transfer.key {
            EntryKey::Payment(a) => (a, (e.transfer.to, e.transfer.amount)),
            k => panic!("a payment keyed {k:?}"),
        })
        .collect()
}

#[test]
fn agreeing_attempts_are_paid_their_fuel_at_the_jobs_price_and_the_rest_is_released() {
    let mut g = Grid::new(TrustParams::default());
    let before = g.app.account_credits(g.owner);
    g.join(11, false);
    g.join(12, false);
    let job = g.submit(PolicyKind::Quorum, 3);
    let held = store(&g).job(job).unwrap().unwrap().held;
    assert!(held > 0);
    assert_eq!(g.app.account_credits(g.owner).held, held);
    assert_eq!(
        g.app.account_credits(g.owner).balance,
        before.balance - held
    );
    g.settle(&[11, 12]);
    assert!(g.done(job));

    let price = price_of(&g, job);
    let pay = charge(FUEL, price).unwrap();
    let fee = PriceParams::default().fee(pay).unwrap();
    let entries = journal(&g);
    let paid = payments(&entries, Party::Escrow(job));
    let agreed = agreeing_attempts(&g, job);
    assert_eq!(agreed.len(), 6, "3 tasks × 2 agreeing replicas");
    assert_eq!(
        paid.keys().copied().collect::<BTreeSet<_>>(),
        agreed.iter().map(|(a, _)| *a).collect(),
        "exactly the agreeing attempts are paid"
    );
    for (a, w) in &agreed {
        assert_eq!(paid[a], (Party::Account(*w), pay));
    }
    for w in [11, 12] {
        assert_eq!(g.app.account_credits(w).earned, 3 * pay);
    }
    let after = g.app.account_credits(g.owner);
    assert_eq!(after.held, 0);
    assert_eq!(after.spent, 6 * (pay + fee));
    assert_eq!(after.balance, before.balance - 6 * (pay + fee));
    let ledger = check_books(&g);
    assert_eq!(ledger.balance(Party::Treasury), 6 * fee);

    // A restart replays the same books.
    g.restart();
    check_books(&g);
    assert_eq!(g.app.account_credits(g.owner), after);
    assert_eq!(g.app.account_credits(11).earned, 3 * pay);
}

#[test]
fn a_liar_ends_with_nothing_for_its_lies() {
    let mut g = Grid::new(TrustParams {
        trust_after: 1,
        spot_scale: 0.0,
        min_spot_rate: 0.0,
        quarantine_disagreements: 2,
        quarantine_error_rate: 0.0,
        ..TrustParams::default()
    });
    const LIAR: i64 = 11;
    // Honest once, with a quorum: trusted, and paid for it.
    g.join(LIAR, false);
    g.join(12, false);
    let first = g.submit(PolicyKind::Quorum, 1);
    g.settle(&[LIAR, 12]);
    let honest_pay = charge(FUEL, price_of(&g, first)).unwrap();
    assert_eq!(g.app.account_credits(LIAR).earned, honest_pay);
    // Alone and trusted, its lie is accepted and paid...
    g.leave(12);
    g.workers.get_mut(&LIAR).unwrap().lie = true;
    let lied = g.submit(PolicyKind::Adaptive, 1);
    g.settle(&[LIAR]);
    assert!(g.done(lied));
    assert_eq!(
        g.app.account_credits(LIAR).earned,
        honest_pay + charge(FUEL, price_of(&g, lied)).unwrap()
    );
    // ...until a quorum catches it: its lone result is audited and corrected, its payment
    // taken back; the lie the quorum caught earns nothing.
    g.join(12, false);
    g.join(13, false);
    let caught = g.submit(PolicyKind::Quorum, 1);
    g.settle(&[LIAR, 12, 13]);
    assert!(g.done(caught));
    let entries = journal(&g);
    assert!(
        entries
            .iter()
            .any(|e| e.transfer.reason == Reason::Clawback
                && e.transfer.from == Party::Account(LIAR)),
        "the liar's payment is clawed back"
    );
    assert_eq!(g.app.account_credits(LIAR).earned, honest_pay);
    // The audit's honest re-execution was paid by the treasury.
    let grid_paid = payments(&entries, Party::Treasury);
    assert!(
        grid_paid
            .values()
            .any(|(to, _)| *to == Party::Account(12) || *to == Party::Account(13)),
        "the audit is paid: {grid_paid:?}"
    );
    assert!(
        grid_paid
            .values()
            .all(|(to, _)| *to != Party::Account(LIAR)),
        "the grid never pays the liar"
    );
    check_books(&g);
}

#[test]
fn a_job_beyond_the_balance_is_refused_and_nothing_is_stored() {
    let params = PriceParams::default();
    let price = params.price(1_000_000).unwrap();
    let worst_of_one = params
        .worst_case(1, 6, Limits::default().fuel, price)
        .unwrap();
    // Enough for one task of the fixture's jobs (6 attempts at most), not for two.
    let g = Grid::with_credits(TrustParams::default(), 2 * worst_of_one - 1);
    let refused = g.try_submit(PolicyKind::Quorum, 2).unwrap_err();
    match &refused {
        crate::grid::HoldError::Insufficient {
            needed, available, ..
        } => {
            assert_eq!(*needed, 2 * worst_of_one);
            assert_eq!(*available, 2 * worst_of_one - 1);
        }
        e => panic!("refused for another reason: {e}"),
    }
    assert!(
        refused
            .to_string()
            .starts_with("insufficient credits: this job may cost up to")
    );
    let entries = journal(&g);
    assert_eq!(entries.len(), 1, "only the welcome grant: {entries:?}");
    assert!(store(&g).jobs(None, 10).unwrap().is_empty());
    // One task fits.
    let job = g.submit(PolicyKind::Quorum, 1);
    assert_eq!(store(&g).job(job).unwrap().unwrap().held, worst_of_one);
    assert_eq!(g.app.account_credits(g.owner).balance, worst_of_one - 1);
    check_books(&g);
}

#[test]
fn a_restart_in_the_middle_neither_pays_twice_nor_loses_a_payment() {
    let mut g = Grid::new(TrustParams::default());
    g.join(11, false);
    g.join(12, false);
    let job = g.submit(PolicyKind::Quorum, 6);
    // Some results are in, some are not.
    g.answer(11);
    g.answer(12);
    g.answer(11);
    g.restart();
    check_books(&g);
    g.join(11, false);
    g.join(12, false);
    g.join(13, false);
    g.settle(&[11, 12, 13]);
    // The recovered job finished and is in the store.
    let rec = store(&g).job(job).unwrap().unwrap();
    assert!(rec.state.is_finished(), "{:?}", rec.state);
    let entries = journal(&g);
    let paid = payments(&entries, Party::Escrow(job));
    let agreed = agreeing_attempts(&g, job);
    assert_eq!(agreed.len(), 12);
    assert_eq!(
        paid.keys().copied().collect::<BTreeSet<_>>(),
        agreed.iter().map(|(a, _)| *a).collect()
    );
    check_books(&g);
}

#[test]
fn a_job_bidding_below_the_price_waits_then_starts_when_the_price_falls() {
    let mut g = Grid::new(TrustParams::default());
    let price = g.app.quote().price;
    let bid = price - 1;
    let job = g.try_submit_bid(PolicyKind::Quorum, 2, Some(bid)).unwrap();
    let rec = store(&g).job(job).unwrap().unwrap();
    assert_eq!(rec.state, JobState::WaitingForPrice);
    assert_eq!(rec.max_price, Some(bid));
    // Its worst case is held at its bid.
    let params = PriceParams::default();
    assert_eq!(
        rec.held,
        params
            .worst_case(2, 6, Limits::default().fuel, bid)
            .unwrap()
    );
    let (_, status) = g.app.job_status(job).unwrap();
    assert_eq!(status.state, JobState::WaitingForPrice);
    assert!(
        status
            .waiting_for
            .as_deref()
            .unwrap()
            .contains("above this job's bid"),
        "{status:?}"
    );
    // Workers come, nothing is given to them while the price is above the bid.
    g.join(11, false);
    g.join(12, false);
    g.pump();
    assert!(g.workers.values().all(|w| w.pending.is_empty()));
    // Idle workers bring the price down: the job starts, priced then, and runs.
    let mut steps = 0;
    while store(&g).job(job).unwrap().unwrap().state == JobState::WaitingForPrice {
        g.app.step_price();
        steps += 1;
        assert!(steps < 50, "the price never fell to the bid");
    }
    let rec = store(&g).job(job).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Active);
    assert!(rec.price <= bid && rec.price >= params.price(500_000).unwrap());
    g.settle(&[11, 12]);
    assert!(g.done(job));
    let s = journal(&g);
    let paid = payments(&s, Party::Escrow(job));
    assert_eq!(paid.len(), 4);
    let pay = charge(FUEL, rec.price).unwrap();
    assert!(
        paid.values().all(|(_, a)| *a == pay),
        "paid at the start price"
    );
    check_books(&g);
}

#[test]
fn a_waiting_job_survives_a_restart_and_can_be_cancelled() {
    let mut g = Grid::new(TrustParams::default());
    let job = g.try_submit_bid(PolicyKind::Quorum, 3, Some(1)).unwrap();
    let held = g.app.account_credits(g.owner).held;
    assert!(held > 0);
    g.restart();
    let (_, status) = g.app.job_status(job).expect("recovered");
    assert_eq!(status.state, JobState::WaitingForPrice);
    g.join(11, false);
    g.join(12, false);
    g.app.step_price();
    g.pump();
    assert!(
        g.workers.values().all(|w| w.pending.is_empty()),
        "a bid of 1 never runs"
    );
    assert!(g.app.cancel(job));
    assert!(g.done(job));
    let c = g.app.account_credits(g.owner);
    assert_eq!((c.held, c.spent), (0, 0), "the whole hold came back");
    check_books(&g);
}

#[test]
fn higher_bids_run_first() {
    let mut g = Grid::new(TrustParams::default());
    let price = g.app.quote().price;
    let low = g.submit(PolicyKind::None, 3);
    let high = g
        .try_submit_bid(PolicyKind::None, 3, Some(price * 2))
        .unwrap();
    let mid = g
        .try_submit_bid(PolicyKind::None, 3, Some(price + 1))
        .unwrap();
    // One worker, one slot: it gets the tasks in bid order, first come first among equals.
    g.join(11, false);
    let mut order = Vec::new();
    for _ in 0..9 {
        g.pump();
        order.extend(g.workers[&11].pending.iter().map(|a| a.job));
        if g.answer(11) == 0 {
            break;
        }
    }
    assert_eq!(order, [high, high, high, mid, mid, mid, low, low, low]);
    check_books(&g);
}
