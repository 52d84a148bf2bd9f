//! The Rune runner: a WASI program that compiles a Rune script and calls one of its functions.
//!
//! Protocol (fixed; the Python SDK and `runegrid-runner` are written against it):
//!
//! - stdin: one JSON object `{"script": SOURCE, "function": NAME, "args": [VALUES...]}`
//!   (`args` may be left out for a function of no arguments);
//! - what the script prints (`print!`, `println!`, `dbg!`) goes to stdout as it runs;
//! - then one final line, preceded by `\n` when what was printed does not end with one:
//!   `{"ok": VALUE}` (exit code 0), or
//!   `{"error": {"kind": KIND, "message": TEXT, "line": N|null, "column": N|null}}` (exit code
//!   1), where KIND is `compile`, `runtime`, `input` or `value`; line and column are 1-based and
//!   count characters.
//!
//! JSON to Rune: `null` → `()`, booleans, integers that fit in `i64` → `i64`, other numbers →
//! `f64`, strings, arrays → `Vec`, objects → `Object`. Rune to JSON: `()` → `null`, booleans,
//! `i64`/`u64`, finite `f64`, `char` and strings → strings, `Vec`, tuples and `Bytes` →
//! arrays, `Object` → object (keys sorted), `Option`: `None` → `null`, `Some(v)` → `v`;
//! `Result`: `Ok(v)` → `v`, `Err(e)` → a `runtime` error whose message is `e` (a string as is,
//! anything else as JSON or debug text). Anything else (structs, enums, functions, NaN or
//! infinite floats, ...) is a `value` error.
//!
//! Everything here is deterministic: the answer depends on stdin only.

use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rune::ast::Spanned as _;
use rune::diagnostics::{Diagnostic, FatalDiagnosticKind};
use rune::runtime::{
    Bytes, InstAddress, Memory, Object, Output, OwnedTuple, RuntimeContext, TypeHash as _,
    VmError, VmResult,
};
use rune::{Context, ContextError, Diagnostics, Hash, Module, Source, Sources, Value, Vm};
use serde::Serialize;
use serde_json::{Map, Number, Value as Json};

/// Deepest nesting of a result value turned into JSON (a value may even contain itself).
const MAX_DEPTH: usize = 256;

fn main() {
    let outcome = run();
    let (line, code) = match outcome {
        Ok(value) => (Final::Ok { ok: value }, 0),
        Err(error) => (Final::Error { error }, 1),
    };
    let mut text = serde_json::to_string(&line).expect("json values serialize");
    text.push('\n');
    let mut out = OUT.lock().unwrap_or_else(PoisonError::into_inner);
    if !out.at_line_start {
        out.write(b"\n");
    }
    out.write(text.as_bytes());
    out.flush();
    std::process::exit(code);
}

/// The last line of stdout.
#[derive(Serialize)]
#[serde(untagged)]
enum Final {
    Ok { ok: Json },
    Error { error: Failure },
}

/// Why a call produced no value (fields in protocol order).
#[derive(Clone, Serialize)]
struct Failure {
    kind: &'static str,
    message: String,
    line: Option<usize>,
    column: Option<usize>,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            line: None,
            column: None,
        }
    }

    fn input(message: impl Into<String>) -> Failure {
        Failure::new("input", message)
    }

    fn value(message: impl Into<String>) -> Failure {
        Failure::new("value", message)
    }

    /// Places the failure at a byte offset of the script.
    fn at(mut self, source: Option<&Source>, offset: usize) -> Failure {
        if let Some(source) = source {
            let (line, column) = source.pos_to_utf8_linecol(offset);
            self.line = Some(line + 1);
            self.column = Some(column + 1);
        }
        self
    }
}

/// Failures of the runner itself (out of memory inside rune, a broken context): reported as
/// runtime errors, since they depend on the script.
impl From<rune::alloc::Error> for Failure {
    fn from(e: rune::alloc::Error) -> Failure {
        Failure::new("runtime", format!("allocation failed: {e}"))
    }
}

impl From<ContextError> for Failure {
    fn from(e: ContextError) -> Failure {
        Failure::new("runtime", format!("cannot build the rune context: {e}"))
    }
}

