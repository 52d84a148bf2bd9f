//! Checks of `runegrid_instrument::instrument` that need no engine: what is refused, that the
//! output validates, keeps every existing index but the module's own functions' and is deterministic. Running the output is
//! tested in the sandbox crate.

use proptest::prelude::*;
use runegrid_instrument::{
    ALLOWED_FEATURES, ALLOWED_WASI_IMPORTS, DEPTH_GLOBAL, FUEL_GLOBAL, HOST_MODULE,
    InstrumentError, MEMORY_DENIED_GLOBAL, MEMORY_LIMIT_GLOBAL, Options, REFILL_GLOBAL,
    REFUEL_FUNCTION, instrument,
};
use wasmparser::{ExternalKind, Parser, Payload, Validator};

const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))
"#;

/// A module with globals, a table, `call_indirect`, floats, bulk memory and `memory.grow`.
const RICH: &str = r#"
(module
  (type $binop (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1 10)
  (global $g (mut i32) (i32.const 7))
  (global $k i64 (i64.const 3))
  (table 4 funcref)
  (elem (i32.const 0) $add $sub)
  (func $add (type $binop) (i32.add (local.get 0) (local.get 1)))
  (func $sub (type $binop) (i32.sub (local.get 0) (local.get 1)))
  (func $f (param f64) (result f64)
    (f64.sqrt (f64.add (local.get 0) (f64.mul (local.get 0) (local.get 0)))))
  (func (export "_start") (local $x i32)
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 1000))
    (drop (memory.grow (i32.const 1)))
    (drop (call $f (f64.const 2)))
    (local.set $x (call_indirect (type $binop) (global.get $g) (i32.const 5) (i32.const 1)))
    (global.set $g (local.get $x))
    (call $exit (global.get $g)))
  (export "g" (global $g))
  (export "sub" (func $sub)))
"#;

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

fn ok(text: &str) -> Vec<u8> {
    instrument(text.as_bytes(), &Options::default())
        .unwrap()
        .bytes
}

/// Instrumented without NaN canonicalization.
fn ok_without_nan(text: &str) -> Vec<u8> {
    let opts = Options {
        nan_canonicalization: false,
        ..Options::default()
    };
    instrument(text.as_bytes(), &opts).unwrap().bytes
}

fn err(text: &str) -> InstrumentError {
    instrument(&wat(text), &Options::default()).unwrap_err()
}

fn validate(bytes: &[u8]) {
    Validator::new_with_features(ALLOWED_FEATURES)
        .validate_all(bytes)
        .unwrap();
}

/// (name, kind, index) of every export.
fn exports(bytes: &[u8]) -> Vec<(String, ExternalKind, u32)> {
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        if let Payload::ExportSection(r) = payload.unwrap() {
            for e in r {
                let e = e.unwrap();
                out.push((e.name.to_string(), e.kind, e.index));
            }
        }
    }
    out
}

#[test]
fn output_validates_and_exports_the_runegrid_globals() {
    for text in [HELLO, RICH] {
        let out = instrument(text.as_bytes(), &Options::default()).unwrap();
        validate(&out.bytes);
        let names: Vec<String> = exports(&out.bytes).into_iter().map(|e| e.0).collect();
        for name in [
            FUEL_GLOBAL,
            DEPTH_GLOBAL,
            MEMORY_LIMIT_GLOBAL,
            MEMORY_DENIED_GLOBAL,
            REFILL_GLOBAL,
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
    }
}

#[test]
fn lists_imports() {
    let out = instrument(HELLO.as_bytes(), &Options::default()).unwrap();
    assert_eq!(out.imports, ["wasi_snapshot_preview1.fd_write"]);
}

#[test]
fn accepts_binary_and_text_alike() {
    let from_text = ok(RICH);
    let from_binary = instrument(&wat(RICH), &Options::default()).unwrap().bytes;
    assert_eq!(from_text, from_binary);
}

#[test]
fn is_deterministic() {
    let a = ok(RICH);
    let b = ok(RICH);
    assert_eq!(a, b);
}

#[test]
fn indices_are_kept_but_own_functions_move_past_the_refuel_import() {
    let before = exports(&wat(RICH));
    let after = exports(&ok(RICH));
    // RICH imports one function (proc_exit): its own functions start at 1 and move to 2.
    for (name, kind, index) in &before {
        let expected = if *kind == ExternalKind::Func && *index >= 1 {
            index + 1
        } else {
            *index
        };
        assert!(
            after.contains(&(name.clone(), *kind, expected)),
            "export {name} is not at {expected}: {after:?}"
        );
    }
    // New globals come after the module's two; the new function after its four own ones.
    let fuel = after.iter().find(|e| e.0 == FUEL_GLOBAL).unwrap();
    assert_eq!(fuel.2, 2);
    let (mut funcs, mut imports) = (0, Vec::new());
    for payload in Parser::new(0).parse_all(&ok(RICH)) {
        match payload.unwrap() {
            Payload::FunctionSection(r) => funcs = r.count(),
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    let import = import.unwrap();
                    imports.push(format!("{}.{}", import.module, import.name));
                }
            }
            _ => {}
        }
    }
    assert_eq!(funcs, 4 + 1);
    assert_eq!(
        imports,
        [
            "wasi_snapshot_preview1.proc_exit".to_string(),
            format!("{HOST_MODULE}.{REFUEL_FUNCTION}")
        ]
    );
}

