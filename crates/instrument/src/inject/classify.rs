//! How the rewriter treats each original instruction ([`classify`]): where it ends a fuel
//! segment, how it accounts call depth, and what the NaN tracker knows of it (its stack effect,
//! which operands' NaN payloads it ignores, whether its result may need canonicalizing).

use crate::InstrumentError;
use wasmparser::{
    BlockType, ContType, FrameKind, FuncType, ModuleArity, Operator, RefType, SubType,
};

/// A float type, for NaN canonicalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Float {
    F32,
    F64,
    /// A `v128` read as four `f32` lanes.
    F32x4,
    /// A `v128` read as two `f64` lanes.
    F64x2,
}

/// Which consumed operands an instruction ignores the NaN payload of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Insensitive {
    /// It may observe the payload of any operand.
    No,
    /// It never observes the payload of an operand of this float type.
    Float(Float),
    /// It observes nothing (`drop`).
    All,
}

/// How the rewriter treats one original instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A plain instruction with a known stack effect (for the NaN tracker); `canon` when its
    /// result may be a NaN with an engine-dependent payload.
    Stack {
        pops: u32,
        pushes: u32,
        insensitive: Insensitive,
        canon: Option<Float>,
    },
    /// A plain instruction the NaN tracker does not follow.
    Opaque,
    /// Ends the current segment (control flow).
    SegmentEnd,
    /// `call` (of a module function) / `call_indirect`: depth accounting when `counted`, then
    /// ends the segment; a refuel check follows it.
    Call { counted: bool },
    /// `call` of an imported (host) function: ends the segment, no depth accounting and no
    /// refuel check (the host never calls back into the module).
    HostCall,
    /// `memory.grow`: replaced by a call to the injected function.
    MemoryGrow,
    /// Bulk instruction charged `len >> BULK_SHIFT` extra.
    Bulk,
    /// `table.grow` of this table: refused above [`MAX_TABLE_ELEMENTS`].
    TableGrow(u32),
}

/// The first byte of every SIMD instruction.
pub(super) const PREFIX_SIMD: u8 = 0xfd;

/// Answers nothing: [`Operator::operator_arity`] needs no module state for the SIMD
/// instructions, whose stack effect is fixed.
struct NoModule;

impl ModuleArity for NoModule {
    fn sub_type_at(&self, _: u32) -> Option<&SubType> {
        None
    }
    fn tag_type_arity(&self, _: u32) -> Option<(u32, u32)> {
        None
    }
    fn type_index_of_function(&self, _: u32) -> Option<u32> {
        None
    }
    fn func_type_of_cont_type(&self, _: &ContType) -> Option<&FuncType> {
        None
    }
    fn sub_type_of_ref_type(&self, _: &RefType) -> Option<&SubType> {
        None
    }
    fn control_stack_height(&self) -> u32 {
        0
    }
    fn label_block(&self, _: u32) -> Option<(BlockType, FrameKind)> {
        None
    }
}

