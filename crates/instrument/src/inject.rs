//! Step 3 of [`crate::instrument`]: the rewrite that injects fuel metering, the call-depth
//! limit, the memory limit and NaN canonicalization (see the crate documentation for the
//! model). Instruction bytes that need no change are copied verbatim; only the sections that
//! gain entries (types, functions, globals, exports, code) are re-encoded, through
//! [`wasm_encoder::reencode`].

mod classify;

use crate::callgraph::{Components, Sections};
use crate::validate::ModuleInfo;
use crate::{
    DEPTH_GLOBAL, FUEL_GLOBAL, HOST_MODULE, InstrumentError, MAX_TABLE_ELEMENTS,
    MEMORY_DENIED_GLOBAL, MEMORY_LIMIT_GLOBAL, Options, REFILL_GLOBAL, REFUEL_FUNCTION,
};
use classify::{Float, Insensitive, Kind, PREFIX_SIMD, classify};
use std::convert::Infallible;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    ConstExpr, DataCountSection, ElementSection, EntityType, ExportKind, ExportSection,
    FunctionSection, GlobalSection, GlobalType, ImportSection, Module, RawSection, SectionId,
    TypeSection, ValType,
};
use wasmparser::{BlockType, Operator, OperatorsReader, OperatorsReaderAllocations};

fn invalid(e: impl std::fmt::Display) -> InstrumentError {
    InstrumentError::Invalid(e.to_string())
}

/// Re-encodes the sections that name functions with the module's own functions one index up:
/// the refuel import comes after the module's imports, so it takes the first index after them.
struct ShiftFunctions {
    imported: u32,
}

impl Reencode for ShiftFunctions {
    type Error = Infallible;

    fn function_index(
        &mut self,
        func: u32,
    ) -> Result<u32, wasm_encoder::reencode::Error<Infallible>> {
        Ok(shift(func, self.imported))
    }
}

/// The index of function `func` of the input in the output.
fn shift(func: u32, imported: u32) -> u32 {
    if func < imported { func } else { func + 1 }
}

/// Rewrites a module that passed [`crate::validate::check`].
pub(crate) fn rewrite(
    wasm: &[u8],
    info: &ModuleInfo<'_>,
    opts: &Options,
) -> Result<Vec<u8>, InstrumentError> {
    let mut re = RoundtripReencoder;
    let mut sh = ShiftFunctions {
        imported: info.num_imported_funcs,
    };
    let mut module = Module::new();
    let raw = |module: &mut Module, id: SectionId, range: std::ops::Range<usize>| {
        module.section(&RawSection {
            id: id as u8,
            data: &wasm[range],
        });
    };

    let grow_type = info.types.len() as u32;
    let refuel_type = grow_type + 1;
    let refuel_func = info.num_imported_funcs;
    // Every function of the input, then the refuel import.
    let grow_func = info.func_types.len() as u32 + 1;
    let g = Globals {
        fuel: info.num_globals,
        depth: info.num_globals + 1,
        limit: info.num_globals + 2,
        denied: info.num_globals + 3,
        refill: info.num_globals + 4,
    };

    let mut types = TypeSection::new();
    if let Some(r) = &info.type_section {
        re.parse_type_section(&mut types, r.clone())
            .map_err(invalid)?;
    }
    types.ty().function([ValType::I32], [ValType::I32]);
    types.ty().function([], []);
    module.section(&types);

    let mut imports = ImportSection::new();
    if let Some(r) = &info.import_section {
        re.parse_import_section(&mut imports, r.clone())
            .map_err(invalid)?;
    }
    imports.import(
        HOST_MODULE,
        REFUEL_FUNCTION,
        EntityType::Function(refuel_type),
    );
    module.section(&imports);

    let mut functions = FunctionSection::new();
    if let Some(r) = &info.function_section {
        re.parse_function_section(&mut functions, r.clone())
            .map_err(invalid)?;
    }
    functions.function(grow_type);
    module.section(&functions);

    if let Some(r) = &info.table_section {
        raw(&mut module, SectionId::Table, r.range());
    }
    if let Some(r) = &info.memory_section {
        raw(&mut module, SectionId::Memory, r.range());
    }

    let mut globals = GlobalSection::new();
    if let Some(r) = &info.global_section {
        sh.parse_global_section(&mut globals, r.clone())
            .map_err(invalid)?;
    }
    let mutable = |val_type| GlobalType {
        val_type,
        mutable: true,
        shared: false,
    };
    globals.global(mutable(ValType::I64), &ConstExpr::i64_const(0));
    globals.global(
        mutable(ValType::I32),
        &ConstExpr::i32_const(opts.max_call_depth as i32),
    );
    globals.global(mutable(ValType::I32), &ConstExpr::i32_const(0));
    globals.global(mutable(ValType::I32), &ConstExpr::i32_const(0));
    // The refill threshold starts at the margin: more than the module spends between two
    // refuel checks, which is at most every instruction of the module once (each instruction
    // costs 1 and takes at least one byte of the code section).
    let margin = info
        .code_section
        .as_ref()
        .map_or(0, |r| r.range().len() as u64)
        + 1;
    globals.global(mutable(ValType::I64), &ConstExpr::i64_const(margin as i64));
    module.section(&globals);

    let mut exports = ExportSection::new();
    if let Some(r) = &info.export_section {
        sh.parse_export_section(&mut exports, r.clone())
            .map_err(invalid)?;
    }
    exports.export(FUEL_GLOBAL, ExportKind::Global, g.fuel);
    exports.export(DEPTH_GLOBAL, ExportKind::Global, g.depth);
    exports.export(MEMORY_LIMIT_GLOBAL, ExportKind::Global, g.limit);
    exports.export(MEMORY_DENIED_GLOBAL, ExportKind::Global, g.denied);
    exports.export(REFILL_GLOBAL, ExportKind::Global, g.refill);
    module.section(&exports);

    if let Some(r) = &info.element_section {
        let mut elements = ElementSection::new();
        sh.parse_element_section(&mut elements, r.clone())
            .map_err(invalid)?;
        module.section(&elements);
    }
    if let Some(count) = info.data_count {
        module.section(&DataCountSection { count });
    }

    // The code section is assembled by hand: bodies are written straight into one buffer.
    let bodies = info.code_section.as_ref().map_or(0, |r| r.count());
    let input_code_len = info.code_section.as_ref().map_or(0, |r| r.range().len());
    let mut code = Vec::with_capacity(input_code_len * 2 + 64);
    uleb(&mut code, u64::from(bodies) + 1);
    let mut rw = FuncRewriter::new(wasm, info, opts, g, grow_func, refuel_func)?;
    if let Some(r) = &info.code_section {
        for (i, body) in r.clone().into_iter().enumerate() {
            let body = body.map_err(invalid)?;
            let func = info.num_imported_funcs as usize + i;
            let ty = info
                .func_types
                .get(func)
                .and_then(|t| info.types.get(*t as usize))
                .ok_or_else(|| InstrumentError::Internal(format!("function {func} has no type")))?;
            rw.function(&body, func as u32, ty.params().len() as u32, &mut code)?;
        }
    }
    let grow = grow_function(g);
    uleb(&mut code, grow.len() as u64);
    code.extend_from_slice(&grow);
    module.section(&RawSection {
        id: SectionId::Code as u8,
        data: &code,
    });

    if let Some(r) = &info.data_section {
        raw(&mut module, SectionId::Data, r.range());
    }
    Ok(module.finish())
}

