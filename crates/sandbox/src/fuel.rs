//! Fuel slices and the wall-time deadline: the host's side of the module's
//! `runegrid.refuel` import (see `runegrid_instrument`, "Fuel slices").
//!
//! A run's fuel global starts at one slice (or the whole limit, if smaller) and the rest waits
//! in the [`Tank`]'s reserve. The module calls [`refuel`] at its refuel checks (function entry,
//! after a call, at a loop's head, before a host call, after a bulk charge) when the global is
//! below the refill threshold (0 once the reserve is empty, so that the check that finds the
//! fuel spent ends the run); `refuel`
//! checks the deadline and moves fuel from the reserve into the global. The module therefore
//! comes back to the host at least once per slice of work, which is what enforces wall time:
//! the engine needs no interruption checks of its own (wasmtime's epoch checks at every loop
//! head and function entry, each with a call on its slow path, cost 20-30% on loop-heavy
//! programs).
//!
//! The slices are invisible to the module: the fuel left is always the global plus the reserve,
//! and the global only goes below zero once the reserve is empty, so the fuel used, and every
//! digest, is the same whatever the slice is.

use crate::wasi::Host;
use std::time::Instant;
use wasmtime::{Caller, Global, Linker, Val};

/// Fuel handed to the module at a time, above the module's margin: a few milliseconds of work.
pub const SLICE: i64 = 1 << 24;

/// The fuel of one run not yet handed to the module, and when the run must end.
pub(crate) struct Tank {
    /// The module's fuel and refill-threshold globals (set once the instance exists).
    pub globals: Option<(Global, Global)>,
    pub reserve: i64,
    /// What `refuel` tops the fuel global up to: the slice plus the module's margin.
    pub fill_to: i64,
    pub deadline: Instant,
}

impl Tank {
    /// A tank that holds nothing (before a run starts).
    pub fn empty() -> Tank {
        Tank {
            globals: None,
            reserve: 0,
            fill_to: 0,
            deadline: Instant::now(),
        }
    }

    /// A tank for `limit` fuel, slices of `slice` above the module's `margin`, and a run that
    /// must end by `deadline`; returns it with the fuel global's and the refill threshold's
    /// starting values.
    pub fn new(limit: i64, slice: i64, margin: i64, deadline: Instant) -> (Tank, i64, i64) {
        let fill_to = slice.max(1).saturating_add(margin.max(0));
        let first = limit.min(fill_to);
        let tank = Tank {
            globals: None,
            reserve: limit - first,
            fill_to,
            deadline,
        };
        let refill = tank.threshold(margin);
        (tank, first, refill)
    }

    /// The refill threshold while fuel is left in reserve: the margin; then 0, so that the
    /// module calls `refuel` (which ends the run) once its fuel is spent.
    fn threshold(&self, margin: i64) -> i64 {
        if self.reserve > 0 { margin } else { 0 }
    }
}

/// The run passed its wall-time deadline (not deterministic: the attempt is lost).
#[derive(Debug, thiserror::Error)]
#[error("wall time limit reached")]
pub(crate) struct Interrupted;

/// The run spent all its fuel (the fuel global is left below zero).
#[derive(Debug, thiserror::Error)]
#[error("out of fuel")]
pub(crate) struct Empty;

/// Defines `runegrid.refuel`.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        runegrid_instrument::HOST_MODULE,
        runegrid_instrument::REFUEL_FUNCTION,
        refuel,
    )?;
    Ok(())
}

/// Ends the run if its deadline passed; otherwise tops the fuel global up from the reserve, or
/// ends the run as out of fuel when the global is below zero and the reserve cannot cover it.
fn refuel(mut caller: Caller<'_, Host>) -> wasmtime::Result<()> {
    let Some((fuel_global, refill_global)) = caller.data().tank.globals else {
        wasmtime::bail!("refuel called before the run started");
    };
    if Instant::now() >= caller.data().tank.deadline {
        return Err(Interrupted.into());
    }
    let mut fuel = fuel_global.get(&mut caller).i64().unwrap_or(0);
    let margin = refill_global.get(&mut caller).i64().unwrap_or(0);
    let tank = &mut caller.data_mut().tank;
    let give = tank.reserve.min(tank.fill_to.saturating_sub(fuel).max(0));
    tank.reserve -= give;
    fuel += give;
    let refill = tank.threshold(margin);
    fuel_global.set(&mut caller, Val::I64(fuel))?;
    refill_global.set(&mut caller, Val::I64(refill))?;
    if fuel < 0 {
        return Err(Empty.into());
    }
    Ok(())
}
