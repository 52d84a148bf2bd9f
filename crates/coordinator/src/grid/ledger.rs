//! Credits in the grid: the ledger (replayed from the store's journal at start), the price, and
//! the transitions that move credits — a job's hold when it is accepted, the payments when a
//! task's result is accepted, the grid's own work (audits, probes) paid by the treasury, a
//! clawback when an audit proves an accepted answer wrong, the release when a job ends, grants.
//!
//! Every rule is `runegrid_core`'s (`ledger`, `price`, `settlement`); this module applies the
//! transfers they produce to the in-memory [`Ledger`] under the grid lock — which is what makes
//! a hold that would overdraw an account fail before anything is stored — and records each as a
//! [`Change::Transfer`] in the same effects as the state change it settles, so the store commits
//! both in one transaction. Keys make every transfer apply once: a coordinator killed in the
//! middle of settling neither pays twice nor loses a payment.

use super::{Effects, Grid, ResultMem, now_ms};
use runegrid_core::ledger::{
    Applied, EntryKey, Ledger, LedgerError, Micros, Party, Reason, Transfer,
};
use runegrid_core::price::{Multiplier, PriceError, PriceParams, target_multiplier};
use runegrid_core::settlement::{self, Agreed, Payer};
use runegrid_core::{AccountId, AttemptId, Digest, JobId, TaskId};
use runegrid_store::{Change, JournalEntry};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How the grid charges for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditTerms {
    pub params: PriceParams,
    /// Micro-credits each new user account is granted.
    pub welcome: Micros,
    /// A private grid: nothing is held or charged; contributors' earnings are minted, so they
    /// are still recorded.
    pub free: bool,
}

/// Welcome credits by default: enough for the demo and every example in the docs.
pub const DEFAULT_WELCOME_CREDITS: Micros = 1_000_000;

impl Default for CreditTerms {
    fn default() -> CreditTerms {
        CreditTerms {
            params: PriceParams::default(),
            welcome: DEFAULT_WELCOME_CREDITS * runegrid_core::ledger::MICROS_PER_CREDIT,
            free: false,
        }
    }
}

/// How often the demand multiplier moves.
const PRICE_STEP: Duration = Duration::from_secs(1);

/// An account's credits, as `GET /v1/account` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountCredits {
    /// What it may spend (negative after a clawback: it earns back before it spends).
    pub balance: Micros,
    /// Held in the escrows of its unfinished jobs.
    pub held: Micros,
    /// Earned for verified work by its workers (clawbacks deducted).
    pub earned: Micros,
    /// Paid for its jobs (fees included).
    pub spent: Micros,
}

/// The price now, as `GET /v1/price` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// Micro-credits per 10^9 fuel.
    pub price: u64,
    /// The demand multiplier, in ppm.
    pub multiplier: u64,
    pub params: PriceParams,
    pub queued: u64,
    pub free_slots: u64,
    pub free: bool,
}

/// What a job was charged, for its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCost {
    pub price: u64,
    pub held: Micros,
    /// Paid out of its escrow so far (payments and fees).
    pub spent: Micros,
}

/// A payment made for an attempt, kept with a result accepted on one worker's word so an
/// audit that proves it wrong can take it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paid {
    pub attempt: AttemptId,
    pub owner: AccountId,
    pub amount: Micros,
}

/// The grid's credit state.
pub(super) struct Books {
    terms: CreditTerms,
    ledger: Ledger,
    multiplier: Multiplier,
    stepped: Instant,
    next_grant: u64,
    accounts: HashMap<AccountId, AccountCredits>,
    /// Each charged job's submitter and cost (from the journal).
    jobs: HashMap<JobId, (AccountId, JobCost)>,
    /// The sum of every escrow's balance.
    escrowed: Micros,
}

impl Books {
    pub fn new(terms: CreditTerms, next_grant: u64) -> Books {
        Books {
            terms,
            ledger: Ledger::new(),
            multiplier: Multiplier::default(),
            stepped: Instant::now(),
            next_grant,
            accounts: HashMap::new(),
            jobs: HashMap::new(),
            escrowed: 0,
        }
    }

    /// Replays stored transfers (in journal order).
    pub fn replay(&mut self, entries: &[JournalEntry]) -> Result<(), LedgerError> {
        for e in entries {
            if self.ledger.apply(&e.transfer)? == Applied::Moved {
                self.count(&e.transfer);
            }
        }
        Ok(())
    }

    pub fn price(&self) -> u64 {
        self.terms
            .params
            .price(self.multiplier.ppm)
            .unwrap_or(u64::MAX)
    }

