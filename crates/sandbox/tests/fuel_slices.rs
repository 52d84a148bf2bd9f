//! Fuel handed out in slices (`runegrid.refuel`): the fuel used and the outcome do not depend
//! on where the slices are cut, wall time is still enforced, and modules instrumented before
//! the refuel import existed still run (on the engine with epoch interruption).

mod common;

use common::{limits, module, program, run, run_in, sandbox, try_run};
use runegrid_core::{ExecStatus, FailureKind, Limits};
use runegrid_instrument::{DEPTH_GLOBAL, FUEL_GLOBAL, MEMORY_DENIED_GLOBAL, MEMORY_LIMIT_GLOBAL};
use runegrid_sandbox::{FUEL_SLICE, Sandbox, SandboxError};

/// Loops of every shape (nested, left by `br`, `br_if` and `br_table` across several loops,
/// with a result, with a parameter), recursion (direct and through the table), calls of
/// functions that cannot be re-entered (no refuel check on entry) and a bulk fill; prints what
/// they computed.
const SHAPES: &str = r#"
  (func $fib (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func $nested (result i32) (local $i i32) (local $j i32) (local $acc i32)
    (block $out
      (loop $outer
        (local.set $j (i32.const 0))
        (block $next
          (loop $inner
            (local.set $acc (i32.add (local.get $acc) (i32.add (local.get $i) (local.get $j))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br_if $out (i32.gt_u (local.get $acc) (i32.const 2000000)))
            (br_table $inner $next $out
              (select (i32.const 0)
                (select (i32.const 1) (i32.const 2) (i32.lt_u (local.get $i) (i32.const 300)))
                (i32.lt_u (local.get $j) (i32.const 40))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.add (local.get $acc) (i32.mul (local.get $i) (i32.const 1000))))
  (func $with_result (result i32) (local $x i32)
    (loop $l (result i32)
      (local.set $x (i32.add (local.get $x) (i32.const 3)))
      (br_if $l (i32.lt_u (local.get $x) (i32.const 30000)))
      (local.get $x)))
  (func $with_param (result i32) (local $t i32)
    (i32.const 0)
    (loop $l (param i32) (result i32)
      (i32.add (i32.const 1))
      (local.tee $t)
      (br_if $l (i32.lt_u (local.get $t) (i32.const 20000)))))
  (type $t (func (param i32) (result i32)))
  (table 1 funcref)
  (elem (i32.const 0) $through_table)
  (func $through_table (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 1))
      (else (i32.add (i32.const 1)
        (call_indirect (type $t) (i32.sub (local.get 0) (i32.const 1)) (i32.const 0))))))
  (func $h (param i32) (result i32) (i32.add (i32.mul (local.get 0) (i32.const 3)) (i32.const 1)))
  (func $g (param i32) (result i32) (call $h (call $h (call $h (local.get 0)))))
  (func $k (param i32) (result i32) (call $g (call $g (call $g (local.get 0)))))
  (func (export "_start")
    (i32.store (i32.const 120) (call $through_table (i32.const 500)))
    (i32.store (i32.const 124) (call $k (i32.const 1)))
    (memory.fill (i32.const 1024) (i32.const 7) (i32.const 60000))
    (i32.store (i32.const 100) (call $fib (i32.const 18)))
    (i32.store (i32.const 104) (call $nested))
    (i32.store (i32.const 108) (call $with_result))
    (i32.store (i32.const 112) (call $with_param))
    (i32.store (i32.const 116) (i32.load (i32.const 50000)))
    (call $print (i32.const 100) (i32.const 28)))"#;

#[test]
fn every_slice_gives_the_same_result() {
    let wasm = runegrid_instrument::instrument(module(SHAPES).as_bytes(), &Default::default())
        .unwrap()
        .bytes;
    let whole = run(&sandbox().compile(&wasm).unwrap(), limits());
    assert_eq!(whole.execution.status, ExecStatus::Exited { code: 0 });
    let words: Vec<u32> = whole
        .execution
        .stdout
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(words[0], 2584, "fib(18)");
    assert_eq!(words[2], 30000);
    assert_eq!(words[3], 20000);
    assert_eq!(words[4], 0x0707_0707);
    assert_eq!(words[5], 501, "recursion through the table");
    assert_eq!(
        words[6], 29524,
        "calls of functions that cannot be re-entered"
    );
    let used = whole.execution.fuel;
    for slice in [1, 2, 3, 10, 1000, 100_000] {
        let sliced = Sandbox::with_fuel_slice(slice).unwrap();
        let p = sliced.compile(&wasm).unwrap();
        assert_eq!(
            run_in(&sliced, &p, limits()).execution,
            whole.execution,
            "slice {slice}"
        );
        // Running out anywhere gives what running out gives with the whole limit at once.
        for fuel in [used - 1, used / 2, used / 3 + 7, 1000, 61] {
            let l = Limits { fuel, ..limits() };
            let out = run_in(&sliced, &p, l).execution;
            assert_eq!(
                out.status,
                ExecStatus::OutOfFuel,
                "slice {slice}, limit {fuel}"
            );
            assert_eq!(out, run(&sandbox().compile(&wasm).unwrap(), l).execution);
        }
    }
}

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
    times_out(&p);
}

/// Runs `p` with all the fuel there is and 100 ms: it must end as a timeout.
fn times_out(p: &runegrid_sandbox::Program) {
    let l = Limits {
        fuel: Limits::MAX_FUEL,
        wall_time_ms: 100,
        ..limits()
    };
    let err = try_run(p, &[], &[], b"", 0, l).unwrap_err();
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
    times_out(&p);
}