fn run() -> Result<Json, Failure> {
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| Failure::input(format!("cannot read stdin: {e}")))?;
    let request: Json = serde_json::from_slice(&stdin)
        .map_err(|e| Failure::input(format!("stdin is not valid json: {e}")))?;
    let Json::Object(mut request) = request else {
        return Err(Failure::input(
            "stdin must be a json object {\"script\", \"function\", \"args\"}",
        ));
    };
    let script = match request.remove("script") {
        Some(Json::String(s)) => s,
        _ => return Err(Failure::input("\"script\" must be a string")),
    };
    let function = match request.remove("function") {
        Some(Json::String(s)) if !s.is_empty() => s,
        _ => return Err(Failure::input("\"function\" must be a non-empty string")),
    };
    let args = match request.remove("args") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a,
        Some(_) => return Err(Failure::input("\"args\" must be an array")),
    };

    let (context, runtime) = match prepared() {
        Ok(prepared) => (&prepared.context, prepared.runtime.clone()),
        Err(failure) => return Err(failure.clone()),
    };

    let mut sources = Sources::new();
    let source_id = sources.insert(Source::new("script", &script)?)?;
    let mut diagnostics = Diagnostics::without_warnings();
    let built = rune::prepare(&mut sources)
        .with_context(context)
        .with_diagnostics(&mut diagnostics)
        .build();
    let source = sources.get(source_id);
    if let Some(failure) = first_fatal(&diagnostics, source, &script) {
        return Err(failure);
    }
    let unit = built.map_err(|e| Failure::new("compile", format!("{e}")))?;
    let unit = Arc::new(unit);

    let path: Vec<&str> = function.split("::").collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(Failure::input(format!(
            "{function:?} is not a function name"
        )));
    }
    let hash = Hash::type_hash(&path);
    let mut vm = Vm::new(runtime, unit.clone());
    if vm.lookup_function(hash).is_err() {
        return Err(Failure::input(format!(
            "the script has no public function `{function}` (declare it with `pub fn`)"
        )));
    }
    let args = args
        .iter()
        .map(to_rune)
        .collect::<Result<Vec<Value>, Failure>>()?;
    let mut execution = vm.execute(hash, args).map_err(|e| {
        Failure::input(format!(
            "cannot call `{function}`: {}",
            lower_first(&e.to_string())
        ))
    })?;
    let value = execution
        .complete()
        .into_result()
        .map_err(|e| runtime_failure(&e, &sources))?;
    to_json(&value, 0)
}

/// What every call needs and no call changes: rune's context and its runtime part.
struct Prepared {
    context: Context,
    runtime: Arc<RuntimeContext>,
}

/// [`Prepared`], built once: by [`wizer_initialize`] when the module is pre-initialized (the
/// built memory is then part of the module), otherwise by the first call.
struct Once(OnceLock<Result<Prepared, Failure>>);

// SAFETY: wasm32-wasip1 has a single thread.
unsafe impl Sync for Once {}
unsafe impl Send for Once {}

static PREPARED: Once = Once(OnceLock::new());

fn prepared() -> &'static Result<Prepared, Failure> {
    PREPARED.0.get_or_init(|| {
        let mut context = Context::with_config(false)?;
        context.install(io_module()?)?;
        let runtime = Arc::new(context.runtime()?);
        Ok(Prepared { context, runtime })
    })
}

/// The pre-initialization entry point (`runegrid_sandbox::preinitialize` runs it once and
/// snapshots the memory): builds [`Prepared`] so that no run has to. Reads no input.
#[unsafe(export_name = "wizer-initialize")]
pub extern "C" fn wizer_initialize() {
    let _ = prepared();
}

/// The first fatal diagnostic, placed in the script where rune can tell.
fn first_fatal(
    diagnostics: &Diagnostics,
    source: Option<&Source>,
    script: &str,
) -> Option<Failure> {
    diagnostics.diagnostics().iter().find_map(|d| match d {
        Diagnostic::Fatal(fatal) => Some(match fatal.kind() {
            FatalDiagnosticKind::CompileError(e) => {
                Failure::new("compile", e.to_string()).at(source, e.span().start.into_usize())
            }
            FatalDiagnosticKind::LinkError(rune::compile::LinkerError::MissingFunction {
                spans,
                ..
            }) => {
                let first = spans.first().map(|(span, _)| *span);
                let name = first
                    .and_then(|s| script.get(s.range()))
                    .map(|n| format!(" `{n}`"))
                    .unwrap_or_default();
                let failure = Failure::new("compile", format!("missing function{name}"));
                match first {
                    Some(span) => failure.at(source, span.start.into_usize()),
                    None => failure,
                }
            }
            kind => Failure::new("compile", kind.to_string()),
        }),
        _ => None,
    })
}