    #[cfg(test)]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Applies a transfer that is already stored (an account's welcome credits).
    pub fn applied_elsewhere(&mut self, t: &Transfer) {
        match self.ledger.apply(t) {
            Ok(Applied::Moved) => self.count(t),
            Ok(Applied::AlreadyApplied) => {}
            Err(e) => {
                tracing::error!(error = %e, key = ?t.key, "a stored transfer breaks the ledger's rules")
            }
        }
    }

    /// Applies `t` and records it for the store; a transfer the rules refuse is refused whole.
    fn transfer(&mut self, t: Transfer, fx: &mut Effects) -> Result<Applied, LedgerError> {
        let applied = self.ledger.apply(&t)?;
        if applied == Applied::Moved {
            self.count(&t);
            fx.change(Change::Transfer {
                transfer: t,
                at: now_ms(),
            });
        }
        Ok(applied)
    }

    /// Keeps the per-account and per-job totals that the ledger's balances do not show.
    fn count(&mut self, t: &Transfer) {
        if let Party::Escrow(_) = t.to {
            self.escrowed += t.amount;
        }
        if let Party::Escrow(_) = t.from {
            self.escrowed -= t.amount;
        }
        match (t.reason, t.from, t.to) {
            (Reason::Hold, Party::Account(a), Party::Escrow(j)) => {
                self.accounts.entry(a).or_default().held += t.amount;
                let job = self.jobs.entry(j).or_insert((a, JobCost::default()));
                job.1.held += t.amount;
            }
            (Reason::Payment | Reason::Fee | Reason::Release, Party::Escrow(j), _) => {
                if let Some((a, cost)) = self.jobs.get_mut(&j) {
                    let acct = self.accounts.entry(*a).or_default();
                    acct.held -= t.amount;
                    if t.reason != Reason::Release {
                        acct.spent += t.amount;
                        cost.spent += t.amount;
                    }
                }
            }
            _ => {}
        }
        match (t.reason, t.from, t.to) {
            (Reason::Payment, _, Party::Account(owner)) => {
                self.accounts.entry(owner).or_default().earned += t.amount
            }
            (Reason::Clawback, Party::Account(owner), _) => {
                self.accounts.entry(owner).or_default().earned -= t.amount
            }
            _ => {}
        }
    }

    pub fn account(&self, id: AccountId) -> AccountCredits {
        AccountCredits {
            balance: self.ledger.balance(Party::Account(id)),
            ..self.accounts.get(&id).copied().unwrap_or_default()
        }
    }

    pub fn job_cost(&self, id: JobId) -> Option<JobCost> {
        self.jobs.get(&id).map(|(_, c)| *c)
    }
}

/// Why a job cannot be accepted on credit grounds.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(
        "insufficient credits: this job may cost up to {} ({} × {} × {fuel} fuel at {} per 10^9 fuel, fee included); the account has {} available",
        credits(*needed),
        plural(*tasks, "task"),
        plural(u64::from(*max_attempts), "attempt"),
        credits(*price as i64),
        credits(*available)
    )]
    Insufficient {
        needed: Micros,
        available: Micros,
        tasks: u64,
        max_attempts: u32,
        fuel: u64,
        price: u64,
    },
    #[error("this job's worst-case cost is beyond what the ledger can count: {0}")]
    Price(#[from] PriceError),
    #[error("{0}")]
    Ledger(LedgerError),
}

/// `1 task`, `3 tasks`.
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Micro-credits as credits, e.g. `12.5 credits`.
pub fn credits(micros: Micros) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let whole = m / 1_000_000;
    let frac = m % 1_000_000;
    if frac == 0 {
        format!("{sign}{whole} credits")
    } else {
        let f = format!("{frac:06}");
        format!("{sign}{whole}.{} credits", f.trim_end_matches('0'))
    }
}

/// A job's terms, fixed when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// `None` while its bid is below the price.
    pub price: Option<u64>,
    pub held: Micros,
}

