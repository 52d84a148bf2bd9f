//! The credit ledger's rules: who holds credits, how they move, and what must always hold.
//!
//! Double-entry: every movement is a [`Transfer`] of a positive amount of micro-credits from
//! one [`Party`] to another, so the balances of all parties always sum to zero. Credits enter
//! through the [`Party::Mint`], whose balance is minus everything ever minted; a job's hold is
//! the balance of its [`Party::Escrow`]. The invariant the issue states — balances + holds =
//! credits minted — is therefore `sum of every party but the mint = -balance(mint)`, checked by
//! [`Ledger::check`].
//!
//! Every transfer carries an [`EntryKey`] naming the event it accounts for (a job's hold, an
//! attempt's payment, ...). A key is applied at most once: applying it again is a no-op, which
//! is what makes settlement idempotent across a coordinator killed mid-way and restarted.
//!
//! Architecture Invariant: amounts are integers (micro-credits, `i64`); no float ever touches
//! a balance.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{AccountId, AttemptId, JobId};

/// Micro-credits: 1 credit is [`MICROS_PER_CREDIT`] of them.
pub type Micros = i64;

/// Micro-credits in one credit.
pub const MICROS_PER_CREDIT: Micros = 1_000_000;

/// One side of a transfer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Party {
    /// Where credits come from: grants are transfers out of it.
    Mint,
    /// The grid's own account: protocol fees come in, the grid's own work (known-answer
    /// probes, audits) is paid from it, clawed-back payments return to it.
    Treasury,
    /// A user's or a contributor's account.
    Account(AccountId),
    /// What a job holds until its tasks are paid and the rest released.
    Escrow(JobId),
}

impl Party {
    /// Whether this party's balance may go below zero: the mint (by construction), the treasury
    /// (it pays for the grid's own work before fees cover it) and an account whose payment was
    /// clawed back (it earns back before it spends). Escrows never do.
    fn may_go_negative(self, reason: Reason) -> bool {
        match self {
            Party::Mint | Party::Treasury => true,
            Party::Account(_) => reason == Reason::Clawback,
            Party::Escrow(_) => false,
        }
    }
}

impl Party {
    /// The party as a kind and a number (0 for the mint and the treasury), how a store keeps
    /// it in two columns.
    pub fn to_parts(self) -> (&'static str, i64) {
        match self {
            Party::Mint => ("mint", 0),
            Party::Treasury => ("treasury", 0),
            Party::Account(a) => ("account", a),
            Party::Escrow(j) => ("escrow", j),
        }
    }

    /// The inverse of [`Party::to_parts`]; `None` for an unknown kind.
    pub fn from_parts(kind: &str, id: i64) -> Option<Party> {
        Some(match kind {
            "mint" => Party::Mint,
            "treasury" => Party::Treasury,
            "account" => Party::Account(id),
            "escrow" => Party::Escrow(id),
            _ => return None,
        })
    }
}

/// Why credits moved.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Credits given to an account (welcome credits, an admin's grant).
    Grant,
    /// A job's worst case, held from its submitter when it is accepted.
    Hold,
    /// A worker's owner paid for an attempt that agreed with the accepted result.
    Payment,
    /// The protocol fee on a payment, to the treasury.
    Fee,
    /// What a finished job did not spend, back to its submitter.
    Release,
    /// A payment taken back from the owner of a worker whose accepted answer an audit proved
    /// wrong.
    Clawback,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Grant => "grant",
            Reason::Hold => "hold",
            Reason::Payment => "payment",
            Reason::Fee => "fee",
            Reason::Release => "release",
            Reason::Clawback => "clawback",
        }
    }
}

display_as_str!(Reason);

impl std::str::FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Reason, String> {
        [
            Reason::Grant,
            Reason::Hold,
            Reason::Payment,
            Reason::Fee,
            Reason::Release,
            Reason::Clawback,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown transfer reason {s:?}"))
    }
}

/// The event a transfer accounts for; each is applied at most once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum EntryKey {
    /// A grant, numbered by whoever makes it (the store's sequence).
    Grant(u64),
    /// An account's welcome credits, given once when it is created.
    Welcome(AccountId),
    /// A job's hold.
    Hold(JobId),
    /// The payment for an attempt.
    Payment(AttemptId),
    /// The fee on an attempt's payment.
    Fee(AttemptId),
    /// The clawback of an attempt's payment.
    Clawback(AttemptId),
    /// The release of what a job did not spend.
    Release(JobId),
}