/// Indices of the injected globals.
#[derive(Clone, Copy)]
struct Globals {
    fuel: u32,
    depth: u32,
    limit: u32,
    denied: u32,
    refill: u32,
}

// Opcodes of the injected instructions.
const UNREACHABLE: u8 = 0x00;
const IF: u8 = 0x04;
const ELSE: u8 = 0x05;
const END: u8 = 0x0b;
const RETURN: u8 = 0x0f;
const CALL: u8 = 0x10;
const BLOCK: u8 = 0x02;
const LOOP: u8 = 0x03;
const BR: u8 = 0x0c;
const BR_IF: u8 = 0x0d;
const BR_TABLE: u8 = 0x0e;
const LOCAL_GET: u8 = 0x20;
const LOCAL_SET: u8 = 0x21;
const LOCAL_TEE: u8 = 0x22;
const GLOBAL_GET: u8 = 0x23;
const GLOBAL_SET: u8 = 0x24;
const MEMORY_SIZE: u8 = 0x3f;
const REF_FUNC: u8 = 0xd2;
const MEMORY_GROW: u8 = 0x40;
const I32_CONST: u8 = 0x41;
const I64_CONST: u8 = 0x42;
const I32_LT_S: u8 = 0x48;
const I64_LT_S: u8 = 0x53;
const I64_GT_U: u8 = 0x56;
const I32_ADD: u8 = 0x6a;
const I32_SUB: u8 = 0x6b;
const I32_SHR_U: u8 = 0x76;
const I64_ADD: u8 = 0x7c;
const I64_SUB: u8 = 0x7d;
const I64_EXTEND_I32_U: u8 = 0xad;
const PREFIX_FC: u8 = 0xfc;
const TABLE_GROW: u32 = 15;
const TABLE_SIZE: u32 = 16;
const BLOCK_EMPTY: u8 = 0x40;
const BLOCK_I32: u8 = 0x7f;

/// `log2` of the number of bytes (or table elements) a bulk instruction may move per unit of
/// fuel.
const BULK_SHIFT: u8 = 6;