/// A VM error, placed at the instruction that failed where the debug info tells.
fn runtime_failure(error: &VmError, sources: &Sources) -> Failure {
    let failure = Failure::new("runtime", error.to_string());
    let place = error.first_location().and_then(|l| {
        let inst = l.unit.debug_info()?.instruction_at(l.ip)?;
        Some((inst.source_id, inst.span.start.into_usize()))
    });
    match place {
        Some((source_id, offset)) => failure.at(sources.get(source_id), offset),
        None => failure,
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A JSON argument as a Rune value.
fn to_rune(json: &Json) -> Result<Value, Failure> {
    Ok(match json {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::try_from(rune::alloc::String::try_from(s.as_str())?)?,
        Json::Array(items) => {
            let mut vec = rune::alloc::Vec::try_with_capacity(items.len())?;
            for item in items {
                vec.try_push(to_rune(item)?)?;
            }
            Value::vec(vec)?
        }
        Json::Object(map) => {
            let mut object = Object::with_capacity(map.len())?;
            for (key, item) in map {
                object.insert(rune::alloc::String::try_from(key.as_str())?, to_rune(item)?)?;
            }
            Value::try_from(object)?
        }
    })
}

/// A Rune result as JSON.
fn to_json(value: &Value, depth: usize) -> Result<Json, Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::value(format!(
            "the result is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    let deeper = |v: &Value| to_json(v, depth + 1);
    let borrow =
        |e: rune::runtime::RuntimeError| Failure::value(format!("cannot read the result: {e}"));
    if value.into_unit().is_ok() {
        return Ok(Json::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Json::Bool(b));
    }
    if let Ok(i) = value.as_signed() {
        return Ok(Json::from(i));
    }
    if let Ok(u) = value.as_unsigned() {
        return Ok(Json::from(u));
    }
    if let Ok(f) = value.as_float() {
        return Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| Failure::value(format!("the float {f} has no json form")));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Json::String(c.to_string()));
    }
    let hash = value.type_hash();
    if hash == rune::alloc::String::HASH {
        return Ok(Json::String(
            value.borrow_string_ref().map_err(borrow)?.to_string(),
        ));
    }
    if hash == rune::runtime::Vec::HASH {
        let vec = value.borrow_ref::<rune::runtime::Vec>().map_err(borrow)?;
        return vec
            .iter()
            .map(deeper)
            .collect::<Result<_, _>>()
            .map(Json::Array);
    }
    if hash == OwnedTuple::HASH {
        let tuple = value.borrow_tuple_ref().map_err(borrow)?;
        return tuple
            .iter()
            .map(deeper)
            .collect::<Result<_, _>>()
            .map(Json::Array);
    }
    if hash == Object::HASH {
        let object = value.borrow_ref::<Object>().map_err(borrow)?;
        let mut map = Map::new();
        for (key, item) in object.iter() {
            map.insert(key.to_string(), deeper(item)?);
        }
        return Ok(Json::Object(map));
    }
    if hash == Bytes::HASH {
        let bytes = value.borrow_ref::<Bytes>().map_err(borrow)?;
        return Ok(Json::Array(
            bytes.as_slice().iter().map(|b| Json::from(*b)).collect(),
        ));
    }
    if hash == Option::<Value>::HASH {
        let option = value.borrow_ref::<Option<Value>>().map_err(borrow)?;
        return match &*option {
            None => Ok(Json::Null),
            Some(inner) => deeper(inner),
        };
    }
    if hash == Result::<Value, Value>::HASH {
        let result = value.borrow_ref::<Result<Value, Value>>().map_err(borrow)?;
        return match &*result {
            Ok(inner) => deeper(inner),
            Err(e) => Err(Failure::new("runtime", err_text(e))),
        };
    }
    Err(Failure::value(format!(
        "cannot turn a value of type {} into json",
        value.type_info()
    )))
}

/// The message of a script's `Err(e)`.
fn err_text(e: &Value) -> String {
    if let Ok(s) = e.borrow_string_ref() {
        return s.to_string();
    }
    match to_json(e, 0) {
        Ok(json) => json.to_string(),
        Err(_) => format!("{e:?}"),
    }
}

/// Stdout, and whether what was written so far ends a line.
struct Out {
    at_line_start: bool,
}

static OUT: Mutex<Out> = Mutex::new(Out {
    at_line_start: true,
});

impl Out {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.at_line_start = last == b'\n';
        }
        // Unbuffered, so what a script printed is out even when the run stops (out of fuel).
        // A failed write (the sandbox's stdout cap) ends the run in the host; nothing to do.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(bytes);
        let _ = stdout.flush();
    }

    fn flush(&mut self) {
        let _ = std::io::stdout().lock().flush();
    }
}

fn write_out(bytes: &[u8]) {
    OUT.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .write(bytes);
}

/// `::std::io::{print, println, dbg}`, writing to stdout through [`OUT`].
fn io_module() -> Result<Module, ContextError> {
    let mut module = Module::with_crate_item("std", ["io"])?;
    module
        .function("print", |m: &str| write_out(m.as_bytes()))
        .build()?;
    module
        .function("println", |m: &str| {
            let mut line = String::with_capacity(m.len() + 1);
            line.push_str(m);
            line.push('\n');
            write_out(line.as_bytes());
        })
        .build()?;
    module.raw_function("dbg", dbg_impl).build()?;
    Ok(module)
}

fn dbg_impl(stack: &mut dyn Memory, addr: InstAddress, args: usize, out: Output) -> VmResult<()> {
    let mut text = String::new();
    match stack.slice_at(addr, args) {
        Ok(values) => {
            for value in values {
                text.push_str(&format!("{value:?}\n"));
            }
        }
        Err(e) => return VmResult::err(e),
    }
    write_out(text.as_bytes());
    match out.store(stack, Value::from(())) {
        Ok(()) => VmResult::Ok(()),
        Err(e) => VmResult::err(e),
    }
}
