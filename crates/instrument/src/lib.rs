//! Validation and deterministic instrumentation of untrusted WASI preview-1 modules.
//!
//! Runs once, at job submission, on the coordinator. [`instrument`] checks that a module stays
//! inside the runegrid execution model (feature set, imports, exports) and rewrites it so that
//! **any** engine that runs the output (native wasmtime, a browser's engine) counts fuel,
//! limits call depth, limits memory and produces NaN bit patterns identically. Nothing here touches an engine or
//! does I/O: the crate is a pure function from bytes to bytes.
//!
//! # What the output contains
//!
//! Indices barely move: every new type, global and local is appended at the end of its index
//! space, so the module's globals, tables, element segments and `call_indirect` type indices are
//! untouched. One function is imported, [`HOST_MODULE`]`.`[`REFUEL_FUNCTION`] of type
//! `[] -> []`, after the module's own imports: the module's own functions each move one index
//! up, and every `call`, `ref.func`, export, element segment and global initializer that names
//! one is rewritten to match. Other instruction bytes are copied verbatim. Added items:
//!
//! | export | type | meaning |
//! | --- | --- | --- |
//! | [`FUEL_GLOBAL`] | mutable `i64`, initially 0 | fuel left; the host sets the limit before `_start` and reads it after |
//! | [`DEPTH_GLOBAL`] | mutable `i32`, initially [`Options::max_call_depth`] | calls still allowed on the stack |
//! | [`MEMORY_LIMIT_GLOBAL`] | mutable `i32`, initially 0 | memory cap in 64 KiB pages (read as unsigned); the host sets it |
//! | [`MEMORY_DENIED_GLOBAL`] | mutable `i32`, initially 0 | set to 1 when a `memory.grow` was refused by the cap |
//! | [`REFILL_GLOBAL`] | mutable `i64`, initially the margin | the module calls `refuel` when the fuel global is below it |
//!
//! plus one `i64` local in every function (its fuel; see "Cost model") and one function
//! (`(i32) -> i32`, appended after the module's functions, not exported) that
//! replaces every `memory.grow`, and its type and the refuel import's (appended after the
//! module's types).
//!
//! Custom sections (`name`, DWARF, `producers`, …) are dropped: the output is what every replica
//! must run byte for byte, and debug sections only make it bigger.
//!
//! # Cost model (fuel)
//!
//! Every function body is split into straight-line *segments*. A segment ends right after each
//! of these instructions: `loop`, `if`, `else`, `end`, `br`, `br_if`, `br_table`, `return`,
//! `unreachable`, `call`, `call_indirect`; the next segment starts with the following
//! instruction (so the body of a `loop`, the arms of an `if`, the code after a block's `end`
//! and the code after a `call` each start a segment). A `block` does not end one: its body is
//! only ever entered from the instruction before it.
//!
//! - Every original instruction costs **1**, including `block`, `loop`, `if`, `else` and `end`.
//! - A segment's whole cost is subtracted when the segment *starts*; an exit, a call or the
//!   module's own trap in the middle of a segment has already paid for all of it.
//! - Each function keeps its fuel in a local of its own (a register, where the engine can)
//!   and reads [`FUEL_GLOBAL`] into it on entry and after every call. It writes the local to
//!   the global where the host may look: before every call (host functions included), before
//!   it returns (`return`, a branch to the body's label, the body's `end`), before its own
//!   `unreachable` and every trap of the instrumentation, at every bulk charge, and at the
//!   head of every loop iteration. A trap the *engine* raises (an out-of-bounds access, a
//!   division by zero, a `call_indirect` signature mismatch, ...) therefore leaves the fuel
//!   used as of the last of those points: what was charged since (less than one pass through
//!   one function's body, no loop iteration included) is not counted. Every engine runs the
//!   same code, so the figure is the same everywhere.
//! - `memory.fill`, `memory.copy`, `memory.init`, `table.fill`, `table.copy` and `table.init`
//!   additionally cost `len / 64` (unsigned, rounded down; `len` is the operand on top of the
//!   stack), charged just before the instruction runs.
//! - Host (WASI) functions cost only their `call`; instructions injected by this crate cost
//!   nothing.
//! - A charge does not check the fuel: running out is noticed at the next *refuel check*
//!   (below), where the module calls the imported [`REFUEL_FUNCTION`] (no arguments, no
//!   results), which tops the fuel up or ends the run. Besides the checks of "Fuel slices",
//!   there is one before every call of a host function and one after every bulk charge, so
//!   the host is never called once the fuel is spent, and the module runs less than its
//!   margin past the limit. A host that finds the fuel global below zero after a trap or after
//!   `_start` returned reports the run as out of fuel, having used the whole limit.
//!
//! # Fuel slices (the host's side)
//!
//! The host need not hand the whole limit to the module at once, and a host that hands it out
//! in *slices* gets the module back at least once per slice, which is where it checks its
//! wall-time deadline: the engine needs no interruption checks of its own. The module calls
//! [`REFUEL_FUNCTION`] at its *refuel checks* when the fuel global is below [`REFILL_GLOBAL`]:
//! on entry to every function that may be re-entered (one on a cycle of the call graph, where a
//! `call_indirect` may call any function the module takes a reference to), after every call of
//! a module function returns, and at the head of every loop. A loop's check does not call from inside the loop (a call there, even one
//! never taken, makes the engine keep the loop's values in memory): it branches out of the loop
//! to blocks wrapped around it, calls there and enters the loop again at its head (loops with
//! parameters, which that branch could not carry, call from their head). Branches that leave a
//! wrapped loop are renumbered to match.
//!
//! Between two refuel checks the module runs without a loop iteration or a return, down a
//! chain of calls of functions that cannot be re-entered, so each of them at most once: it
//! spends less than the module has instructions, which is less than the *margin*, the size of
//! its code section in bytes and the initial value of [`REFILL_GLOBAL`]. The host sets [`FUEL_GLOBAL`] to a first slice and
//! keeps the rest of the limit in reserve; the fuel left is always the global plus the reserve.
//! `refuel` checks the deadline and, while the reserve lasts, tops the global up to more than
//! the margin; when the reserve is empty it sets [`REFILL_GLOBAL`] to 0 (the next check that
//! finds the fuel below zero ends the run). The charges can therefore only take the global
//! below zero when the reserve is empty, that is when the whole limit is spent: where the
//! slices are cut is not observable, and the fuel used and every result are the same whatever
//! the slice. A host that hands out the whole limit at once sets [`REFILL_GLOBAL`] to 0.
//!
//! Example: `(func (local $i i32) i32.const 10 local.set $i loop br_if… end)` with a 5
//! instruction loop body run 10 times costs `3 + 10 × 5 + 2` (the prologue `i32.const`,
//! `local.set`, `loop`; the body; the final two `end`s).
//!
//! # Call depth
//!
//! Around every `call_indirect`, and every original `call` that may be part of a recursion,
//! the module decrements [`DEPTH_GLOBAL`] (trapping with `unreachable` when it goes below zero)
//! and increments it again when the call returns. A direct call may be part of a recursion
//! when the callee can call the caller again through direct calls (the two are in one strongly
//! connected component of the module's call graph, a function calling itself included); a
//! recursion through a function table always passes a `call_indirect`. Other calls are not
//! counted: calls of imported (WASI) functions (the host never calls back into the module) and
//! calls down the graph, of which a chain between two counted calls is at most as long as the
//! module has functions. The limit therefore bounds how deep a program recurses, while the
//! common calls of helpers (an allocator, a formatter) cost no accounting. The module
//! initialises the global to [`Options::max_call_depth`]; after a trap the host reads it and a
//! negative value means the depth limit was hit (check fuel first). Every engine therefore
//! overflows at the same depth, whatever its native stack.
//!
//! # Memory
//!
//! Every `memory.grow` becomes a call to the injected function: if
//! `memory.size + delta > limit` (computed in 64 bits, `limit` the unsigned value of
//! [`MEMORY_LIMIT_GLOBAL`]) it sets [`MEMORY_DENIED_GLOBAL`] to 1 and returns -1 without
//! growing; otherwise it runs the real `memory.grow`. `table.grow` is similarly refused
//! (returns -1) beyond [`MAX_TABLE_ELEMENTS`]; a table declared larger is rejected.
//!
//! # NaN canonicalization
//!
//! With [`Options::nan_canonicalization`] (the default), every float result that may be a NaN
//! with an engine-dependent payload (`add`, `sub`, `mul`, `div`, `sqrt`, `min`, `max`, `ceil`,
//! `floor`, `trunc`, `nearest` of `f32`/`f64`, `f32.demote_f64`, `f64.promote_f32`) is replaced
//! by the canonical quiet NaN (`0x7fc00000`, `0x7ff8000000000000`) when it is a NaN. The same
//! holds lane by lane for SIMD: `f32x4`/`f64x2` `add`, `sub`, `mul`, `div`, `sqrt`, `min`, `max`,
//! `ceil`, `floor`, `trunc`, `nearest`, `f32x4.demote_f64x2_zero` and
//! `f64x2.promote_low_f32x4` (a compare and a `v128.bitselect` per result). Bit-exact
//! instructions (`neg`, `abs`, `copysign`, `pmin`, `pmax`, loads, constants,
//! reinterpretations, lane moves) are left alone; relaxed SIMD is refused.
//! Canonicalization is skipped, as an optimization that cannot change any observable bit, when
//! a tracker of the operand stack within the segment proves the value is consumed only by an
//! instruction that does not look at NaN payloads (another of the operations above, a float
//! comparison, a float-to-int truncation, or `drop`). It is also moved, for the same reason,
//! from where a value is made to where it is read for *lazy* locals: a float local whose every
//! `local.set`/`local.tee` stores the result of the operation just before it (and that is not
//! a parameter) holds only results that would have been canonicalized, so its reads are
//! canonicalized instead, and only those a payload-blind instruction does not consume. The
//! bits any instruction observes are the same as with canonicalization at every result.

