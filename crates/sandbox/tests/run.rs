//! Behaviour of instrumented modules in the sandbox: WASI, limits, traps, determinism.

mod common;

use common::{WRITE_HI, limits, module, program, program_with, run, sandbox, try_run};
use runegrid_core::{ExecStatus, Limits, TrapKind};
use runegrid_instrument::Options;
use runegrid_sandbox::wasi::SplitMix64;
use runegrid_sandbox::{SandboxError, TaskRun};
use std::sync::Arc;

const HELLO: &str = r#"
  (data (i32.const 64) "hello\n")
  (func (export "_start") (call $print (i32.const 64) (i32.const 6)))"#;

#[test]
fn hello_world_streams_stdout() {
    let p = program(&module(HELLO));
    let mut chunks = Vec::new();
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: b"",
        seed: 0,
        limits: limits(),
        blobs: &[],
    };
    let out = sandbox()
        .run(&p, &task, &mut |c| chunks.push(c.to_vec()))
        .unwrap();
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    assert_eq!(out.execution.stdout, b"hello\n");
    assert_eq!(chunks, [b"hello\n".to_vec()]);
    assert!(out.execution.fuel > 0);
    assert!(out.stderr.is_empty());
}

#[test]
fn echoes_args_env_and_stdin() {
    let p = program(&module(
        r#"
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (func (export "_start") (local $n i32)
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 2048)))
    (call $print (i32.const 2048) (i32.load (i32.const 20)))
    ;; argv[1], through the pointer table, one byte
    (call $print (i32.load (i32.const 1028)) (i32.const 1))
    ;; argc as one digit
    (i32.store8 (i32.const 24) (i32.add (i32.const 48) (i32.load (i32.const 16))))
    (call $print (i32.const 24) (i32.const 1))
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $environ_get (i32.const 1024) (i32.const 4096)))
    (call $print (i32.const 4096) (i32.load (i32.const 20)))
    (block $done
      (loop $more
        (i32.store (i32.const 32) (i32.const 8192))
        (i32.store (i32.const 36) (i32.const 7))
        (drop (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
        (local.set $n (i32.load (i32.const 40)))
        (br_if $done (i32.eqz (local.get $n)))
        (call $print (i32.const 8192) (local.get $n))
        (br $more))))"#,
    ));
    let args = ["a1".to_string(), "bb".to_string()];
    let env = [
        ("K".to_string(), "v".to_string()),
        ("X".to_string(), "1=2".to_string()),
    ];
    let stdin = b"the quick brown fox jumps";
    let out = try_run(&p, &args, &env, stdin, 0, limits()).unwrap();
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    let mut want = b"main\0a1\0bb\0a3K=v\0X=1=2\0".to_vec();
    want.extend_from_slice(stdin);
    assert_eq!(
        String::from_utf8_lossy(&out.execution.stdout),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn proc_exit_sets_the_code() {
    let p = program(&module(
        r#"(data (i32.const 64) "bye")
        (func (export "_start") (call $print (i32.const 64) (i32.const 3)) (call $proc_exit (i32.const 42)) unreachable)"#,
    ));
    let out = run(&p, limits());
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 42 });
    assert_eq!(out.execution.stdout, b"bye");
}

#[test]
fn stderr_is_captured_apart() {
    let p = program(&module(
        r#"(data (i32.const 64) "oops")
        (func (export "_start") (call $write (i32.const 2) (i32.const 64) (i32.const 4)))"#,
    ));
    let out = run(&p, limits());
    assert_eq!(out.stderr, b"oops");
    assert!(out.execution.stdout.is_empty());
}

