//! The result cache through the real `App` and a real SQLite store: a repeated job answered
//! with no attempt and no charge, partial hits held for the rest only, the cache surviving a
//! restart, jobs that opt out, and results that may not be reused.

use crate::regression_tests::{Grid, store};
use runegrid_core::price::PriceParams;
use runegrid_core::{Acceptance, JobId, Limits, PolicyKind, TrustParams};
use runegrid_store::Store;

/// Each task's (acceptance, stdout) in index order.
fn answers(g: &Grid, job: JobId) -> Vec<(Option<Acceptance>, Vec<u8>)> {
    let (_, r) = g.app.job_results(job).expect("job in memory");
    r.tasks
        .iter()
        .map(|t| (t.acceptance, t.stdout_bytes().unwrap_or_default()))
        .collect()
}

fn books_balance(g: &Grid) {
    g.app.check_ledger().unwrap();
    crate::books::check_store(&mut store(g)).unwrap();
}

fn cached_grid() -> Grid {
    let mut g = Grid::new(TrustParams::default());
    g.cache = true;
    g.join(11, false);
    g.join(12, false);
    g
}

#[test]
fn a_repeated_job_is_answered_from_the_cache_with_no_attempt_and_no_charge() {
    let mut g = cached_grid();
    let first = g.submit(PolicyKind::Quorum, 3);
    g.settle(&[11, 12]);
    assert!(g.done(first));
    let verified = answers(&g, first);
    assert!(verified.iter().all(|a| a.0 == Some(Acceptance::Quorum)));
    let before = g.app.account_credits(g.owner);

    let again = g.submit(PolicyKind::Quorum, 3);
    assert!(g.done(again), "answered at once");
    let (_, status) = g.app.job_status(again).unwrap();
    assert_eq!((status.cached, status.counts.verified), (3, 3));
    let cached = answers(&g, again);
    for (c, v) in cached.iter().zip(&verified) {
        assert_eq!(c.0, Some(Acceptance::Cached));
        assert_eq!(c.1, v.1, "the verified stdout");
    }
    assert!(store(&g).attempts(again).unwrap().is_empty(), "no attempt");
    assert_eq!(g.answer(11) + g.answer(12), 0, "nothing given out");
    let job = store(&g).job(again).unwrap().unwrap();
    assert_eq!((job.held, job.cached), (0, 3));
    assert_eq!(
        g.app.account_credits(g.owner),
        before,
        "nothing held or paid"
    );
    books_balance(&g);

    // The cache is in the store: a restart keeps it.
    g.restart();
    g.join(11, false);
    g.join(12, false);
    let after_restart = g.submit(PolicyKind::Quorum, 3);
    assert!(g.done(after_restart));
    assert_eq!(answers(&g, after_restart), cached);
    books_balance(&g);
}

#[test]
fn a_partial_hit_holds_and_runs_only_the_new_tasks() {
    let mut g = cached_grid();
    let first = g.submit(PolicyKind::Quorum, 2);
    g.settle(&[11, 12]);
    assert!(g.done(first));
    let more = g.submit(PolicyKind::Quorum, 5);
    assert!(!g.done(more));
    let job = store(&g).job(more).unwrap().unwrap();
    assert_eq!(job.cached, 2);
    let worst = PriceParams::default()
        .worst_case(3, 6, Limits::default().fuel, job.price)
        .unwrap();
    assert_eq!(
        job.held, worst,
        "held for the 3 tasks the cache does not answer"
    );
    g.settle(&[11, 12]);
    assert!(g.done(more));
    let got = answers(&g, more);
    assert_eq!(
        got.iter().map(|a| a.0).collect::<Vec<_>>(),
        [
            Some(Acceptance::Cached),
            Some(Acceptance::Cached),
            Some(Acceptance::Quorum),
            Some(Acceptance::Quorum),
            Some(Acceptance::Quorum),
        ]
    );
    // Attempts ran for the three new tasks only (two replicas each).
    assert_eq!(store(&g).attempts(more).unwrap().len(), 6);
    books_balance(&g);
}

#[test]
fn jobs_that_opt_out_and_unreplicated_results_never_use_the_cache() {
    let mut g = cached_grid();
    // One attempt accepted as reported is no verified result: never kept.
    let once = g.submit(PolicyKind::None, 2);
    g.settle(&[11, 12]);
    assert!(g.done(once));
    let quorum = g.submit(PolicyKind::Quorum, 2);
    assert!(!g.done(quorum), "nothing cached from an unreplicated run");
    g.settle(&[11, 12]);
    assert!(g.done(quorum));
    // Now cached, but a job that opts out runs anyway, and keeps nothing.
    g.cache = false;
    let opted_out = g.submit(PolicyKind::Quorum, 2);
    assert!(!g.done(opted_out));
    g.settle(&[11, 12]);
    assert!(g.done(opted_out));
    assert!(
        answers(&g, opted_out)
            .iter()
            .all(|a| a.0 == Some(Acceptance::Quorum))
    );
    let (_, status) = g.app.job_status(opted_out).unwrap();
    assert!(!status.cache);
    assert_eq!(status.cached, 0);
    books_balance(&g);
}
