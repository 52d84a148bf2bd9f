//! Checking a data directory's books (`runegrid ledger check`): the journal of transfers is
//! replayed through the ledger's rules, and must balance — balances + holds = credits minted —
//! with no escrow left on a finished job and none above its job's hold; and the payments must
//! match the results: every stored attempt whose result agreed with its task's accepted (or
//! audited) result is paid exactly its fuel at its job's price, once, and every other attempt
//! nets nothing (a payment for a result an audit proved wrong was clawed back).

use runegrid_core::ledger::{EntryKey, Ledger, LedgerError, Micros, Party, Reason};
use runegrid_core::price::charge;
use runegrid_core::{AccountId, AttemptId};
use runegrid_store::{AttemptState, JobState, PostgresStore, SqliteStore, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What the check found in a balanced journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BooksReport {
    pub transfers: u64,
    pub minted: Micros,
    pub accounts: u64,
    /// Sum of the accounts' balances (negative ones included).
    pub balances: Micros,
    pub treasury: Micros,
    /// Held in the escrows of unfinished jobs.
    pub held: Micros,
    /// Accounts below zero after a clawback, and by how much in all.
    pub in_debt: u64,
    pub debt: Micros,
    /// Per worker owner: what its stored attempts earned, checked against their results.
    pub owners: BTreeMap<AccountId, OwnerSettlement>,
    /// Paid by the treasury for the grid's own work (audits, probes).
    pub grid_work: Micros,
    /// Payments taken back after audits.
    pub clawbacks: u64,
}

/// What one worker owner's attempts of charged jobs were paid, by how their results stood.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerSettlement {
    /// Attempts whose result agreed with the accepted one, and what they were paid (net).
    pub agreed: u64,
    pub paid_agreed: Micros,
    /// Attempts whose result did not (lies, and results proved wrong by audits), and what they
    /// kept: 0 when the books are right.
    pub disagreed: u64,
    pub kept_disagreed: Micros,
}

/// Books that do not balance.
#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("no database at {0}: is this a coordinator's data directory?")]
    Missing(String),
    #[error("transfer {seq} breaks the ledger's rules: {error}")]
    Rule { seq: i64, error: LedgerError },
    #[error("the ledger does not balance: {0}")]
    Invariant(#[from] runegrid_core::ledger::InvariantError),
    #[error("job {job} is {state} but its escrow still holds {left} micro-credits")]
    Unreleased {
        job: i64,
        state: JobState,
        left: Micros,
    },
    #[error("job {job}'s escrow holds {escrow} micro-credits, more than its hold of {held}")]
    OverHeld {
        job: i64,
        escrow: Micros,
        held: Micros,
    },
    #[error(
        "attempt {attempt} of job {job} should have been paid {expected} micro-credits for its result, and was paid {paid}"
    )]
    Settlement {
        job: i64,
        attempt: AttemptId,
        expected: Micros,
        paid: Micros,
    },
}

/// Checks the books of the data directory `data` (a running coordinator may keep writing: the
/// check reads one consistent snapshot).
pub fn check_books(data: &Path) -> Result<BooksReport, BooksError> {
    let db = data.join(crate::DB_FILE);
    if !db.is_file() {
        return Err(BooksError::Missing(db.display().to_string()));
    }
    let mut store = SqliteStore::open(&db)?;
    store.begin_snapshot()?;
    check_store(&mut store)
}

/// [`check_books`] of a coordinator whose records are at `store` (in its data directory
/// `data`, for SQLite).
pub fn check_books_in(
    store: &crate::StoreLocation,
    data: &Path,
) -> Result<BooksReport, BooksError> {
    match store {
        crate::StoreLocation::DataDir => check_books(data),
        crate::StoreLocation::Postgres(url) => {
            let mut store = PostgresStore::open(url)?;
            store.begin_snapshot()?;
            check_store(&mut store)
        }
    }
}