fn uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn uleb_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn sleb(out: &mut Vec<u8>, mut v: i64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn op_idx(out: &mut Vec<u8>, op: u8, idx: u32) {
    out.push(op);
    uleb(out, u64::from(idx));
}

/// `if (cond) unreachable end`.
fn trap_if(out: &mut Vec<u8>) {
    out.extend_from_slice(&[IF, BLOCK_EMPTY, UNREACHABLE, END]);
}

/// `if (cond) { call $refuel; load }`: the host tops the fuel up or ends the run. The fuel
/// global must be in sync with the fuel local `f` (see [`sync`]).
fn refuel_if(out: &mut Vec<u8>, refuel: u32, g: Globals, f: u32) {
    out.extend_from_slice(&[IF, BLOCK_EMPTY]);
    op_idx(out, CALL, refuel);
    load(out, g, f);
    out.push(END);
}

/// `fuel < refill`, on the fuel local `f`: time for a refuel check.
fn fuel_low(out: &mut Vec<u8>, g: Globals, f: u32) {
    op_idx(out, LOCAL_GET, f);
    op_idx(out, GLOBAL_GET, g.refill);
    out.push(I64_LT_S);
}

/// `f = fuel`: a function keeps the fuel in its local `f` and reads the global again where
/// the host may have changed it (on entry, after a call).
fn load(out: &mut Vec<u8>, g: Globals, f: u32) {
    op_idx(out, GLOBAL_GET, g.fuel);
    op_idx(out, LOCAL_SET, f);
}

/// `fuel = f`: the global gets the fuel local's value where the host may read it (before a
/// call, a return, a trap of the module's own, at a loop's head).
fn sync(out: &mut Vec<u8>, g: Globals, f: u32) {
    op_idx(out, LOCAL_GET, f);
    op_idx(out, GLOBAL_SET, g.fuel);
}

/// Body of the function that replaces `memory.grow`: `(param $delta i32) (result i32)`.
fn grow_function(g: Globals) -> Vec<u8> {
    let mut b = vec![0]; // no locals
    b.extend_from_slice(&[
        MEMORY_SIZE,
        0,
        I64_EXTEND_I32_U,
        LOCAL_GET,
        0,
        I64_EXTEND_I32_U,
    ]);
    b.push(I64_ADD);
    op_idx(&mut b, GLOBAL_GET, g.limit);
    b.extend_from_slice(&[I64_EXTEND_I32_U, I64_GT_U, IF, BLOCK_EMPTY, I32_CONST, 1]);
    op_idx(&mut b, GLOBAL_SET, g.denied);
    b.extend_from_slice(&[I32_CONST, 0x7f, RETURN, END]);
    b.extend_from_slice(&[LOCAL_GET, 0, MEMORY_GROW, 0, END]);
    b
}

/// Scratch locals the injected code uses, appended after a function's own locals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scratch {
    I32,
    /// The function's fuel (see [`load`] and [`sync`]).
    Fuel,
    F32,
    F64,
    V128,
    FuncRef,
}

impl Scratch {
    fn byte(self) -> u8 {
        match self {
            Scratch::I32 => 0x7f,
            Scratch::Fuel => 0x7e,
            Scratch::F32 => 0x7d,
            Scratch::F64 => 0x7c,
            Scratch::V128 => 0x7b,
            Scratch::FuncRef => 0x70,
        }
    }
}

/// What an instruction does to the loops that get a refuel check (see "Fuel slices" in the
/// crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopEvent {
    None,
    /// A loop without parameters opens: it is wrapped as
    /// `block $done (its type) loop $again block $refill LOOP … end br $done end call $refuel
    /// br $again end unreachable end`, and its head gets `br_if $refill (fuel < refill)`: the
    /// check leaves the loop to call the host, so that the loop itself has no call in it.
    Wrap,
    /// A wrapped loop ends.
    Unwrap,
    /// A loop with parameters (which a branch out could not carry) opens: its head gets
    /// `if (fuel < refill) call $refuel end`.
    Inline,
}

/// The control frames (blocks, loops, ifs, the function body) open at an instruction,
/// innermost last, and how many of them are wrapped loops: a branch that leaves a wrapped loop
/// has three more labels to cross.
#[derive(Debug, Default)]
struct Labels {
    /// Per open frame, how many wrapped loops are open up to it, it included.
    wrapped: Vec<u32>,
}

impl Labels {
    /// The function body's frame only.
    fn reset(&mut self) {
        self.wrapped.clear();
        self.wrapped.push(0);
    }

    fn open(&mut self, wrapped: bool) {
        let below = self.wrapped.last().copied().unwrap_or(0);
        self.wrapped.push(below + u32::from(wrapped));
    }

    /// Closes the innermost frame; whether it was a wrapped loop.
    fn close(&mut self) -> bool {
        let closed = self.wrapped.pop().unwrap_or(0);
        closed > self.wrapped.last().copied().unwrap_or(0)
    }

    /// How many wrapped loops a branch to the label at `depth` leaves (not its target).
    fn crossed(&self, depth: u32) -> u32 {
        let n = self.wrapped.len();
        let (Some(&inner), Some(&target)) = (
            self.wrapped.last(),
            n.checked_sub(depth as usize + 1)
                .and_then(|i| self.wrapped.get(i)),
        ) else {
            return 0;
        };
        inner - target
    }

    fn moves(&self, depth: u32) -> bool {
        self.crossed(depth) > 0
    }

    /// The depth of the label in the output.
    fn depth(&self, depth: u32) -> u32 {
        depth + 3 * self.crossed(depth)
    }
}

