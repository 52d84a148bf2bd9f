//! Verification of float outputs within a tolerance: when two GPU results are "the same".
//!
//! Integer kernels are compared by digest ([`crate::verify`]). A float kernel's outputs differ
//! slightly from GPU to GPU, because WGSL lets an implementation contract `a * b + c` into an
//! FMA, reassociate, flush subnormals to zero and compute transcendentals loosely. Such a job's
//! output is a list of buffers in their declared order, each read as a little-endian `f32`
//! array, and two outputs agree when they have as many buffers, each pair of buffers has the
//! same length (a multiple of 4 bytes), and every pair of elements `a`, `b` agrees: when
//!
//! - they are bitwise equal, or both NaN (any sign and payload); otherwise
//! - an infinity agrees with nothing (an equal infinity is bitwise equal), a NaN with nothing; or
//! - `abs > 0` and `|a - b| <= abs`, or
//! - `rel > 0` and `|a - b| <= rel * max(|a|, |b|)`, or
//! - `ulps > 0` and `ulp_distance(a, b) <= ulps`.
//!
//! A bound of zero turns its test off, so [`Tolerance::default`] (all zero) is exact: bitwise
//! equality or both NaN; even `-0.0` and `+0.0` differ under it. `|a - b|` and the product are
//! computed in `f64`, so they neither overflow nor flush subnormals.
//!
//! The ULP distance ([`ulp_distance`]) is measured on the ordered line of finite `f32`s: every
//! value's bits are mapped to an integer, `+0.0` and `-0.0` both to 0, the smallest positive
//! subnormal to 1, its negative to -1, and so on to `±f32::MAX`, and the distance is the
//! difference of the two integers. It is symmetric, crosses zero (`-tiny` to `+tiny` is 2 ULPs;
//! either to a zero is 1) and counts each of the 2^23 subnormals as one step.
//!
//! Subnormal against zero (a GPU that flushes): a subnormal `x` (`|x| < f32::MIN_POSITIVE`,
//! about 1.18e-38) agrees with `±0.0` under `abs >= |x|`, so `abs >= f32::MIN_POSITIVE` covers
//! every flush; `ulps` covers it only for `|x| <= ulps` subnormal steps (1.4e-45 each), and
//! `rel` never does below `rel = 1`.
//!
//! The quorum rule ([`decide_within`]) mirrors [`crate::verify::decide`]. Agreement within a
//! tolerance is not transitive (`0 ~ 1 ~ 2` with `abs = 1`, but not `0 ~ 2`), so there are no
//! groups: each finished attempt's *agreement set* is the attempts within tolerance of it (itself
//! included), and the task is verified by the earliest-arriving attempt whose set has at least
//! `agree` members — the *representative*. The attempts that agreed are those within tolerance
//! of the representative, not necessarily of each other. Short of a quorum, the largest
//! agreement set plays the part of the largest digest group, and the task gets more attempts,
//! waits, or fails exactly as the digest rule decides.
//!
//! A whole attempt's result is an [`Answer`]: its status, fuel and stdout and its output files'
//! paths are compared exactly, and only the files' bytes within the tolerance
//! ([`Tolerance::answers_agree`], [`decide_answers`]).
//!
//! **Architecture Invariant:** pure; no I/O.

use crate::exec::ExecStatus;
use crate::verify::{Quorum, Shortfall, lost_reason, short_of_quorum};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How far apart two float results may be and still agree (see the module documentation).
///
/// Written `tolerance:abs=1e-5,rel=1e-4,ulps=4` (any subset of the keys, in any order;
/// `tolerance` alone is the default, exact). Build one with [`Tolerance::new`] or by parsing;
/// a value with a negative, NaN or infinite bound is invalid ([`Tolerance::validate`]), and
/// deserializing one fails.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "ToleranceFields")]
pub struct Tolerance {
    /// Largest absolute difference accepted; 0: none.
    pub abs: f32,
    /// Largest difference accepted relative to the larger magnitude; 0: none.
    pub rel: f32,
    /// Largest distance in units in the last place accepted; 0: none.
    pub ulps: u32,
}

/// Bounds are never NaN (see [`Tolerance::validate`]), so equality is total.
impl Eq for Tolerance {}