mod callgraph;
mod inject;
mod validate;

pub use validate::{ALLOWED_FEATURES, ALLOWED_WASI_IMPORTS, WASI_MODULE};

/// Exported mutable `i64` global holding the fuel left (in the current slice).
pub const FUEL_GLOBAL: &str = "__runegrid_fuel";
/// The module of the one non-WASI import an instrumented module has.
pub const HOST_MODULE: &str = "runegrid";
/// The function ([`HOST_MODULE`]`.refuel`, `[] -> []`) the module calls when its fuel global
/// went below zero: see "Fuel slices".
pub const REFUEL_FUNCTION: &str = "refuel";
/// Exported mutable `i64` global: the module calls [`REFUEL_FUNCTION`] when its fuel global is
/// below it (see "Fuel slices"). Its initial value is the *margin*, more than any function of
/// the module spends between two such checks.
pub const REFILL_GLOBAL: &str = "__runegrid_refill_at";
/// Exported mutable `i32` global holding how many more nested calls are allowed.
pub const DEPTH_GLOBAL: &str = "__runegrid_depth";
/// Exported mutable `i32` global the host sets to the memory cap, in 64 KiB pages (unsigned).
pub const MEMORY_LIMIT_GLOBAL: &str = "__runegrid_memory_limit_pages";
/// Exported mutable `i32` global set to 1 when a `memory.grow` was refused by the cap.
pub const MEMORY_DENIED_GLOBAL: &str = "__runegrid_memory_denied";
/// Export names starting with this prefix are reserved for the instrumentation.
pub const RESERVED_PREFIX: &str = "__runegrid_";
/// Largest number of elements a table may have (declared or grown).
pub const MAX_TABLE_ELEMENTS: u32 = 1 << 20;
/// Default for [`Options::max_call_depth`].
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 4096;