impl Grid {
    /// The price a job accepted now pays (`None`: its bid is below the price, it waits), and
    /// its hold: every task run `max_attempts` times to its fuel limit at its bid, or at the
    /// price when it gave none (nothing held on a free grid).
    pub(super) fn quote_job(
        &self,
        submitter: AccountId,
        tasks: u64,
        max_attempts: u32,
        fuel: u64,
        max_price: Option<u64>,
    ) -> Result<Terms, HoldError> {
        let now = self.books.price();
        let price = match max_price {
            Some(bid) if bid < now => None,
            _ => Some(now),
        };
        if self.books.terms.free {
            return Ok(Terms { price, held: 0 });
        }
        let at = max_price.unwrap_or(now);
        let held = self
            .books
            .terms
            .params
            .worst_case(tasks, u64::from(max_attempts), fuel, at)?;
        let available = self.books.ledger.balance(Party::Account(submitter));
        if held > available {
            return Err(HoldError::Insufficient {
                needed: held,
                available: available.max(0),
                tasks,
                max_attempts,
                fuel,
                price: at,
            });
        }
        Ok(Terms { price, held })
    }

    /// Holds a job's worst case in its escrow (checked by [`Grid::quote_job`] under the same
    /// lock).
    pub(super) fn hold(
        &mut self,
        job: JobId,
        submitter: AccountId,
        held: Micros,
        fx: &mut Effects,
    ) -> Result<(), HoldError> {
        if held == 0 {
            return Ok(());
        }
        self.books
            .transfer(settlement::hold(job, submitter, held), fx)
            .map(|_| ())
            .map_err(HoldError::Ledger)
    }

    /// Takes back, in memory only, the hold of a job whose creation could not be stored.
    pub fn forget_hold(&mut self, job: JobId) {
        let Some(j) = self.jobs.get(&job) else { return };
        if j.rec.held > 0 {
            let t = settlement::hold(job, j.rec.owner, j.rec.held);
            self.books.ledger.revert(&t);
            if let Some(a) = self.books.accounts.get_mut(&j.rec.owner) {
                a.held -= t.amount;
            }
            self.books.jobs.remove(&job);
        }
    }

    /// Pays the attempts of task `id` whose results agree with its accepted `digest`: from its
    /// job's escrow at the job's price (minted on a free grid). Returns each payment.
    pub(super) fn pay_agreeing(
        &mut self,
        id: TaskId,
        digest: Digest,
        fx: &mut Effects,
    ) -> Vec<Paid> {
        let Some(t) = self.tasks.get(&id) else {
            return Vec::new();
        };
        let Some(j) = self.jobs.get(&t.job) else {
            return Vec::new();
        };
        let (price, payer) = (
            j.rec.price,
            if j.rec.held > 0 {
                Payer::Job(j.rec.id)
            } else {
                Payer::Mint
            },
        );
        let agreed = agreed_with(&t.results, digest);
        self.settle(payer, price, &agreed, fx)
    }

    /// Pays the grid's own work (an audit's or a probe's agreeing attempts) from the treasury
    /// at today's price.
    pub(super) fn pay_grid_work(&mut self, agreed: &[Agreed], fx: &mut Effects) {
        let price = self.books.price();
        self.settle(Payer::Grid, price, agreed, fx);
    }

