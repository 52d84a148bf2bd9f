//! Fuel slices and the wall-time deadline: the host's side of the module's
//! `runegrid.refuel` import (see `runegrid_instrument`, "Fuel slices").
//!
//! A run's fuel global starts at one [`SLICE`] (or the whole limit, if smaller) and the rest
//! waits in the [`Tank`]'s reserve. Each time the module's fuel goes below zero it calls
//! [`refuel`], which checks the deadline and moves fuel from the reserve into the global. The
//! module therefore comes back to the host at least once per slice of work, which is what
//! enforces wall time: the engine needs no interruption checks of its own (wasmtime's epoch
//! checks at every loop head and function entry cost 20-30% on loop-heavy programs).
//!
//! The slices are invisible to the module: the fuel left is always the global plus the reserve,
//! so the fuel used, and every digest, is the same whatever [`SLICE`] is.

use crate::wasi::Host;
use std::time::Instant;
use wasmtime::{Caller, Global, Linker, Val};

/// Fuel handed to the module at a time: a few milliseconds of work.
pub const SLICE: i64 = 1 << 24;

/// The fuel of one run not yet handed to the module, and when the run must end.
pub(crate) struct Tank {
    /// The module's fuel global (set once the instance exists).
    pub global: Option<Global>,
    pub reserve: i64,
    pub deadline: Instant,
}

impl Tank {
    /// A tank for `limit` fuel and a run that must end by `deadline`; returns it with the
    /// first slice, the fuel global's starting value.
    pub fn new(limit: i64, deadline: Instant) -> (Tank, i64) {
        let first = limit.min(SLICE);
        let tank = Tank {
            global: None,
            reserve: limit - first,
            deadline,
        };
        (tank, first)
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

/// Ends the run if its deadline passed; otherwise tops the fuel global up to zero or above
/// from the reserve, or ends the run as out of fuel when the reserve cannot.
fn refuel(mut caller: Caller<'_, Host>) -> wasmtime::Result<()> {
    let Some(global) = caller.data().tank.global else {
        wasmtime::bail!("refuel called before the run started");
    };
    if Instant::now() >= caller.data().tank.deadline {
        return Err(Interrupted.into());
    }
    let mut fuel = global.get(&mut caller).i64().unwrap_or(0);
    let tank = &mut caller.data_mut().tank;
    if fuel < 0 {
        let give = tank
            .reserve
            .min(fuel.saturating_neg().saturating_add(SLICE));
        tank.reserve -= give;
        fuel += give;
        global.set(&mut caller, Val::I64(fuel))?;
    }
    if fuel < 0 {
        return Err(Empty.into());
    }
    Ok(())
}