#[test]
fn loops_get_refuel_checks_and_branches_out_of_them_still_validate() {
    // Branches of every kind out of one, two and three loops (with a result, with a
    // parameter, inside blocks and ifs): wrong renumbering would not validate.
    let text = r#"(module
      (memory (export "memory") 1)
      (func $f (param i32) (result i32)
        (block $out (result i32)
          (loop $a (result i32)
            (block $mid
              (loop $b
                (if (local.get 0) (then (br $mid)))
                i32.const 7
                (loop $c (param i32)
                  drop
                  (br_if $a (local.get 0))
                  (br_table $b $a $mid (local.get 0)))
                (br_if $b (local.get 0))))
            (br_if $out (i32.const 5) (local.get 0))
            (br $a))))
      (func (export "_start") (drop (call $f (i32.const 1)))))"#;
    let out = ok(text);
    validate(&out);
    // One import more than the input: the refuel function.
    let mut imports = 0;
    for payload in Parser::new(0).parse_all(&out) {
        if let Payload::ImportSection(r) = payload.unwrap() {
            imports = r.count();
        }
    }
    assert_eq!(imports, 1);
}

#[test]
fn drops_custom_sections() {
    let text = r#"(module (@custom "hello" "world") (memory (export "memory") 1)
        (func $main (export "_start")))"#;
    for payload in Parser::new(0).parse_all(&ok(text)) {
        assert!(!matches!(payload.unwrap(), Payload::CustomSection(_)));
    }
}