#[test]
fn infinite_loop_runs_out_of_fuel_deterministically() {
    let p = program(&module(r#"(func (export "_start") (loop $l (br $l)))"#));
    let l = Limits {
        fuel: 1_000_003,
        ..limits()
    };
    let a = run(&p, l);
    let b = run(&p, l);
    assert_eq!(a.execution.status, ExecStatus::OutOfFuel);
    assert_eq!(a.execution.fuel, l.fuel);
    assert_eq!(a.execution, b.execution);
}

#[test]
fn fuel_follows_the_cost_model_exactly() {
    // 3 (i32.const, local.set, loop) + 10 × 5 (loop body) + 2 (the two ends).
    let p = program(&module(
        r#"(func (export "_start") (local $i i32)
            i32.const 10
            local.set $i
            loop $l
              local.get $i
              i32.const 1
              i32.sub
              local.tee $i
              br_if $l
            end)"#,
    ));
    assert_eq!(run(&p, limits()).execution.fuel, 55);

    // _start: [i32.const, call] 2 + f: [local.get, if] 2 + [i32.const, end] 2 (else arm)
    // + [end] 1 + _start: [drop, end] 2. The then arm costs the same: [i32.const, else] 2.
    for arg in [0, 1] {
        let p = program(&module(&format!(
            r#"(func $f (param i32) (result i32)
                local.get 0
                if (result i32)
                  i32.const 1
                else
                  i32.const 2
                end)
            (func (export "_start")
                i32.const {arg}
                call $f
                drop)"#
        )));
        assert_eq!(run(&p, limits()).execution.fuel, 9, "arg {arg}");
    }

    // Bulk memory costs len / 64 more: 5 (consts, fill, end) + 6400 / 64.
    let p = program(&module(
        r#"(func (export "_start") (memory.fill (i32.const 0) (i32.const 0) (i32.const 6400)))"#,
    ));
    assert_eq!(run(&p, limits()).execution.fuel, 5 + 100);

    // The module's own trap has paid for its whole segment: nop, nop, unreachable.
    let p = program(&module(r#"(func (export "_start") nop nop unreachable)"#));
    let out = run(&p, limits()).execution;
    assert_eq!(
        out.status,
        ExecStatus::Trap {
            trap: TrapKind::Unreachable
        }
    );
    assert_eq!(out.fuel, 3);

    // A trap of the engine's (an out-of-bounds load) reports the fuel as of the last loop head,
    // call or function entry: the prologue (3) and two iterations (2 × 5) reached the loop's
    // head; the third iteration (5) and the segment that traps (i32.const, i32.load, drop,
    // block, nop, nop, end) are not counted.
    let p = program(&module(
        r#"(func (export "_start") (local $i i32)
            i32.const 3
            local.set $i
            loop $l
              local.get $i
              i32.const 1
              i32.sub
              local.tee $i
              br_if $l
            end
            (drop (i32.load (i32.const 70000)))
            (block nop nop))"#,
    ));
    let out = run(&p, limits()).execution;
    assert_eq!(
        out.status,
        ExecStatus::Trap {
            trap: TrapKind::MemoryOutOfBounds
        }
    );
    assert_eq!(out.fuel, 13);

    // Exactly enough fuel succeeds; one less runs out.
    let p = program(&module(r#"(func (export "_start") nop nop)"#));
    let exact = Limits {
        fuel: 3,
        ..limits()
    };
    assert_eq!(
        run(&p, exact).execution.status,
        ExecStatus::Exited { code: 0 }
    );
    let short = Limits {
        fuel: 2,
        ..limits()
    };
    let out = run(&p, short);
    assert_eq!(out.execution.status, ExecStatus::OutOfFuel);
    assert_eq!(out.execution.fuel, 2);
}

#[test]
fn the_host_is_not_called_once_the_fuel_is_spent() {
    let p = program(&module(WRITE_HI));
    let with = |fuel| run(&p, Limits { fuel, ..limits() }).execution;
    let done = with(13);
    assert_eq!(done.status, ExecStatus::Exited { code: 0 });
    assert_eq!((done.fuel, &done.stdout[..]), (13, &b"hi"[..]));
    // Enough to reach the write, not to return: the write happened, then the fuel ran out.
    let late = with(11);
    assert_eq!(late.status, ExecStatus::OutOfFuel);
    assert_eq!((late.fuel, &late.stdout[..]), (11, &b"hi"[..]));
    // One short of the write: the check before the host call ends the run.
    let early = with(10);
    assert_eq!(early.status, ExecStatus::OutOfFuel);
    assert_eq!((early.fuel, &early.stdout[..]), (10, &b""[..]));

    // An engine trap before any check or sync reports the trap, with the fuel as of the
    // function's entry (the charge that overdrew the fuel was not written back).
    let p = program(&module(
        r#"(func (export "_start") nop nop (drop (i32.load (i32.const 70000))))"#,
    ));
    let out = run(
        &p,
        Limits {
            fuel: 2,
            ..limits()
        },
    )
    .execution;
    assert_eq!(
        out.status,
        ExecStatus::Trap {
            trap: TrapKind::MemoryOutOfBounds
        }
    );
    assert_eq!(out.fuel, 0);
}

const MEMORY_BOMB: &str = r#"
  (func (export "_start")
    (loop $l
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (br $l)))"#;

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let p = program(&module(MEMORY_BOMB));
    let l = Limits {
        memory_bytes: 4 << 20,
        ..limits()
    };
    let a = run(&p, l);
    assert_eq!(a.execution.status, ExecStatus::MemoryLimit);
    assert_eq!(a.execution, run(&p, l).execution);
    // The memory it reached (its peak) is reported, within the limit.
    assert!(
        a.memory_bytes > 0 && a.memory_bytes <= 4 << 20,
        "{}",
        a.memory_bytes
    );
}

#[test]
fn refused_growth_can_be_handled() {
    // memory.grow returns -1 past the limit and the guest exits on its own.
    let p = program(&module(
        r#"(func (export "_start")
            (if (i32.eq (memory.grow (i32.const 1000)) (i32.const -1))
              (then (call $proc_exit (i32.const 3))))
            (i32.store8 (i32.const 64) (i32.add (i32.const 48) (memory.size)))
            (call $print (i32.const 64) (i32.const 1)))"#,
    ));
    let small = Limits {
        memory_bytes: 1 << 20,
        ..limits()
    };
    assert_eq!(
        run(&p, small).execution.status,
        ExecStatus::Exited { code: 3 }
    );
    // Within the limit the growth succeeds.
    let p = program(&module(
        r#"(func (export "_start")
            (drop (memory.grow (i32.const 2)))
            (i32.store8 (i32.const 64) (i32.add (i32.const 48) (memory.size)))
            (call $print (i32.const 64) (i32.const 1)))"#,
    ));
    let out = run(&p, small);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    assert_eq!(out.execution.stdout, b"3");
    // The run's memory at its end: three pages.
    assert_eq!(out.memory_bytes, 3 * 65536);
}