/// A float result whose canonicalization is not decided yet.
struct Pending {
    /// Where the canonicalizing code goes in the segment buffer (right after the producer).
    pos: usize,
    ty: Float,
    /// How many values lie above it on the operand stack.
    depth: u32,
}

/// Rewrites function bodies one at a time, reusing its buffers.
struct FuncRewriter<'w> {
    wasm: &'w [u8],
    nan: bool,
    g: Globals,
    grow_func: u32,
    num_imported_funcs: u32,
    refuel_func: u32,
    /// Which direct calls may recur (and so count towards the call depth).
    calls: Components,
    /// The number of parameters of each type of the module (for loop block types).
    type_params: Vec<u32>,
    /// The control frames open at the current instruction.
    labels: Labels,
    /// The index of the function being rewritten.
    current: u32,
    /// Code of the finished segments of the current function.
    out: Vec<u8>,
    /// Code of the current segment, without its charge.
    seg: Vec<u8>,
    seg_cost: u64,
    pending: Vec<Pending>,
    /// Positions in `seg` that get NaN-canonicalizing code.
    inserts: Vec<(usize, Float)>,
    scratch: Vec<(Scratch, u32)>,
    next_local: u32,
    /// Per local of the current function: the float type of a *lazy* local, one that is only
    /// ever set to the result of a float operator (see [`FuncRewriter::find_lazy_locals`]).
    lazy: Vec<Option<Float>>,
    allocs: Option<OperatorsReaderAllocations>,
}

impl<'w> FuncRewriter<'w> {
    fn new(
        wasm: &'w [u8],
        info: &ModuleInfo<'_>,
        opts: &Options,
        g: Globals,
        grow_func: u32,
        refuel_func: u32,
    ) -> Result<Self, InstrumentError> {
        let num_imported_funcs = info.num_imported_funcs;
        Ok(FuncRewriter {
            wasm,
            nan: opts.nan_canonicalization,
            g,
            grow_func,
            num_imported_funcs,
            refuel_func,
            calls: Components::of(Sections {
                code: info.code_section.as_ref(),
                elements: info.element_section.as_ref(),
                globals: info.global_section.as_ref(),
                num_imported: num_imported_funcs,
            })?,
            type_params: info.types.iter().map(|t| t.params().len() as u32).collect(),
            labels: Labels::default(),
            current: 0,
            out: Vec::new(),
            seg: Vec::new(),
            seg_cost: 0,
            pending: Vec::new(),
            inserts: Vec::new(),
            scratch: Vec::new(),
            next_local: 0,
            lazy: Vec::new(),
            allocs: Some(OperatorsReaderAllocations::default()),
        })
    }

    /// Keeps as lazy only the float locals (not parameters) whose every `local.set` and
    /// `local.tee` stores what the instruction just before it made: a float operator's result
    /// that may be a NaN with an engine-dependent payload (an add, a `sqrt`, ...), a constant
    /// that is not a NaN, a conversion from an integer, or the value of another lazy local.
    /// Such a local is not canonicalized when it is set but when it is read by an instruction
    /// that may observe a payload: every NaN it can hold came from a float operator, so
    /// canonicalizing it when read gives the bits canonicalizing each result would have given,
    /// while the reads that only do arithmetic or compare it, the common case, need nothing. A
    /// local that is ever set from anything else (a load, a parameter, a call, a `select`)
    /// keeps its bits as they are, as WebAssembly requires.
    fn find_lazy_locals(
        &mut self,
        body: &wasmparser::FunctionBody<'w>,
    ) -> Result<(), InstrumentError> {
        /// What the instruction before a `local.set` left on top of the stack.
        #[derive(Clone, Copy, PartialEq)]
        enum Source {
            /// A value a lazy local of this type may hold.
            Fits(Float),
            /// The value of this local.
            Local(u32),
            Other,
        }
        let mut reader = body.get_operators_reader().map_err(invalid)?;
        let mut previous = Source::Other;
        // (destination, source) of every copy between locals.
        let mut copies: Vec<(u32, u32)> = Vec::new();
        while !reader.eof() {
            let (op, start) = reader.read_with_offset().map_err(invalid)?;
            if let Operator::LocalSet { local_index } | Operator::LocalTee { local_index } = op
                && let Some(slot) = self.lazy.get_mut(local_index as usize)
                && let Some(ty) = *slot
            {
                match previous {
                    Source::Fits(t) if t == ty => {}
                    Source::Local(from) => copies.push((local_index, from)),
                    _ => *slot = None,
                }
            }
            use Operator as O;
            previous = match op {
                O::LocalGet { local_index } | O::LocalTee { local_index } => {
                    Source::Local(local_index)
                }
                O::F32Const { value } if !f32::from_bits(value.bits()).is_nan() => {
                    Source::Fits(Float::F32)
                }
                O::F64Const { value } if !f64::from_bits(value.bits()).is_nan() => {
                    Source::Fits(Float::F64)
                }
                O::F32ConvertI32S | O::F32ConvertI32U | O::F32ConvertI64S | O::F32ConvertI64U => {
                    Source::Fits(Float::F32)
                }
                O::F64ConvertI32S | O::F64ConvertI32U | O::F64ConvertI64S | O::F64ConvertI64U => {
                    Source::Fits(Float::F64)
                }
                _ => match classify(&op, self.wasm[start] == PREFIX_SIMD)? {
                    Kind::Stack {
                        canon: Some(ty @ (Float::F32 | Float::F64)),
                        ..
                    } => Source::Fits(ty),
                    _ => Source::Other,
                },
            };
        }
        // A copy of a local that is not lazy is not lazy either, transitively.
        if copies.is_empty() {
            return Ok(());
        }
        let mut copied_to: Vec<Vec<u32>> = vec![Vec::new(); self.lazy.len()];
        for &(to, from) in &copies {
            if let Some(list) = copied_to.get_mut(from as usize) {
                list.push(to);
            }
        }
        let mut todo: Vec<u32> = (0..self.lazy.len() as u32)
            .filter(|&l| self.lazy[l as usize].is_none() && !copied_to[l as usize].is_empty())
            .collect();
        while let Some(from) = todo.pop() {
            for &to in &copied_to[from as usize] {
                if self.lazy[to as usize].take().is_some() {
                    todo.push(to);
                }
            }
        }
        Ok(())
    }

