//! Step 1 and 2 of [`crate::instrument`]: validation against the allowed feature set, and the
//! checks of imports and exports that keep a module inside the runegrid execution model.

use crate::{InstrumentError, MAX_TABLE_ELEMENTS, RESERVED_PREFIX};
use wasmparser::{
    CodeSectionReader, DataSectionReader, ElementSectionReader, Encoding, ExportSectionReader,
    ExternalKind, FuncType, FunctionSectionReader, GlobalSectionReader, ImportSectionReader,
    MemorySectionReader, Parser, Payload, TableSectionReader, TypeRef, TypeSectionReader, ValType,
    Validator, WasmFeatures,
};

/// The only module tasks may import from.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Exactly the WebAssembly features rustc 1.95 emits for `wasm32-wasip1`: the MVP (with
/// floats), mutable globals, sign extension, saturating float-to-int, multi-value, bulk memory
/// and reference types (`funcref` tables, `call_indirect` on any table, typed `select`), plus
/// fixed-width SIMD (`-C target-feature=+simd128`; deterministic once its float lanes' NaNs are
/// canonicalized). Threads, relaxed SIMD (engine-dependent results), tail calls, exceptions,
/// GC, memory64, multi-memory, extended-const and every other proposal are refused, and so is
/// `externref` (rustc never emits it for WASI, and engines built without a garbage collector
/// cannot run it).
pub const ALLOWED_FEATURES: WasmFeatures = WasmFeatures::FLOATS
    .union(WasmFeatures::MUTABLE_GLOBAL)
    .union(WasmFeatures::SIGN_EXTENSION)
    .union(WasmFeatures::SATURATING_FLOAT_TO_INT)
    .union(WasmFeatures::MULTI_VALUE)
    .union(WasmFeatures::BULK_MEMORY)
    .union(WasmFeatures::REFERENCE_TYPES)
    .union(WasmFeatures::SIMD);

/// Refused proposals, in the order they are looked for when naming the one a module uses
/// (a proposal that implies another comes first).
const FORBIDDEN_FEATURES: &[(&str, WasmFeatures)] = &[
    (
        "threads",
        WasmFeatures::THREADS.union(WasmFeatures::SHARED_EVERYTHING_THREADS),
    ),
    ("relaxed-simd", WasmFeatures::RELAXED_SIMD),
    ("tail-call", WasmFeatures::TAIL_CALL),
    (
        "exceptions",
        WasmFeatures::EXCEPTIONS.union(WasmFeatures::LEGACY_EXCEPTIONS),
    ),
    ("stack-switching", WasmFeatures::STACK_SWITCHING),
    ("custom-descriptors", WasmFeatures::CUSTOM_DESCRIPTORS),
    ("gc", WasmFeatures::GC),
    ("function-references", WasmFeatures::FUNCTION_REFERENCES),
    ("externref", WasmFeatures::GC_TYPES),
    ("memory64", WasmFeatures::MEMORY64),
    ("multi-memory", WasmFeatures::MULTI_MEMORY),
    ("extended-const", WasmFeatures::EXTENDED_CONST),
    ("custom-page-sizes", WasmFeatures::CUSTOM_PAGE_SIZES),
    ("wide-arithmetic", WasmFeatures::WIDE_ARITHMETIC),
    ("memory-control", WasmFeatures::MEMORY_CONTROL),
    ("compact-imports", WasmFeatures::COMPACT_IMPORTS),
];

#[derive(Clone, Copy)]
enum T {
    I32,
    I64,
}

