//! The module's call graph, split into strongly connected components: which `call`s can be
//! part of a recursion, and so need call-depth accounting (see "Call depth" in the crate
//! documentation), and which functions may be entered again while they run, and so need a
//! refuel check on entry (see "Fuel slices").
//!
//! A direct call from `f` to `g` can recur only if `g` can reach `f` again. Through direct
//! calls alone that means `f` and `g` are in the same component; through an indirect call the
//! cycle contains a `call_indirect`, which is always counted. So every cycle of calls that
//! can actually run contains at least one counted call, and between two counted calls a chain
//! of uncounted ones only goes down the (acyclic) graph of components.
//!
//! A function may be *re-entered* (be on the stack twice) only if it lies on a cycle of the
//! call graph where a `call_indirect` may call any function whose reference the module takes
//! (in an element segment, a `ref.func` in code or in a global's initializer): that graph has
//! one more node, the table, with an edge from every function that calls indirectly and an
//! edge to every such function.

use crate::InstrumentError;
use wasmparser::{
    CodeSectionReader, ElementItems, ElementSectionReader, GlobalSectionReader, Operator,
};

/// The component of each of the module's own functions (index `i` is the module's function
/// `num_imported + i`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Components {
    num_imported: u32,
    /// Per function, its component in the graph of direct calls.
    component: Vec<u32>,
    /// Per function, whether it may be re-entered (direct and indirect calls).
    reentrant: Vec<bool>,
}

/// The sections the call graph is read from.
pub(crate) struct Sections<'a, 'r> {
    pub code: Option<&'r CodeSectionReader<'a>>,
    pub elements: Option<&'r ElementSectionReader<'a>>,
    pub globals: Option<&'r GlobalSectionReader<'a>>,
    pub num_imported: u32,
}

impl Components {
    /// Reads every call and every function reference of the module.
    pub(crate) fn of(s: Sections<'_, '_>) -> Result<Components, InstrumentError> {
        let invalid = |e: wasmparser::BinaryReaderError| InstrumentError::Invalid(e.to_string());
        let num_imported = s.num_imported;
        let mut callees: Vec<Vec<u32>> = Vec::new();
        let mut indirect: Vec<bool> = Vec::new();
        let mut referenced: Vec<u32> = Vec::new();
        if let Some(code) = s.code {
            for body in code.clone() {
                let body = body.map_err(invalid)?;
                let (mut calls, mut calls_indirect) = (Vec::new(), false);
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                while !ops.eof() {
                    match ops.read().map_err(invalid)? {
                        Operator::Call { function_index } if function_index >= num_imported => {
                            calls.push(function_index - num_imported);
                        }
                        Operator::CallIndirect { .. } => calls_indirect = true,
                        Operator::RefFunc { function_index } => referenced.push(function_index),
                        _ => {}
                    }
                }
                calls.sort_unstable();
                calls.dedup();
                callees.push(calls);
                indirect.push(calls_indirect);
            }
        }
        let const_expr = |expr: &wasmparser::ConstExpr<'_>,
                          referenced: &mut Vec<u32>|
         -> Result<(), InstrumentError> {
            let mut ops = expr.get_operators_reader();
            while !ops.eof() {
                if let Operator::RefFunc { function_index } = ops.read().map_err(invalid)? {
                    referenced.push(function_index);
                }
            }
            Ok(())
        };
        if let Some(globals) = s.globals {
            for global in globals.clone() {
                const_expr(&global.map_err(invalid)?.init_expr, &mut referenced)?;
            }
        }
        if let Some(elements) = s.elements {
            for element in elements.clone() {
                match element.map_err(invalid)?.items {
                    ElementItems::Functions(functions) => {
                        for f in functions {
                            referenced.push(f.map_err(invalid)?);
                        }
                    }
                    ElementItems::Expressions(_, exprs) => {
                        for expr in exprs {
                            const_expr(&expr.map_err(invalid)?, &mut referenced)?;
                        }
                    }
                }
            }
        }
        let component = components(&callees);

        // The same graph with the table as one more node, `n`.
        let n = callees.len();
        let table = n as u32;
        let mut with_table = callees.clone();
        for (calls, indirect) in with_table.iter_mut().zip(&indirect) {
            if *indirect {
                calls.push(table);
            }
        }
        let mut targets: Vec<u32> = referenced
            .iter()
            .filter_map(|f| f.checked_sub(num_imported))
            .filter(|&f| (f as usize) < n)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        with_table.push(targets);
        let cyclic = components(&with_table);
        let mut size = vec![0u32; n + 1];
        for &c in &cyclic {
            size[c as usize] += 1;
        }
        let reentrant = (0..n)
            .map(|f| size[cyclic[f] as usize] > 1 || with_table[f].contains(&(f as u32)))
            .collect();
        Ok(Components {
            num_imported,
            component,
            reentrant,
        })
    }

    /// Whether function `func` (an index in the module's function index space) may be on the
    /// stack twice.
    pub(crate) fn reentrant(&self, func: u32) -> bool {
        func.checked_sub(self.num_imported)
            .and_then(|i| self.reentrant.get(i as usize))
            .copied()
            .unwrap_or(true)
    }

    /// Whether a direct `call` from function `caller` to function `callee` (indices in the
    /// module's function index space) may be part of a recursion.
    pub(crate) fn may_recur(&self, caller: u32, callee: u32) -> bool {
        let of = |f: u32| {
            f.checked_sub(self.num_imported)
                .and_then(|i| self.component.get(i as usize))
        };
        match (of(caller), of(callee)) {
            (Some(a), Some(b)) => a == b,
            // Imported functions never call back into the module.
            _ => false,
        }
    }
}