    /// How the NaN tracker treats an access to a lazy local: a read may hold a NaN to
    /// canonicalize, like a float operator's result; a set does not observe the payload.
    fn lazy_local_kind(&self, op: &Operator<'_>) -> Option<Kind> {
        let (index, pops, pushes, canon) = match *op {
            Operator::LocalGet { local_index } => (local_index, 0, 1, true),
            Operator::LocalSet { local_index } => (local_index, 1, 0, false),
            Operator::LocalTee { local_index } => (local_index, 1, 1, true),
            _ => return None,
        };
        let ty = (*self.lazy.get(index as usize)?)?;
        Some(Kind::Stack {
            pops,
            pushes,
            insensitive: if pops == 0 {
                Insensitive::No
            } else {
                Insensitive::Float(ty)
            },
            canon: canon.then_some(ty),
        })
    }

    /// Index of the scratch local of type `ty`, declared on first use.
    fn local(&mut self, ty: Scratch) -> u32 {
        if let Some((_, idx)) = self.scratch.iter().find(|(t, _)| *t == ty) {
            return *idx;
        }
        let idx = self.next_local;
        self.next_local += 1;
        self.scratch.push((ty, idx));
        idx
    }

    /// The scratch local that holds a value of `ty` while it is canonicalized.
    fn local_for(&mut self, ty: Float) -> u32 {
        self.local(match ty {
            Float::F32 => Scratch::F32,
            Float::F64 => Scratch::F64,
            Float::F32x4 | Float::F64x2 => Scratch::V128,
        })
    }

