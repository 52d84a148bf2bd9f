//! Settlement: the transfers that pay for verified work, as data for the store to apply.
//!
//! - A job's submitter holds its worst case in the job's escrow when the job is accepted
//!   ([`hold`]).
//! - When a task's result is accepted, each attempt that agreed with it earns its fuel × the
//!   job's price for its worker's owner, and the treasury the fee on that ([`pay`]); disagreeing,
//!   lost and cancelled attempts earn nothing (they are not passed in).
//! - Known-answer probes and audits are the grid's own work: the treasury pays for them, without
//!   a fee.
//! - When an audit corrects a result that was accepted on a liar's word, the liar's payment goes
//!   back to the treasury ([`clawback`]), which pays the honest re-execution like any audit.
//! - When the job finishes (done, failed or cancelled) the escrow's rest returns to the
//!   submitter ([`release`]).
//!
//! Every transfer is keyed by the attempt (or job) it settles, so settling twice moves nothing
//! the second time.

use crate::ledger::{EntryKey, Micros, Party, Reason, Transfer};
use crate::price::{PriceError, PriceParams, charge};
use crate::{AccountId, AttemptId, JobId};

/// Who pays for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payer {
    /// A user's job, from its escrow (with the fee).
    Job(JobId),
    /// The grid's own work (probes, audits), from the treasury (no fee).
    Grid,
    /// A job on a grid that does not charge (`serve --free`): its contributors' earnings are
    /// minted (no fee), so they are recorded all the same.
    Mint,
}

/// An attempt that agreed with an accepted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub attempt: AttemptId,
    /// The account owning the worker that ran it.
    pub owner: AccountId,
    pub fuel: u64,
}

/// The job's hold: `amount` from its submitter into its escrow.
pub fn hold(job: JobId, submitter: AccountId, amount: Micros) -> Transfer {
    Transfer {
        key: EntryKey::Hold(job),
        from: Party::Account(submitter),
        to: Party::Escrow(job),
        amount,
        reason: Reason::Hold,
    }
}

/// The payments (and fees) for the attempts that agreed with an accepted result, at `price`
/// micro-credits per 10^9 fuel. Zero amounts are left out.
pub fn pay(
    payer: Payer,
    price: u64,
    params: &PriceParams,
    agreed: &[Agreed],
) -> Result<Vec<Transfer>, PriceError> {
    let mut transfers = Vec::with_capacity(agreed.len() * 2);
    for a in agreed {
        let amount = charge(a.fuel, price)?;
        let (from, fee) = match payer {
            Payer::Job(job) => (Party::Escrow(job), params.fee(amount)?),
            Payer::Grid => (Party::Treasury, 0),
            Payer::Mint => (Party::Mint, 0),
        };
        if amount > 0 {
            transfers.push(Transfer {
                key: EntryKey::Payment(a.attempt),
                from,
                to: Party::Account(a.owner),
                amount,
                reason: Reason::Payment,
            });
        }
        if fee > 0 {
            transfers.push(Transfer {
                key: EntryKey::Fee(a.attempt),
                from,
                to: Party::Treasury,
                amount: fee,
                reason: Reason::Fee,
            });
        }
    }
    Ok(transfers)
}

/// Takes back the payment `amount` made for `attempt` from `owner`, to the treasury.
pub fn clawback(attempt: AttemptId, owner: AccountId, amount: Micros) -> Option<Transfer> {
    (amount > 0).then_some(Transfer {
        key: EntryKey::Clawback(attempt),
        from: Party::Account(owner),
        to: Party::Treasury,
        amount,
        reason: Reason::Clawback,
    })
}