/// The runegrid subset of `wasi_snapshot_preview1`: name, parameters, results.
const WASI_FUNCTIONS: &[(&str, &[T], &[T])] = {
    use T::{I32, I64};
    &[
        ("args_get", &[I32, I32], &[I32]),
        ("args_sizes_get", &[I32, I32], &[I32]),
        ("environ_get", &[I32, I32], &[I32]),
        ("environ_sizes_get", &[I32, I32], &[I32]),
        ("clock_res_get", &[I32, I32], &[I32]),
        ("clock_time_get", &[I32, I64, I32], &[I32]),
        ("random_get", &[I32, I32], &[I32]),
        ("fd_write", &[I32, I32, I32, I32], &[I32]),
        ("fd_read", &[I32, I32, I32, I32], &[I32]),
        ("fd_close", &[I32], &[I32]),
        ("fd_seek", &[I32, I64, I32, I32], &[I32]),
        ("fd_tell", &[I32, I32], &[I32]),
        ("fd_fdstat_get", &[I32, I32], &[I32]),
        ("fd_fdstat_set_flags", &[I32, I32], &[I32]),
        ("fd_filestat_get", &[I32, I32], &[I32]),
        ("fd_prestat_get", &[I32, I32], &[I32]),
        ("fd_prestat_dir_name", &[I32, I32, I32], &[I32]),
        ("fd_sync", &[I32], &[I32]),
        ("fd_datasync", &[I32], &[I32]),
        ("fd_advise", &[I32, I64, I64, I32], &[I32]),
        ("fd_allocate", &[I32, I64, I64], &[I32]),
        ("fd_pread", &[I32, I32, I32, I64, I32], &[I32]),
        ("fd_pwrite", &[I32, I32, I32, I64, I32], &[I32]),
        ("fd_readdir", &[I32, I32, I32, I64, I32], &[I32]),
        ("fd_renumber", &[I32, I32], &[I32]),
        (
            "path_open",
            &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
            &[I32],
        ),
        ("path_filestat_get", &[I32, I32, I32, I32, I32], &[I32]),
        ("path_create_directory", &[I32, I32, I32], &[I32]),
        ("path_remove_directory", &[I32, I32, I32], &[I32]),
        ("path_unlink_file", &[I32, I32, I32], &[I32]),
        ("path_rename", &[I32, I32, I32, I32, I32, I32], &[I32]),
        ("path_readlink", &[I32, I32, I32, I32, I32, I32], &[I32]),
        ("path_symlink", &[I32, I32, I32, I32, I32], &[I32]),
        ("path_link", &[I32, I32, I32, I32, I32, I32, I32], &[I32]),
        (
            "path_filestat_set_times",
            &[I32, I32, I32, I32, I64, I64, I32],
            &[I32],
        ),
        ("fd_filestat_set_size", &[I32, I64], &[I32]),
        ("fd_filestat_set_times", &[I32, I64, I64, I32], &[I32]),
        ("proc_exit", &[I32], &[]),
        ("proc_raise", &[I32], &[I32]),
        ("sched_yield", &[], &[I32]),
        ("poll_oneoff", &[I32, I32, I32, I32], &[I32]),
        ("sock_accept", &[I32, I32, I32], &[I32]),
        ("sock_recv", &[I32, I32, I32, I32, I32, I32], &[I32]),
        ("sock_send", &[I32, I32, I32, I32, I32], &[I32]),
        ("sock_shutdown", &[I32, I32], &[I32]),
    ]
};

/// The `wasi_snapshot_preview1` functions a task may import (the runegrid subset). The socket
/// functions are in it so that programs linking them run: tasks have no network, and no fd is a
/// socket (`ENOTSOCK`, or `EBADF` for an fd that is not open).
pub const ALLOWED_WASI_IMPORTS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "random_get",
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_seek",
    "fd_tell",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_filestat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_sync",
    "fd_datasync",
    "fd_advise",
    "fd_allocate",
    "fd_pread",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "path_open",
    "path_filestat_get",
    "path_create_directory",
    "path_remove_directory",
    "path_unlink_file",
    "path_rename",
    "path_readlink",
    "path_symlink",
    "path_link",
    "path_filestat_set_times",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "poll_oneoff",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// One allowed import.
pub(crate) struct ImportInfo<'a> {
    pub name: &'a str,
}

