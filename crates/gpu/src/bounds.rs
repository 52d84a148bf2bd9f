//! Index clamps: an out-of-bounds index reads and writes the same element on every GPU.
//!
//! WGSL leaves an out-of-bounds access to the implementation: Chromium (Tint) clamps the index,
//! wgpu on Vulkan lets a driver with `robustBufferAccess2` read zero and skip the write and
//! clamps elsewhere, so one kernel gave different bytes on different workers. The coordinator
//! therefore rewrites each kernel once, at upload, with naga (in [`crate::guard()`]), so that no
//! access is ever out of bounds; the engines' own checks then never fire and every engine
//! computes the same bytes. Every `Access` (`base[index]`) whose index is not a constant the
//! validator has already proved in bounds gets
//!
//! | `base` (or what it points to) | index becomes                                  |
//! |-------------------------------|------------------------------------------------|
//! | `array<T, N>`                 | `min(u32(index), N - 1)`                       |
//! | `array<T>` (a buffer's tail)  | `min(u32(index), arrayLength(&buffer) - 1u)`   |
//! | `vecN<T>`                     | `min(u32(index), N - 1)`                       |
//! | `matCxR<T>` (a column)        | `min(u32(index), C - 1)`                       |
//!
//! where `u32(index)` is a bitcast for an `i32` index: a negative index becomes a huge one and
//! selects the last element (which is also what Tint's robustness transform does; the browser
//! test shows it). A constant index into a runtime-sized array (`buffer[5]`), which naga cannot
//! check statically, is clamped the same way. Nested accesses (`a[i].b[j]`) clamp each level;
//! pointers, atomics, workgroup, private and function arrays and helper functions are all
//! covered, since the rewrite works on every `Access` of every function.
//!
//! `arrayLength(&buffer) - 1u` needs a buffer of at least one element: `validate.rs` requires
//! every buffer to be at least its shader type's size, in which a runtime-sized array counts
//! one element (see [`crate::Checked::min_bytes`]), so `arrayLength` is never 0.
//!
//! Arrays sized by an `override` and binding arrays are refused ([`BoundsError`]).
//!
//! naga requires an expression to refer only to earlier expressions of its function, so the
//! clamps cannot be appended: each function's expression arena is rebuilt with the clamp's
//! expressions just before the access they bound, and every handle (in expressions, statements,
//! `Emit` ranges, local variable initializers and named expressions) is remapped. The result is
//! validated again; a failure there is a bug in this pass.

use naga::valid::{Capabilities, FunctionInfo, ValidationFlags, Validator};
use naga::{
    Arena, ArraySize, BinaryOperator, Block, Expression, Function, Handle, Literal, MathFunction,
    Module, Scalar, ScalarKind, Span, Statement, TypeInner,
};
use std::collections::BTreeMap;

/// Why a kernel's indices could not be clamped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("the WGSL is not valid: {0}")]
    NotValid(String),
    #[error("an array sized by an override cannot be indexed dynamically: give it a fixed size")]
    OverrideSized,
    #[error("binding arrays are not supported")]
    BindingArray,
    #[error("a {0}-bit index is not supported: use i32 or u32")]
    IndexWidth(u32),
    #[error("a runtime-sized array is indexed through a pointer that is not its buffer's")]
    UnrootedArray,
    #[error("clamping its indices gave an invalid module (a bug in runegrid): {0}")]
    Invalid(String),
}

/// Clamps every index of every function of `module` (see the module documentation); returns
/// how many accesses it bounded. The module must be valid.
pub fn clamp_indices(module: &mut Module) -> Result<usize, BoundsError> {
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(module)
        .map_err(|e| BoundsError::NotValid(chain(&e)))?;
    let mut plans = Vec::new();
    for (handle, function) in module.functions.iter() {
        plans.push(plan(module, function, &info[handle])?);
    }
    let mut entry_plans = Vec::new();
    for (i, entry) in module.entry_points.iter().enumerate() {
        entry_plans.push(plan(module, &entry.function, info.get_entry_point(i))?);
    }
    let count: usize = plans
        .iter()
        .chain(&entry_plans)
        .map(|p| p.iter().flatten().count())
        .sum();
    if count == 0 {
        return Ok(0);
    }
    for ((_, function), plan) in module.functions.iter_mut().zip(plans) {
        rebuild(function, &plan);
    }
    for (entry, plan) in module.entry_points.iter_mut().zip(entry_plans) {
        rebuild(&mut entry.function, &plan);
    }
    Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(module)
        .map_err(|e| BoundsError::Invalid(chain(&e)))?;
    Ok(count)
}

