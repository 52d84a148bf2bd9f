//! Prices: what work costs, in micro-credits, from its fuel and the grid's demand.
//!
//! Work is priced by fuel, the one measure of work that is the same on every replica and every
//! engine, so no worker's claim about its own speed or runtime enters a price. The price per
//! 10^9 fuel is a base price × a demand [`Multiplier`] in [0.5, 2]; the submitter pays it plus
//! a protocol fee (parts per million of the charge, default 5%) that goes to the treasury:
//!
//! ```text
//! price  = ceil(base × multiplier / 10^6)          micro-credits per 10^9 fuel (multiplier in ppm)
//! charge = ceil(fuel × price / 10^9)               what the worker's owner earns
//! fee    = ceil(charge × fee_ppm / 10^6)           what the treasury earns
//! target = clamp(10^6 × (queued + 1) / (free + 1), 0.5 × 10^6, 2 × 10^6)
//! ```
//!
//! `queued` is the number of tasks waiting for a worker and `free` the number of free worker
//! slots; the multiplier moves an eighth of the way to its target at each step (the coordinator
//! steps it once a second), so it follows demand without jumping task by task. Everything is
//! integer arithmetic, rounded up, checked for overflow.

use serde::{Deserialize, Serialize};

use crate::ledger::Micros;

/// Parts per million.
pub const PPM: u64 = 1_000_000;
/// Fuel per priced unit.
pub const FUEL_UNIT: u64 = 1_000_000_000;
/// The multiplier's bounds, in ppm.
pub const MIN_MULTIPLIER: u64 = PPM / 2;
pub const MAX_MULTIPLIER: u64 = 2 * PPM;
/// The multiplier moves 1/2^SMOOTHING_SHIFT of the way to its target per step.
pub const SMOOTHING_SHIFT: u32 = 3;

/// A price the rules cannot compute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("the amount is too large to price (over {max} micro-credits)", max = Micros::MAX)]
    Overflow,
}

/// The grid's price settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceParams {
    /// Micro-credits per 10^9 fuel at multiplier 1.
    pub base: u64,
    /// The protocol fee, in ppm of a charge.
    pub fee_ppm: u64,
}

impl Default for PriceParams {
    /// One credit per 10^9 fuel, a 5% fee.
    fn default() -> PriceParams {
        PriceParams {
            base: 1_000_000,
            fee_ppm: 50_000,
        }
    }
}

impl PriceParams {
    /// The price per 10^9 fuel at `multiplier` (ppm).
    pub fn price(&self, multiplier: u64) -> Result<u64, PriceError> {
        mul_div_ceil(self.base, multiplier, PPM)
    }

    /// The fee on `charge`.
    pub fn fee(&self, charge: Micros) -> Result<Micros, PriceError> {
        to_micros(mul_div_ceil(charge.max(0) as u64, self.fee_ppm, PPM)?)
    }

    /// What the submitter of a job pays at most: every task run `max_attempts` times to its
    /// fuel limit, each attempt charged at `price` with its fee. The job's hold.
    pub fn worst_case(
        &self,
        tasks: u64,
        max_attempts: u64,
        fuel_limit: u64,
        price: u64,
    ) -> Result<Micros, PriceError> {
        let per_attempt = charge(fuel_limit, price)?;
        let per_attempt = per_attempt
            .checked_add(self.fee(per_attempt)?)
            .ok_or(PriceError::Overflow)?;
        let attempts = tasks
            .checked_mul(max_attempts)
            .ok_or(PriceError::Overflow)?;
        to_micros(
            u64::try_from(per_attempt)
                .ok()
                .and_then(|p| p.checked_mul(attempts))
                .ok_or(PriceError::Overflow)?,
        )
    }
}

/// What `fuel` costs at `price` micro-credits per 10^9 fuel, rounded up.
pub fn charge(fuel: u64, price: u64) -> Result<Micros, PriceError> {
    to_micros(mul_div_ceil(fuel, price, FUEL_UNIT)?)
}

/// The multiplier demand asks for, in ppm: `(queued + 1) / (free + 1)`, within
/// [[`MIN_MULTIPLIER`], [`MAX_MULTIPLIER`]].
pub fn target_multiplier(queued: u64, free_slots: u64) -> u64 {
    let ratio = (u128::from(queued) + 1) * u128::from(PPM) / (u128::from(free_slots) + 1);
    ratio.clamp(u128::from(MIN_MULTIPLIER), u128::from(MAX_MULTIPLIER)) as u64
}

/// The demand multiplier, smoothed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multiplier {
    /// In ppm, within the bounds.
    pub ppm: u64,
}

impl Default for Multiplier {
    fn default() -> Multiplier {
        Multiplier { ppm: PPM }
    }
}

impl Multiplier {
    /// Moves an eighth of the way (at least one ppm) towards `target`, never past it.
    pub fn step(&mut self, target: u64) {
        let target = target.clamp(MIN_MULTIPLIER, MAX_MULTIPLIER);
        let current = self.ppm.clamp(MIN_MULTIPLIER, MAX_MULTIPLIER);
        self.ppm = if target > current {
            current + ((target - current) >> SMOOTHING_SHIFT).max(1)
        } else if target < current {
            current - ((current - target) >> SMOOTHING_SHIFT).max(1)
        } else {
            current
        };
    }
}