/// What the rewriter needs to know about a module that passed the checks, and the sections it
/// re-emits.
#[derive(Default)]
pub(crate) struct ModuleInfo<'a> {
    pub imports: Vec<ImportInfo<'a>>,
    /// Function types, by type index.
    pub types: Vec<FuncType>,
    /// Type index of every function (imported first, then defined).
    pub func_types: Vec<u32>,
    pub num_imported_funcs: u32,
    pub num_globals: u32,
    pub type_section: Option<TypeSectionReader<'a>>,
    pub import_section: Option<ImportSectionReader<'a>>,
    pub function_section: Option<FunctionSectionReader<'a>>,
    pub table_section: Option<TableSectionReader<'a>>,
    pub memory_section: Option<MemorySectionReader<'a>>,
    pub global_section: Option<GlobalSectionReader<'a>>,
    pub export_section: Option<ExportSectionReader<'a>>,
    pub element_section: Option<ElementSectionReader<'a>>,
    pub data_count: Option<u32>,
    pub code_section: Option<CodeSectionReader<'a>>,
    pub data_section: Option<DataSectionReader<'a>>,
}

fn invalid(e: wasmparser::BinaryReaderError) -> InstrumentError {
    InstrumentError::Invalid(e.message().to_string())
}

/// Validates the module and checks the runegrid rules; returns what the rewriter needs.
pub(crate) fn check(wasm: &[u8]) -> Result<ModuleInfo<'_>, InstrumentError> {
    validate_features(wasm)?;
    let mut info = ModuleInfo::default();
    let mut has_memory = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => {
                return Err(InstrumentError::ForbiddenFeature {
                    feature: "component-model",
                });
            }
            Payload::TypeSection(r) => {
                for ty in r.clone().into_iter_err_on_gc_types() {
                    info.types.push(ty.map_err(invalid)?);
                }
                info.type_section = Some(r);
            }
            Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    let import = import.map_err(invalid)?;
                    check_import(&info, import.module, import.name, import.ty)?;
                    if let TypeRef::Func(t) = import.ty {
                        info.func_types.push(t);
                        info.num_imported_funcs += 1;
                        info.imports.push(ImportInfo { name: import.name });
                    }
                }
                info.import_section = Some(r);
            }
            Payload::FunctionSection(r) => {
                for t in r.clone() {
                    info.func_types.push(t.map_err(invalid)?);
                }
                info.function_section = Some(r);
            }
            Payload::TableSection(r) => {
                for table in r.clone() {
                    let ty = table.map_err(invalid)?.ty;
                    if ty.initial > u64::from(MAX_TABLE_ELEMENTS) {
                        return Err(InstrumentError::Invalid(format!(
                            "a table of {} elements is above the limit of {MAX_TABLE_ELEMENTS}",
                            ty.initial
                        )));
                    }
                }
                info.table_section = Some(r);
            }
            Payload::MemorySection(r) => {
                has_memory |= r.count() > 0;
                info.memory_section = Some(r);
            }
            Payload::GlobalSection(r) => {
                info.num_globals = r.count();
                info.global_section = Some(r);
            }
            Payload::ExportSection(r) => info.export_section = Some(r),
            Payload::StartSection { .. } => return Err(InstrumentError::StartSection),
            Payload::ElementSection(r) => info.element_section = Some(r),
            Payload::DataCountSection { count, .. } => info.data_count = Some(count),
            Payload::CodeSectionStart { range, .. } => {
                let reader = wasmparser::BinaryReader::new(&wasm[range.clone()], range.start);
                info.code_section = Some(CodeSectionReader::new(reader).map_err(invalid)?);
            }
            Payload::CodeSectionEntry(_) => {}
            Payload::DataSection(r) => info.data_section = Some(r),
            Payload::CustomSection(_) | Payload::End(_) => {}
            other => {
                if let Some((id, _)) = other.as_section() {
                    return Err(InstrumentError::Invalid(format!(
                        "unsupported section id {id}"
                    )));
                }
            }
        }
    }
    check_exports(&info, has_memory)?;
    Ok(info)
}