#[test]
fn table_grow_is_capped() {
    let p = program(&module(
        r#"(table $t 1 funcref)
        (func (export "_start")
          (i32.store8 (i32.const 64) (table.grow $t (ref.null func) (i32.const 5)))
          (i32.store8 (i32.const 65) (table.grow $t (ref.null func) (i32.const 2000000)))
          (i32.store8 (i32.const 66) (table.size $t))
          (call $print (i32.const 64) (i32.const 3)))"#,
    ));
    // Old size 1; refused (-1); new size 6.
    assert_eq!(run(&p, limits()).execution.stdout, [1, 0xff, 6]);
}

#[test]
fn initial_memory_above_the_limit_is_refused_before_running() {
    let p = program(r#"(module (memory (export "memory") 100) (func (export "_start")))"#);
    let out = run(
        &p,
        Limits {
            memory_bytes: 1 << 20,
            ..limits()
        },
    );
    assert_eq!(out.execution.status, ExecStatus::MemoryLimit);
    assert_eq!(out.execution.fuel, 0);
    assert_eq!(out.memory_bytes, 0, "it never started");
}

#[test]
fn deep_recursion_overflows_at_the_injected_depth() {
    let p = program(&module(
        r#"(func $r (call $r)) (func (export "_start") (call $r))"#,
    ));
    let a = run(&p, limits());
    assert_eq!(a.execution.status, ExecStatus::StackOverflow);
    assert_eq!(a.execution, run(&p, limits()).execution);
    // _start's call of $r cannot recur and is not counted; 4096 nested calls of $r succeed,
    // the 4097th traps; each frame costs 1.
    assert_eq!(a.execution.fuel, 4098);

    // A custom depth: n nested recursive calls use n levels.
    let opts = Options {
        max_call_depth: 10,
        ..Options::default()
    };
    for (n, want) in [
        (10, ExecStatus::Exited { code: 0 }),
        (11, ExecStatus::StackOverflow),
    ] {
        let text = module(&format!(
            r#"(func $r (param i32)
                (if (local.get 0) (then (call $r (i32.sub (local.get 0) (i32.const 1))))))
            (func (export "_start") (call $r (i32.const {n})))"#
        ));
        let p = program_with(&text, &opts);
        assert_eq!(run(&p, limits()).execution.status, want, "n = {n}");
    }
}