/// The strongly connected component of every node of the graph `callees` (node `i` has edges
/// to `callees[i]`; edges to nodes outside the graph are ignored): Tarjan's algorithm, with an
/// explicit stack so that a deep call graph cannot overflow the native one.
pub(crate) fn components(callees: &[Vec<u32>]) -> Vec<u32> {
    const UNSEEN: u32 = u32::MAX;
    let n = callees.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut component = vec![UNSEEN; n];
    let mut stack: Vec<u32> = Vec::new();
    // (node, next edge to look at)
    let mut work: Vec<(u32, usize)> = Vec::new();
    let (mut next_index, mut next_component) = (0u32, 0u32);
    for root in 0..n as u32 {
        if index[root as usize] != UNSEEN {
            continue;
        }
        work.push((root, 0));
        while let Some(&mut (v, ref mut edge)) = work.last_mut() {
            let vi = v as usize;
            if *edge == 0 && index[vi] == UNSEEN {
                index[vi] = next_index;
                low[vi] = next_index;
                next_index += 1;
                stack.push(v);
                on_stack[vi] = true;
            }
            if let Some(&w) = callees[vi].get(*edge) {
                *edge += 1;
                let wi = w as usize;
                if wi >= n {
                    continue;
                }
                if index[wi] == UNSEEN {
                    work.push((w, 0));
                } else if on_stack[wi] {
                    low[vi] = low[vi].min(index[wi]);
                }
                continue;
            }
            // Every edge of v is done.
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                let pi = parent as usize;
                low[pi] = low[pi].min(low[vi]);
            }
            if low[vi] == index[vi] {
                while let Some(w) = stack.pop() {
                    on_stack[w as usize] = false;
                    component[w as usize] = next_component;
                    if w == v {
                        break;
                    }
                }
                next_component += 1;
            }
        }
    }
    component
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether `to` can be reached from `from` by one edge or more.
    fn reaches(callees: &[Vec<u32>], from: usize, to: usize) -> bool {
        let mut seen = vec![false; callees.len()];
        let mut todo: Vec<usize> = callees[from].iter().map(|&w| w as usize).collect();
        while let Some(v) = todo.pop() {
            if v >= callees.len() || seen[v] {
                continue;
            }
            if v == to {
                return true;
            }
            seen[v] = true;
            todo.extend(callees[v].iter().map(|&w| w as usize));
        }
        false
    }

    #[test]
    fn small_graphs() {
        // 0 -> 1 -> 2 -> 1, 3 -> 3, 4 alone
        let c = components(&[vec![1], vec![2], vec![1], vec![3], vec![]]);
        assert_eq!(c[1], c[2]);
        assert_ne!(c[0], c[1]);
        assert_ne!(c[3], c[4]);
        assert_ne!(c[0], c[4]);
        assert_eq!(components(&[]), Vec::<u32>::new());
    }

    #[test]
    fn functions_on_cycles_through_the_table_may_be_reentered() {
        let wasm = wat::parse_str(
            r#"(module
              (type $t (func))
              (table 2 funcref)
              (elem (i32.const 0) $in_table $on_cycle)
              (func $leaf)                                              ;; 0
              (func $in_table (call $leaf))                             ;; 1
              (func $dispatch (call_indirect (type $t) (i32.const 0)))  ;; 2
              (func $on_cycle (call $dispatch))                         ;; 3
              (func $self (call $self))                                 ;; 4
              (func $a (call $b))                                       ;; 5
              (func $b (call $a))                                       ;; 6
              (func $start (call $leaf) (call $dispatch)))              ;; 7"#,
        )
        .unwrap();
        let mut code = None;
        let mut elements = None;
        for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
            match payload.unwrap() {
                wasmparser::Payload::CodeSectionStart { range, .. } => {
                    let reader = wasmparser::BinaryReader::new(&wasm[range], 0);
                    code = Some(CodeSectionReader::new(reader).unwrap());
                }
                wasmparser::Payload::ElementSection(r) => elements = Some(r),
                _ => {}
            }
        }
        let c = Components::of(Sections {
            code: code.as_ref(),
            elements: elements.as_ref(),
            globals: None,
            num_imported: 0,
        })
        .unwrap();
        let reentrant: Vec<u32> = (0..8).filter(|&f| c.reentrant(f)).collect();
        assert_eq!(reentrant, [2, 3, 4, 5, 6]);
        assert!(c.may_recur(4, 4) && c.may_recur(5, 6) && !c.may_recur(3, 2));
        assert!(!c.may_recur(7, 0));
    }

    #[test]
    fn a_long_chain_does_not_overflow() {
        let n = 200_000u32;
        let mut g: Vec<Vec<u32>> = (0..n).map(|i| vec![i + 1]).collect();
        g[(n - 1) as usize] = vec![0];
        let c = components(&g);
        assert!(c.iter().all(|&x| x == c[0]));
    }

    proptest! {
        #[test]
        fn same_component_iff_mutually_reachable(
            g in (1usize..12).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(0u32..(n as u32 + 1), 0..4), n))
        ) {
            let c = components(&g);
            // Distinct nodes share a component iff each reaches the other.
            for a in 0..g.len() {
                for b in (0..g.len()).filter(|&b| b != a) {
                    let cyclic = reaches(&g, a, b) && reaches(&g, b, a);
                    prop_assert_eq!(c[a] == c[b], cyclic, "{} {} in {:?}", a, b, g);
                }
            }
        }
    }
}
