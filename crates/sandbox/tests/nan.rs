//! Property test of NaN canonicalization: random float expressions, with NaN payloads among
//! their inputs, must give exactly the bits of a reference evaluator that canonicalizes every
//! NaN-producing operation and treats `neg`, `abs`, `copysign` and `select` as bit-exact. This
//! also checks that skipping canonicalization of intermediate results never shows. The same
//! expressions run again as SIMD code on `f64x2` lanes (each leaf a different value per lane),
//! through the instrumentation's lane-wise canonicalization, and as scalar code that keeps every
//! intermediate result in a local (the instrumentation's lazy locals).

mod common;

use common::{limits, module, program, run};
use proptest::prelude::*;
use runegrid_core::ExecStatus;

const CANONICAL: u64 = 0x7ff8_0000_0000_0000;
const SIGN: u64 = 1 << 63;

#[derive(Debug, Clone)]
enum Expr {
    /// One value per lane (scalar code uses lane 0).
    Bits(u64, u64),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Un(&'static str, Box<Expr>),
    /// `select a b (c < 0)`
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `f64.promote_f32 (f32.demote_f64 a)`
    Demote(Box<Expr>),
    /// `f64.convert_i32_s (i32.trunc_sat_f64_s a)`
    Trunc(Box<Expr>),
}

fn canon(x: f64) -> u64 {
    if x.is_nan() { CANONICAL } else { x.to_bits() }
}

fn wasm_min_max(a: f64, b: f64, min: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        // ±0: min takes the negative zero, max the positive one.
        let (x, y) = (a.to_bits(), b.to_bits());
        f64::from_bits(if min { x | y } else { x & y })
    } else if (a < b) == min {
        a
    } else {
        b
    }
}

impl Expr {
    /// Scalar `f64` code, or `f64x2` code when `vector`.
    fn wat(&self, vector: bool) -> String {
        let w = |e: &Expr| e.wat(vector);
        if vector {
            return match self {
                Expr::Bits(a, b) => format!("(v128.const i64x2 {} {})", *a as i64, *b as i64),
                // No f64x2.copysign: the same bits with v128 logic.
                Expr::Bin("copysign", a, b) => format!(
                    "(v128.or (v128.and {} (v128.const i64x2 {m} {m})) \
                     (v128.andnot {} (v128.const i64x2 {m} {m})))",
                    w(a),
                    w(b),
                    m = !SIGN as i64
                ),
                Expr::Bin(op, a, b) => format!("(f64x2.{op} {} {})", w(a), w(b)),
                Expr::Un(op, a) => format!("(f64x2.{op} {})", w(a)),
                Expr::Select(a, b, c) => format!(
                    "(v128.bitselect {} {} (f64x2.lt {} (v128.const f64x2 0 0)))",
                    w(a),
                    w(b),
                    w(c)
                ),
                Expr::Demote(a) => {
                    format!(
                        "(f64x2.promote_low_f32x4 (f32x4.demote_f64x2_zero {}))",
                        w(a)
                    )
                }
                Expr::Trunc(a) => format!(
                    "(f64x2.convert_low_i32x4_s (i32x4.trunc_sat_f64x2_s_zero {}))",
                    w(a)
                ),
            };
        }
        match self {
            Expr::Bits(b, _) => format!("(f64.reinterpret_i64 (i64.const {}))", *b as i64),
            Expr::Bin(op, a, b) => format!("(f64.{op} {} {})", w(a), w(b)),
            Expr::Un(op, a) => format!("(f64.{op} {})", w(a)),
            Expr::Select(a, b, c) => {
                format!("(select {} {} (f64.lt {} (f64.const 0)))", w(a), w(b), w(c))
            }
            Expr::Demote(a) => format!("(f64.promote_f32 (f32.demote_f64 {}))", w(a)),
            Expr::Trunc(a) => format!("(f64.convert_i32_s (i32.trunc_sat_f64_s {}))", w(a)),
        }
    }