#[test]
fn only_calls_that_may_recur_count_towards_the_depth() {
    let opts = Options {
        max_call_depth: 3,
        ..Options::default()
    };
    let status = |text: &str| {
        run(&program_with(&module(text), &opts), limits())
            .execution
            .status
    };
    // A chain of six calls that cannot recur runs whatever the limit.
    assert_eq!(
        status(
            r#"(func $a (call $b)) (func $b (call $c)) (func $c (call $d)) (func $d (call $e))
            (func $e (call $f)) (func $f) (func (export "_start") (call $a))"#
        ),
        ExecStatus::Exited { code: 0 }
    );
    // Mutual recursion counts every call: three levels pass, four do not.
    let mutual = |n: u32| {
        format!(
            r#"(func $even (param i32) (if (local.get 0) (then (call $odd (i32.sub (local.get 0) (i32.const 1))))))
            (func $odd (param i32) (if (local.get 0) (then (call $even (i32.sub (local.get 0) (i32.const 1))))))
            (func (export "_start") (call $even (i32.const {n})))"#
        )
    };
    assert_eq!(status(&mutual(3)), ExecStatus::Exited { code: 0 });
    assert_eq!(status(&mutual(4)), ExecStatus::StackOverflow);
    // A recursion through the table: each call_indirect counts, the direct call down does not.
    let table = |n: u32| {
        format!(
            r#"(type $t (func (param i32)))
            (table 1 funcref) (elem (i32.const 0) $r)
            (func $down (param i32) (call_indirect (type $t) (local.get 0) (i32.const 0)))
            (func $r (param i32) (if (local.get 0) (then (call $down (i32.sub (local.get 0) (i32.const 1))))))
            (func (export "_start") (call $r (i32.const {n})))"#
        )
    };
    assert_eq!(status(&table(3)), ExecStatus::Exited { code: 0 });
    assert_eq!(status(&table(4)), ExecStatus::StackOverflow);
}

#[test]
fn huge_stdout_stops_at_the_cap() {
    let p = program(&module(
        r#"(func (export "_start") (loop $l (call $print (i32.const 64) (i32.const 1000)) (br $l)))"#,
    ));
    let l = Limits {
        stdout_bytes: 10_500,
        ..limits()
    };
    let mut seen = 0;
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: b"",
        seed: 0,
        limits: l,
        blobs: &[],
    };
    let out = sandbox().run(&p, &task, &mut |c| seen += c.len()).unwrap();
    assert_eq!(out.execution.status, ExecStatus::StdoutLimit);
    assert_eq!(out.execution.stdout.len(), 10_500);
    assert_eq!(seen, 10_500);
    // Writing exactly up to the cap is fine.
    let p = program(&module(
        r#"(func (export "_start") (call $print (i32.const 64) (i32.const 1000)))"#,
    ));
    let out = run(
        &p,
        Limits {
            stdout_bytes: 1000,
            ..limits()
        },
    );
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
}

#[test]
fn traps_are_classified() {
    let cases = [
        (
            "(drop (i32.div_s (i32.const 1) (i32.const 0)))",
            TrapKind::IntegerDivisionByZero,
        ),
        (
            "(drop (i32.div_s (i32.const 0x80000000) (i32.const -1)))",
            TrapKind::IntegerOverflow,
        ),
        (
            "(drop (i32.trunc_f32_s (f32.const nan)))",
            TrapKind::BadConversionToInteger,
        ),
        (
            "(drop (i32.load (i32.const 70000)))",
            TrapKind::MemoryOutOfBounds,
        ),
        ("unreachable", TrapKind::Unreachable),
        ("(call_indirect (i32.const 1))", TrapKind::IndirectCall),
        ("(call_indirect (i32.const 9))", TrapKind::IndirectCall),
    ];
    for (code, kind) in cases {
        let p = program(&module(&format!(
            r#"(table 2 funcref) (func (export "_start") {code})"#
        )));
        let out = run(&p, limits());
        assert_eq!(
            out.execution.status,
            ExecStatus::Trap { trap: kind },
            "{code}"
        );
    }
}