/// Validates with exactly [`ALLOWED_FEATURES`]; on failure, names the forbidden proposal the
/// module needs when there is one.
fn validate_features(wasm: &[u8]) -> Result<(), InstrumentError> {
    let Err(err) = Validator::new_with_features(ALLOWED_FEATURES).validate_all(wasm) else {
        return Ok(());
    };
    if let Some(Ok(Payload::Version {
        encoding: Encoding::Component,
        ..
    })) = Parser::new(0).parse_all(wasm).next()
    {
        return Err(InstrumentError::ForbiddenFeature {
            feature: "component-model",
        });
    }
    let everything = FORBIDDEN_FEATURES
        .iter()
        .fold(ALLOWED_FEATURES, |acc, (_, f)| acc.union(*f));
    if Validator::new_with_features(everything)
        .validate_all(wasm)
        .is_err()
    {
        return Err(InstrumentError::Invalid(err.to_string()));
    }
    for (name, feature) in FORBIDDEN_FEATURES {
        if Validator::new_with_features(everything.difference(*feature))
            .validate_all(wasm)
            .is_err()
        {
            return Err(InstrumentError::ForbiddenFeature { feature: name });
        }
    }
    Err(InstrumentError::Invalid(err.to_string()))
}

fn check_import(
    info: &ModuleInfo<'_>,
    module: &str,
    name: &str,
    ty: TypeRef,
) -> Result<(), InstrumentError> {
    let refuse = |reason: String| InstrumentError::ForbiddenImport {
        module: module.to_string(),
        name: name.to_string(),
        reason,
    };
    let subset =
        "tasks may import only the wasi_snapshot_preview1 functions of the runegrid subset";
    let TypeRef::Func(type_index) = ty else {
        return Err(refuse(format!(
            "tasks may import only functions (a module defines its own memory, tables and globals); \
             {subset}"
        )));
    };
    if module != WASI_MODULE {
        return Err(refuse(subset.to_string()));
    }
    let Some((_, params, results)) = WASI_FUNCTIONS.iter().find(|(n, _, _)| *n == name) else {
        return Err(refuse(subset.to_string()));
    };
    let want = |ts: &[T]| -> Vec<ValType> {
        ts.iter()
            .map(|t| match t {
                T::I32 => ValType::I32,
                T::I64 => ValType::I64,
            })
            .collect()
    };
    let (want_params, want_results) = (want(params), want(results));
    let Some(actual) = info.types.get(type_index as usize) else {
        return Err(refuse(format!("type index {type_index} is out of range")));
    };
    if actual.params() != want_params.as_slice() || actual.results() != want_results.as_slice() {
        return Err(refuse(format!(
            "its type {actual} differs from the wasi preview 1 signature {}",
            FuncType::new(want_params, want_results)
        )));
    }
    Ok(())
}

fn check_exports(info: &ModuleInfo<'_>, has_memory: bool) -> Result<(), InstrumentError> {
    let mut start = None;
    let mut memory = false;
    if let Some(exports) = &info.export_section {
        for export in exports.clone() {
            let export = export.map_err(invalid)?;
            if export.name.starts_with(RESERVED_PREFIX) {
                return Err(InstrumentError::ReservedExport(export.name.to_string()));
            }
            match (export.name, export.kind) {
                ("_start", ExternalKind::Func) => start = Some(export.index),
                ("_start", _) => {
                    return Err(InstrumentError::MissingStart(
                        "`_start` is not a function".into(),
                    ));
                }
                ("memory", ExternalKind::Memory) => memory = true,
                ("memory", _) => {
                    return Err(InstrumentError::MissingMemory(
                        "`memory` is not a memory".into(),
                    ));
                }
                _ => {}
            }
        }
    }
    let Some(start) = start else {
        return Err(InstrumentError::MissingStart(
            "no export named `_start`".into(),
        ));
    };
    let ty = info
        .func_types
        .get(start as usize)
        .and_then(|t| info.types.get(*t as usize))
        .ok_or_else(|| InstrumentError::MissingStart("`_start` has no type".into()))?;
    if !ty.params().is_empty() || !ty.results().is_empty() {
        return Err(InstrumentError::MissingStart(format!(
            "`_start` has type {ty}"
        )));
    }
    if !has_memory {
        return Err(InstrumentError::MissingMemory(
            "the module defines no memory".into(),
        ));
    }
    if !memory {
        return Err(InstrumentError::MissingMemory(
            "no export named `memory`".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_table_matches_allowed_list() {
        let names: Vec<&str> = WASI_FUNCTIONS.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, ALLOWED_WASI_IMPORTS);
    }
}