fn mul_div_ceil(a: u64, b: u64, d: u64) -> Result<u64, PriceError> {
    let product = u128::from(a) * u128::from(b);
    u64::try_from(product.div_ceil(u128::from(d))).map_err(|_| PriceError::Overflow)
}

fn to_micros(v: u64) -> Result<Micros, PriceError> {
    Micros::try_from(v).map_err(|_| PriceError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_formula_on_round_numbers() {
        let p = PriceParams::default();
        assert_eq!(p.price(PPM), Ok(1_000_000));
        assert_eq!(p.price(MIN_MULTIPLIER), Ok(500_000));
        assert_eq!(charge(2_000_000_000, 1_000_000), Ok(2_000_000));
        assert_eq!(
            charge(1, 1_000_000),
            Ok(1),
            "any work costs at least a micro-credit"
        );
        assert_eq!(charge(0, 1_000_000), Ok(0));
        assert_eq!(p.fee(2_000_000), Ok(100_000));
        assert_eq!(p.fee(1), Ok(1));
        // 10 tasks × 3 attempts × (1 credit + 5%).
        assert_eq!(
            p.worst_case(10, 3, 1_000_000_000, 1_000_000),
            Ok(31_500_000)
        );
        assert_eq!(
            p.worst_case(u64::MAX, 2, 1_000_000_000, 1_000_000),
            Err(PriceError::Overflow)
        );
    }

    #[test]
    fn demand_sets_the_target() {
        assert_eq!(
            target_multiplier(0, 0),
            PPM,
            "no work and no workers: neutral"
        );
        assert_eq!(
            target_multiplier(0, 10),
            MIN_MULTIPLIER,
            "idle workers: cheap"
        );
        assert_eq!(target_multiplier(10, 10), PPM);
        assert_eq!(
            target_multiplier(1_000, 0),
            MAX_MULTIPLIER,
            "a queue and no slot"
        );
        assert_eq!(target_multiplier(u64::MAX, 0), MAX_MULTIPLIER);
    }

    proptest! {
        #[test]
        fn the_target_is_bounded_and_monotone(q in 0u64..1_000_000, f in 0u64..1_000_000, d in 0u64..1000) {
            let t = target_multiplier(q, f);
            prop_assert!((MIN_MULTIPLIER..=MAX_MULTIPLIER).contains(&t));
            prop_assert!(target_multiplier(q + d, f) >= t, "more queued work never lowers it");
            prop_assert!(target_multiplier(q, f + d) <= t, "more free slots never raise it");
        }

        #[test]
        fn smoothing_approaches_without_overshooting(start in MIN_MULTIPLIER..=MAX_MULTIPLIER, target in 0u64..3 * PPM) {
            let mut m = Multiplier { ppm: start };
            let goal = target.clamp(MIN_MULTIPLIER, MAX_MULTIPLIER);
            let mut last_gap = start.abs_diff(goal);
            for _ in 0..400 {
                m.step(target);
                prop_assert!((MIN_MULTIPLIER..=MAX_MULTIPLIER).contains(&m.ppm));
                let gap = m.ppm.abs_diff(goal);
                prop_assert!(gap <= last_gap);
                prop_assert!((m.ppm >= goal) == (start >= goal) || m.ppm == goal, "no overshoot");
                last_gap = gap;
            }
            prop_assert_eq!(m.ppm, goal, "it gets there");
        }

        #[test]
        fn a_step_moves_at_most_an_eighth_of_the_way(start in MIN_MULTIPLIER..=MAX_MULTIPLIER, target in MIN_MULTIPLIER..=MAX_MULTIPLIER) {
            let mut m = Multiplier { ppm: start };
            m.step(target);
            prop_assert!(m.ppm.abs_diff(start) <= (start.abs_diff(target) / 8).max(1));
        }

        #[test]
        fn charges_round_up_and_grow_with_fuel_and_price(fuel in 0u64..1u64 << 50, price in 0u64..1u64 << 30, more in 0u64..1u64 << 20) {
            let c = charge(fuel, price).unwrap();
            let exact = u128::from(fuel) * u128::from(price);
            prop_assert!(c as u128 * u128::from(FUEL_UNIT) >= exact);
            prop_assert!((c as u128) * u128::from(FUEL_UNIT) < exact + u128::from(FUEL_UNIT));
            prop_assert!(charge(fuel + more, price).unwrap() >= c);
            prop_assert!(charge(fuel, price + more).unwrap() >= c);
        }

        #[test]
        fn the_worst_case_covers_every_attempt(tasks in 0u64..1000, attempts in 1u64..10, fuel in 0u64..1u64 << 40, price in 0u64..1u64 << 24, fee_ppm in 0u64..200_000) {
            let p = PriceParams { base: 1_000_000, fee_ppm };
            let hold = p.worst_case(tasks, attempts, fuel, price).unwrap();
            let one = charge(fuel, price).unwrap();
            let all = (one + p.fee(one).unwrap()) as u128 * u128::from(tasks) * u128::from(attempts);
            prop_assert_eq!(hold as u128, all);
        }
    }
}