/// How to instrument a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Replace NaN results of float arithmetic with the canonical NaN (default `true`).
    pub nan_canonicalization: bool,
    /// Most calls that may be nested at once (default [`DEFAULT_MAX_CALL_DEPTH`]); at most
    /// `i32::MAX`.
    pub max_call_depth: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nan_canonicalization: true,
            max_call_depth: DEFAULT_MAX_CALL_DEPTH,
        }
    }
}

/// An instrumented module, ready to be run by any engine that implements the runegrid host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrumented {
    /// The instrumented module (binary).
    pub bytes: Vec<u8>,
    /// The WASI functions it imports, as `"module.name"`, in import order.
    pub imports: Vec<String>,
}

/// Why a module was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    /// Neither a WebAssembly binary nor valid WAT text.
    #[error("malformed module: {0}")]
    Malformed(String),
    /// The module is not valid WebAssembly, or uses something the grid does not support.
    #[error("invalid or unsupported module: {0}")]
    Invalid(String),
    /// The module uses a WebAssembly proposal the grid refuses (non-deterministic or not
    /// supported by every engine).
    #[error("module uses a forbidden feature: {feature}")]
    ForbiddenFeature {
        /// Name of the proposal, e.g. `simd`.
        feature: &'static str,
    },
    /// The module imports something outside the runegrid WASI subset.
    #[error("import {module}.{name} is not allowed: {reason}")]
    ForbiddenImport {
        module: String,
        name: String,
        reason: String,
    },
    /// The module lacks the `_start` entry point or has it with the wrong type.
    #[error("module must export a function `_start` of type [] -> []: {0}")]
    MissingStart(String),
    /// The module lacks its own memory exported as `memory`.
    #[error("module must define one memory and export it as `memory`: {0}")]
    MissingMemory(String),
    /// The module has a start section.
    #[error("modules with a start section are not supported; export _start instead")]
    StartSection,
    /// The module exports a name reserved for the instrumentation.
    #[error("export name {0} is reserved for runegrid")]
    ReservedExport(String),
    /// Bad [`Options`].
    #[error("invalid instrumentation options: {0}")]
    InvalidOptions(String),
    /// The instrumentation produced an invalid module: a bug in this crate.
    #[error("internal instrumentation error: {0}")]
    Internal(String),
}