/// An error and its causes, on one line (naga's validation errors say what is wrong in their
/// sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The upper end of an index: the length of what it indexes.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// A fixed length (arrays, vectors, matrix columns): at least 1.
    Fixed(u32),
    /// `arrayLength` of the access's base, a pointer to a runtime-sized array.
    Runtime,
}

/// The index to clamp.
#[derive(Debug, Clone, Copy)]
enum Index {
    /// An expression of type `u32`, or `i32` when `signed`.
    Dynamic {
        expr: Handle<Expression>,
        signed: bool,
    },
    /// A constant (an `AccessIndex` into a runtime-sized array).
    Constant(u32),
}

#[derive(Debug, Clone, Copy)]
struct Clamp {
    index: Index,
    limit: Limit,
}

/// What indexing a value of this type needs.
enum Extent {
    Limit(Limit),
    /// Not an array, vector or matrix (a struct's member index is checked by the validator).
    Other,
}

fn extent(module: &Module, inner: &TypeInner) -> Result<Extent, BoundsError> {
    let inner = match *inner {
        TypeInner::Pointer { base, .. } => &module.types[base].inner,
        ref other => other,
    };
    Ok(match *inner {
        TypeInner::Vector { size, .. }
        | TypeInner::ValuePointer {
            size: Some(size), ..
        } => Extent::Limit(Limit::Fixed(size as u32)),
        TypeInner::Matrix { columns, .. } => Extent::Limit(Limit::Fixed(columns as u32)),
        TypeInner::Array { size, .. } => match size {
            ArraySize::Constant(n) => Extent::Limit(Limit::Fixed(n.get())),
            ArraySize::Dynamic => Extent::Limit(Limit::Runtime),
            ArraySize::Pending(_) => return Err(BoundsError::OverrideSized),
        },
        TypeInner::BindingArray { .. } => return Err(BoundsError::BindingArray),
        _ => Extent::Other,
    })
}

/// The clamp each expression of `function` needs, by handle index.
fn plan(
    module: &Module,
    function: &Function,
    info: &FunctionInfo,
) -> Result<Vec<Option<Clamp>>, BoundsError> {
    let types = &module.types;
    let mut clamps = vec![None; function.expressions.len()];
    for (handle, expression) in function.expressions.iter() {
        let (base, index) = match *expression {
            Expression::Access { base, index } => {
                let signed = match *info[index].ty.inner_with(types) {
                    TypeInner::Scalar(Scalar { kind, width: 4 }) => kind == ScalarKind::Sint,
                    TypeInner::Scalar(Scalar { width, .. }) => {
                        return Err(BoundsError::IndexWidth(u32::from(width) * 8));
                    }
                    // The validator allows integer scalars only.
                    _ => {
                        return Err(BoundsError::NotValid(
                            "an index that is not an integer".into(),
                        ));
                    }
                };
                (
                    base,
                    Index::Dynamic {
                        expr: index,
                        signed,
                    },
                )
            }
            Expression::AccessIndex { base, index } => (base, Index::Constant(index)),
            _ => continue,
        };
        let limit = match extent(module, info[base].ty.inner_with(types))? {
            Extent::Limit(limit) => limit,
            Extent::Other => continue,
        };
        let needed = match (limit, index) {
            // The validator refused a constant index past a fixed length.
            (Limit::Fixed(_), Index::Constant(_)) => false,
            (Limit::Fixed(_), Index::Dynamic { expr, .. }) => {
                naga::proc::index::access_needs_check(
                    base,
                    naga::proc::index::GuardedIndex::Expression(expr),
                    module,
                    &function.expressions,
                    info,
                )
                .is_some()
            }
            (Limit::Runtime, _) => {
                // `arrayLength` takes the buffer's own variable, or its struct's last member.
                let rooted = match function.expressions[base] {
                    Expression::GlobalVariable(_) => true,
                    Expression::AccessIndex { base, .. } => {
                        matches!(function.expressions[base], Expression::GlobalVariable(_))
                    }
                    _ => false,
                };
                if !rooted {
                    return Err(BoundsError::UnrootedArray);
                }
                true
            }
        };
        if needed {
            clamps[handle.index()] = Some(Clamp { index, limit });
        }
    }
    Ok(clamps)
}