impl EntryKey {
    /// The key as a kind and a number, how a store keeps it (unique together).
    pub fn to_parts(self) -> (&'static str, i64) {
        match self {
            EntryKey::Grant(n) => ("grant", n as i64),
            EntryKey::Welcome(a) => ("welcome", a),
            EntryKey::Hold(j) => ("hold", j),
            EntryKey::Payment(a) => ("payment", a),
            EntryKey::Fee(a) => ("fee", a),
            EntryKey::Clawback(a) => ("clawback", a),
            EntryKey::Release(j) => ("release", j),
        }
    }

    /// The inverse of [`EntryKey::to_parts`]; `None` for an unknown kind.
    pub fn from_parts(kind: &str, id: i64) -> Option<EntryKey> {
        Some(match kind {
            "grant" => EntryKey::Grant(id as u64),
            "welcome" => EntryKey::Welcome(id),
            "hold" => EntryKey::Hold(id),
            "payment" => EntryKey::Payment(id),
            "fee" => EntryKey::Fee(id),
            "clawback" => EntryKey::Clawback(id),
            "release" => EntryKey::Release(id),
            _ => return None,
        })
    }
}

/// A movement of credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub key: EntryKey,
    pub from: Party,
    pub to: Party,
    pub amount: Micros,
    pub reason: Reason,
}

impl Transfer {
    /// The welcome credits of a new account.
    pub fn welcome(account: AccountId, amount: Micros) -> Transfer {
        Transfer {
            key: EntryKey::Welcome(account),
            from: Party::Mint,
            to: Party::Account(account),
            amount,
            reason: Reason::Grant,
        }
    }

    /// A grant of `amount` to `account`, numbered `n` by whoever makes it.
    pub fn grant(n: u64, account: AccountId, amount: Micros) -> Transfer {
        Transfer {
            key: EntryKey::Grant(n),
            from: Party::Mint,
            to: Party::Account(account),
            amount,
            reason: Reason::Grant,
        }
    }
}

/// A transfer the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("a transfer moves a positive amount, not {0}")]
    NotPositive(Micros),
    #[error("a transfer moves credits between two parties, not from {0:?} to itself")]
    SameParty(Party),
    #[error("insufficient credits: {needed} micro-credits needed, {available} available")]
    InsufficientCredits { needed: Micros, available: Micros },
    #[error("{party:?} holds {balance} micro-credits, less than the {amount} asked for")]
    Overdrawn {
        party: Party,
        balance: Micros,
        amount: Micros,
    },
    #[error("balance of {0:?} out of range")]
    Overflow(Party),
}

/// What [`Ledger::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The transfer moved credits.
    Moved,
    /// Its key was applied before: nothing moved.
    AlreadyApplied,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    #[error("balances sum to {0}, not 0: credits were created or lost")]
    Unbalanced(i128),
    #[error("{party:?} has a negative balance ({balance}) it may not have")]
    Negative { party: Party, balance: Micros },
}