/// A tolerance that cannot be used, or a written one that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToleranceError {
    #[error("tolerance {name} must be a finite number of at least 0, got {value}")]
    Bound { name: &'static str, value: f32 },
    #[error("a tolerance is written tolerance:key=value,..., got {got:?}")]
    Prefix { got: String },
    #[error("expected key=value in the tolerance, got {part:?}")]
    Syntax { part: String },
    #[error("unknown tolerance key {key:?} (expected abs, rel or ulps)")]
    UnknownKey { key: String },
    #[error("tolerance key {key} is given twice")]
    Duplicate { key: &'static str },
    #[error("tolerance {key} = {value:?} is not a valid number: {reason}")]
    Number {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Why two outputs do not agree: the first difference found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Disagreement {
    #[error("the outputs have {a} and {b} buffers")]
    BufferCount { a: usize, b: usize },
    #[error("buffer {buffer} has {len} bytes, not a whole number of f32s")]
    NotF32 { buffer: usize, len: usize },
    #[error("buffer {buffer} has {a} and {b} bytes")]
    LengthMismatch { buffer: usize, a: usize, b: usize },
    #[error(
        "buffer {buffer} element {index}: {a} ({a_bits:#010x}) and {b} ({b_bits:#010x}) are not within the tolerance",
        a_bits = .a.to_bits(),
        b_bits = .b.to_bits()
    )]
    Element {
        buffer: usize,
        index: usize,
        a: f32,
        b: f32,
    },
}

/// The ULP distance of two floats on the ordered line of `f32` (see the module
/// documentation); `None` if either is NaN. Infinities sit one step past `±f32::MAX`.
pub fn ulp_distance(a: f32, b: f32) -> Option<u32> {
    if a.is_nan() || b.is_nan() {
        return None;
    }
    // Sign and magnitude to a signed integer: -0.0 (i32::MIN) maps to 0, like +0.0.
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    // At most 2 * 0x7f80_0000, which fits.
    Some((key(a) - key(b)).unsigned_abs() as u32)
}

impl Tolerance {
    /// Bitwise equality or both NaN: the default.
    pub const EXACT: Tolerance = Tolerance {
        abs: 0.0,
        rel: 0.0,
        ulps: 0,
    };

    /// A checked tolerance (`-0.0` is taken as `0.0`).
    pub fn new(abs: f32, rel: f32, ulps: u32) -> Result<Tolerance, ToleranceError> {
        // Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone.
        let t = Tolerance {
            abs: abs + 0.0,
            rel: rel + 0.0,
            ulps,
        };
        t.validate()?;
        Ok(t)
    }

    /// Checks that `abs` and `rel` are finite and not negative.
    pub fn validate(&self) -> Result<(), ToleranceError> {
        for (name, value) in [("abs", self.abs), ("rel", self.rel)] {
            if !value.is_finite() || value < 0.0 {
                return Err(ToleranceError::Bound { name, value });
            }
        }
        Ok(())
    }

    /// Whether this is the exact tolerance (every bound zero).
    pub fn is_exact(&self) -> bool {
        self.abs == 0.0 && self.rel == 0.0 && self.ulps == 0
    }

    /// Whether two elements agree (see the module documentation). Symmetric, reflexive for
    /// every bit pattern, and monotone: it stays true when any bound grows.
    pub fn agrees(&self, a: f32, b: f32) -> bool {
        if a.to_bits() == b.to_bits() {
            return true;
        }
        if a.is_nan() || b.is_nan() {
            return a.is_nan() && b.is_nan();
        }
        if a.is_infinite() || b.is_infinite() {
            return false;
        }
        let diff = (f64::from(a) - f64::from(b)).abs();
        (self.abs > 0.0 && diff <= f64::from(self.abs))
            || (self.rel > 0.0 && diff <= f64::from(self.rel) * f64::from(a.abs().max(b.abs())))
            || (self.ulps > 0 && ulp_distance(a, b).is_some_and(|d| d <= self.ulps))
    }

    /// Compares one buffer of each output (reported as buffer 0).
    pub fn compare(&self, a: &[u8], b: &[u8]) -> Result<(), Disagreement> {
        self.compare_buffer(0, a, b)
    }

    /// Compares two outputs, each a list of buffers in declared order.
    pub fn compare_outputs<A: AsRef<[u8]>, B: AsRef<[u8]>>(
        &self,
        a: &[A],
        b: &[B],
    ) -> Result<(), Disagreement> {
        if a.len() != b.len() {
            return Err(Disagreement::BufferCount {
                a: a.len(),
                b: b.len(),
            });
        }
        for (buffer, (x, y)) in a.iter().zip(b).enumerate() {
            self.compare_buffer(buffer, x.as_ref(), y.as_ref())?;
        }
        Ok(())
    }

    /// Whether two attempts' results agree: the same status, fuel, stdout and file paths, and
    /// files within the tolerance (see [`Answer`]).
    pub fn answers_agree(&self, a: &Answer<'_>, b: &Answer<'_>) -> bool {
        a.status == b.status
            && a.fuel == b.fuel
            && a.stdout == b.stdout
            && a.files.len() == b.files.len()
            && a.files.iter().zip(&b.files).all(|(x, y)| x.0 == y.0)
            && self.compare_outputs(&a.buffers(), &b.buffers()).is_ok()
    }

    fn compare_buffer(&self, buffer: usize, a: &[u8], b: &[u8]) -> Result<(), Disagreement> {
        for len in [a.len(), b.len()] {
            if len % 4 != 0 {
                return Err(Disagreement::NotF32 { buffer, len });
            }
        }
        if a.len() != b.len() {
            return Err(Disagreement::LengthMismatch {
                buffer,
                a: a.len(),
                b: b.len(),
            });
        }
        if a == b {
            return Ok(());
        }
        let f = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        for (index, (x, y)) in a.chunks_exact(4).zip(b.chunks_exact(4)).enumerate() {
            let (x, y) = (f(x), f(y));
            if !self.agrees(x, y) {
                return Err(Disagreement::Element {
                    buffer,
                    index,
                    a: x,
                    b: y,
                });
            }
        }
        Ok(())
    }
}

/// A bound as written: plain where that is short, in exponent form otherwise; both read back
/// to the same `f32`.
fn write_bound(f: &mut fmt::Formatter<'_>, v: f32) -> fmt::Result {
    if (1e-3..1e7).contains(&v) {
        write!(f, "{v}")
    } else {
        write!(f, "{v:e}")
    }
}

impl fmt::Display for Tolerance {
    /// `tolerance`, then `:` and the nonzero bounds (`abs`, `rel`, `ulps`); parses back to the
    /// same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tolerance")?;
        let mut sep = ':';
        if self.abs != 0.0 {
            write!(f, "{sep}abs=")?;
            write_bound(f, self.abs)?;
            sep = ',';
        }
        if self.rel != 0.0 {
            write!(f, "{sep}rel=")?;
            write_bound(f, self.rel)?;
            sep = ',';
        }
        if self.ulps != 0 {
            write!(f, "{sep}ulps={}", self.ulps)?;
        }
        Ok(())
    }
}