/// Rebuilds `function`'s expressions with the clamps of `plan`, each just before its access,
/// and remaps every handle to them.
fn rebuild(function: &mut Function, plan: &[Option<Clamp>]) {
    if plan.iter().all(Option::is_none) {
        return;
    }
    let sp = Span::UNDEFINED;
    let mut old = std::mem::take(&mut function.expressions);
    let mut exprs = Arena::new();

    // The constants the clamps use come first: literals need no `Emit`, and there they are
    // outside every `Emit` range.
    let mut values: Vec<u32> = plan
        .iter()
        .flatten()
        .flat_map(|c| {
            let index = match c.index {
                Index::Constant(k) => Some(k),
                Index::Dynamic { .. } => None,
            };
            let limit = match c.limit {
                Limit::Fixed(n) => n - 1,
                Limit::Runtime => 1,
            };
            index.into_iter().chain([limit])
        })
        .collect();
    values.sort_unstable();
    values.dedup();
    let literals: BTreeMap<u32, Handle<Expression>> = values
        .into_iter()
        .map(|v| (v, exprs.append(Expression::Literal(Literal::U32(v)), sp)))
        .collect();

    // `map[old]` is the expression's new handle; `first[old]` the index of the first new
    // expression it brought (its clamp's, else itself), where an `Emit` starting at it starts.
    let mut map: Vec<Handle<Expression>> = Vec::with_capacity(old.len());
    let mut first: Vec<u32> = Vec::with_capacity(old.len());
    for (handle, mut expression, span) in old.drain() {
        remap_expression(&mut expression, &map);
        let start = exprs.len() as u32;
        if let Some(clamp) = plan[handle.index()] {
            let (base, index) = match expression {
                Expression::Access { base, index } => (base, Some(index)),
                Expression::AccessIndex { base, .. } => (base, None),
                _ => unreachable!("only accesses are clamped"),
            };
            let index = match (clamp.index, index) {
                (Index::Dynamic { signed: true, .. }, Some(index)) => exprs.append(
                    Expression::As {
                        expr: index,
                        kind: ScalarKind::Uint,
                        convert: None,
                    },
                    span,
                ),
                (Index::Dynamic { .. }, Some(index)) => index,
                (Index::Constant(k), _) => literals[&k],
                (Index::Dynamic { .. }, None) => unreachable!("a dynamic index is an Access"),
            };
            let limit = match clamp.limit {
                Limit::Fixed(n) => literals[&(n - 1)],
                Limit::Runtime => {
                    let length = exprs.append(Expression::ArrayLength(base), span);
                    exprs.append(
                        Expression::Binary {
                            op: BinaryOperator::Subtract,
                            left: length,
                            right: literals[&1],
                        },
                        span,
                    )
                }
            };
            let index = exprs.append(
                Expression::Math {
                    fun: MathFunction::Min,
                    arg: index,
                    arg1: Some(limit),
                    arg2: None,
                    arg3: None,
                },
                span,
            );
            expression = Expression::Access { base, index };
        }
        map.push(exprs.append(expression, span));
        first.push(start);
    }
    function.expressions = exprs;

    for (_, variable) in function.local_variables.iter_mut() {
        if let Some(init) = &mut variable.init {
            *init = map[init.index()];
        }
    }
    function.named_expressions = std::mem::take(&mut function.named_expressions)
        .into_iter()
        .map(|(h, name)| (map[h.index()], name))
        .collect();
    let mut body = std::mem::take(&mut function.body);
    remap_block(&mut body, &map, &first, &function.expressions);
    function.body = body;
}

fn remap(h: &mut Handle<Expression>, map: &[Handle<Expression>]) {
    *h = map[h.index()];
}

fn remap_option(h: &mut Option<Handle<Expression>>, map: &[Handle<Expression>]) {
    if let Some(h) = h {
        remap(h, map);
    }
}