/// Returns what is left in a finished job's escrow to its submitter.
pub fn release(job: JobId, submitter: AccountId, left: Micros) -> Option<Transfer> {
    (left > 0).then_some(Transfer {
        key: EntryKey::Release(job),
        from: Party::Escrow(job),
        to: Party::Account(submitter),
        amount: left,
        reason: Reason::Release,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Applied, Ledger, LedgerError};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const USER: AccountId = 1;
    const HONEST: AccountId = 2;
    const LIAR: AccountId = 3;

    #[test]
    fn a_job_pays_agreeing_attempts_and_releases_the_rest() {
        let params = PriceParams::default();
        let price = params.price(1_000_000).unwrap();
        let mut ledger = Ledger::new();
        ledger.apply(&Transfer::grant(1, USER, 10_000_000)).unwrap();
        let worst = params.worst_case(2, 3, 1_000_000_000, price).unwrap();
        ledger.apply(&hold(5, USER, worst)).unwrap();

        // Task 1: two agreeing replicas; task 2: one (trusted worker).
        let paid = pay(
            Payer::Job(5),
            price,
            &params,
            &[
                Agreed {
                    attempt: 10,
                    owner: HONEST,
                    fuel: 400_000_000,
                },
                Agreed {
                    attempt: 11,
                    owner: LIAR,
                    fuel: 400_000_000,
                },
                Agreed {
                    attempt: 12,
                    owner: HONEST,
                    fuel: 100_000_000,
                },
            ],
        )
        .unwrap();
        for t in &paid {
            ledger.apply(t).unwrap();
        }
        assert_eq!(ledger.balance(Party::Account(HONEST)), 500_000);
        assert_eq!(ledger.balance(Party::Account(LIAR)), 400_000);
        assert_eq!(ledger.balance(Party::Treasury), 20_000 + 20_000 + 5_000);
        let left = ledger.balance(Party::Escrow(5));
        ledger.apply(&release(5, USER, left).unwrap()).unwrap();
        assert_eq!(ledger.balance(Party::Account(USER)), 10_000_000 - 945_000);
        ledger.check().unwrap();

        // The audit finds attempt 11 lied: its payment goes back.
        ledger.apply(&clawback(11, LIAR, 400_000).unwrap()).unwrap();
        assert_eq!(ledger.balance(Party::Account(LIAR)), 0);
        ledger.check().unwrap();
    }

    #[test]
    fn the_grid_pays_its_own_work_without_a_fee() {
        let params = PriceParams::default();
        let paid = pay(
            Payer::Grid,
            1_000_000,
            &params,
            &[Agreed {
                attempt: 1,
                owner: HONEST,
                fuel: 3_000_000_000,
            }],
        )
        .unwrap();
        assert_eq!(
            paid,
            vec![Transfer {
                key: EntryKey::Payment(1),
                from: Party::Treasury,
                to: Party::Account(HONEST),
                amount: 3_000_000,
                reason: Reason::Payment,
            }]
        );
    }

    /// One event of a grid's life, as the property test drives it.
    #[derive(Debug, Clone)]
    enum Event {
        Grant {
            to: AccountId,
            amount: Micros,
        },
        Submit {
            tasks: u64,
            max_attempts: u64,
            fuel_limit: u64,
            multiplier: u64,
        },
        /// A task of job `job % jobs` accepted with these agreeing attempts (fuel as a fraction
        /// of the limit, in 1/256) from these owners; `liar` marks the first one a liar.
        Accept {
            job: usize,
            owners: Vec<AccountId>,
            fuel_256: u64,
            liar: bool,
        },
        Probe {
            owner: AccountId,
            fuel: u64,
        },
        Audit {
            job: usize,
        },
        Finish {
            job: usize,
        },
        /// The coordinator restarts: the ledger is rebuilt from the journal and every event
        /// settled so far is settled again.
        Restart,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (1..5i64, 0..50_000_000i64).prop_map(|(to, amount)| Event::Grant {
                to,
                amount: amount + 1
            }),
            (
                1..20u64,
                1..4u64,
                1..5_000_000_000u64,
                500_000..=2_000_000u64
            )
                .prop_map(|(tasks, max_attempts, fuel_limit, multiplier)| {
                    Event::Submit {
                        tasks,
                        max_attempts,
                        fuel_limit,
                        multiplier,
                    }
                }),
            (
                0..8usize,
                prop::collection::vec(2..6i64, 1..4),
                0..=256u64,
                any::<bool>()
            )
                .prop_map(|(job, owners, fuel_256, liar)| Event::Accept {
                    job,
                    owners,
                    fuel_256,
                    liar
                }),
            (2..6i64, 0..2_000_000_000u64).prop_map(|(owner, fuel)| Event::Probe { owner, fuel }),
            (0..8usize).prop_map(|job| Event::Audit { job }),
            (0..8usize).prop_map(|job| Event::Finish { job }),
            Just(Event::Restart),
        ]
    }

    struct Job {
        id: JobId,
        submitter: AccountId,
        price: u64,
        fuel_limit: u64,
        /// Tasks not yet accepted, and attempts each may still pay for.
        tasks_left: u64,
        max_attempts: u64,
        finished: bool,
        /// Payments made on a liar's word, not yet clawed back: attempt → (owner, amount).
        lies: BTreeMap<AttemptId, (AccountId, Micros)>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random submissions, results, lies, audits, probes, finishes and restarts: the ledger
        /// balances after every step, escrows cover every payment, liars end with nothing from
        /// their lies once audited, and settling again after a restart moves nothing.
        #[test]
        fn the_ledger_balances_through_any_history(events in prop::collection::vec(event(), 1..80)) {
            let params = PriceParams::default();
            let mut ledger = Ledger::new();
            let mut journal: Vec<Transfer> = Vec::new();
            let mut settled: Vec<Transfer> = Vec::new();
            let mut jobs: Vec<Job> = Vec::new();
            let (mut next_grant, mut next_attempt) = (0u64, 0i64);
            let apply = |ledger: &mut Ledger, journal: &mut Vec<Transfer>, t: Transfer| -> Result<Applied, LedgerError> {
                let applied = ledger.apply(&t)?;
                if applied == Applied::Moved {
                    journal.push(t);
                }
                Ok(applied)
            };
            for event in events {
                match event {
                    Event::Grant { to, amount } => {
                        next_grant += 1;
                        let t = Transfer::grant(next_grant, to, amount);
                        prop_assert_eq!(apply(&mut ledger, &mut journal, t), Ok(Applied::Moved));
                    }
                    Event::Submit { tasks, max_attempts, fuel_limit, multiplier } => {
                        let id = jobs.len() as JobId;
                        let price = params.price(multiplier).unwrap();
                        let worst = params.worst_case(tasks, max_attempts, fuel_limit, price).unwrap();
                        let before = ledger.balance(Party::Account(USER));
                        match apply(&mut ledger, &mut journal, hold(id, USER, worst)) {
                            Ok(_) => jobs.push(Job { id, submitter: USER, price, fuel_limit, tasks_left: tasks, max_attempts, finished: false, lies: BTreeMap::new() }),
                            Err(LedgerError::InsufficientCredits { needed, available }) => {
                                prop_assert_eq!(needed, worst);
                                prop_assert_eq!(available, before.max(0));
                                prop_assert!(worst > before);
                                prop_assert_eq!(ledger.balance(Party::Account(USER)), before, "a refused job holds nothing");
                            }
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Event::Accept { job, owners, fuel_256, liar } => {
                        let Some(j) = (!jobs.is_empty()).then(|| job % jobs.len()) else { continue };
                        let j = &mut jobs[j];
                        if j.finished || j.tasks_left == 0 { continue; }
                        j.tasks_left -= 1;
                        let fuel = j.fuel_limit * fuel_256 / 256;
                        let agreed: Vec<Agreed> = owners.iter().take(j.max_attempts as usize).map(|&owner| {
                            next_attempt += 1;
                            Agreed { attempt: next_attempt, owner, fuel }
                        }).collect();
                        let transfers = pay(Payer::Job(j.id), j.price, &params, &agreed).unwrap();
                        for t in transfers {
                            // The hold covers every payment: an escrow is never overdrawn.
                            prop_assert_eq!(apply(&mut ledger, &mut journal, t), Ok(Applied::Moved));
                            settled.push(t);
                        }
                        if liar && let Some(first) = agreed.first() {
                            j.lies.insert(first.attempt, (first.owner, charge(first.fuel, j.price).unwrap()));
                        }
                    }
                    Event::Probe { owner, fuel } => {
                        next_attempt += 1;
                        for t in pay(Payer::Grid, params.price(1_000_000).unwrap(), &params, &[Agreed { attempt: next_attempt, owner, fuel }]).unwrap() {
                            prop_assert_eq!(apply(&mut ledger, &mut journal, t), Ok(Applied::Moved));
                            settled.push(t);
                        }
                    }
                    Event::Audit { job } => {
                        let Some(j) = (!jobs.is_empty()).then(|| job % jobs.len()) else { continue };
                        for (attempt, (owner, amount)) in std::mem::take(&mut jobs[j].lies) {
                            let before = ledger.balance(Party::Account(owner));
                            if let Some(t) = clawback(attempt, owner, amount) {
                                prop_assert_eq!(apply(&mut ledger, &mut journal, t), Ok(Applied::Moved));
                                settled.push(t);
                                prop_assert_eq!(ledger.balance(Party::Account(owner)), before - amount);
                            }
                        }
                    }
                    Event::Finish { job } => {
                        let Some(j) = (!jobs.is_empty()).then(|| job % jobs.len()) else { continue };
                        let j = &mut jobs[j];
                        if j.finished { continue; }
                        j.finished = true;
                        let left = ledger.balance(Party::Escrow(j.id));
                        if let Some(t) = release(j.id, j.submitter, left) {
                            prop_assert_eq!(apply(&mut ledger, &mut journal, t), Ok(Applied::Moved));
                            settled.push(t);
                        }
                        prop_assert_eq!(ledger.balance(Party::Escrow(j.id)), 0);
                    }
                    Event::Restart => {
                        let rebuilt = Ledger::replay(&journal).unwrap();
                        prop_assert_eq!(&rebuilt, &ledger, "the journal is the ledger");
                        ledger = rebuilt;
                        for t in &settled {
                            prop_assert_eq!(ledger.apply(t), Ok(Applied::AlreadyApplied), "settling again moves nothing");
                        }
                    }
                }
                prop_assert_eq!(ledger.check(), Ok(()));
                let held: Micros = ledger.balances().filter(|(p, _)| *p != Party::Mint).map(|(_, b)| b).sum();
                prop_assert_eq!(held, ledger.minted(), "balances + holds = credits minted");
            }
        }
    }
}