#[test]
fn wall_time_limit_times_out() {
    let p = program(&module(r#"(func (export "_start") (loop $l (br $l)))"#));
    let l = Limits {
        fuel: Limits::MAX_FUEL,
        wall_time_ms: 50,
        ..limits()
    };
    let started = std::time::Instant::now();
    let err = try_run(&p, &[], &[], b"", 0, l).unwrap_err();
    assert_eq!(err, SandboxError::Timeout { wall_time_ms: 50 });
    assert_eq!(err.failure_kind(), runegrid_core::FailureKind::WallTime);
    let took = started.elapsed();
    assert!(took.as_millis() >= 50 && took.as_secs() < 5, "{took:?}");
}

const RANDOM_AND_CLOCK: &str = r#"
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
  (func (export "_start")
    (drop (call $random_get (i32.const 100) (i32.const 13)))
    (drop (call $random_get (i32.const 113) (i32.const 3)))
    (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 120)))
    (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 128)))
    (drop (call $clock_res_get (i32.const 1) (i32.const 136)))
    (i32.store (i32.const 144) (call $clock_time_get (i32.const 9) (i64.const 1) (i32.const 200)))
    (i32.store (i32.const 148) (call $random_get (i32.const 65535) (i32.const 2)))
    (call $print (i32.const 100) (i32.const 52)))"#;

#[test]
fn random_and_clock_are_deterministic_and_seeded() {
    let p = program(&module(RANDOM_AND_CLOCK));
    let run_seed = |seed| {
        try_run(&p, &[], &[], b"", seed, limits())
            .unwrap()
            .execution
    };
    let a = run_seed(7);
    assert_eq!(a, run_seed(7));
    let b = run_seed(8);
    assert_ne!(a.stdout[..16], b.stdout[..16]);
    assert_eq!(a.stdout[16..], b.stdout[16..]);

    let mut rng = SplitMix64::new(7);
    let mut want = vec![0u8; 13];
    rng.fill(&mut want);
    let mut more = [0u8; 3];
    rng.fill(&mut more);
    want.extend_from_slice(&more);
    want.extend_from_slice(&[0; 4]);
    want.extend_from_slice(&(1_700_000_000_000_000_000u64 + 1000).to_le_bytes());
    want.extend_from_slice(&2000u64.to_le_bytes());
    want.extend_from_slice(&1000u64.to_le_bytes());
    want.extend_from_slice(&28u32.to_le_bytes()); // EINVAL for an unknown clock
    want.extend_from_slice(&21u32.to_le_bytes()); // EFAULT past the end of memory
    assert_eq!(a.stdout, want);
}

#[test]
fn wasi_errors_for_files_and_fds() {
    let p = program(&module(
        r#"
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (func (export "_start")
    (i32.store8 (i32.const 100) (call $fd_prestat_get (i32.const 3) (i32.const 200)))
    (i32.store8 (i32.const 101) (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 200)))
    (i32.store8 (i32.const 102) (call $fd_fdstat_get (i32.const 1) (i32.const 200)))
    (i32.store8 (i32.const 103) (i32.load8_u (i32.const 200)))
    (i32.store8 (i32.const 104) (call $fd_fdstat_get (i32.const 7) (i32.const 200)))
    (i32.store8 (i32.const 105) (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 200)))
    (i32.store8 (i32.const 106) (call $poll_oneoff (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 200)))
    (i32.store8 (i32.const 107) (call $sched_yield))
    (i32.store8 (i32.const 108) (call $fd_write (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 200)))
    (call $print (i32.const 100) (i32.const 9)))"#,
    ));
    // Without a file system: no preopen, every path call ENOTCAPABLE (76).
    let out = run(
        &p,
        Limits {
            scratch_bytes: 0,
            ..limits()
        },
    );
    // poll_oneoff with no subscriptions: EINVAL (28).
    assert_eq!(out.execution.stdout, [8, 76, 0, 2, 8, 70, 28, 0, 8]);
    // With scratch space fd 3 is the root `/`, and the empty path is ENOENT (44).
    let out = run(&p, limits());
    assert_eq!(out.execution.stdout, [0, 44, 0, 2, 8, 70, 28, 0, 8]);
}