/// Balances and applied keys: the rules applied to a journal of transfers. The store keeps the
/// journal; this is what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    balances: BTreeMap<Party, Micros>,
    applied: BTreeSet<EntryKey>,
    /// Accounts allowed below zero (a clawback took them there).
    in_debt: BTreeSet<Party>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Replays a journal (transfers in the order they were applied).
    pub fn replay<'a>(
        journal: impl IntoIterator<Item = &'a Transfer>,
    ) -> Result<Ledger, LedgerError> {
        let mut ledger = Ledger::new();
        for transfer in journal {
            ledger.apply(transfer)?;
        }
        Ok(ledger)
    }

    /// A party's balance (0 for one never seen).
    pub fn balance(&self, party: Party) -> Micros {
        self.balances.get(&party).copied().unwrap_or(0)
    }

    /// Every party with a non-zero balance.
    pub fn balances(&self) -> impl Iterator<Item = (Party, Micros)> + '_ {
        self.balances
            .iter()
            .filter(|(_, b)| **b != 0)
            .map(|(p, b)| (*p, *b))
    }

    /// Whether `key` was applied.
    pub fn contains(&self, key: EntryKey) -> bool {
        self.applied.contains(&key)
    }

    /// Credits minted so far.
    pub fn minted(&self) -> Micros {
        -self.balance(Party::Mint)
    }

    /// Applies `transfer` unless its key was applied before. A hold may not take an account
    /// below zero ([`LedgerError::InsufficientCredits`]); no transfer may take an escrow below
    /// zero, nor an account except by a clawback.
    pub fn check_transfer(&self, transfer: &Transfer) -> Result<Applied, LedgerError> {
        if self.applied.contains(&transfer.key) {
            return Ok(Applied::AlreadyApplied);
        }
        let Transfer {
            from, to, amount, ..
        } = *transfer;
        if amount <= 0 {
            return Err(LedgerError::NotPositive(amount));
        }
        if from == to {
            return Err(LedgerError::SameParty(from));
        }
        let balance = self.balance(from);
        let after = balance
            .checked_sub(amount)
            .ok_or(LedgerError::Overflow(from))?;
        self.balance(to)
            .checked_add(amount)
            .ok_or(LedgerError::Overflow(to))?;
        if after < 0 && !from.may_go_negative(transfer.reason) {
            return Err(if transfer.reason == Reason::Hold {
                LedgerError::InsufficientCredits {
                    needed: amount,
                    available: balance.max(0),
                }
            } else {
                LedgerError::Overdrawn {
                    party: from,
                    balance,
                    amount,
                }
            });
        }
        Ok(Applied::Moved)
    }

    /// Applies `transfer` (see [`Ledger::check_transfer`]); nothing changes on an error.
    pub fn apply(&mut self, transfer: &Transfer) -> Result<Applied, LedgerError> {
        let applied = self.check_transfer(transfer)?;
        if applied == Applied::Moved {
            let from = self.balances.entry(transfer.from).or_insert(0);
            *from -= transfer.amount;
            if *from < 0 && matches!(transfer.from, Party::Account(_)) {
                self.in_debt.insert(transfer.from);
            }
            *self.balances.entry(transfer.to).or_insert(0) += transfer.amount;
            self.applied.insert(transfer.key);
        }
        Ok(applied)
    }

    /// Undoes a transfer this ledger applied (one that could not be stored after all): its
    /// amount moves back and its key may be applied again. Nothing happens for a key that was
    /// not applied.
    pub fn revert(&mut self, transfer: &Transfer) {
        if !self.applied.remove(&transfer.key) {
            return;
        }
        *self.balances.entry(transfer.from).or_insert(0) += transfer.amount;
        *self.balances.entry(transfer.to).or_insert(0) -= transfer.amount;
    }

    /// Checks the invariants: the balances sum to zero (so everything but the mint sums to what
    /// was minted), no escrow is negative, and no account is negative unless a clawback took it
    /// there.
    pub fn check(&self) -> Result<(), InvariantError> {
        let sum: i128 = self.balances.values().map(|&b| i128::from(b)).sum();
        if sum != 0 {
            return Err(InvariantError::Unbalanced(sum));
        }
        for (&party, &balance) in &self.balances {
            let allowed = match party {
                Party::Mint | Party::Treasury => true,
                Party::Escrow(_) => false,
                Party::Account(_) => self.in_debt.contains(&party),
            };
            if balance < 0 && !allowed {
                return Err(InvariantError::Negative { party, balance });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settlement::hold;

    fn t(key: EntryKey, from: Party, to: Party, amount: Micros, reason: Reason) -> Transfer {
        Transfer {
            key,
            from,
            to,
            amount,
            reason,
        }
    }

    const ALICE: Party = Party::Account(1);
    const BOB: Party = Party::Account(2);

    #[test]
    fn grants_holds_payments_and_releases_balance() {
        let mut l = Ledger::new();
        l.apply(&Transfer::grant(1, 1, 100)).unwrap();
        l.apply(&hold(7, 1, 60)).unwrap();
        l.apply(&t(
            EntryKey::Payment(70),
            Party::Escrow(7),
            BOB,
            20,
            Reason::Payment,
        ))
        .unwrap();
        l.apply(&t(
            EntryKey::Fee(70),
            Party::Escrow(7),
            Party::Treasury,
            1,
            Reason::Fee,
        ))
        .unwrap();
        l.apply(&t(
            EntryKey::Release(7),
            Party::Escrow(7),
            ALICE,
            39,
            Reason::Release,
        ))
        .unwrap();
        assert_eq!(l.balance(ALICE), 79);
        assert_eq!(l.balance(BOB), 20);
        assert_eq!(l.balance(Party::Treasury), 1);
        assert_eq!(l.balance(Party::Escrow(7)), 0);
        assert_eq!(l.minted(), 100);
        l.check().unwrap();
    }

    #[test]
    fn a_hold_beyond_the_balance_is_refused_and_changes_nothing() {
        let mut l = Ledger::new();
        l.apply(&Transfer::grant(1, 1, 50)).unwrap();
        let before = l.clone();
        assert_eq!(
            l.apply(&hold(1, 1, 51)),
            Err(LedgerError::InsufficientCredits {
                needed: 51,
                available: 50
            })
        );
        assert_eq!(l, before);
        // The key was not used up: the same hold fits after a grant.
        l.apply(&Transfer::grant(2, 1, 1)).unwrap();
        assert_eq!(l.apply(&hold(1, 1, 51)), Ok(Applied::Moved));
    }

    #[test]
    fn a_key_applies_once() {
        let mut l = Ledger::new();
        let grant = Transfer::grant(1, 1, 10);
        assert_eq!(l.apply(&grant), Ok(Applied::Moved));
        assert_eq!(l.apply(&grant), Ok(Applied::AlreadyApplied));
        assert_eq!(l.balance(ALICE), 10);
    }

    #[test]
    fn escrows_never_overdraw_and_only_clawbacks_make_debt() {
        let mut l = Ledger::new();
        l.apply(&Transfer::grant(1, 1, 10)).unwrap();
        l.apply(&hold(1, 1, 10)).unwrap();
        assert!(matches!(
            l.apply(&t(
                EntryKey::Payment(1),
                Party::Escrow(1),
                BOB,
                11,
                Reason::Payment
            )),
            Err(LedgerError::Overdrawn { .. })
        ));
        l.apply(&t(
            EntryKey::Payment(1),
            Party::Escrow(1),
            BOB,
            10,
            Reason::Payment,
        ))
        .unwrap();
        // BOB spent it elsewhere... then the payment is clawed back: BOB is in debt.
        l.apply(&hold(2, 2, 10)).unwrap();
        l.apply(&t(
            EntryKey::Clawback(1),
            BOB,
            Party::Treasury,
            10,
            Reason::Clawback,
        ))
        .unwrap();
        assert_eq!(l.balance(BOB), -10);
        l.check().unwrap();
        // In debt, BOB cannot hold anything.
        assert_eq!(
            l.apply(&hold(3, 2, 1)),
            Err(LedgerError::InsufficientCredits {
                needed: 1,
                available: 0
            })
        );
    }

    #[test]
    fn malformed_transfers_are_refused() {
        let mut l = Ledger::new();
        assert_eq!(
            l.apply(&Transfer::grant(1, 1, 0)),
            Err(LedgerError::NotPositive(0))
        );
        assert_eq!(
            l.apply(&t(EntryKey::Grant(1), ALICE, ALICE, 5, Reason::Grant)),
            Err(LedgerError::SameParty(ALICE))
        );
        assert_eq!(l, Ledger::new());
    }

    #[test]
    fn parties_and_keys_have_stable_wire_forms() {
        assert_eq!(
            serde_json::to_string(&Party::Account(3)).unwrap(),
            r#"{"kind":"account","id":3}"#
        );
        assert_eq!(
            serde_json::to_string(&Party::Mint).unwrap(),
            r#"{"kind":"mint"}"#
        );
        assert_eq!(
            serde_json::to_string(&EntryKey::Payment(9)).unwrap(),
            r#"{"kind":"payment","id":9}"#
        );
        assert_eq!(Reason::Clawback.to_string(), "clawback");
    }

    #[test]
    fn parts_round_trip() {
        for p in [
            Party::Mint,
            Party::Treasury,
            Party::Account(4),
            Party::Escrow(9),
        ] {
            let (k, i) = p.to_parts();
            assert_eq!(Party::from_parts(k, i), Some(p));
        }
        for key in [
            EntryKey::Grant(1),
            EntryKey::Welcome(2),
            EntryKey::Hold(3),
            EntryKey::Payment(4),
            EntryKey::Fee(5),
            EntryKey::Clawback(6),
            EntryKey::Release(7),
        ] {
            let (k, i) = key.to_parts();
            assert_eq!(EntryKey::from_parts(k, i), Some(key));
        }
        assert_eq!(Party::from_parts("bank", 1), None);
        for r in [
            Reason::Grant,
            Reason::Hold,
            Reason::Payment,
            Reason::Fee,
            Reason::Release,
            Reason::Clawback,
        ] {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
    }

    #[test]
    fn a_reverted_transfer_moves_back_and_may_apply_again() {
        let mut l = Ledger::new();
        l.apply(&Transfer::welcome(1, 100)).unwrap();
        let before = l.clone();
        let h = hold(3, 1, 40);
        l.apply(&h).unwrap();
        l.revert(&h);
        assert_eq!(l.balance(ALICE), 100);
        assert_eq!(l.balance(Party::Escrow(3)), 0);
        assert!(!l.contains(h.key));
        l.check().unwrap();
        l.revert(&h);
        assert_eq!(l.balance(ALICE), before.balance(ALICE));
        assert_eq!(l.apply(&h), Ok(Applied::Moved));
    }
}