impl FromStr for Tolerance {
    type Err = ToleranceError;

    /// Reads `tolerance` or `tolerance:key=value,...` with keys `abs`, `rel` (decimal or
    /// exponent form) and `ulps` (an integer), each at most once, in any order; a key left out
    /// is 0. Blanks around the whole and around keys and values are ignored.
    fn from_str(s: &str) -> Result<Tolerance, ToleranceError> {
        let s = s.trim();
        let prefix = || ToleranceError::Prefix { got: s.to_string() };
        let rest = s.strip_prefix("tolerance").ok_or_else(prefix)?;
        if rest.is_empty() {
            return Ok(Tolerance::EXACT);
        }
        let rest = rest.strip_prefix(':').ok_or_else(prefix)?;
        let (mut abs, mut rel, mut ulps) = (None, None, None);
        for part in rest.split(',') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(ToleranceError::Syntax {
                    part: part.to_string(),
                });
            };
            let value = value.trim();
            let number = |key: &'static str, reason: String| ToleranceError::Number {
                key,
                value: value.to_string(),
                reason,
            };
            let duplicate = |key| ToleranceError::Duplicate { key };
            match key.trim() {
                "abs" => {
                    let v = value.parse().map_err(|e| number("abs", format!("{e}")))?;
                    abs.replace(v).map_or(Ok(()), |_| Err(duplicate("abs")))?;
                }
                "rel" => {
                    let v = value.parse().map_err(|e| number("rel", format!("{e}")))?;
                    rel.replace(v).map_or(Ok(()), |_| Err(duplicate("rel")))?;
                }
                "ulps" => {
                    let v = value.parse().map_err(|e| number("ulps", format!("{e}")))?;
                    ulps.replace(v).map_or(Ok(()), |_| Err(duplicate("ulps")))?;
                }
                other => {
                    return Err(ToleranceError::UnknownKey {
                        key: other.to_string(),
                    });
                }
            }
        }
        Tolerance::new(abs.unwrap_or(0.0), rel.unwrap_or(0.0), ulps.unwrap_or(0))
    }
}

/// The serialized form, checked on the way in.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ToleranceFields {
    abs: f32,
    rel: f32,
    ulps: u32,
}