/// Prints the bits of an f32 and an f64 expression as little-endian bytes.
fn float_bits(f32_expr: &str, f64_expr: &str, opts: &Options) -> (u32, u64) {
    let p = program_with(
        &module(&format!(
            r#"(func (export "_start")
                (i32.store (i32.const 100) (i32.reinterpret_f32 {f32_expr}))
                (i64.store (i32.const 104) (i64.reinterpret_f64 {f64_expr}))
                (call $print (i32.const 100) (i32.const 12)))"#
        )),
        opts,
    );
    let out = run(&p, limits()).execution.stdout;
    (
        u32::from_le_bytes(out[..4].try_into().unwrap()),
        u64::from_le_bytes(out[4..].try_into().unwrap()),
    )
}

#[test]
fn nans_are_canonical() {
    let on = Options::default();
    let canonical = (0x7fc0_0000, 0x7ff8_0000_0000_0000);
    // 0/0: x86 produces the negative default NaN.
    assert_eq!(
        float_bits(
            "(f32.div (f32.const 0) (f32.const 0))",
            "(f64.div (f64.const 0) (f64.const 0))",
            &on
        ),
        canonical
    );
    // Arithmetic on a NaN with a payload: x86 and ARM propagate it differently.
    assert_eq!(
        float_bits(
            "(f32.add (f32.const nan:0x1234) (f32.const 1))",
            "(f64.mul (f64.const 2) (f64.add (f64.const nan:0x1234) (f64.const 1)))",
            &on
        ),
        canonical
    );
    assert_eq!(
        float_bits(
            "(f32.demote_f64 (f64.const nan:0x1234567))",
            "(f64.promote_f32 (f32.sqrt (f32.const -1)))",
            &on
        ),
        canonical
    );
    // Bit-exact operations keep their input's payload.
    assert_eq!(
        float_bits(
            "(f32.neg (f32.const nan:0x1234))",
            "(f64.abs (f64.const -nan:0x1234))",
            &on
        ),
        (0xff80_1234, 0x7ff0_0000_0000_1234)
    );
    // Ordinary numbers are untouched.
    assert_eq!(
        float_bits(
            "(f32.add (f32.const 1) (f32.const 2))",
            "(f64.sqrt (f64.const 2))",
            &on
        ),
        (3f32.to_bits(), 2f64.sqrt().to_bits())
    );
    #[cfg(target_arch = "x86_64")]
    {
        let off = Options {
            nan_canonicalization: false,
            ..Options::default()
        };
        let (f32_bits, _) = float_bits(
            "(f32.div (f32.const 0) (f32.const 0))",
            "(f64.const 0)",
            &off,
        );
        assert_eq!(
            f32_bits, 0xffc0_0000,
            "x86 default NaN without canonicalization"
        );
    }
}

/// Prints the lanes of a `v128` expression as four `u32`s.
fn v128_lanes(expr: &str, opts: &Options) -> [u32; 4] {
    let p = program_with(
        &module(&format!(
            r#"(func (export "_start")
                (v128.store (i32.const 100) {expr})
                (call $print (i32.const 100) (i32.const 16)))"#
        )),
        opts,
    );
    let out = run(&p, limits()).execution.stdout;
    std::array::from_fn(|i| u32::from_le_bytes(out[4 * i..4 * i + 4].try_into().unwrap()))
}

#[test]
fn simd_nans_are_canonical_lane_by_lane() {
    let on = Options::default();
    const NAN: u32 = 0x7fc0_0000;
    // 0/0 in lanes 0 and 2 (x86's negative default NaN), ordinary quotients in 1 and 3.
    let div = "(f32x4.div (v128.const f32x4 0 6 0 -1) (v128.const f32x4 0 2 0 4))";
    assert_eq!(
        v128_lanes(div, &on),
        [NAN, 3f32.to_bits(), NAN, (-0.25f32).to_bits()]
    );
    // A payload carried through f64x2 arithmetic: both halves of the canonical f64 NaN.
    assert_eq!(
        v128_lanes(
            "(f64x2.add (v128.const f64x2 nan:0x1234 1) (v128.const f64x2 1 -nan:0x5))",
            &on
        ),
        [0, 0x7ff8_0000, 0, 0x7ff8_0000]
    );
    // Bit-exact lane operations keep the payload.
    assert_eq!(
        v128_lanes("(f32x4.neg (v128.const f32x4 nan:0x1234 1 2 3))", &on)[0],
        0xff80_1234
    );
    #[cfg(target_arch = "x86_64")]
    {
        let off = Options {
            nan_canonicalization: false,
            ..Options::default()
        };
        assert_eq!(
            v128_lanes(div, &off)[0],
            0xffc0_0000,
            "x86 default NaN without canonicalization"
        );
    }
}

