//! Property test of NaN canonicalization: random float expressions, with NaN payloads among
//! their inputs, must give exactly the bits of a reference evaluator that canonicalizes every
//! NaN-producing operation and treats `neg`, `abs`, `copysign` and `select` as bit-exact. This
//! also checks that skipping canonicalization of intermediate results never shows.

mod common;

use common::{limits, module, program, run};
use proptest::prelude::*;
use runegrid_core::ExecStatus;

const CANONICAL: u64 = 0x7ff8_0000_0000_0000;
const SIGN: u64 = 1 << 63;

#[derive(Debug, Clone)]
enum Expr {
    Bits(u64),
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
    fn wat(&self) -> String {
        match self {
            Expr::Bits(b) => format!("(f64.reinterpret_i64 (i64.const {}))", *b as i64),
            Expr::Bin(op, a, b) => format!("(f64.{op} {} {})", a.wat(), b.wat()),
            Expr::Un(op, a) => format!("(f64.{op} {})", a.wat()),
            Expr::Select(a, b, c) => {
                format!(
                    "(select {} {} (f64.lt {} (f64.const 0)))",
                    a.wat(),
                    b.wat(),
                    c.wat()
                )
            }
            Expr::Demote(a) => format!("(f64.promote_f32 (f32.demote_f64 {}))", a.wat()),
            Expr::Trunc(a) => format!("(f64.convert_i32_s (i32.trunc_sat_f64_s {}))", a.wat()),
        }
    }

    /// The bits the instrumented module must produce.
    fn eval(&self) -> u64 {
        let f = |e: &Expr| f64::from_bits(e.eval());
        match self {
            Expr::Bits(b) => *b,
            Expr::Bin(op, a, b) => {
                let (x, y) = (f(a), f(b));
                match *op {
                    "add" => canon(x + y),
                    "sub" => canon(x - y),
                    "mul" => canon(x * y),
                    "div" => canon(x / y),
                    "min" => canon(wasm_min_max(x, y, true)),
                    "max" => canon(wasm_min_max(x, y, false)),
                    "copysign" => (a.eval() & !SIGN) | (b.eval() & SIGN),
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
                    "neg" => a.eval() ^ SIGN,
                    "abs" => a.eval() & !SIGN,
                    other => unreachable!("{other}"),
                }
            }
            Expr::Select(a, b, c) => {
                if f(c) < 0.0 {
                    a.eval()
                } else {
                    b.eval()
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

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        // NaNs with payloads, signalling and quiet, both signs.
        prop::sample::select(vec![
            0x7ff0_0000_0000_0004u64,
            0xfff8_0000_0000_1234,
            0x7ff8_dead_beef_0001,
            0xfff0_0000_0000_0001,
            CANONICAL,
        ])
        .prop_map(Expr::Bits),
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
        .prop_map(|x| Expr::Bits(x.to_bits())),
    ]
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn canonicalized_bits_match_the_reference(exprs in prop::collection::vec(expr(), 16)) {
        let stores: String = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| format!("(f64.store (i32.const {}) {})\n", 64 + 8 * i, e.wat()))
            .collect();
        let text = module(&format!(
            r#"(func (export "_start") {stores} (call $print (i32.const 64) (i32.const {})))"#,
            8 * exprs.len()
        ));
        let out = run(&program(&text), limits()).execution;
        prop_assert_eq!(out.status, ExecStatus::Exited { code: 0 });
        for (i, e) in exprs.iter().enumerate() {
            let got = u64::from_le_bytes(out.stdout[8 * i..8 * i + 8].try_into().unwrap());
            prop_assert_eq!(got, e.eval(), "{:#x} vs {:#x} for {}", got, e.eval(), e.wat());
        }
    }
}
