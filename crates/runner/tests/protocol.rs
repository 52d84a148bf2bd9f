//! The Rune runner's protocol, run through the real sandbox: the embedded module, instrumented
//! like an uploaded program.

use runegrid_core::{ExecStatus, Limits};
use runegrid_runner::{CallError, Decoded, ErrorKind, ScriptError, call_stdin, decode};
use runegrid_sandbox::{Program, RunOutput, Sandbox, TaskRun};
use serde_json::{Value as Json, json};
use std::sync::{Arc, OnceLock};

/// One sandbox and the runner compiled once for every test (compiling takes seconds).
fn runner() -> &'static (Sandbox, Arc<Program>) {
    static RUNNER: OnceLock<(Sandbox, Arc<Program>)> = OnceLock::new();
    RUNNER.get_or_init(|| {
        let sandbox = Sandbox::new().expect("sandbox");
        // As the coordinator registers it: pre-initialized, then instrumented.
        let prepared = runegrid_sandbox::preinitialize(
            runegrid_runner::RUNE_RUNNER,
            runegrid_runner::INIT_FUNC,
        )
        .expect("the runner pre-initializes");
        let instrumented =
            runegrid_instrument::instrument(&prepared, &runegrid_instrument::Options::default())
                .expect("the runner instruments");
        let program = sandbox.compile(&instrumented.bytes).expect("compile");
        (sandbox, program)
    })
}

fn limits() -> Limits {
    Limits {
        fuel: 2_000_000_000,
        memory_bytes: 128 << 20,
        wall_time_ms: 60_000,
        stdout_bytes: 1 << 20,
        scratch_bytes: 64 << 20,
        output_bytes: 16 << 20,
    }
}

fn run_raw(stdin: &[u8], seed: u64, limits: Limits) -> RunOutput {
    let (sandbox, program) = runner();
    let task = TaskRun {
        args: &[],
        env: &[],
        blobs: &[],
        stdin,
        seed,
        limits,
    };
    sandbox.run(program, &task, &mut |_| {}).expect("run")
}

fn call_with(script: &str, function: &str, args: &[Json], limits: Limits) -> Decoded {
    let out = run_raw(call_stdin(script, function, args).as_bytes(), 1, limits);
    decode(&out.execution.status, &out.execution.stdout)
}

fn call(script: &str, function: &str, args: &[Json]) -> Decoded {
    call_with(script, function, args, limits())
}

/// The value of a call that must succeed.
fn value(script: &str, function: &str, args: &[Json]) -> Json {
    let d = call(script, function, args);
    match d.result {
        Ok(v) => v,
        Err(e) => panic!("{script}: {e}"),
    }
}

/// The error of a call that must fail with a script error.
fn script_error(script: &str, function: &str, args: &[Json]) -> ScriptError {
    match call(script, function, args).result {
        Err(CallError::Script(e)) => e,
        other => panic!("{script}: expected a script error, got {other:?}"),
    }
}

#[test]
fn adds_two_numbers() {
    let d = call("pub fn add(a, b) { a + b }", "add", &[json!(1), json!(2)]);
    assert_eq!(d.result, Ok(json!(3)));
    assert!(d.printed.is_empty());
    assert_eq!(
        value(
            "pub fn add(a, b) { a + b }",
            "add",
            &[json!("ab"), json!("c")]
        ),
        json!("abc")
    );
}

#[test]
fn json_values_round_trip() {
    let id = "pub fn id(x) { x }";
    for v in [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-5),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(-0.25),
        json!(1e300),
        json!(""),
        json!("héllo ✓ \"quoted\"\n"),
        json!([]),
        json!([1, [2, [3, "x"]], null]),
        json!({}),
        json!({"b": 1, "a": [null, {"c": 2.5}]}),
    ] {
        assert_eq!(value(id, "id", std::slice::from_ref(&v)), v, "{v}");
    }
    // Integers beyond i64 become floats.
    assert_eq!(value(id, "id", &[json!(u64::MAX)]), json!(u64::MAX as f64));
}

#[test]
fn values_keep_their_types() {
    // A float stays a float and an integer an integer.
    assert_eq!(
        value("pub fn f(x) { x / 2.0 }", "f", &[json!(4.0)]),
        json!(2.0)
    );
    assert_ne!(
        value("pub fn f(x) { x / 2.0 }", "f", &[json!(4.0)]),
        json!(2)
    );
    assert_eq!(value("pub fn f(x) { x / 2 }", "f", &[json!(5)]), json!(2));
    // Arguments arrive as Rune values.
    assert_eq!(
        value(
            "pub fn f(v, o) { [v.len(), o[\"k\"] * 2, v[1].len()] }",
            "f",
            &[json!([1, "abc"]), json!({"k": 21})]
        ),
        json!([2, 42, 3])
    );
}