/// Remaps the operands of `expression` (earlier expressions, all already in `map`).
fn remap_expression(expression: &mut Expression, map: &[Handle<Expression>]) {
    // No wildcard: a new kind of expression in naga must be looked at here.
    match expression {
        Expression::Literal(_)
        | Expression::Constant(_)
        | Expression::Override(_)
        | Expression::ZeroValue(_)
        | Expression::FunctionArgument(_)
        | Expression::GlobalVariable(_)
        | Expression::LocalVariable(_)
        | Expression::CallResult(_)
        | Expression::AtomicResult { .. }
        | Expression::WorkGroupUniformLoadResult { .. }
        | Expression::RayQueryProceedResult
        | Expression::SubgroupBallotResult
        | Expression::SubgroupOperationResult { .. } => {}
        Expression::Compose { components, .. } => {
            components.iter_mut().for_each(|c| remap(c, map));
        }
        Expression::Access { base, index } => {
            remap(base, map);
            remap(index, map);
        }
        Expression::AccessIndex { base, .. } => remap(base, map),
        Expression::Splat { value, .. } => remap(value, map),
        Expression::Swizzle { vector, .. } => remap(vector, map),
        Expression::Load { pointer } => remap(pointer, map),
        Expression::ImageSample {
            image,
            sampler,
            coordinate,
            array_index,
            offset,
            level,
            depth_ref,
            ..
        } => {
            remap(image, map);
            remap(sampler, map);
            remap(coordinate, map);
            remap_option(array_index, map);
            remap_option(offset, map);
            remap_option(depth_ref, map);
            match level {
                naga::SampleLevel::Auto | naga::SampleLevel::Zero => {}
                naga::SampleLevel::Exact(h) | naga::SampleLevel::Bias(h) => remap(h, map),
                naga::SampleLevel::Gradient { x, y } => {
                    remap(x, map);
                    remap(y, map);
                }
            }
        }
        Expression::ImageLoad {
            image,
            coordinate,
            array_index,
            sample,
            level,
        } => {
            remap(image, map);
            remap(coordinate, map);
            remap_option(array_index, map);
            remap_option(sample, map);
            remap_option(level, map);
        }
        Expression::ImageQuery { image, query } => {
            remap(image, map);
            match query {
                naga::ImageQuery::Size { level } => remap_option(level, map),
                naga::ImageQuery::NumLevels
                | naga::ImageQuery::NumLayers
                | naga::ImageQuery::NumSamples => {}
            }
        }
        Expression::Unary { expr, .. } => remap(expr, map),
        Expression::Binary { left, right, .. } => {
            remap(left, map);
            remap(right, map);
        }
        Expression::Select {
            condition,
            accept,
            reject,
        } => {
            remap(condition, map);
            remap(accept, map);
            remap(reject, map);
        }
        Expression::Derivative { expr, .. } => remap(expr, map),
        Expression::Relational { argument, .. } => remap(argument, map),
        Expression::Math {
            arg,
            arg1,
            arg2,
            arg3,
            ..
        } => {
            remap(arg, map);
            remap_option(arg1, map);
            remap_option(arg2, map);
            remap_option(arg3, map);
        }
        Expression::As { expr, .. } => remap(expr, map),
        Expression::ArrayLength(expr) => remap(expr, map),
        Expression::RayQueryVertexPositions { query, .. }
        | Expression::RayQueryGetIntersection { query, .. } => remap(query, map),
        Expression::CooperativeLoad { data, .. } => {
            remap(&mut data.pointer, map);
            remap(&mut data.stride, map);
        }
        Expression::CooperativeMultiplyAdd { a, b, c } => {
            remap(a, map);
            remap(b, map);
            remap(c, map);
        }
    }
}

fn remap_block(
    block: &mut Block,
    map: &[Handle<Expression>],
    first: &[u32],
    exprs: &Arena<Expression>,
) {
    for (statement, _) in block.span_iter_mut() {
        remap_statement(statement, map, first, exprs);
    }
}