    fn settle(
        &mut self,
        payer: Payer,
        price: u64,
        agreed: &[Agreed],
        fx: &mut Effects,
    ) -> Vec<Paid> {
        if price == 0 || agreed.is_empty() {
            return Vec::new();
        }
        let transfers = match settlement::pay(payer, price, &self.books.terms.params, agreed) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "a payment could not be priced; nothing paid");
                return Vec::new();
            }
        };
        let mut paid = Vec::new();
        for mut t in transfers {
            if let Err(LedgerError::Overdrawn { .. }) = self.books.ledger.check_transfer(&t) {
                // More attempts agreed than the hold foresaw (a backup of a straggler): the
                // treasury pays the worker; no fee is taken from an empty escrow.
                if t.reason == Reason::Fee {
                    continue;
                }
                tracing::warn!(key = ?t.key, "a job's escrow is spent; the treasury pays this attempt");
                t.from = Party::Treasury;
            }
            match self.books.transfer(t, fx) {
                Ok(Applied::Moved) => {
                    if let (EntryKey::Payment(attempt), Party::Account(owner)) = (t.key, t.to) {
                        paid.push(Paid {
                            attempt,
                            owner,
                            amount: t.amount,
                        });
                    }
                }
                Ok(Applied::AlreadyApplied) => {}
                Err(e) => {
                    tracing::error!(error = %e, key = ?t.key, "payment refused by the ledger's rules")
                }
            }
        }
        paid
    }

    /// Takes back a payment an audit proved undeserved (to the treasury).
    pub(super) fn claw_back(&mut self, p: Paid, fx: &mut Effects) {
        if let Some(t) = settlement::clawback(p.attempt, p.owner, p.amount)
            && let Err(e) = self.books.transfer(t, fx)
        {
            tracing::error!(error = %e, attempt = p.attempt, "clawback refused by the ledger's rules");
        }
    }

    /// Returns what a finished job did not spend to its submitter.
    pub(super) fn release_escrow(&mut self, job: JobId, fx: &mut Effects) {
        let Some(j) = self.jobs.get(&job) else { return };
        let left = self.books.ledger.balance(Party::Escrow(job));
        if let Some(t) = settlement::release(job, j.rec.owner, left)
            && let Err(e) = self.books.transfer(t, fx)
        {
            tracing::error!(error = %e, job, "release refused by the ledger's rules");
        }
    }

    /// Grants `amount` to `account` (an admin's grant).
    pub fn grant(
        &mut self,
        account: AccountId,
        amount: Micros,
        fx: &mut Effects,
    ) -> Result<(), LedgerError> {
        let t = Transfer::grant(self.books.next_grant, account, amount);
        self.books.transfer(t, fx)?;
        self.books.next_grant += 1;
        Ok(())
    }

    /// An account's welcome credits, already stored with it.
    pub fn welcomed(&mut self, account: AccountId, amount: Micros) {
        if amount > 0 {
            self.books
                .applied_elsewhere(&Transfer::welcome(account, amount));
        }
    }

    /// Moves the demand multiplier toward queued work against free slots, once a second; then
    /// starts the waiting jobs whose bid the price has fallen to.
    pub(super) fn step_price(&mut self, now: Instant, fx: &mut Effects) {
        if now.duration_since(self.books.stepped) < PRICE_STEP {
            return;
        }
        self.books.stepped = now;
        let (queued, free) = self.demand();
        self.books.multiplier.step(target_multiplier(queued, free));
        self.start_waiting(fx);
    }

    /// Steps the price now, however long since the last step (for tests).
    #[cfg(test)]
    pub fn step_price_now(&mut self, fx: &mut Effects) {
        self.books.stepped = Instant::now()
            .checked_sub(PRICE_STEP)
            .unwrap_or_else(Instant::now);
        self.step_price(Instant::now(), fx);
    }

    /// Tasks waiting for a worker, and free worker slots.
    fn demand(&self) -> (u64, u64) {
        let free = self
            .workers
            .values()
            .map(|w| u64::from(w.slots).saturating_sub(w.busy.len() as u64))
            .sum();
        (self.queue.len() as u64, free)
    }

    pub fn quote(&self) -> Quote {
        let (queued, free_slots) = self.demand();
        Quote {
            price: self.books.price(),
            multiplier: self.books.multiplier.ppm,
            params: self.books.terms.params,
            queued,
            free_slots,
            free: self.books.terms.free,
        }
    }

    /// Micro-credits minted, and where they are: accounts, escrows, the treasury.
    pub fn credit_totals(&self) -> Vec<(&'static str, Micros)> {
        let minted = self.books.ledger.minted();
        let treasury = self.books.ledger.balance(Party::Treasury);
        let escrow = self.books.escrowed;
        vec![
            ("minted", minted),
            ("accounts", minted - treasury - escrow),
            ("escrow", escrow),
            ("treasury", treasury),
        ]
    }

    /// Accounts with earnings, and what they earned.
    pub fn earnings(&self) -> Vec<(AccountId, Micros)> {
        self.books
            .accounts
            .iter()
            .filter(|(_, c)| c.earned != 0)
            .map(|(id, c)| (*id, c.earned))
            .collect()
    }

    pub fn account_credits(&self, id: AccountId) -> AccountCredits {
        self.books.account(id)
    }

    /// What a job paid out of its escrow so far.
    pub fn job_spent(&self, id: JobId) -> Micros {
        self.books.job_cost(id).map_or(0, |c| c.spent)
    }

    /// The ledger as this grid holds it (for checks).
    #[cfg(test)]
    pub fn ledger(&self) -> &Ledger {
        self.books.ledger()
    }
}

/// The results that agree with `digest`, from workers whose owner is known.
pub(super) fn agreed_with(results: &[ResultMem], digest: Digest) -> Vec<Agreed> {
    results
        .iter()
        .filter(|r| r.digest == digest)
        .filter_map(|r| {
            Some(Agreed {
                attempt: r.attempt,
                owner: r.owner?,
                fuel: r.fuel,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::credits;

    #[test]
    fn credits_read_as_decimals() {
        assert_eq!(credits(0), "0 credits");
        assert_eq!(credits(12_500_000), "12.5 credits");
        assert_eq!(credits(1), "0.000001 credits");
        assert_eq!(credits(-3_000_000), "-3 credits");
    }
}