#[test]
fn rune_values_become_json() {
    let script = r#"
        pub fn tuple() { (1, "two", 3.5) }
        pub fn options() { [Some(1), None, Some(Some(2))] }
        pub fn ok() { Ok(#{answer: 42}) }
        pub fn text() { ['x', "yz"] }
        pub fn bytes() { b"hi" }
        pub fn unit() { }
        pub fn object() { let o = #{}; o.z = 1; o.a = [()]; o }
        pub fn unsigned() { 7u64 }
    "#;
    assert_eq!(value(script, "tuple", &[]), json!([1, "two", 3.5]));
    assert_eq!(value(script, "options", &[]), json!([1, null, 2]));
    assert_eq!(value(script, "ok", &[]), json!({"answer": 42}));
    assert_eq!(value(script, "text", &[]), json!(["x", "yz"]));
    assert_eq!(value(script, "bytes", &[]), json!([104, 105]));
    assert_eq!(value(script, "unit", &[]), json!(null));
    assert_eq!(value(script, "object", &[]), json!({"a": [null], "z": 1}));
    assert_eq!(value(script, "unsigned", &[]), json!(7));
}

#[test]
fn printed_text_comes_before_the_value() {
    let script = r#"
        pub fn f(n) {
            println!("start {}", n);
            print!("no newline");
            n * 2
        }
        pub fn g() { dbg!(1, "x"); print!("tail"); 0 }
    "#;
    let out = run_raw(
        call_stdin(script, "f", &[json!(21)]).as_bytes(),
        1,
        limits(),
    );
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    // The runner ends the unfinished line before its own.
    assert_eq!(
        String::from_utf8_lossy(&out.execution.stdout),
        "start 21\nno newline\n{\"ok\":42}\n"
    );
    let d = call(script, "g", &[]);
    assert_eq!(String::from_utf8_lossy(&d.printed), "1\n\"x\"\ntail\n");
    assert_eq!(d.result, Ok(json!(0)));
}

#[test]
fn compile_errors_have_a_place() {
    let e = script_error("pub fn f() {\n    let x = ;\n}\n", "f", &[]);
    assert_eq!(e.kind, ErrorKind::Compile);
    assert_eq!((e.line, e.column), (Some(2), Some(13)), "{e}");
    // An undefined function is found at compile time in Rune.
    let e = script_error("pub fn f() {\n  1 + nothing_here(2)\n}", "f", &[]);
    assert_eq!(e.kind, ErrorKind::Compile);
    assert_eq!((e.line, e.column), (Some(2), Some(7)), "{e}");
    assert!(e.message.contains("nothing_here"), "{e}");
}

#[test]
fn runtime_errors_have_a_place() {
    let script = "pub fn overflow(x) {\n  let y = x * 2;\n  y + 9223372036854775807\n}\n\
                  pub fn boom() {\n    panic!(\"it broke\")\n}\n\
                  pub fn types(a) {\n  a + 1.5\n}\n";
    let e = script_error(script, "overflow", &[json!(1)]);
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert_eq!((e.line, e.column), (Some(3), Some(3)), "{e}");
    let e = script_error(script, "boom", &[]);
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("it broke"), "{e}");
    let e = script_error(script, "types", &[json!(1)]);
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert_eq!(e.line, Some(9), "{e}");
}

#[test]
fn returned_errors_are_runtime_errors() {
    let e = script_error("pub fn f() { Err(\"no luck\") }", "f", &[]);
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert_eq!(e.message, "no luck");
    assert_eq!((e.line, e.column), (None, None));
    let e = script_error("pub fn f() { Err(#{code: 7}) }", "f", &[]);
    assert_eq!(e.message, r#"{"code":7}"#);
}

#[test]
fn input_errors() {
    let script = "pub fn two(a, b) { a + b }\nfn private() { 1 }";
    let e = script_error(script, "missing", &[]);
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(e.message.contains("missing"), "{e}");
    let e = script_error(script, "private", &[]);
    assert_eq!(e.kind, ErrorKind::Input, "{e}");
    let e = script_error(script, "two", &[json!(1)]);
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(e.message.contains("expected 2"), "{e}");
    for bad in [
        &b"not json"[..],
        b"[1, 2]",
        b"{\"function\": \"f\"}",
        b"{\"script\": \"pub fn f() {}\", \"function\": \"f\", \"args\": 3}",
        b"{\"script\": \"pub fn f() {}\", \"function\": \"\"}",
    ] {
        let out = run_raw(bad, 1, limits());
        assert_eq!(out.execution.status, ExecStatus::Exited { code: 1 });
        match decode(&out.execution.status, &out.execution.stdout).result {
            Err(CallError::Script(e)) => assert_eq!(e.kind, ErrorKind::Input, "{e}"),
            other => panic!("{other:?}"),
        }
    }
    // `args` may be left out for a function of no arguments.
    let out = run_raw(
        br#"{"script": "pub fn f() { 5 }", "function": "f"}"#,
        1,
        limits(),
    );
    assert_eq!(out.execution.stdout, b"{\"ok\":5}\n");
}

#[test]
fn values_without_json_form() {
    let e = script_error("struct P { x } pub fn f() { P { x: 1 } }", "f", &[]);
    assert_eq!(e.kind, ErrorKind::Value);
    assert!(e.message.contains('P'), "{e}");
    let e = script_error("pub fn f() { 0.0 / 0.0 }", "f", &[]);
    assert_eq!(e.kind, ErrorKind::Value);
    let e = script_error("pub fn f() { let v = []; v.push(v); v }", "f", &[]);
    assert_eq!(e.kind, ErrorKind::Value);
}

#[test]
fn endless_loop_runs_out_of_fuel() {
    let small = Limits {
        fuel: 200_000_000,
        ..limits()
    };
    let d = call_with(
        "pub fn spin() { print!(\"spinning\"); loop { } }",
        "spin",
        &[],
        small,
    );
    assert_eq!(d.result, Err(CallError::Stopped(ExecStatus::OutOfFuel)));
    assert_eq!(d.printed, b"spinning");
}

#[test]
fn memory_hog_is_stopped() {
    let small = Limits {
        memory_bytes: 48 << 20,
        ..limits()
    };
    let d = call_with(
        "pub fn hog() {\n  let s = \"0123456789abcdef\";\n  loop { s = s + s; }\n}",
        "hog",
        &[],
        small,
    );
    // Rune's own allocations are fallible: the VM reports the failure as a runtime error, at
    // the place that allocated. Allocations of the runner itself end the run at the memory
    // limit instead.
    match d.result {
        Err(CallError::Script(e)) => {
            assert_eq!(e.kind, ErrorKind::Runtime);
            assert!(e.message.contains("allocate"), "{e}");
            assert_eq!(e.line, Some(3), "{e}");
        }
        Err(CallError::Stopped(ExecStatus::MemoryLimit)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_nesting_meets_the_call_depth_limit() {
    // The compiler recurses over nested expressions; the runner's 8 MiB stack lets it reach the
    // injected call-depth limit, which stops it the same way on every engine.
    let nested = |depth: usize| {
        format!(
            "pub fn f() {{ {}1{} }}",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    let stdin = call_stdin(&nested(5_000), "f", &[]);
    let a = run_raw(stdin.as_bytes(), 1, limits());
    assert_eq!(a.execution.status, ExecStatus::StackOverflow);
    let b = run_raw(stdin.as_bytes(), 1, limits());
    assert_eq!(a.execution.digest(), b.execution.digest());
    // Nesting far beyond what people write compiles.
    assert_eq!(value(&nested(500), "f", &[]), json!(1));
}

#[test]
fn runs_are_deterministic() {
    let script = r#"
        pub fn f(n) {
            let o = #{};
            for i in 0..n { o[`k${i}`] = i * i; }
            let total = 0;
            for (k, v) in o { total += v; println!("{}", k); }
            [total, o.len()]
        }
    "#;
    let stdin = call_stdin(script, "f", &[json!(50)]);
    let a = run_raw(stdin.as_bytes(), 99, limits());
    let b = run_raw(stdin.as_bytes(), 99, limits());
    assert_eq!(a.execution.status, ExecStatus::Exited { code: 0 });
    assert_eq!(a.execution.digest(), b.execution.digest());
    assert_eq!(a.execution.fuel, b.execution.fuel);
    let d = decode(&a.execution.status, &a.execution.stdout);
    assert_eq!(d.result, Ok(json!([40425, 50])));
}