fn remap_statement(
    statement: &mut Statement,
    map: &[Handle<Expression>],
    first: &[u32],
    exprs: &Arena<Expression>,
) {
    // No wildcard, as in `remap_expression`.
    match statement {
        Statement::Emit(range) => {
            // The new range runs from the first expression its first expression brought (a
            // clamp's) to its last expression: the clamps of the accesses inside it lie in it.
            let new = match range.first_and_last() {
                Some((a, b)) => first[a.index()]..map[b.index()].index() as u32 + 1,
                None => 0..0,
            };
            *range = naga::Range::from_index_range(new, exprs);
        }
        Statement::Block(b) => remap_block(b, map, first, exprs),
        Statement::If {
            condition,
            accept,
            reject,
        } => {
            remap(condition, map);
            remap_block(accept, map, first, exprs);
            remap_block(reject, map, first, exprs);
        }
        Statement::Switch { selector, cases } => {
            remap(selector, map);
            for case in cases {
                remap_block(&mut case.body, map, first, exprs);
            }
        }
        Statement::Loop {
            body,
            continuing,
            break_if,
        } => {
            remap_block(body, map, first, exprs);
            remap_block(continuing, map, first, exprs);
            remap_option(break_if, map);
        }
        Statement::Break
        | Statement::Continue
        | Statement::Kill
        | Statement::ControlBarrier(_)
        | Statement::MemoryBarrier(_) => {}
        Statement::Return { value } => remap_option(value, map),
        Statement::Store { pointer, value } => {
            remap(pointer, map);
            remap(value, map);
        }
        Statement::ImageStore {
            image,
            coordinate,
            array_index,
            value,
        } => {
            remap(image, map);
            remap(coordinate, map);
            remap_option(array_index, map);
            remap(value, map);
        }
        Statement::Atomic {
            pointer,
            fun,
            value,
            result,
        } => {
            remap(pointer, map);
            remap_atomic(fun, map);
            remap(value, map);
            remap_option(result, map);
        }
        Statement::ImageAtomic {
            image,
            coordinate,
            array_index,
            fun,
            value,
        } => {
            remap(image, map);
            remap(coordinate, map);
            remap_option(array_index, map);
            remap_atomic(fun, map);
            remap(value, map);
        }
        Statement::WorkGroupUniformLoad { pointer, result } => {
            remap(pointer, map);
            remap(result, map);
        }
        Statement::Call {
            arguments, result, ..
        } => {
            arguments.iter_mut().for_each(|a| remap(a, map));
            remap_option(result, map);
        }
        Statement::RayQuery { query, fun } => {
            remap(query, map);
            match fun {
                naga::RayQueryFunction::Initialize {
                    acceleration_structure,
                    descriptor,
                } => {
                    remap(acceleration_structure, map);
                    remap(descriptor, map);
                }
                naga::RayQueryFunction::Proceed { result } => remap(result, map),
                naga::RayQueryFunction::GenerateIntersection { hit_t } => remap(hit_t, map),
                naga::RayQueryFunction::ConfirmIntersection | naga::RayQueryFunction::Terminate => {
                }
            }
        }
        Statement::RayPipelineFunction(fun) => match fun {
            naga::RayPipelineFunction::TraceRay {
                acceleration_structure,
                descriptor,
                payload,
            } => {
                remap(acceleration_structure, map);
                remap(descriptor, map);
                remap(payload, map);
            }
        },
        Statement::SubgroupBallot { result, predicate } => {
            remap(result, map);
            remap_option(predicate, map);
        }
        Statement::SubgroupGather {
            mode,
            argument,
            result,
        } => {
            match mode {
                naga::GatherMode::BroadcastFirst | naga::GatherMode::QuadSwap(_) => {}
                naga::GatherMode::Broadcast(h)
                | naga::GatherMode::Shuffle(h)
                | naga::GatherMode::ShuffleDown(h)
                | naga::GatherMode::ShuffleUp(h)
                | naga::GatherMode::ShuffleXor(h)
                | naga::GatherMode::QuadBroadcast(h) => remap(h, map),
            }
            remap(argument, map);
            remap(result, map);
        }
        Statement::SubgroupCollectiveOperation {
            argument, result, ..
        } => {
            remap(argument, map);
            remap(result, map);
        }
        Statement::CooperativeStore { target, data } => {
            remap(target, map);
            remap(&mut data.pointer, map);
            remap(&mut data.stride, map);
        }
    }
}