#[test]
fn call_indirect_and_globals_survive_instrumentation() {
    let p = program(&module(
        r#"
  (type $binop (func (param i32 i32) (result i32)))
  (global $base (mut i32) (i32.const 100))
  (global $k i32 (i32.const 5))
  (table 3 funcref)
  (elem (i32.const 0) $add $sub $mul)
  (func $add (type $binop) (i32.add (local.get 0) (local.get 1)))
  (func $sub (type $binop) (i32.sub (local.get 0) (local.get 1)))
  (func $mul (type $binop) (i32.mul (local.get 0) (local.get 1)))
  (func $apply (param $op i32) (param $a i32) (param $b i32) (result i32)
    (call_indirect (type $binop) (local.get $a) (local.get $b) (local.get $op)))
  (func (export "_start")
    (global.set $base (i32.add (global.get $base) (call $apply (i32.const 1) (i32.const 10) (i32.const 3))))
    (global.set $base (i32.add (global.get $base) (call $apply (i32.const 2) (global.get $k) (i32.const 4))))
    (call $proc_exit (global.get $base)))"#,
    ));
    // 100 + (10 - 3) + 5 * 4
    assert_eq!(
        run(&p, limits()).execution.status,
        ExecStatus::Exited { code: 127 }
    );
}

#[test]
fn compile_caches_and_refuses_uninstrumented_modules() {
    let bytes = runegrid_instrument::instrument(module(HELLO).as_bytes(), &Options::default())
        .unwrap()
        .bytes;
    let a = sandbox().compile(&bytes).unwrap();
    let b = sandbox().compile(&bytes).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let raw = wat::parse_str(module(HELLO)).unwrap();
    let err = sandbox().compile(&raw).unwrap_err();
    assert!(
        matches!(err, SandboxError::Compile(ref m) if m.contains("not instrumented")),
        "{err}"
    );
    let err = sandbox().compile(b"garbage").unwrap_err();
    assert!(matches!(err, SandboxError::Compile(_)), "{err}");
    assert_eq!(err.failure_kind(), runegrid_core::FailureKind::Program);
}

#[test]
fn runs_concurrently_from_four_threads() {
    let hello = program(&module(HELLO));
    let random = program(&module(RANDOM_AND_CLOCK));
    let want_hello = run(&hello, limits()).execution;
    let want_random: Vec<_> = (0..4)
        .map(|seed| {
            try_run(&random, &[], &[], b"", seed, limits())
                .unwrap()
                .execution
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (hello, random, want_hello, want_random) =
                (&hello, &random, &want_hello, &want_random);
            s.spawn(move || {
                for _ in 0..25 {
                    assert_eq!(&run(hello, limits()).execution, want_hello);
                    let got = try_run(random, &[], &[], b"", t, limits())
                        .unwrap()
                        .execution;
                    assert_eq!(&got, &want_random[t as usize]);
                }
            });
        }
    });
}