#[test]
fn refuses_imports_outside_the_subset() {
    let cases = [
        (
            r#"(import "env" "foo" (func))"#,
            "env",
            "foo",
            "runegrid subset",
        ),
        (
            r#"(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))"#,
            "wasi_snapshot_preview1",
            "sock_open",
            "runegrid subset",
        ),
        (
            r#"(import "wasi_snapshot_preview1" "thread_spawn" (func (param i32) (result i32)))"#,
            "wasi_snapshot_preview1",
            "thread_spawn",
            "runegrid subset",
        ),
        (
            r#"(import "env" "g" (global i32))"#,
            "env",
            "g",
            "only functions",
        ),
        (
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))"#,
            "wasi_snapshot_preview1",
            "fd_write",
            "differs from the wasi preview 1 signature",
        ),
    ];
    for (import, want_module, want_name, want_reason) in cases {
        let text =
            format!(r#"(module {import} (memory (export "memory") 1) (func (export "_start")))"#);
        match err(&text) {
            InstrumentError::ForbiddenImport {
                module,
                name,
                reason,
            } => {
                assert_eq!((module.as_str(), name.as_str()), (want_module, want_name));
                assert!(reason.contains(want_reason), "{reason}");
            }
            other => panic!("{import}: {other}"),
        }
    }
    match err(
        r#"(module (import "env" "mem" (memory 1)) (export "memory" (memory 0)) (func (export "_start")))"#,
    ) {
        InstrumentError::ForbiddenImport { reason, .. } => {
            assert!(reason.contains("only functions"))
        }
        other => panic!("imported memory: {other}"),
    }
    let e = err(
        r#"(module (import "env" "foo" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    );
    assert_eq!(
        e.to_string(),
        "import env.foo is not allowed: tasks may import only the wasi_snapshot_preview1 \
         functions of the runegrid subset"
    );
}

#[test]
fn accepts_every_allowed_import_with_its_signature() {
    // proc_exit is the odd one out: no result.
    let text = r#"(module
      (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open"
        (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (memory (export "memory") 1) (func (export "_start")))"#;
    let out = instrument(&wat(text), &Options::default()).unwrap();
    assert_eq!(out.imports.len(), 3);
    assert!(ALLOWED_WASI_IMPORTS.contains(&"poll_oneoff"));
    // Programs that link the socket calls are accepted; no fd is a socket at run time.
    let sockets = r#"(module
      (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_recv" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_send" (func (param i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_shutdown" (func (param i32 i32) (result i32)))
      (memory (export "memory") 1) (func (export "_start")))"#;
    assert_eq!(
        instrument(&wat(sockets), &Options::default())
            .unwrap()
            .imports
            .len(),
        4
    );
}

#[test]
fn refuses_forbidden_features_by_name() {
    let cases = [
        (
            "(func (drop (i32x4.relaxed_trunc_f32x4_s (v128.const i64x2 0 0))))",
            "relaxed-simd",
        ),
        ("(func $f (return_call $f))", "tail-call"),
        ("(memory 1 1 shared)", "threads"),
        ("(memory i64 1)", "memory64"),
        ("(memory 1)", "multi-memory"),
        ("(tag $t) (func (throw $t))", "exceptions"),
        (
            "(global i32 (i32.add (i32.const 1) (i32.const 2)))",
            "extended-const",
        ),
        ("(type $s (struct)) (func (drop (struct.new $s)))", "gc"),
        ("(func (drop (ref.null extern)))", "externref"),
        ("(table 1 externref)", "externref"),
    ];
    for (extra, feature) in cases {
        let text =
            format!(r#"(module (memory (export "memory") 1) (func (export "_start")) {extra})"#);
        match err(&text) {
            InstrumentError::ForbiddenFeature { feature: got } => {
                assert_eq!(got, feature, "{extra}")
            }
            other => panic!("{extra}: {other}"),
        }
    }
    let e = err(
        r#"(module (memory (export "memory") 1) (func (export "_start") (drop (f32x4.relaxed_madd (v128.const i64x2 0 0) (v128.const i64x2 0 0) (v128.const i64x2 0 0)))))"#,
    );
    assert_eq!(
        e.to_string(),
        "module uses a forbidden feature: relaxed-simd"
    );
}

/// Every SIMD instruction kind rustc emits for `+simd128` code: lanes, memory, shuffles,
/// integer and float arithmetic.
const SIMD: &str = r#"(module (memory (export "memory") 1)
  (func $dot (param $a i32) (param $b i32) (param $n i32) (result f32) (local $acc v128) (local $i i32)
    (loop $l
      (local.set $acc (f32x4.add (local.get $acc)
        (f32x4.mul (v128.load (local.get $a)) (v128.load offset=0 align=4 (local.get $b)))))
      (local.set $a (i32.add (local.get $a) (i32.const 16)))
      (local.set $b (i32.add (local.get $b) (i32.const 16)))
      (br_if $l (i32.gt_s (local.tee $n (i32.sub (local.get $n) (i32.const 4))) (i32.const 0))))
    (f32.add
      (f32.add (f32x4.extract_lane 0 (local.get $acc)) (f32x4.extract_lane 1 (local.get $acc)))
      (f32.add (f32x4.extract_lane 2 (local.get $acc)) (f32x4.extract_lane 3 (local.get $acc)))))
  (func (export "_start") (local $v v128)
    (local.set $v (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
      (i16x8.extmul_low_i8x16_s (v128.load8x8_s (i32.const 0)) (i8x16.splat (i32.const 3)))
      (i32x4.dot_i16x8_s (v128.const i16x8 1 2 3 4 5 6 7 8) (v128.load16_splat (i32.const 8)))))
    (v128.store (i32.const 64) (local.get $v))
    (v128.store64_lane 1 (i32.const 80) (v128.load32_zero (i32.const 4)))
    (local.set $v (v128.load8_lane 3 (i32.const 9) (local.get $v)))
    (drop (i8x16.bitmask (local.get $v)))
    (drop (v128.any_true (local.get $v)))
    (f32.store (i32.const 96) (call $dot (i32.const 0) (i32.const 32) (i32.const 8)))
    (v128.store (i32.const 112) (f64x2.promote_low_f32x4 (f32x4.pmin (local.get $v)
      (f32x4.convert_i32x4_u (i32x4.trunc_sat_f32x4_s (f32x4.sqrt (local.get $v))))))))
)"#;

#[test]
fn accepts_simd_and_canonicalizes_its_float_lanes() {
    let with = ok(SIMD);
    validate(&with);
    let without = ok_without_nan(SIMD);
    validate(&without);
    // Canonicalizing code: `v128.bitselect` (0xfd 0x52) appears only in the instrumented
    // output with canonicalization.
    let bitselects = |b: &[u8]| b.windows(2).filter(|w| *w == [0xfd, 0x52]).count();
    assert_eq!(bitselects(&wat(SIMD)), 0);
    assert_eq!(bitselects(&without), 0);
    // f32x4.add into a local, f32x4.sqrt into trunc_sat (payload-blind: none), promote_low
    // into a store: two f32x4/f64x2 results reach something that could see their payload.
    assert!(bitselects(&with) >= 2, "{}", bitselects(&with));
}

#[test]
fn refuses_a_component() {
    let e = instrument(&wat("(component)"), &Options::default()).unwrap_err();
    assert_eq!(
        e,
        InstrumentError::ForbiddenFeature {
            feature: "component-model"
        }
    );
}

#[test]
fn needs_start_and_memory() {
    assert!(matches!(
        err(r#"(module (memory (export "memory") 1))"#),
        InstrumentError::MissingStart(_)
    ));
    assert!(matches!(
        err(r#"(module (memory (export "memory") 1) (func (export "_start") (param i32)))"#),
        InstrumentError::MissingStart(_)
    ));
    assert!(matches!(
        err(
            r#"(module (memory (export "memory") 1) (func (export "_start") (result i32) i32.const 0))"#
        ),
        InstrumentError::MissingStart(_)
    ));
    assert!(matches!(
        err(
            r#"(module (memory (export "memory") 1) (global (export "_start") i32 (i32.const 0)))"#
        ),
        InstrumentError::MissingStart(_)
    ));
    assert!(matches!(
        err(r#"(module (func (export "_start")))"#),
        InstrumentError::MissingMemory(_)
    ));
    assert!(matches!(
        err(r#"(module (memory 1) (func (export "_start")))"#),
        InstrumentError::MissingMemory(_)
    ));
}

#[test]
fn refuses_a_start_section() {
    let e = err(
        r#"(module (memory (export "memory") 1) (func $s) (start $s) (func (export "_start")))"#,
    );
    assert_eq!(e, InstrumentError::StartSection);
    assert_eq!(
        e.to_string(),
        "modules with a start section are not supported; export _start instead"
    );
}

#[test]
fn refuses_reserved_export_names() {
    let e = err(
        r#"(module (memory (export "memory") 1) (func (export "_start"))
        (global (export "__runegrid_fuel") i32 (i32.const 0)))"#,
    );
    assert!(matches!(e, InstrumentError::ReservedExport(_)), "{e}");
}

#[test]
fn refuses_huge_tables() {
    let e = err(
        r#"(module (memory (export "memory") 1) (func (export "_start")) (table 2000000 funcref))"#,
    );
    assert!(matches!(e, InstrumentError::Invalid(_)), "{e}");
}

#[test]
fn refuses_malformed_input() {
    let e = instrument(b"\0asm\x01\0\0\0\x01\xff", &Options::default()).unwrap_err();
    assert!(matches!(e, InstrumentError::Invalid(_)), "{e}");
    assert!(
        e.to_string().starts_with("invalid or unsupported module: "),
        "{e}"
    );
    let e = instrument(b"this is not wasm (", &Options::default()).unwrap_err();
    assert!(matches!(e, InstrumentError::Malformed(_)), "{e}");
    let e = instrument(b"", &Options::default()).unwrap_err();
    assert!(
        matches!(
            e,
            InstrumentError::Malformed(_) | InstrumentError::Invalid(_)
        ),
        "{e}"
    );
    // Valid syntax, invalid module: type mismatch.
    let e = err(
        r#"(module (memory (export "memory") 1) (func (export "_start") (drop (i32.add (i32.const 1) (f32.const 1)))))"#,
    );
    assert!(matches!(e, InstrumentError::Invalid(_)), "{e}");
}

#[test]
fn refuses_bad_options() {
    let opts = Options {
        max_call_depth: u32::MAX,
        ..Options::default()
    };
    let e = instrument(HELLO.as_bytes(), &opts).unwrap_err();
    assert!(matches!(e, InstrumentError::InvalidOptions(_)));
}

#[test]
fn nan_canonicalization_can_be_turned_off() {
    let with = ok(RICH);
    let without = ok_without_nan(RICH);
    validate(&without);
    assert!(without.len() < with.len());
}

#[test]
fn instruments_a_large_module_quickly() {
    // ~2 MB of code: many functions mixing integer, float and control flow.
    let mut text =
        String::from(r#"(module (memory (export "memory") 1) (global $g (mut i32) (i32.const 0))"#);
    let body = r#"(local $i i32) (local $x f64)
        (loop $l
          (local.set $x (f64.add (local.get $x) (f64.mul (f64.convert_i32_s (local.get $i)) (f64.const 1.5))))
          (if (i32.lt_s (local.get $i) (i32.const 10)) (then (global.set $g (i32.add (global.get $g) (i32.const 1)))))
          (f64.store (i32.const 8) (f64.sqrt (local.get $x)))
          (br_if $l (i32.lt_s (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 100))))"#;
    for i in 0..20_000 {
        text.push_str(&format!("(func $f{i} {body})"));
    }
    text.push_str(r#"(func (export "_start") (call $f0)))"#);
    let bytes = wat(&text);
    let start = std::time::Instant::now();
    let out = instrument(&bytes, &Options::default()).unwrap();
    let took = start.elapsed();
    println!(
        "instrumented {} bytes -> {} bytes in {:?} (including validation of input and output)",
        bytes.len(),
        out.bytes.len(),
        took
    );
    let start = std::time::Instant::now();
    validate(&bytes);
    println!("validating the input alone takes {:?}", start.elapsed());
    assert!(bytes.len() > 1_500_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic.
    #[test]
    fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut with_header = b"\0asm\x01\0\0\0".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = instrument(&bytes, &Options::default());
        let _ = instrument(&with_header, &Options::default());
    }

    /// A corrupted valid module is either refused or instrumented into a valid module.
    #[test]
    fn corrupted_modules_are_refused_or_valid(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = wat(RICH);
        for (at, byte) in flips {
            let n = bytes.len();
            bytes[at % n] = byte;
        }
        if let Ok(out) = instrument(&bytes, &Options::default()) {
            validate(&out.bytes);
        }
    }

    /// Random float expression trees instrument into valid modules.
    #[test]
    fn float_expressions_instrument_validly(expr in float_expr(4)) {
        let text = format!(r#"(module (memory (export "memory") 1)
            (func (export "_start") (local $a f64) (local $b f32)
              (f64.store (i32.const 0) {expr})))"#);
        validate(&ok(&text));
    }
}

/// A random `f64` expression mixing canonicalizing, bit-exact and comparing operators.
fn float_expr(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("(local.get $a)".to_string()),
        Just("(f64.const nan:0x4)".to_string()),
        Just("(f64.promote_f32 (local.get $b))".to_string()),
        (-10i32..10).prop_map(|v| format!("(f64.const {v})")),
    ];
    leaf.prop_recursive(depth, 32, 2, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec!["add", "sub", "mul", "div", "min", "max", "copysign"]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, a, b)| format!("(f64.{op} {a} {b})")),
            (
                prop::sample::select(vec![
                    "sqrt", "neg", "abs", "ceil", "floor", "trunc", "nearest"
                ]),
                inner.clone()
            )
                .prop_map(|(op, a)| format!("(f64.{op} {a})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("(select {a} {b} (f64.lt {c} (f64.const 0)))")),
            inner
                .clone()
                .prop_map(|a| format!("(f64.promote_f32 (f32.demote_f64 {a}))")),
            inner.prop_map(|a| format!("(f64.convert_i32_s (i32.trunc_sat_f64_s {a}))")),
        ]
    })
    .boxed()
}
