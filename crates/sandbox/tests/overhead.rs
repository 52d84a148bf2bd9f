//! Measurements, not checks: per-run overhead and the cost of the injected metering and NaN
//! canonicalization. Ignored by default (timings on a shared machine are noisy); run with
//!
//! ```text
//! cargo test --release -p runegrid-sandbox --test overhead -- --ignored --nocapture --test-threads 1
//! ```

mod common;

use common::{limits, program, program_with, run, sandbox};
use runegrid_core::{ExecStatus, Limits};
use runegrid_instrument::Options;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore]
fn per_run_overhead_of_a_noop_module() {
    let p = program(r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    for _ in 0..200 {
        run(&p, limits());
    }
    let n = 2000;
    let mut times = Vec::with_capacity(n);
    let all = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let out = run(&p, limits());
        times.push(t.elapsed());
        assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    }
    let mean = all.elapsed() / n as u32;
    println!(
        "no-op run: median {:?}, mean {mean:?} over {n} runs",
        median(times)
    );
}

/// Module text with the runegrid exports declared by hand and no metering: the baseline.
fn uninstrumented(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
        (global (export "__runegrid_fuel") (mut i64) (i64.const 0))
        (global (export "__runegrid_depth") (mut i32) (i32.const 4096))
        (global (export "__runegrid_memory_limit_pages") (mut i32) (i32.const 0))
        (global (export "__runegrid_memory_denied") (mut i32) (i32.const 0))
        {body})"#
    ))
    .unwrap()
}

/// Best of 5 runs of a module.
fn time_best(p: &runegrid_sandbox::Program) -> Duration {
    let l = Limits {
        fuel: Limits::MAX_FUEL,
        ..limits()
    };
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let out = run(p, l);
            assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn compare(name: &str, body: &str, native: impl Fn() -> Duration) {
    let plain = sandbox().compile(&uninstrumented(body)).unwrap();
    let metered = program_with(
        &format!(r#"(module (memory (export "memory") 1) {body})"#),
        &Options {
            nan_canonicalization: false,
            ..Options::default()
        },
    );
    let full = program_with(
        &format!(r#"(module (memory (export "memory") 1) {body})"#),
        &Options::default(),
    );
    let n = (0..5).map(|_| native()).min().unwrap();
    let (p, m, f) = (time_best(&plain), time_best(&metered), time_best(&full));
    let r = |d: Duration| d.as_secs_f64() / n.as_secs_f64();
    println!(
        "{name}: native {n:?}; wasm plain {p:?} ({:.2}x), + metering {m:?} ({:.2}x), + metering + NaN {f:?} ({:.2}x)",
        r(p),
        r(m),
        r(f)
    );
}

const N: i32 = 20_000_000;

#[test]
#[ignore]
fn cost_of_metering_and_nan_canonicalization() {
    // A dependent float chain (as in DEPENDENCIES.md's "float loop").
    compare(
        "float loop",
        &format!(
            r#"(func (export "_start") (local $i i32) (local $x f64)
              (loop $l
                (local.set $x (f64.add (f64.mul (local.get $x) (f64.const 0.999999)) (f64.const 0.5)))
                (br_if $l (i32.ne (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const {N}))))
              (f64.store (i32.const 0) (local.get $x)))"#
        ),
        || {
            let t = Instant::now();
            let mut x = 0f64;
            for _ in 0..black_box(N) {
                x = black_box(x) * 0.999999 + 0.5;
            }
            black_box(x);
            t.elapsed()
        },
    );
    // Independent float work over memory: dot product of two 4096-element f64 arrays.
    let reps = N / 4096;
    compare(
        "dot product",
        &format!(
            r#"(func (export "_start") (local $r i32) (local $i i32) (local $s f64)
              (loop $rep
                (local.set $i (i32.const 0))
                (loop $l
                  (local.set $s (f64.add (local.get $s)
                    (f64.mul (f64.load (local.get $i)) (f64.load offset=32768 (local.get $i)))))
                  (br_if $l (i32.ne (local.tee $i (i32.add (local.get $i) (i32.const 8))) (i32.const 32768))))
                (br_if $rep (i32.ne (local.tee $r (i32.add (local.get $r) (i32.const 1))) (i32.const {reps}))))
              (f64.store (i32.const 0) (local.get $s)))"#
        ),
        || {
            let a = vec![0f64; 4096];
            let b = vec![0f64; 4096];
            let t = Instant::now();
            let mut s = 0f64;
            for _ in 0..black_box(reps) {
                for i in 0..4096 {
                    s += black_box(a[i]) * b[i];
                }
            }
            black_box(s);
            t.elapsed()
        },
    );
    // An integer loop (xorshift).
    compare(
        "integer loop",
        &format!(
            r#"(func (export "_start") (local $i i32) (local $x i64)
              (local.set $x (i64.const 88172645463325252))
              (loop $l
                (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
                (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
                (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
                (br_if $l (i32.ne (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const {N}))))
              (i64.store (i32.const 0) (local.get $x)))"#
        ),
        || {
            let t = Instant::now();
            let mut x = 88172645463325252u64;
            for _ in 0..black_box(N) {
                x = black_box(x);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            black_box(x);
            t.elapsed()
        },
    );
    // Calls: a small function called in a loop (depth accounting on every call).
    compare(
        "call loop",
        &format!(
            r#"(func $f (param i32) (result i32) (i32.add (local.get 0) (i32.const 3)))
            (func (export "_start") (local $i i32) (local $x i32)
              (loop $l
                (local.set $x (call $f (local.get $x)))
                (br_if $l (i32.ne (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const {N}))))
              (i32.store (i32.const 0) (local.get $x)))"#
        ),
        || {
            #[inline(never)]
            fn f(x: i32) -> i32 {
                black_box(x) + 3
            }
            let t = Instant::now();
            let mut x = 0;
            for _ in 0..black_box(N) {
                x = f(x);
            }
            black_box(x);
            t.elapsed()
        },
    );
}