    /// Rewrites one function body and appends it, with its size, to `code`.
    fn function(
        &mut self,
        body: &wasmparser::FunctionBody<'w>,
        func: u32,
        params: u32,
        code: &mut Vec<u8>,
    ) -> Result<(), InstrumentError> {
        self.current = func;
        self.out.clear();
        self.seg.clear();
        self.seg_cost = 0;
        self.pending.clear();
        self.inserts.clear();
        self.scratch.clear();
        self.labels.reset();
        let mut locals = body.get_locals_reader().map_err(invalid)?;
        let declarations = locals.get_count();
        let decl_start = locals.original_position();
        let mut count = params;
        self.lazy.clear();
        // Parameters hold what the caller passed: never lazy.
        self.lazy.resize(params as usize, None);
        for _ in 0..declarations {
            let (n, ty) = locals.read().map_err(invalid)?;
            count = count
                .checked_add(n)
                .ok_or_else(|| InstrumentError::Invalid("too many locals".into()))?;
            let float = match ty {
                wasmparser::ValType::F32 if self.nan => Some(Float::F32),
                wasmparser::ValType::F64 if self.nan => Some(Float::F64),
                _ => None,
            };
            // Validation bounds the number of locals (50,000), so this stays small.
            self.lazy.resize(count as usize, float);
        }
        let decl_end = locals.original_position();
        if self.nan {
            self.find_lazy_locals(body)?;
        }
        self.next_local = count;
        // f = fuel, and a refuel check on entry of a function that may be re-entered:
        // if f < refill { refuel(); f = fuel }
        let f = self.local(Scratch::Fuel);
        load(&mut self.out, self.g, f);
        if self.calls.reentrant(func) {
            fuel_low(&mut self.out, self.g, f);
            refuel_if(&mut self.out, self.refuel_func, self.g, f);
        }

        let ops = body.get_binary_reader_for_operators().map_err(invalid)?;
        let allocs = self.allocs.take().unwrap_or_default();
        let mut reader = OperatorsReader::new_with_allocs(ops, allocs);
        let wasm = self.wasm;
        let imported = self.num_imported_funcs;
        while !reader.eof() {
            let (op, start) = reader.read_with_offset().map_err(invalid)?;
            let end = reader.original_position();
            let kind = match op {
                // No depth accounting for a call that cannot recur: of a host function (the
                // host never calls back into the module), or of a function that cannot reach
                // the caller again through direct calls.
                Operator::Call { function_index } if function_index < imported => Kind::HostCall,
                Operator::Call { function_index }
                    if !self.calls.may_recur(self.current, function_index) =>
                {
                    Kind::Call { counted: false }
                }
                _ => classify(&op, wasm[start] == PREFIX_SIMD)?,
            };
            let kind = self.lazy_local_kind(&op).unwrap_or(kind);
            // A reference to one of the module's own functions moves one index up; a branch
            // out of a loop with a refuel check moves past the blocks around it.
            let mut moved = Vec::new();
            let raw = match op {
                Operator::Call { function_index } if function_index >= imported => {
                    op_idx(&mut moved, CALL, shift(function_index, imported));
                    &moved[..]
                }
                Operator::RefFunc { function_index } => {
                    op_idx(&mut moved, REF_FUNC, shift(function_index, imported));
                    &moved[..]
                }
                Operator::Br { relative_depth } if self.labels.moves(relative_depth) => {
                    op_idx(&mut moved, BR, self.labels.depth(relative_depth));
                    &moved[..]
                }
                Operator::BrIf { relative_depth } if self.labels.moves(relative_depth) => {
                    op_idx(&mut moved, BR_IF, self.labels.depth(relative_depth));
                    &moved[..]
                }
                Operator::BrTable { ref targets } => {
                    let mut all = Vec::with_capacity(targets.len() as usize + 1);
                    for t in targets.targets() {
                        all.push(t.map_err(invalid)?);
                    }
                    all.push(targets.default());
                    if all.iter().any(|&d| self.labels.moves(d)) {
                        moved.push(BR_TABLE);
                        uleb(&mut moved, all.len() as u64 - 1);
                        for d in all {
                            uleb(&mut moved, u64::from(self.labels.depth(d)));
                        }
                        &moved[..]
                    } else {
                        &wasm[start..end]
                    }
                }
                _ => &wasm[start..end],
            };
            // The fuel global is synced before the function is left (a return, a branch to the
            // body's label, its final `end`) and before the module's own trap.
            let body = self.labels.wrapped.len() as u32 - 1;
            let sync_before = match op {
                Operator::Return | Operator::Unreachable => true,
                Operator::End => body == 0,
                Operator::Br { relative_depth } | Operator::BrIf { relative_depth } => {
                    relative_depth == body
                }
                Operator::BrTable { ref targets } => {
                    targets.default() == body
                        || targets.targets().any(|t| t.is_ok_and(|t| t == body))
                }
                _ => false,
            };
            let event = match op {
                Operator::Block { .. } | Operator::If { .. } => {
                    self.labels.open(false);
                    LoopEvent::None
                }
                Operator::Loop { blockty } => {
                    let params = match blockty {
                        BlockType::FuncType(t) => {
                            self.type_params.get(t as usize).copied().unwrap_or(1)
                        }
                        BlockType::Empty | BlockType::Type(_) => 0,
                    };
                    self.labels.open(params == 0);
                    if params == 0 {
                        LoopEvent::Wrap
                    } else {
                        LoopEvent::Inline
                    }
                }
                Operator::End if self.labels.close() => LoopEvent::Unwrap,
                _ => LoopEvent::None,
            };
            self.instruction(kind, raw, event, sync_before);
        }
        self.allocs = Some(reader.into_allocations());
        if !self.seg.is_empty() {
            self.flush();
        }

        let declared = u64::from(declarations) + self.scratch.len() as u64;
        let len =
            uleb_len(declared) + (decl_end - decl_start) + 2 * self.scratch.len() + self.out.len();
        uleb(code, len as u64);
        uleb(code, declared);
        code.extend_from_slice(&self.wasm[decl_start..decl_end]);
        for (ty, _) in &self.scratch {
            code.extend_from_slice(&[1, ty.byte()]);
        }
        code.extend_from_slice(&self.out);
        Ok(())
    }

