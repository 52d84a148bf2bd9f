//! Loop guards: a kernel that loops for ever stops, the same way on every GPU.
//!
//! A GPU cannot be interrupted like a CPU thread (a software one, such as lavapipe, would spin
//! a core until the process ends), so the coordinator rewrites each kernel once, at upload,
//! with naga: every invocation gets a private *loop budget* (`budget` iterations, counted over
//! all loops it runs, in every function), and at the head of each loop
//!
//! ```wgsl
//! if (budget == 0u) { atomicMax(&status, 1u); break; }
//! budget = budget - 1u;
//! ```
//!
//! Once the budget is spent every loop the invocation enters breaks at once, so it finishes,
//! and the hidden output buffer [`STATUS_BUFFER`] records that some invocation ran out: the
//! run's outcome is then "loop budget exhausted", a deterministic result like running out of
//! fuel. Which invocations run out, and where, depends only on the inputs.
//!
//! The budget is the kernel's `loop_budget` ([`DEFAULT_LOOP_BUDGET`] unless it says). Mesa's
//! lavapipe leaves any single loop after 65,535 iterations without a word: a budget above
//! that gives the same results on every GPU except there, which is one more reason software
//! adapters only run jobs that allow them.
//!
//! Loops that reach a barrier (`workgroupBarrier`, `storageBarrier`, `workgroupUniformLoad`,
//! directly or through calls) are left alone: a guard would make them non-uniform, which
//! WGSL forbids. Such loops run in uniform control flow; an endless one is stopped by the
//! worker's wall-time watchdog instead.
//!
//! The same upload-time rewrite clamps every index into bounds ([`crate::bounds`]), so a
//! kernel with no loop is rewritten too when it indexes anything.
//!
//! The rewritten WGSL comes from naga's WGSL writer, so both engines (wgpu natively, the
//! browser's WebGPU) compile the same text.

use crate::kernel::{Buffer, Kernel, Role};
use crate::validate::KernelError;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{
    AddressSpace, BinaryOperator, Block, Expression, Function, Handle, Literal, ResourceBinding,
    Scalar, Span, Statement, StorageAccess, Type, TypeInner,
};
use std::collections::BTreeSet;

/// The output buffer a guarded kernel gets: a `u32`, 0 unless some invocation spent its loop
/// budget. Buffer names starting with `__runegrid` are reserved.
pub const STATUS_BUFFER: &str = "__runegrid_status";
/// The prefix of names a kernel may not use.
pub const RESERVED_PREFIX: &str = "__runegrid";
/// Loop iterations per invocation, over all its loops, unless the kernel says otherwise
/// ([`Kernel::loop_budget`]). Below 65,535: Mesa's software rasterizer (lavapipe/llvmpipe)
/// silently leaves any loop after 65,535 iterations, so only budgets under that stop the
/// same way there as on other GPUs.
pub const DEFAULT_LOOP_BUDGET: u32 = 60_000;
/// The largest loop budget a kernel may ask for.
pub const MAX_LOOP_BUDGET: u32 = 1 << 30;