/// `simd` when the instruction's encoding starts with the SIMD prefix: every SIMD instruction
/// not named in [`classify`] is then a plain one (bit-exact on its lanes, or integer only)
/// with its fixed stack effect.
pub(super) fn classify(op: &Operator<'_>, simd: bool) -> Result<Kind, InstrumentError> {
    use Float::{F32, F32x4, F64, F64x2};
    use Insensitive::{All, No};
    use Operator as O;
    let stack = |pops, pushes, insensitive, canon| Kind::Stack {
        pops,
        pushes,
        insensitive,
        canon,
    };
    let plain = |pops, pushes| stack(pops, pushes, No, None);
    let f = Insensitive::Float;
    Ok(match op {
        // Entering a block is a fall-through: no new segment (its `end` starts one).
        O::Block { .. } => Kind::Opaque,
        O::Loop { .. }
        | O::If { .. }
        | O::Else
        | O::End
        | O::Br { .. }
        | O::BrIf { .. }
        | O::BrTable { .. }
        | O::Return
        | O::Unreachable => Kind::SegmentEnd,
        O::Call { .. } | O::CallIndirect { .. } => Kind::Call { counted: true },
        O::MemoryGrow { .. } => Kind::MemoryGrow,
        O::MemoryFill { .. }
        | O::MemoryCopy { .. }
        | O::MemoryInit { .. }
        | O::TableFill { .. }
        | O::TableCopy { .. }
        | O::TableInit { .. } => Kind::Bulk,
        O::TableGrow { table } => Kind::TableGrow(*table),
        O::DataDrop { .. } | O::ElemDrop { .. } => Kind::Opaque,

        O::Nop => plain(0, 0),
        O::LocalGet { .. }
        | O::GlobalGet { .. }
        | O::I32Const { .. }
        | O::I64Const { .. }
        | O::F32Const { .. }
        | O::F64Const { .. }
        | O::MemorySize { .. }
        | O::RefNull { .. }
        | O::RefFunc { .. }
        | O::TableSize { .. } => plain(0, 1),
        O::I32Load { .. }
        | O::I64Load { .. }
        | O::F32Load { .. }
        | O::F64Load { .. }
        | O::I32Load8S { .. }
        | O::I32Load8U { .. }
        | O::I32Load16S { .. }
        | O::I32Load16U { .. }
        | O::I64Load8S { .. }
        | O::I64Load8U { .. }
        | O::I64Load16S { .. }
        | O::I64Load16U { .. }
        | O::I64Load32S { .. }
        | O::I64Load32U { .. }
        | O::TableGet { .. }
        | O::LocalTee { .. } => plain(1, 1),
        O::I32Store { .. }
        | O::I64Store { .. }
        | O::F32Store { .. }
        | O::F64Store { .. }
        | O::I32Store8 { .. }
        | O::I32Store16 { .. }
        | O::I64Store8 { .. }
        | O::I64Store16 { .. }
        | O::I64Store32 { .. }
        | O::TableSet { .. } => plain(2, 0),
        O::LocalSet { .. } | O::GlobalSet { .. } => plain(1, 0),
        O::Drop => stack(1, 0, All, None),
        O::Select | O::TypedSelect { .. } => plain(3, 1),

        // Unary, payload-blind or not taking floats.
        O::I32Eqz
        | O::I64Eqz
        | O::I32Clz
        | O::I32Ctz
        | O::I32Popcnt
        | O::I64Clz
        | O::I64Ctz
        | O::I64Popcnt
        | O::I32WrapI64
        | O::I64ExtendI32S
        | O::I64ExtendI32U
        | O::I32Extend8S
        | O::I32Extend16S
        | O::I64Extend8S
        | O::I64Extend16S
        | O::I64Extend32S
        | O::RefIsNull
        | O::F32ConvertI32S
        | O::F32ConvertI32U
        | O::F32ConvertI64S
        | O::F32ConvertI64U
        | O::F64ConvertI32S
        | O::F64ConvertI32U
        | O::F64ConvertI64S
        | O::F64ConvertI64U
        | O::F32ReinterpretI32
        | O::F64ReinterpretI64
        | O::I32ReinterpretF32
        | O::I64ReinterpretF64
        | O::F32Abs
        | O::F32Neg
        | O::F64Abs
        | O::F64Neg => plain(1, 1),

        // Integer binary operators and comparisons; copysign (it observes the sign of a NaN).
        O::I32Add
        | O::I32Sub
        | O::I32Mul
        | O::I32DivS
        | O::I32DivU
        | O::I32RemS
        | O::I32RemU
        | O::I32And
        | O::I32Or
        | O::I32Xor
        | O::I32Shl
        | O::I32ShrS
        | O::I32ShrU
        | O::I32Rotl
        | O::I32Rotr
        | O::I64Add
        | O::I64Sub
        | O::I64Mul
        | O::I64DivS
        | O::I64DivU
        | O::I64RemS
        | O::I64RemU
        | O::I64And
        | O::I64Or
        | O::I64Xor
        | O::I64Shl
        | O::I64ShrS
        | O::I64ShrU
        | O::I64Rotl
        | O::I64Rotr
        | O::I32Eq
        | O::I32Ne
        | O::I32LtS
        | O::I32LtU
        | O::I32GtS
        | O::I32GtU
        | O::I32LeS
        | O::I32LeU
        | O::I32GeS
        | O::I32GeU
        | O::I64Eq
        | O::I64Ne
        | O::I64LtS
        | O::I64LtU
        | O::I64GtS
        | O::I64GtU
        | O::I64LeS
        | O::I64LeU
        | O::I64GeS
        | O::I64GeU
        | O::F32Copysign
        | O::F64Copysign => plain(2, 1),

        // Float comparisons: the result does not depend on a NaN's payload.
        O::F32Eq | O::F32Ne | O::F32Lt | O::F32Gt | O::F32Le | O::F32Ge => {
            stack(2, 1, f(F32), None)
        }
        O::F64Eq | O::F64Ne | O::F64Lt | O::F64Gt | O::F64Le | O::F64Ge => {
            stack(2, 1, f(F64), None)
        }

        // Float to integer: traps (or saturates to 0) on any NaN.
        O::I32TruncF32S
        | O::I32TruncF32U
        | O::I64TruncF32S
        | O::I64TruncF32U
        | O::I32TruncSatF32S
        | O::I32TruncSatF32U
        | O::I64TruncSatF32S
        | O::I64TruncSatF32U => stack(1, 1, f(F32), None),
        O::I32TruncF64S
        | O::I32TruncF64U
        | O::I64TruncF64S
        | O::I64TruncF64U
        | O::I32TruncSatF64S
        | O::I32TruncSatF64U
        | O::I64TruncSatF64S
        | O::I64TruncSatF64U => stack(1, 1, f(F64), None),

        // May produce a NaN with an engine-dependent payload.
        O::F32Add | O::F32Sub | O::F32Mul | O::F32Div | O::F32Min | O::F32Max => {
            stack(2, 1, f(F32), Some(F32))
        }
        O::F64Add | O::F64Sub | O::F64Mul | O::F64Div | O::F64Min | O::F64Max => {
            stack(2, 1, f(F64), Some(F64))
        }
        O::F32Ceil | O::F32Floor | O::F32Trunc | O::F32Nearest | O::F32Sqrt => {
            stack(1, 1, f(F32), Some(F32))
        }
        O::F64Ceil | O::F64Floor | O::F64Trunc | O::F64Nearest | O::F64Sqrt => {
            stack(1, 1, f(F64), Some(F64))
        }
        O::F32DemoteF64 => stack(1, 1, f(F64), Some(F32)),
        O::F64PromoteF32 => stack(1, 1, f(F32), Some(F64)),

        // SIMD lanes: the same operations, per lane. `pmin`/`pmax` (a select of one operand),
        // `neg`, `abs` and the conversions from integers are bit-exact and fall to the default.
        O::F32x4Add | O::F32x4Sub | O::F32x4Mul | O::F32x4Div | O::F32x4Min | O::F32x4Max => {
            stack(2, 1, f(F32x4), Some(F32x4))
        }
        O::F64x2Add | O::F64x2Sub | O::F64x2Mul | O::F64x2Div | O::F64x2Min | O::F64x2Max => {
            stack(2, 1, f(F64x2), Some(F64x2))
        }
        O::F32x4Ceil | O::F32x4Floor | O::F32x4Trunc | O::F32x4Nearest | O::F32x4Sqrt => {
            stack(1, 1, f(F32x4), Some(F32x4))
        }
        O::F64x2Ceil | O::F64x2Floor | O::F64x2Trunc | O::F64x2Nearest | O::F64x2Sqrt => {
            stack(1, 1, f(F64x2), Some(F64x2))
        }
        O::F32x4DemoteF64x2Zero => stack(1, 1, f(F64x2), Some(F32x4)),
        O::F64x2PromoteLowF32x4 => stack(1, 1, f(F32x4), Some(F64x2)),
        O::F32x4Eq | O::F32x4Ne | O::F32x4Lt | O::F32x4Gt | O::F32x4Le | O::F32x4Ge => {
            stack(2, 1, f(F32x4), None)
        }
        O::F64x2Eq | O::F64x2Ne | O::F64x2Lt | O::F64x2Gt | O::F64x2Le | O::F64x2Ge => {
            stack(2, 1, f(F64x2), None)
        }
        O::I32x4TruncSatF32x4S | O::I32x4TruncSatF32x4U => stack(1, 1, f(F32x4), None),
        O::I32x4TruncSatF64x2SZero | O::I32x4TruncSatF64x2UZero => stack(1, 1, f(F64x2), None),
        other if simd => match other.operator_arity(&NoModule) {
            Some((pops, pushes)) => plain(pops, pushes),
            None => {
                return Err(InstrumentError::Internal(format!(
                    "no stack effect for {other:?}"
                )));
            }
        },

        other => {
            return Err(InstrumentError::Internal(format!(
                "unexpected instruction {other:?} in a validated module"
            )));
        }
    })
}