impl TryFrom<ToleranceFields> for Tolerance {
    type Error = ToleranceError;
    fn try_from(v: ToleranceFields) -> Result<Tolerance, ToleranceError> {
        Tolerance::new(v.abs, v.rel, v.ulps)
    }
}

/// One finished attempt of a tolerance job: everything its digest covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'a> {
    pub status: ExecStatus,
    pub fuel: u64,
    pub stdout: &'a [u8],
    /// Its output files in path order: each path and its bytes (a GPU task's output buffers).
    pub files: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Answer<'a> {
    fn buffers(&self) -> Vec<&'a [u8]> {
        self.files.iter().map(|f| f.1).collect()
    }
}

/// What is known about a tolerance task's attempts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputTally<'a> {
    /// Outputs of the finished attempts, in arrival order: each its buffers in declared order.
    pub outputs: Vec<Vec<&'a [u8]>>,
    /// Attempts dispatched and not yet finished or lost.
    pub running: u32,
    /// Attempts lost without a result.
    pub lost: u32,
}

/// The decision for one tolerance task. Attempts are indices into [`OutputTally::outputs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToleranceVerdict {
    /// `representative` (the earliest attempt within tolerance of at least `agree` attempts,
    /// itself included) is the result. `agreed`: the attempts within tolerance of it, itself
    /// included, ascending; `disagreed`: the others, ascending.
    Verified {
        representative: usize,
        agreed: Vec<usize>,
        disagreed: Vec<usize>,
    },
    /// Dispatch this many more attempts (to workers that have not run the task).
    Dispatch(u32),
    /// Nothing to do until a running attempt finishes.
    Wait,
    /// The task cannot be verified.
    Failed { reason: String },
}

/// Decides a tolerance task's next step from its tally (see the module documentation). Pure
/// and total. An output that is not a list of `f32` arrays agrees with nothing, not even
/// itself, so it never counts towards a quorum. Compares each pair of outputs once (at most
/// `Quorum::MAX_ATTEMPTS` outputs; bitwise-equal buffers are compared as bytes).
pub fn decide_within(q: &Quorum, t: &Tolerance, tally: &OutputTally<'_>) -> ToleranceVerdict {
    decide_by(q, tally.outputs.len(), tally.running, tally.lost, |i, j| {
        t.compare_outputs(&tally.outputs[i], &tally.outputs[j])
            .is_ok()
    })
}

/// [`decide_within`] for whole results: `answers` in arrival order, compared with
/// [`Tolerance::answers_agree`].
pub fn decide_answers(
    q: &Quorum,
    t: &Tolerance,
    answers: &[Answer<'_>],
    running: u32,
    lost: u32,
) -> ToleranceVerdict {
    decide_by(q, answers.len(), running, lost, |i, j| {
        t.answers_agree(&answers[i], &answers[j])
    })
}

/// The quorum rule over `n` results, `within(i, j)` (symmetric) telling whether two agree.
fn decide_by(
    q: &Quorum,
    n: usize,
    running: u32,
    lost: u32,
    within_pair: impl Fn(usize, usize) -> bool,
) -> ToleranceVerdict {
    let mut within = vec![false; n * n];
    for i in 0..n {
        for j in i..n {
            let ok = within_pair(i, j);
            within[i * n + j] = ok;
            within[j * n + i] = ok;
        }
    }
    let set_size = |i: usize| within[i * n..(i + 1) * n].iter().filter(|x| **x).count() as u32;
    if let Some(representative) = (0..n).find(|&i| set_size(i) >= q.agree) {
        let (agreed, disagreed) = (0..n).partition(|&j| within[representative * n + j]);
        return ToleranceVerdict::Verified {
            representative,
            agreed,
            disagreed,
        };
    }
    let best = (0..n).map(set_size).max().unwrap_or(0);
    match short_of_quorum(q, n as u32, best, running, lost) {
        Shortfall::Dispatch(k) => ToleranceVerdict::Dispatch(k),
        Shortfall::Wait => ToleranceVerdict::Wait,
        Shortfall::Lost => ToleranceVerdict::Failed {
            reason: lost_reason(lost),
        },
        Shortfall::Disagreed => {
            let malformed = (0..n).filter(|&i| !within[i * n + i]).count();
            let malformed = if malformed > 0 {
                format!(" ({malformed} of them not f32 arrays)")
            } else {
                String::new()
            };
            ToleranceVerdict::Failed {
                reason: format!(
                    "replicas disagreed: {n} results{malformed}, at most {best} within tolerance of one of them, none reached {} of {} agreeing within {} attempts",
                    q.agree, q.replicas, q.max_attempts
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests;