/// The kernel to run: `kernel` with its indices clamped ([`crate::bounds`]), its loops
/// guarded (see the module documentation) and, when it has a loop to guard, [`STATUS_BUFFER`]
/// appended to its buffers; `kernel` itself when there is nothing to clamp or guard.
pub fn guard(kernel: &Kernel, budget: u32) -> Result<Kernel, KernelError> {
    let mut module = naga::front::wgsl::parse_str(&kernel.shader)
        .map_err(|e| KernelError::Parse(e.emit_to_string(&kernel.shader)))?;
    let entry = module
        .entry_points
        .iter()
        .position(|e| e.name == kernel.entry_point)
        .ok_or_else(|| KernelError::NoEntryPoint(kernel.entry_point.clone()))?;
    // Clamped first: the loop guard's own variables are scalars, so it adds no access.
    let clamped = crate::bounds::clamp_indices(&mut module)?;

    // Functions the entry point may call, and those that reach a barrier.
    let reachable = reachable(&module, &module.entry_points[entry].function);
    let mut barrier = BTreeSet::new();
    loop {
        let before = barrier.len();
        for (h, f) in module.functions.iter() {
            if !barrier.contains(&h) && has_barrier(&f.body, &barrier) {
                barrier.insert(h);
            }
        }
        if barrier.len() == before {
            break;
        }
    }
    let has_guardable = |f: &Function| count_guardable(&f.body, &barrier) > 0;
    let any = has_guardable(&module.entry_points[entry].function)
        || reachable
            .iter()
            .any(|&h| has_guardable(&module.functions[h]));
    if !any {
        if clamped == 0 {
            return Ok(kernel.clone());
        }
        let mut bounded = kernel.clone();
        bounded.shader = write(&module, "clamping its indices failed")?;
        return Ok(bounded);
    }

    let u32_ty = module.types.insert(
        Type {
            name: None,
            inner: TypeInner::Scalar(Scalar::U32),
        },
        Span::UNDEFINED,
    );
    let atomic_ty = module.types.insert(
        Type {
            name: None,
            inner: TypeInner::Atomic(Scalar::U32),
        },
        Span::UNDEFINED,
    );
    let init = module
        .global_expressions
        .append(Expression::Literal(Literal::U32(budget)), Span::UNDEFINED);
    let group = kernel.buffers.iter().map(|b| b.group).min().unwrap_or(0);
    let binding = module
        .global_variables
        .iter()
        .filter_map(|(_, v)| v.binding.as_ref())
        .filter(|rb| rb.group == group)
        .map(|rb| rb.binding + 1)
        .max()
        .unwrap_or(0);
    let budget_var = module.global_variables.append(
        naga::GlobalVariable {
            name: Some("runegrid_loop_budget".into()),
            space: AddressSpace::Private,
            binding: None,
            ty: u32_ty,
            init: Some(init),
            memory_decorations: Default::default(),
        },
        Span::UNDEFINED,
    );
    let status_var = module.global_variables.append(
        naga::GlobalVariable {
            name: Some("runegrid_status".into()),
            space: AddressSpace::Storage {
                access: StorageAccess::LOAD | StorageAccess::STORE,
            },
            binding: Some(ResourceBinding { group, binding }),
            ty: atomic_ty,
            init: None,
            memory_decorations: Default::default(),
        },
        Span::UNDEFINED,
    );
    let vars = Vars {
        budget: budget_var,
        status: status_var,
    };
    guard_function(&mut module.entry_points[entry].function, vars, &barrier);
    for h in reachable {
        guard_function(&mut module.functions[h], vars, &barrier);
    }

    let mut guarded = kernel.clone();
    guarded.shader = write(&module, "guarding its loops failed")?;
    guarded.buffers.push(Buffer {
        name: STATUS_BUFFER.into(),
        group,
        binding,
        role: Role::Output,
        size: Some(4),
    });
    Ok(guarded)
}

/// `module` (rewritten) as WGSL, after validating it: both engines compile this text.
fn write(module: &naga::Module, what: &str) -> Result<String, KernelError> {
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(module)
        .map_err(|e| KernelError::Invalid(format!("{what}: {e}")))?;
    naga::back::wgsl::write_string(module, &info, naga::back::wgsl::WriterFlags::empty())
        .map_err(|e| KernelError::Invalid(format!("{what}: {e}")))
}

/// Splits a guarded kernel's outputs into whether its loop budget ran out and the rest.
pub fn split_status(mut outputs: Vec<(String, Vec<u8>)>) -> (bool, Vec<(String, Vec<u8>)>) {
    let mut exhausted = false;
    outputs.retain(|(name, bytes)| {
        if name == STATUS_BUFFER {
            exhausted = bytes.iter().any(|&b| b != 0);
            false
        } else {
            true
        }
    });
    (exhausted, outputs)
}

#[derive(Clone, Copy)]
struct Vars {
    budget: Handle<naga::GlobalVariable>,
    status: Handle<naga::GlobalVariable>,
}

fn reachable(module: &naga::Module, entry: &Function) -> Vec<Handle<Function>> {
    fn calls(block: &Block, out: &mut Vec<Handle<Function>>) {
        for s in block.iter() {
            match s {
                Statement::Block(b) => calls(b, out),
                Statement::If { accept, reject, .. } => {
                    calls(accept, out);
                    calls(reject, out);
                }
                Statement::Switch { cases, .. } => cases.iter().for_each(|c| calls(&c.body, out)),
                Statement::Loop {
                    body, continuing, ..
                } => {
                    calls(body, out);
                    calls(continuing, out);
                }
                Statement::Call { function, .. } => out.push(*function),
                _ => {}
            }
        }
    }
    let mut todo = Vec::new();
    calls(&entry.body, &mut todo);
    let mut seen = BTreeSet::new();
    while let Some(f) = todo.pop() {
        if seen.insert(f) {
            calls(&module.functions[f].body, &mut todo);
        }
    }
    seen.into_iter().collect()
}