    fn instruction(&mut self, kind: Kind, raw: &[u8], event: LoopEvent, sync_before: bool) {
        self.seg_cost += 1;
        let (g, f) = (self.g, self.local(Scratch::Fuel));
        match kind {
            Kind::Stack {
                pops,
                pushes,
                insensitive,
                canon,
            } => {
                self.track(pops, pushes, insensitive);
                self.seg.extend_from_slice(raw);
                if let (true, Some(ty)) = (self.nan, canon) {
                    self.pending.push(Pending {
                        pos: self.seg.len(),
                        ty,
                        depth: 0,
                    });
                }
            }
            Kind::Opaque => {
                self.resolve_all();
                self.seg.extend_from_slice(raw);
            }
            Kind::SegmentEnd => {
                self.resolve_all();
                if event == LoopEvent::Wrap {
                    // block $done (the loop's type), loop $again, block $refill, then the loop.
                    self.seg.push(BLOCK);
                    self.seg.extend_from_slice(&raw[1..]);
                    self.seg
                        .extend_from_slice(&[LOOP, BLOCK_EMPTY, BLOCK, BLOCK_EMPTY]);
                }
                if sync_before {
                    sync(&mut self.seg, g, f);
                }
                self.seg.extend_from_slice(raw);
                self.flush();
                let (refuel, out) = (self.refuel_func, &mut self.out);
                match event {
                    LoopEvent::None => {}
                    // At the loop's head: fuel = f; if f < refill { br $refill }
                    LoopEvent::Wrap => {
                        sync(out, g, f);
                        fuel_low(out, g, f);
                        out.extend_from_slice(&[BR_IF, 1]);
                    }
                    // After the loop's end: br $done (with its results); the refuel check
                    // out of the loop (the global is in sync), then in again.
                    LoopEvent::Unwrap => {
                        out.extend_from_slice(&[BR, 2, END]);
                        op_idx(out, CALL, refuel);
                        load(out, g, f);
                        out.extend_from_slice(&[BR, 0, END, UNREACHABLE, END]);
                    }
                    // A loop with parameters: the check inside it.
                    LoopEvent::Inline => {
                        sync(out, g, f);
                        fuel_low(out, g, f);
                        refuel_if(out, refuel, g, f);
                    }
                }
            }
            Kind::HostCall => {
                self.resolve_all();
                // fuel = f; if f < refill { refuel() }: the host is not called once the fuel
                // is spent.
                sync(&mut self.seg, g, f);
                fuel_low(&mut self.seg, g, f);
                refuel_if(&mut self.seg, self.refuel_func, g, f);
                self.seg.extend_from_slice(raw);
                self.flush();
                load(&mut self.out, g, f);
            }
            Kind::Call { counted: false } => {
                self.resolve_all();
                sync(&mut self.seg, g, f);
                self.seg.extend_from_slice(raw);
                self.flush();
                load(&mut self.out, g, f);
                fuel_low(&mut self.out, g, f);
                refuel_if(&mut self.out, self.refuel_func, g, f);
            }
            Kind::Call { counted: true } => {
                self.resolve_all();
                // fuel = f; depth -= 1; if depth < 0 { unreachable }
                let t = self.local(Scratch::I32);
                let d = self.g.depth;
                let seg = &mut self.seg;
                sync(seg, g, f);
                op_idx(seg, GLOBAL_GET, d);
                seg.extend_from_slice(&[I32_CONST, 1, I32_SUB]);
                op_idx(seg, LOCAL_TEE, t);
                op_idx(seg, GLOBAL_SET, d);
                op_idx(seg, LOCAL_GET, t);
                seg.extend_from_slice(&[I32_CONST, 0, I32_LT_S]);
                trap_if(seg);
                seg.extend_from_slice(raw);
                self.flush();
                // depth += 1 once the call returned; f = fuel.
                let out = &mut self.out;
                op_idx(out, GLOBAL_GET, d);
                out.extend_from_slice(&[I32_CONST, 1, I32_ADD]);
                op_idx(out, GLOBAL_SET, d);
                load(out, g, f);
                fuel_low(out, g, f);
                refuel_if(out, self.refuel_func, g, f);
            }
            Kind::MemoryGrow => {
                self.track(1, 1, Insensitive::No);
                op_idx(&mut self.seg, CALL, self.grow_func);
            }
            Kind::Bulk => {
                self.resolve_all();
                // len = pop; f -= len >> BULK_SHIFT; fuel = f; if f < refill { refuel() };
                // push len
                let len = self.local(Scratch::I32);
                let seg = &mut self.seg;
                op_idx(seg, LOCAL_SET, len);
                op_idx(seg, LOCAL_GET, f);
                op_idx(seg, LOCAL_GET, len);
                seg.extend_from_slice(&[
                    I32_CONST,
                    BULK_SHIFT,
                    I32_SHR_U,
                    I64_EXTEND_I32_U,
                    I64_SUB,
                ]);
                op_idx(seg, LOCAL_TEE, f);
                op_idx(seg, GLOBAL_SET, g.fuel);
                fuel_low(seg, g, f);
                refuel_if(seg, self.refuel_func, g, f);
                op_idx(seg, LOCAL_GET, len);
                seg.extend_from_slice(raw);
            }
            Kind::TableGrow(table) => {
                self.resolve_all();
                // delta = pop; init = pop;
                // if size + delta > MAX { -1 } else { table.grow(init, delta) }
                let delta = self.local(Scratch::I32);
                // Tables hold funcref: externref is refused at validation.
                let init = self.local(Scratch::FuncRef);
                let seg = &mut self.seg;
                op_idx(seg, LOCAL_SET, delta);
                op_idx(seg, LOCAL_SET, init);
                seg.push(PREFIX_FC);
                uleb(seg, u64::from(TABLE_SIZE));
                uleb(seg, u64::from(table));
                seg.push(I64_EXTEND_I32_U);
                op_idx(seg, LOCAL_GET, delta);
                seg.extend_from_slice(&[I64_EXTEND_I32_U, I64_ADD, I64_CONST]);
                sleb(seg, i64::from(MAX_TABLE_ELEMENTS));
                seg.extend_from_slice(&[I64_GT_U, IF, BLOCK_I32, I32_CONST, 0x7f, ELSE]);
                op_idx(seg, LOCAL_GET, init);
                op_idx(seg, LOCAL_GET, delta);
                seg.push(PREFIX_FC);
                uleb(seg, u64::from(TABLE_GROW));
                uleb(seg, u64::from(table));
                seg.push(END);
            }
        }
    }

