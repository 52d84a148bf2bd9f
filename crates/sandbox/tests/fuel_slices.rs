//! Fuel handed out in slices (`runegrid.refuel`): the fuel used and the outcome do not depend
//! on where the slices are cut, wall time is still enforced, and modules instrumented before
//! the refuel import existed still run (on the engine with epoch interruption).

mod common;

use common::{limits, module, program, run, sandbox, try_run};
use runegrid_core::{ExecStatus, FailureKind, Limits};
use runegrid_instrument::{DEPTH_GLOBAL, FUEL_GLOBAL, MEMORY_DENIED_GLOBAL, MEMORY_LIMIT_GLOBAL};
use runegrid_sandbox::{FUEL_SLICE, SandboxError};

/// Counts `n` down to zero: costs 3 + n × 7 + 2.
fn countdown(n: u64) -> String {
    module(&format!(
        r#"(func (export "_start") (local $i i64)
            i64.const {n}
            local.set $i
            loop $l
              local.get $i
              i64.const 1
              i64.sub
              local.tee $i
              i64.eqz
              i32.eqz
              br_if $l
            end)"#
    ))
}

#[test]
fn a_run_over_many_slices_costs_what_the_cost_model_says() {
    // 7 instructions per iteration; enough iterations for several slices.
    let n = (3 * FUEL_SLICE as u64) / 7 + 11;
    let cost = 3 + n * 7 + 2;
    let p = program(&countdown(n));
    let out = run(&p, limits());
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    assert_eq!(out.execution.fuel, cost);

    // Exactly enough fuel is enough; one less runs out, with the whole limit used.
    let exact = Limits {
        fuel: cost,
        ..limits()
    };
    let out = run(&p, exact);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    assert_eq!(out.execution.fuel, cost);
    let short = Limits {
        fuel: cost - 1,
        ..limits()
    };
    let out = run(&p, short);
    assert_eq!(out.execution.status, ExecStatus::OutOfFuel);
    assert_eq!(out.execution.fuel, cost - 1);
}

#[test]
fn running_out_near_a_slice_boundary_uses_the_whole_limit() {
    let p = program(&module(r#"(func (export "_start") (loop $l (br $l)))"#));
    let slice = FUEL_SLICE as u64;
    for fuel in [1, slice - 1, slice, slice + 1, 2 * slice, 2 * slice + 3] {
        let l = Limits { fuel, ..limits() };
        let out = run(&p, l);
        assert_eq!(out.execution.status, ExecStatus::OutOfFuel, "limit {fuel}");
        assert_eq!(out.execution.fuel, fuel, "limit {fuel}");
    }
}

#[test]
fn a_loop_that_calls_a_function_times_out_with_plenty_of_fuel() {
    let p = program(&module(
        r#"(func $f (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
        (func (export "_start") (local $x i32)
          (loop $l (local.set $x (call $f (local.get $x))) (br $l)))"#,
    ));
    let l = Limits {
        fuel: Limits::MAX_FUEL,
        wall_time_ms: 100,
        ..limits()
    };
    let err = try_run(&p, &[], &[], b"", 0, l).unwrap_err();
    assert_eq!(err, SandboxError::Timeout { wall_time_ms: 100 });
    assert_eq!(err.failure_kind(), FailureKind::WallTime);
}

/// A module as runegrid-instrument wrote them before the refuel import: the runegrid globals,
/// no import but WASI, and its own fuel accounting ending in `unreachable`.
fn legacy(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (global $fuel (export "{FUEL_GLOBAL}") (mut i64) (i64.const 0))
          (global (export "{DEPTH_GLOBAL}") (mut i32) (i32.const 4096))
          (global (export "{MEMORY_LIMIT_GLOBAL}") (mut i32) (i32.const 0))
          (global (export "{MEMORY_DENIED_GLOBAL}") (mut i32) (i32.const 0))
          (data (i32.const 64) "legacy\n")
          (func $spend (param i64)
            (global.set $fuel (i64.sub (global.get $fuel) (local.get 0)))
            (if (i64.lt_s (global.get $fuel) (i64.const 0)) (then unreachable)))
          {body})"#
    ))
    .unwrap()
}

#[test]
fn a_module_instrumented_before_the_refuel_import_still_runs() {
    let p = sandbox()
        .compile(&legacy(
            r#"(func (export "_start")
              (call $spend (i64.const 10))
              (i32.store (i32.const 0) (i32.const 64))
              (i32.store (i32.const 4) (i32.const 7))
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#,
        ))
        .unwrap();
    let l = Limits {
        fuel: FUEL_SLICE as u64 * 3,
        ..limits()
    };
    let out = run(&p, l);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    assert_eq!(out.execution.stdout, b"legacy\n");
    assert_eq!(out.execution.fuel, 10);

    // Its fuel is the whole limit at once: spending more than a slice is fine, more than the
    // limit is out of fuel.
    let p = sandbox()
        .compile(&legacy(&format!(
            r#"(func (export "_start") (call $spend (i64.const {})))"#,
            FUEL_SLICE * 2
        )))
        .unwrap();
    assert_eq!(run(&p, l).execution.fuel, FUEL_SLICE as u64 * 2);
    let out = run(
        &p,
        Limits {
            fuel: FUEL_SLICE as u64,
            ..limits()
        },
    );
    assert_eq!(out.execution.status, ExecStatus::OutOfFuel);
}

#[test]
fn a_module_instrumented_before_the_refuel_import_still_times_out() {
    let p = sandbox()
        .compile(&legacy(
            r#"(func (export "_start") (loop $l (call $spend (i64.const 1)) (br $l)))"#,
        ))
        .unwrap();
    let l = Limits {
        fuel: Limits::MAX_FUEL,
        wall_time_ms: 100,
        ..limits()
    };
    let err = try_run(&p, &[], &[], b"", 0, l).unwrap_err();
    assert_eq!(err, SandboxError::Timeout { wall_time_ms: 100 });
}