/// Whether `block` reaches a barrier (directly or through a function in `barrier`).
fn has_barrier(block: &Block, barrier: &BTreeSet<Handle<Function>>) -> bool {
    block.iter().any(|s| match s {
        Statement::ControlBarrier(_)
        | Statement::MemoryBarrier(_)
        | Statement::WorkGroupUniformLoad { .. } => true,
        Statement::Block(b) => has_barrier(b, barrier),
        Statement::If { accept, reject, .. } => {
            has_barrier(accept, barrier) || has_barrier(reject, barrier)
        }
        Statement::Switch { cases, .. } => cases.iter().any(|c| has_barrier(&c.body, barrier)),
        Statement::Loop {
            body, continuing, ..
        } => has_barrier(body, barrier) || has_barrier(continuing, barrier),
        Statement::Call { function, .. } => barrier.contains(function),
        _ => false,
    })
}

/// Loops in `block` that get a guard.
fn count_guardable(block: &Block, barrier: &BTreeSet<Handle<Function>>) -> usize {
    block
        .iter()
        .map(|s| match s {
            Statement::Block(b) => count_guardable(b, barrier),
            Statement::If { accept, reject, .. } => {
                count_guardable(accept, barrier) + count_guardable(reject, barrier)
            }
            Statement::Switch { cases, .. } => cases
                .iter()
                .map(|c| count_guardable(&c.body, barrier))
                .sum(),
            Statement::Loop {
                body, continuing, ..
            } => {
                let own =
                    usize::from(!has_barrier(body, barrier) && !has_barrier(continuing, barrier));
                own + count_guardable(body, barrier) + count_guardable(continuing, barrier)
            }
            _ => 0,
        })
        .sum()
}

fn guard_function(function: &mut Function, vars: Vars, barrier: &BTreeSet<Handle<Function>>) {
    let mut body = std::mem::take(&mut function.body);
    guard_block(&mut body, &mut function.expressions, vars, barrier);
    function.body = body;
}

fn guard_block(
    block: &mut Block,
    exprs: &mut naga::Arena<Expression>,
    vars: Vars,
    barrier: &BTreeSet<Handle<Function>>,
) {
    for (statement, _) in block.span_iter_mut() {
        match statement {
            Statement::Block(b) => guard_block(b, exprs, vars, barrier),
            Statement::If { accept, reject, .. } => {
                guard_block(accept, exprs, vars, barrier);
                guard_block(reject, exprs, vars, barrier);
            }
            Statement::Switch { cases, .. } => {
                for c in cases.iter_mut() {
                    guard_block(&mut c.body, exprs, vars, barrier);
                }
            }
            Statement::Loop {
                body, continuing, ..
            } => {
                let guarded = !has_barrier(body, barrier) && !has_barrier(continuing, barrier);
                guard_block(body, exprs, vars, barrier);
                guard_block(continuing, exprs, vars, barrier);
                if guarded {
                    body.splice(0..0, loop_head(exprs, vars));
                }
            }
            _ => {}
        }
    }
}

/// `if (budget == 0u) { atomicMax(&status, 1u); break; } budget = budget - 1u;`
fn loop_head(exprs: &mut naga::Arena<Expression>, vars: Vars) -> Block {
    let sp = Span::UNDEFINED;
    let budget = exprs.append(Expression::GlobalVariable(vars.budget), sp);
    let status = exprs.append(Expression::GlobalVariable(vars.status), sp);
    let zero = exprs.append(Expression::Literal(Literal::U32(0)), sp);
    let one = exprs.append(Expression::Literal(Literal::U32(1)), sp);
    let left = exprs.append(Expression::Load { pointer: budget }, sp);
    let spent = exprs.append(
        Expression::Binary {
            op: BinaryOperator::Equal,
            left,
            right: zero,
        },
        sp,
    );
    let mut head = Block::new();
    head.push(Statement::Emit(exprs.range_from(left.index())), sp);
    let mut accept = Block::new();
    accept.push(
        Statement::Atomic {
            pointer: status,
            fun: naga::AtomicFunction::Max,
            value: one,
            result: None,
        },
        sp,
    );
    accept.push(Statement::Break, sp);
    head.push(
        Statement::If {
            condition: spent,
            accept,
            reject: Block::new(),
        },
        sp,
    );
    let left = exprs.append(Expression::Load { pointer: budget }, sp);
    let less = exprs.append(
        Expression::Binary {
            op: BinaryOperator::Subtract,
            left,
            right: one,
        },
        sp,
    );
    head.push(Statement::Emit(exprs.range_from(left.index())), sp);
    head.push(
        Statement::Store {
            pointer: budget,
            value: less,
        },
        sp,
    );
    head
}