    /// Follows the pending float results through an instruction that pops `pops` values and
    /// pushes `pushes`; a consumed result is canonicalized unless the consumer ignores its
    /// payload.
    fn track(&mut self, pops: u32, pushes: u32, insensitive: Insensitive) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if p.depth < pops {
                let blind = match insensitive {
                    Insensitive::All => true,
                    Insensitive::Float(f) => f == p.ty,
                    Insensitive::No => false,
                };
                let p = self.pending.swap_remove(i);
                if !blind {
                    self.inserts.push((p.pos, p.ty));
                }
                continue;
            }
            p.depth = p.depth - pops + pushes;
            i += 1;
        }
    }

    /// Canonicalizes every pending result.
    fn resolve_all(&mut self) {
        for p in self.pending.drain(..) {
            self.inserts.push((p.pos, p.ty));
        }
    }

    /// Ends the segment: emits its charge, then its code with the canonicalizations.
    fn flush(&mut self) {
        self.resolve_all();
        let f = self.local(Scratch::Fuel);
        // f -= cost (running out is noticed at the next refuel check)
        let out = &mut self.out;
        op_idx(out, LOCAL_GET, f);
        out.push(I64_CONST);
        sleb(out, self.seg_cost as i64);
        out.push(I64_SUB);
        op_idx(out, LOCAL_SET, f);

        if self.inserts.is_empty() {
            self.out.extend_from_slice(&self.seg);
        } else {
            self.inserts.sort_unstable_by_key(|(pos, _)| *pos);
            let mut inserts = std::mem::take(&mut self.inserts);
            let mut last = 0;
            for (pos, ty) in inserts.drain(..) {
                self.out.extend_from_slice(&self.seg[last..pos]);
                last = pos;
                let t = self.local_for(ty);
                canonicalize(&mut self.out, ty, t);
            }
            self.out.extend_from_slice(&self.seg[last..]);
            self.inserts = inserts;
        }
        self.seg.clear();
        self.seg_cost = 0;
    }
}

/// Appends code that replaces the value of type `ty` on top of the stack by the canonical NaN
/// when it is a NaN (each lane, for vectors), using the scratch local `t`.
fn canonicalize(out: &mut Vec<u8>, ty: Float, t: u32) {
    use wasm_encoder::{Encode, Ieee32, Ieee64, Instruction as I};
    const NAN32: u32 = 0x7fc0_0000;
    const NAN64: u64 = 0x7ff8_0000_0000_0000;
    let lanes32 = (u128::from(NAN32) * 0x0000_0001_0000_0001_0000_0001_0000_0001) as i128;
    let lanes64 = (u128::from(NAN64) * 0x0000_0000_0000_0001_0000_0000_0000_0001) as i128;
    // Scalars: tee t; const NaN; get t; get t; eq; select  =>  t == t ? t : NaN
    // Vectors: tee t; const NaN…; get t; get t; eq; bitselect  =>  per lane, the same
    let (konst, eq, pick) = match ty {
        Float::F32 => (I::F32Const(Ieee32::new(NAN32)), I::F32Eq, I::Select),
        Float::F64 => (I::F64Const(Ieee64::new(NAN64)), I::F64Eq, I::Select),
        Float::F32x4 => (I::V128Const(lanes32), I::F32x4Eq, I::V128Bitselect),
        Float::F64x2 => (I::V128Const(lanes64), I::F64x2Eq, I::V128Bitselect),
    };
    for i in [
        I::LocalTee(t),
        konst,
        I::LocalGet(t),
        I::LocalGet(t),
        eq,
        pick,
    ] {
        i.encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb_encodings() {
        let enc = |f: fn(&mut Vec<u8>, i64), v| {
            let mut b = Vec::new();
            f(&mut b, v);
            b
        };
        let s = |b: &mut Vec<u8>, v| sleb(b, v);
        let u = |b: &mut Vec<u8>, v: i64| uleb(b, v as u64);
        assert_eq!(enc(s, 0), [0]);
        assert_eq!(enc(s, 63), [63]);
        assert_eq!(enc(s, 64), [0xc0, 0]);
        assert_eq!(enc(s, -1), [0x7f]);
        assert_eq!(enc(s, -65), [0xbf, 0x7f]);
        assert_eq!(enc(u, 127), [127]);
        assert_eq!(enc(u, 128), [0x80, 1]);
        assert_eq!(enc(u, 624485), [0xe5, 0x8e, 0x26]);
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(uleb_len(v), enc(u, v as i64).len(), "{v}");
        }
    }
}