/// [`check_books`] on an open store.
pub fn check_store(store: &mut dyn Store) -> Result<BooksReport, BooksError> {
    let mut ledger = Ledger::new();
    let mut report = BooksReport::default();
    // Net payments by attempt (payments less clawbacks), and who paid.
    let mut paid: HashMap<AttemptId, (Party, Micros)> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.journal(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            ledger
                .apply(&e.transfer)
                .map_err(|error| BooksError::Rule { seq: e.seq, error })?;
            report.transfers += 1;
            let t = &e.transfer;
            match (t.key, t.reason) {
                (EntryKey::Payment(a), Reason::Payment) => {
                    let p = paid.entry(a).or_insert((t.from, 0));
                    p.1 += t.amount;
                }
                (EntryKey::Clawback(a), Reason::Clawback) => {
                    report.clawbacks += 1;
                    paid.entry(a).or_insert((Party::Treasury, 0)).1 -= t.amount;
                }
                _ => {}
            }
        }
    }
    ledger.check()?;
    for (party, balance) in ledger.balances() {
        match party {
            Party::Mint => {}
            Party::Treasury => report.treasury = balance,
            Party::Account(_) => {
                report.accounts += 1;
                report.balances += balance;
                if balance < 0 {
                    report.in_debt += 1;
                    report.debt -= balance;
                }
            }
            Party::Escrow(job) => {
                let rec = store.job(job)?;
                let (state, held) = rec.map_or((JobState::Done, 0), |j| (j.state, j.held));
                if state.is_finished() {
                    return Err(BooksError::Unreleased {
                        job,
                        state,
                        left: balance,
                    });
                }
                if balance > held {
                    return Err(BooksError::OverHeld {
                        job,
                        escrow: balance,
                        held,
                    });
                }
                report.held += balance;
            }
        }
    }
    report.minted = ledger.minted();
    check_settlement(store, &mut paid, &mut report)?;
    // What is left was paid for attempts that are not stored: the grid's own work.
    report.grid_work = paid
        .values()
        .filter(|(from, _)| *from == Party::Treasury)
        .map(|(_, amount)| amount)
        .sum();
    Ok(report)
}

/// Every stored attempt of a priced job against what it was paid (entries are removed from
/// `paid` as they are matched).
fn check_settlement(
    store: &mut dyn Store,
    paid: &mut HashMap<AttemptId, (Party, Micros)>,
    report: &mut BooksReport,
) -> Result<(), BooksError> {
    for job in store.jobs(None, u32::MAX)? {
        if job.price == 0 {
            continue;
        }
        let tasks: HashMap<i64, _> = store
            .tasks(job.id)?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        for a in store.attempts(job.id)? {
            let got = paid.remove(&a.id).map_or(0, |(_, amount)| amount);
            let Some(owner) = a.owner else { continue };
            let accepted = tasks.get(&a.task).and_then(|t| {
                t.outcome
                    .as_ref()
                    .filter(|o| o.acceptance.is_some())
                    .and_then(|o| o.digest)
            });
            // A tolerance job's attempt may agree without being bit-identical: it was
            // accepted as the chosen result's digest.
            let accepted_as = a.agreed.or(a.digest);
            let agreed = a.state == AttemptState::Done
                && accepted_as.is_some()
                && accepted.is_some()
                && accepted_as == accepted;
            let expected = if agreed {
                charge(a.fuel.unwrap_or(0), job.price).unwrap_or(Micros::MAX)
            } else {
                0
            };
            if got != expected {
                return Err(BooksError::Settlement {
                    job: job.id,
                    attempt: a.id,
                    expected,
                    paid: got,
                });
            }
            let o = report.owners.entry(owner).or_default();
            if agreed {
                o.agreed += 1;
                o.paid_agreed += got;
            } else if a.state == AttemptState::Done {
                o.disagreed += 1;
                o.kept_disagreed += got;
            }
        }
    }
    Ok(())
}