/// Validates `wasm` (binary, or WAT text) and returns it instrumented.
///
/// Deterministic: the same input and options always give the same bytes.
pub fn instrument(wasm: &[u8], opts: &Options) -> Result<Instrumented, InstrumentError> {
    if opts.max_call_depth > i32::MAX as u32 {
        return Err(InstrumentError::InvalidOptions(format!(
            "max_call_depth {} is above {}",
            opts.max_call_depth,
            i32::MAX
        )));
    }
    let binary;
    let wasm = if wasm.starts_with(b"\0asm") {
        wasm
    } else {
        binary = wat::parse_bytes(wasm).map_err(|e| InstrumentError::Malformed(e.to_string()))?;
        &binary[..]
    };
    let info = validate::check(wasm)?;
    let bytes = inject::rewrite(wasm, &info, opts)?;
    if cfg!(debug_assertions) || VALIDATE_OUTPUT {
        wasmparser::Validator::new_with_features(ALLOWED_FEATURES)
            .validate_all(&bytes)
            .map_err(|e| InstrumentError::Internal(format!("output does not validate: {e}")))?;
    }
    Ok(Instrumented {
        bytes,
        imports: info
            .imports
            .iter()
            .map(|i| format!("{WASI_MODULE}.{}", i.name))
            .collect(),
    })
}

/// Re-validate the output in release builds too: it catches a bug here at submission rather
/// than on every worker, for about the cost of the input's own validation.
const VALIDATE_OUTPUT: bool = true;