#[test]
fn sandbox_links_every_allowed_wasi_import() {
    let imports: String = runegrid_instrument::ALLOWED_WASI_IMPORTS
        .iter()
        .map(|name| {
            let sig = wasi_signature(name);
            format!(r#"(import "wasi_snapshot_preview1" "{name}" (func {sig}))"#)
        })
        .collect();
    let p = program(&format!(
        r#"(module {imports} (memory (export "memory") 1) (func (export "_start")))"#
    ));
    assert_eq!(
        run(&p, limits()).execution.status,
        ExecStatus::Exited { code: 0 }
    );
}

/// WAT signature of a WASI function (kept apart from the instrument crate's table on purpose).
fn wasi_signature(name: &str) -> &'static str {
    match name {
        "clock_time_get" => "(param i32 i64 i32) (result i32)",
        "fd_seek" => "(param i32 i64 i32 i32) (result i32)",
        "fd_advise" => "(param i32 i64 i64 i32) (result i32)",
        "fd_allocate" => "(param i32 i64 i64) (result i32)",
        "fd_pread" | "fd_pwrite" | "fd_readdir" => "(param i32 i32 i32 i64 i32) (result i32)",
        "path_open" => "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
        "path_filestat_set_times" => "(param i32 i32 i32 i32 i64 i64 i32) (result i32)",
        "fd_filestat_set_size" => "(param i32 i64) (result i32)",
        "fd_filestat_set_times" => "(param i32 i64 i64 i32) (result i32)",
        "proc_exit" => "(param i32)",
        "proc_raise" | "fd_close" | "fd_sync" | "fd_datasync" => "(param i32) (result i32)",
        "sched_yield" => "(result i32)",
        "fd_prestat_dir_name"
        | "path_create_directory"
        | "path_remove_directory"
        | "path_unlink_file" => "(param i32 i32 i32) (result i32)",
        "fd_write" | "fd_read" | "poll_oneoff" => "(param i32 i32 i32 i32) (result i32)",
        "path_filestat_get" | "path_symlink" => "(param i32 i32 i32 i32 i32) (result i32)",
        "path_rename" | "path_readlink" => "(param i32 i32 i32 i32 i32 i32) (result i32)",
        "path_link" => "(param i32 i32 i32 i32 i32 i32 i32) (result i32)",
        "sock_accept" => "(param i32 i32 i32) (result i32)",
        "sock_recv" => "(param i32 i32 i32 i32 i32 i32) (result i32)",
        "sock_send" => "(param i32 i32 i32 i32 i32) (result i32)",
        _ => "(param i32 i32) (result i32)",
    }
}

#[test]
fn spawn_streams_stdout_then_reports_the_outcome() {
    use runegrid_sandbox::Sandbox;
    use std::sync::mpsc;
    let sandbox = Sandbox::new().unwrap();
    let module = runegrid_instrument::instrument(
        br#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "hi\n")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 3))
                (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        &Default::default(),
    )
    .unwrap();
    let program = sandbox.compile(&module.bytes).unwrap();
    let (tx, rx) = mpsc::channel();
    let out = tx.clone();
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: &[],
        seed: 1,
        limits: Default::default(),
        blobs: &[],
    };
    sandbox.spawn(
        &program,
        &task,
        Box::new(move |c| out.send(Ok(c.to_vec())).unwrap()),
        Box::new(move |r| tx.send(Err(r)).unwrap()),
    );
    let events: Vec<_> = rx.iter().take(3).collect();
    assert_eq!(events[0].as_ref().unwrap(), b"hi\n");
    assert_eq!(events[1].as_ref().unwrap(), b"hi\n");
    let done = events[2].as_ref().unwrap_err().as_ref().unwrap();
    assert_eq!(done.execution.stdout, b"hi\nhi\n");
    assert!(done.execution.status.is_success());
}

/// A Rust program's `std::thread::sleep` is a `poll_oneoff` clock subscription: on the virtual
/// clock it takes no wall time, and the program sees exactly the time it slept (each clock
/// reading adds 1 µs).
#[test]
fn sleeps_advance_the_virtual_clock() {
    let module = runegrid_instrument::instrument(runegrid_examples::SLEEP, &Options::default())
        .expect("instrument");
    let p = sandbox().compile(&module.bytes).expect("compile");
    let args = ["3600".to_string(), "2".to_string()];
    let out = try_run(&p, &args, &[], b"", 0, limits()).unwrap();
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    assert_eq!(
        String::from_utf8(out.execution.stdout).unwrap(),
        "slept 1 × 3600 s: 3600.000001 s since start\n\
         slept 2 × 3600 s: 7200.000002 s since start\n\
         realtime 1700007200.000004000\n"
    );
}

/// Socket calls link and run: no fd is a socket.
#[test]
fn socket_calls_answer_that_no_fd_is_a_socket() {
    let p = program(&module(
        r#"
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
  (func (export "_start")
    (i32.store8 (i32.const 100) (call $sock_shutdown (i32.const 1) (i32.const 2)))
    (i32.store8 (i32.const 101) (call $sock_accept (i32.const 7) (i32.const 0) (i32.const 200)))
    (call $print (i32.const 100) (i32.const 2)))"#,
    ));
    let out = run(&p, limits());
    // ENOTSOCK (57) for stdout, EBADF (8) for an fd that is not open.
    assert_eq!(out.execution.stdout, [57, 8]);
}