    /// Scalar code that computes every node into a local of its own, as compilers emit it,
    /// appended to `code`; returns the local holding the result. Locals set from a float
    /// operation are canonicalized where they are read, the others not at all.
    fn flat(&self, code: &mut String, locals: &mut u32) -> u32 {
        let mut get = |e: &Expr, code: &mut String| format!("(local.get {})", e.flat(code, locals));
        let value = match self {
            // A constant where one can be written (a lazy local may hold it), a payload NaN
            // through a reinterpretation (a local that holds one is not lazy).
            Expr::Bits(b, _) if !f64::from_bits(*b).is_nan() => {
                format!("(f64.const {:?})", f64::from_bits(*b))
            }
            Expr::Bits(b, _) => format!("(f64.reinterpret_i64 (i64.const {}))", *b as i64),
            Expr::Bin(op, a, b) => {
                let (a, b) = (get(a, code), get(b, code));
                format!("(f64.{op} {a} {b})")
            }
            Expr::Un(op, a) => format!("(f64.{op} {})", get(a, code)),
            Expr::Select(a, b, c) => {
                let (a, b, c) = (get(a, code), get(b, code), get(c, code));
                format!("(select {a} {b} (f64.lt {c} (f64.const 0)))")
            }
            Expr::Demote(a) => format!("(f64.promote_f32 (f32.demote_f64 {}))", get(a, code)),
            Expr::Trunc(a) => format!("(f64.convert_i32_s (i32.trunc_sat_f64_s {}))", get(a, code)),
        };
        let local = *locals;
        *locals += 1;
        code.push_str(&format!("(local.set {local} {value})\n"));
        // Every third value is copied to another local, as compilers do around loops.
        if local % 3 == 2 {
            let copy = *locals;
            *locals += 1;
            code.push_str(&format!("(local.set {copy} (local.get {local}))\n"));
            return copy;
        }
        local
    }

    /// The bits the instrumented module must produce in `lane` (0 for scalar code).
    fn eval(&self, lane: usize) -> u64 {
        let f = |e: &Expr| f64::from_bits(e.eval(lane));
        match self {
            Expr::Bits(a, b) => [*a, *b][lane],
            Expr::Bin(op, a, b) => {
                let (x, y) = (f(a), f(b));
                match *op {
                    "add" => canon(x + y),
                    "sub" => canon(x - y),
                    "mul" => canon(x * y),
                    "div" => canon(x / y),
                    "min" => canon(wasm_min_max(x, y, true)),
                    "max" => canon(wasm_min_max(x, y, false)),
                    "copysign" => (a.eval(lane) & !SIGN) | (b.eval(lane) & SIGN),
                    other => unreachable!("{other}"),
                }
            }
            Expr::Un(op, a) => {
                let x = f(a);
                match *op {
                    "sqrt" => canon(x.sqrt()),
                    "ceil" => canon(x.ceil()),
                    "floor" => canon(x.floor()),
                    "trunc" => canon(x.trunc()),
                    "nearest" => canon(x.round_ties_even()),
                    "neg" => a.eval(lane) ^ SIGN,
                    "abs" => a.eval(lane) & !SIGN,
                    other => unreachable!("{other}"),
                }
            }
            Expr::Select(a, b, c) => {
                if f(c) < 0.0 {
                    a.eval(lane)
                } else {
                    b.eval(lane)
                }
            }
            Expr::Demote(a) => {
                let x = f(a);
                if x.is_nan() {
                    CANONICAL
                } else {
                    f64::from(x as f32).to_bits()
                }
            }
            Expr::Trunc(a) => f64::from(f(a) as i32).to_bits(),
        }
    }
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        // NaNs with payloads, signalling and quiet, both signs.
        prop::sample::select(vec![
            0x7ff0_0000_0000_0004u64,
            0xfff8_0000_0000_1234,
            0x7ff8_dead_beef_0001,
            0xfff0_0000_0000_0001,
            CANONICAL,
        ]),
        prop::sample::select(vec![
            0.0f64,
            -0.0,
            1.5,
            -2.0,
            0.1,
            f64::INFINITY,
            f64::NEG_INFINITY,
            3e300
        ])
        .prop_map(f64::to_bits),
    ]
}

fn leaf() -> impl Strategy<Value = Expr> {
    (value(), value()).prop_map(|(a, b)| Expr::Bits(a, b))
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 40, 3, |inner| {
        let bin = prop::sample::select(vec!["add", "sub", "mul", "div", "min", "max", "copysign"]);
        let un = prop::sample::select(vec!["sqrt", "ceil", "floor", "trunc", "nearest", "neg", "abs"]);
        prop_oneof![
            3 => (bin, inner.clone(), inner.clone()).prop_map(|(op, a, b)| Expr::Bin(op, Box::new(a), Box::new(b))),
            2 => (un, inner.clone()).prop_map(|(op, a)| Expr::Un(op, Box::new(a))),
            1 => (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| Expr::Select(Box::new(a), Box::new(b), Box::new(c))),
            1 => inner.clone().prop_map(|a| Expr::Demote(Box::new(a))),
            1 => inner.prop_map(|a| Expr::Trunc(Box::new(a))),
        ]
    })
}