fn remap_atomic(fun: &mut naga::AtomicFunction, map: &[Handle<Expression>]) {
    if let naga::AtomicFunction::Exchange { compare } = fun {
        remap_option(compare, map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shader` with its indices clamped, as WGSL, and how many accesses were clamped.
    fn clamped(shader: &str) -> Result<(String, usize), BoundsError> {
        let mut module = naga::front::wgsl::parse_str(shader).unwrap();
        let count = clamp_indices(&mut module)?;
        let info = Validator::new(ValidationFlags::all(), Capabilities::default())
            .validate(&module)
            .unwrap();
        let text =
            naga::back::wgsl::write_string(&module, &info, naga::back::wgsl::WriterFlags::empty())
                .unwrap();
        Ok((text, count))
    }

    /// Every kind of access, in the entry point and in a helper.
    const HOSTILE: &str = r#"
struct S { n: u32, data: array<u32> }
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> s: S;
var<workgroup> tile: array<atomic<u32>, 8>;
var<private> p: array<vec4<i32>, 3>;
fn helper(q: ptr<function, array<u32, 4>>, i: i32) -> u32 { return (*q)[i]; }
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = i32(id.x) - 3;
    var m = mat3x3<f32>();
    var f = array<u32, 4>(1u, 2u, 3u, 4u);
    var v = vec3<u32>(7u, 8u, 9u);
    s.data[i] = a[id.x * 99u] + a[5] + helper(&f, i) + v[i] + u32(m[i][id.y]) + u32(p[i][i]);
    atomicAdd(&tile[id.x + 5u], 1u);
    s.data[0] = f[2] + arrayLength(&a) + v.y + s.n;
}
"#;

    #[test]
    fn every_dynamic_index_is_clamped() {
        let (text, count) = clamped(HOSTILE).unwrap();
        for want in [
            // A pointer parameter to a function array, in a helper; a signed index.
            "(*q)[min(bitcast<u32>(i), 3u)]",
            // A buffer's runtime-sized array: its length; a constant index too.
            "a[min((id.x * 99u), (arrayLength((&a)) - 1u))]",
            "a[min(5u, (arrayLength((&a)) - 1u))]",
            // A vector component.
            "v[min(bitcast<u32>(i_1), 2u)]",
            // A matrix column, then its component.
            "m[min(bitcast<u32>(i_1), 2u)][min(id.y, 2u)]",
            // A private array of vectors, nested.
            "p[min(bitcast<u32>(i_1), 2u)][min(bitcast<u32>(i_1), 3u)]",
            // The runtime-sized tail of a struct.
            "s.data[min(bitcast<u32>(i_1), (arrayLength((&s.data)) - 1u))]",
            "s.data[min(0u, (arrayLength((&s.data)) - 1u))]",
            // An atomic in a workgroup array.
            "atomicAdd((&tile[min((id.x + 5u), 7u)]), 1u)",
            // A constant index the validator checked is left alone.
            "f[2]",
        ] {
            assert!(text.contains(want), "{want} is not in\n{text}");
        }
        assert_eq!(count, 11, "{text}");
        // The same shader gives the same text (the coordinator stores it, workers compile it).
        assert_eq!(clamped(HOSTILE).unwrap().0, text);
        // And the text is a valid kernel that needs no further clamp of its own clamps.
        let (again, _) = clamped(&text).unwrap();
        assert!(again.contains("min(min("), "{again}");
    }

    #[test]
    fn constant_indices_checked_by_the_validator_are_left_alone() {
        let shader = r#"
struct P { x: u32, v: vec4<u32> }
@group(0) @binding(0) var<uniform> params: P;
@group(0) @binding(1) var<storage, read_write> out: u32;
var<private> t: array<u32, 4>;
@compute @workgroup_size(1)
fn main() {
    let m = mat2x2<f32>(1.0, 2.0, 3.0, 4.0);
    out = t[3] + params.v[3] + params.v.y + params.x + u32(m[1][0]);
}
"#;
        assert_eq!(clamped(shader).unwrap().1, 0);
    }

    #[test]
    fn arrays_sized_by_an_override_are_refused() {
        let shader = r#"
override n: u32 = 16u;
var<workgroup> w: array<u32, n>;
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    out[0] = w[id.x];
}
"#;
        assert_eq!(clamped(shader).unwrap_err(), BoundsError::OverrideSized);
    }
}