/// Runs the expressions (as scalar or vector code) and checks every result's bits.
fn check(exprs: &[Expr], vector: bool) -> Result<(), TestCaseError> {
    let (store, width) = if vector {
        ("v128.store", 16)
    } else {
        ("f64.store", 8)
    };
    let stores: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "({store} (i32.const {}) {})\n",
                64 + width * i,
                e.wat(vector)
            )
        })
        .collect();
    let text = module(&format!(
        r#"(func (export "_start") {stores} (call $print (i32.const 64) (i32.const {})))"#,
        width * exprs.len()
    ));
    let out = run(&program(&text), limits()).execution;
    prop_assert_eq!(out.status, ExecStatus::Exited { code: 0 });
    let lanes = if vector { 2 } else { 1 };
    for (i, e) in exprs.iter().enumerate() {
        for lane in 0..lanes {
            let at = width * i + 8 * lane;
            let got = u64::from_le_bytes(out.stdout[at..at + 8].try_into().unwrap());
            let want = e.eval(lane);
            prop_assert_eq!(
                got,
                want,
                "lane {}: {:#x} vs {:#x} for {}",
                lane,
                got,
                want,
                e.wat(vector)
            );
        }
    }
    Ok(())
}

/// Runs the expressions as code that keeps every intermediate result in a local.
fn check_through_locals(exprs: &[Expr]) -> Result<(), TestCaseError> {
    let (mut code, mut locals) = (String::new(), 0);
    for (i, e) in exprs.iter().enumerate() {
        let local = e.flat(&mut code, &mut locals);
        code.push_str(&format!(
            "(f64.store (i32.const {}) (local.get {local}))\n",
            64 + 8 * i
        ));
    }
    let declared = " f64".repeat(locals as usize);
    let text = module(&format!(
        r#"(func (export "_start") (local{declared}) {code} (call $print (i32.const 64) (i32.const {})))"#,
        8 * exprs.len()
    ));
    let out = run(&program(&text), limits()).execution;
    prop_assert_eq!(out.status, ExecStatus::Exited { code: 0 });
    for (i, e) in exprs.iter().enumerate() {
        let at = 8 * i;
        let got = u64::from_le_bytes(out.stdout[at..at + 8].try_into().unwrap());
        prop_assert_eq!(got, e.eval(0), "{:#x} for {}", got, e.wat(false));
    }
    Ok(())
}

#[test]
fn a_local_set_only_by_arithmetic_is_canonical_when_read_and_others_keep_their_bits() {
    // $lazy only ever holds a division's result; $kept also holds a payload NaN.
    let text = module(
        r#"(func (export "_start") (local $lazy f64) (local $kept f64)
            (local.set $lazy (f64.div (f64.const 0) (f64.const 0)))
            (local.set $kept (f64.div (f64.const 0) (f64.const 0)))
            (f64.store (i32.const 64) (local.get $lazy))
            (f64.store (i32.const 72) (local.get $kept))
            (local.set $kept (f64.reinterpret_i64 (i64.const 0x7ff0000000000001)))
            (f64.store (i32.const 80) (local.get $kept))
            (i64.store (i32.const 88) (i64.reinterpret_f64 (f64.add (local.get $lazy) (f64.const 1))))
            (call $print (i32.const 64) (i32.const 32)))"#,
    );
    let out = run(&program(&text), limits()).execution;
    let word = |i: usize| u64::from_le_bytes(out.stdout[8 * i..8 * i + 8].try_into().unwrap());
    assert_eq!(word(0), CANONICAL);
    assert_eq!(word(1), CANONICAL);
    assert_eq!(word(2), 0x7ff0_0000_0000_0001);
    assert_eq!(word(3), CANONICAL);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn canonicalized_bits_match_the_reference(exprs in prop::collection::vec(expr(), 16)) {
        check(&exprs, false)?;
    }

    #[test]
    fn canonicalized_bits_through_locals_match_the_reference(exprs in prop::collection::vec(expr(), 16)) {
        check_through_locals(&exprs)?;
    }

    #[test]
    fn simd_lanes_match_the_reference(exprs in prop::collection::vec(expr(), 16)) {
        check(&exprs, true)?;
    }
}
