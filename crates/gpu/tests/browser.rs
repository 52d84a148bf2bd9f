//! The browser engine (web/gpu.js: WebGPU in a real, headless Chromium driven through
//! chromedriver) against the native one (`Gpu::run`: wgpu on this machine's adapter, Mesa's
//! lavapipe where there is no hardware one): the same kernels give the same bytes, and the
//! browser refuses bad tasks with the same messages.
//!
//! Needs `chromium` and `chromedriver` on PATH (`.ci/run` installs Debian's `chromium` and
//! `chromium-driver`); without them it fails, unless `RUNEGRID_SKIP_BROWSER=1` (like
//! crates/cli/tests/browser.rs). Without a native adapter it is skipped with a note, unless
//! `RUNEGRID_REQUIRE_GPU` is set (like kernels.rs). Chromium runs WebGPU on whatever adapter it
//! finds; headless on a machine without a GPU that is SwiftShader, which it offers only with
//! `--enable-unsafe-webgpu`.
#![cfg(feature = "device")]

use fantoccini::{Client as Browser, ClientBuilder};
use runegrid_gpu::{
    AdapterInfo, Gpu, GpuError, GpuLimits, Kernel, KernelError, OpenOptions, Role, STATUS_BUFFER,
    check, check_guarded, split_status,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium's flags: headless, and WebGPU on (on Linux it is off by default, and
/// `requestAdapter()` gives null without `--enable-unsafe-webgpu`).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--enable-unsafe-webgpu",
    "--window-size=800,600",
];

/// The longest a page script may take (the WebDriver script timeout is 30 s by default).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn skip_browser() -> bool {
    if std::env::var("RUNEGRID_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("RUNEGRID_SKIP_BROWSER=1: browser test skipped");
        return true;
    }
    false
}

fn native() -> Option<Gpu> {
    match Gpu::open(OpenOptions {
        allow_software: true,
    }) {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var_os("RUNEGRID_REQUIRE_GPU").is_none() => {
            eprintln!("note: skipping the browser/native GPU comparison: {e}");
            None
        }
        Err(e) => panic!("RUNEGRID_REQUIRE_GPU is set but no GPU opens: {e}"),
    }
}

async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// --- A minimal HTTP server for the page and web/gpu.js ---------------------------------------

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>runegrid gpu</title>
<script type="module">
import * as gpu from "/gpu.js";
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const fromHex = (s) => new Uint8Array((s.match(/../g) || []).map((h) => parseInt(h, 16)));
window.runegridGpu = { ...gpu, toHex, fromHex };
</script>
"#;

/// Serves `/` (the page) and `/gpu.js` (read from web/ on every request) on 127.0.0.1 until
/// the process ends; returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = respond(stream);
            });
        }
    });
    url
}

fn respond(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/gpu.js");
    let (status, kind, body) = match path.as_str() {
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            PAGE.as_bytes().to_vec(),
        ),
        "/gpu.js" => (
            "200 OK",
            "text/javascript; charset=utf-8",
            std::fs::read(js)?,
        ),
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()
}

// --- The browser ------------------------------------------------------------------------------

/// chromedriver, and the session it started.
struct Driver {
    child: Child,
    port: u16,
    session: Option<String>,
}

impl Drop for Driver {
    /// Ends the session, so that Chromium quits even when the test failed before
    /// `Browser::close`, then chromedriver.
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = end_session(self.port, &id);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DELETE /session/{id}` to chromedriver, without an async runtime (Drop may run in a panic).
fn end_session(port: u16, id: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // The reply comes once the session (and Chromium) is gone; chromedriver may keep the
    // connection open after it, so read its start only.
    let mut reply = [0u8; 512];
    std::io::Read::read(&mut stream, &mut reply)?;
    Ok(())
}

/// Starts chromedriver and a headless Chromium session with WebGPU.
async fn browser() -> (Driver, Browser) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed (apt-get install chromium chromium-driver), or set RUNEGRID_SKIP_BROWSER=1");
    let mut driver = Driver {
        child,
        port,
        session: None,
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": CHROMIUM_ARGS }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let b = wait_until(
        "chromedriver to accept a session",
        Duration::from_secs(30),
        || {
            let (url, caps) = (url.clone(), caps.clone());
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        },
    )
    .await;
    driver.session = b.session_id().await.unwrap();
    (driver, b)
}

/// Runs an asynchronous page script that calls its callback with `{ok: ...}` or `{err: "..."}`.
async fn call(b: &Browser, script: &str, args: Vec<Value>) -> Result<Value, String> {
    let reply = tokio::time::timeout(SCRIPT_TIMEOUT, b.execute_async(script, args))
        .await
        .unwrap_or_else(|_| panic!("the page script took over {SCRIPT_TIMEOUT:?}:\n{script}"))
        .unwrap_or_else(|e| panic!("the page script failed: {e}\n{script}"));
    match (reply.get("ok"), reply.get("err")) {
        (Some(ok), None) => Ok(ok.clone()),
        (None, Some(Value::String(err))) => Err(err.clone()),
        _ => panic!("unexpected reply {reply}"),
    }
}

const OPEN: &str = r#"
const done = arguments[arguments.length - 1];
runegridGpu.openGpu({ allowSoftware: true }).then(
  ({ device, info }) => { window.gpuDevice = device; done({ ok: info }); },
  (e) => done({ err: String((e && e.message) || e) }));
"#;

const RUN: &str = r#"
const [kernel, inputs, options, done] = arguments;
const g = runegridGpu;
const given = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, g.fromHex(v)]));
g.runKernel(window.gpuDevice, kernel, given, options).then(
  (outputs) => done({ ok: {
    outputs: outputs.map(({ name, bytes }) => [name, g.toHex(bytes)]),
    exhausted: g.splitStatus(outputs).exhausted,
    rest: g.splitStatus(outputs).outputs.map(({ name }) => name),
  } }),
  (e) => done({ err: String((e && e.message) || e) }));
"#;

/// How many compiled kernels web/gpu.js keeps for the page's device.
async fn cached_pipelines(b: &Browser) -> u64 {
    b.execute(
        "return runegridGpu.cachedPipelines(window.gpuDevice)",
        vec![],
    )
    .await
    .unwrap()
    .as_u64()
    .unwrap()
}

/// What a browser run returned: the outputs, and what `splitStatus` made of them.
#[derive(Debug)]
struct BrowserRun {
    outputs: Vec<(String, Vec<u8>)>,
    exhausted: bool,
    rest: Vec<String>,
}

async fn run_in_browser(
    b: &Browser,
    kernel: &Kernel,
    inputs: &BTreeMap<String, Vec<u8>>,
) -> Result<BrowserRun, String> {
    run_in_browser_with(b, kernel, inputs, json!({})).await
}

/// `run_in_browser` with `runKernel`'s options (`{wallTimeMs}`).
async fn run_in_browser_with(
    b: &Browser,
    kernel: &Kernel,
    inputs: &BTreeMap<String, Vec<u8>>,
    options: Value,
) -> Result<BrowserRun, String> {
    let given: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(hex::encode(v))))
        .collect();
    let ok = call(
        b,
        RUN,
        vec![
            serde_json::to_value(kernel).unwrap(),
            Value::Object(given),
            options,
        ],
    )
    .await?;
    let outputs = ok["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_owned(),
                hex::decode(pair[1].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    Ok(BrowserRun {
        outputs,
        exhausted: ok["exhausted"].as_bool().unwrap(),
        rest: serde_json::from_value(ok["rest"].clone()).unwrap(),
    })
}

// --- Kernels (those of kernels.rs) ------------------------------------------------------------

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

const EDGES: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    let x = a[i];
    let y = b[i];
    out[i * 6u] = x / y;
    out[i * 6u + 1u] = x % y;
    out[i * 6u + 2u] = bitcast<u32>(bitcast<i32>(x) / bitcast<i32>(y));
    out[i * 6u + 3u] = bitcast<u32>(bitcast<i32>(x) % bitcast<i32>(y));
    out[i * 6u + 4u] = x << y;
    out[i * 6u + 5u] = bitcast<u32>(bitcast<i32>(x) >> y);
}
"#;

const OOB: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x * 1000u] = a[id.x * 7919u + 100000u];
}
"#;

const FOREVER: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var x = id.x;
    loop { x = x * 3u + 1u; }
    out[id.x] = x;
}
"#;

const NESTED_FOREVER: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
fn spin(x: u32) -> u32 { var y = x; while (true) { y = y + 1u; } return y; }
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var total = 0u;
    for (var i = 0u; i < 10u; i++) { total = total + spin(i); }
    out[id.x] = total;
}
"#;

const FLOAT_ARITHMETIC: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&y)) { y[i] = x[i] * x[i] + 0.5 * x[i] + 1.0 / (1.0 + x[i] * x[i]); }
}
"#;

const FLOAT_TRANSCENDENTAL: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&y)) {
        let v = x[i];
        y[i] = v * v + 0.5 * v + 1.0 / (1.0 + v * v) + sqrt(abs(v)) + exp(-v * v) + sin(v);
    }
}
"#;

/// Runs a float kernel (`y[i] = f(x[i])`) on both engines and on the CPU: all three agree
/// within `t`; prints whether the engines gave identical bytes, and how far apart they are.
async fn float_case(
    b: &Browser,
    gpu: &Gpu,
    what: &str,
    shader: &str,
    xs: impl Iterator<Item = f32>,
    f: impl Fn(f32) -> f32,
    t: runegrid_core::Tolerance,
) {
    let xs: Vec<f32> = xs.collect();
    let count = xs.len() as u64;
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: shader.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("x", 0, Role::Input, None),
            buffer("y", 1, Role::Output, Some(4 * count)),
        ],
        dispatches: vec![[count.div_ceil(64) as u32, 1, 1]],
    };
    let given = inputs(&[("x", xs.iter().flat_map(|v| v.to_le_bytes()).collect())]);
    let native = run_native(gpu, &kernel, &given).unwrap_or_else(|e| panic!("{what}: {e}"));
    let browser = run_in_browser(b, &kernel, &given)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(browser.outputs.len(), 1);
    assert_eq!(browser.outputs[0].0, "y");
    let (nb, bb) = (&native[0].1, &browser.outputs[0].1);
    let cpu: Vec<u8> = xs.iter().flat_map(|&v| f(v).to_le_bytes()).collect();
    let (fa, fb, fc) = (floats(nb), floats(bb), floats(&cpu));
    let apart = |p: &[f32], q: &[f32]| {
        let ulps = p
            .iter()
            .zip(q)
            .filter_map(|(x, y)| runegrid_core::tolerance::ulp_distance(*x, *y))
            .max()
            .unwrap_or(0);
        let abs = p
            .iter()
            .zip(q)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let differ = p
            .iter()
            .zip(q)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        format!("{differ} of {count} elements differ, at most {ulps} ULPs and {abs:e} apart")
    };
    eprintln!(
        "{what}: {} ({}); native vs the CPU: {}; browser vs the CPU: {}",
        if nb == bb {
            "identical bytes on both engines"
        } else {
            "NOT identical bytes on the two engines"
        },
        apart(&fa, &fb),
        apart(&fa, &fc),
        apart(&fb, &fc),
    );
    t.compare(nb, bb)
        .unwrap_or_else(|e| panic!("{what}: the engines disagree beyond {t:?}: {e:?}"));
    t.compare(bb, &cpu)
        .unwrap_or_else(|e| panic!("{what}: the browser and the CPU disagree beyond {t:?}: {e:?}"));
    t.compare(nb, &cpu)
        .unwrap_or_else(|e| panic!("{what}: native and the CPU disagree beyond {t:?}: {e:?}"));
}

/// Runs a (checked) kernel natively, a guarded one with its status buffer.
fn run_native(
    gpu: &Gpu,
    kernel: &Kernel,
    given: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<(String, Vec<u8>)>, GpuError> {
    let limits = GpuLimits::default();
    let guarded = kernel.buffers.iter().any(|b| b.name == STATUS_BUFFER);
    let checked = if guarded {
        check_guarded(kernel, &limits)
    } else {
        check(kernel, &limits)
    }
    .unwrap();
    gpu.run(kernel, &checked, given, &limits)
}

/// Runs `kernel` on both engines; asserts they return the same buffers, byte for byte.
async fn same_bytes(
    b: &Browser,
    gpu: &Gpu,
    what: &str,
    kernel: &Kernel,
    given: &BTreeMap<String, Vec<u8>>,
) -> BrowserRun {
    let native = run_native(gpu, kernel, given).unwrap_or_else(|e| panic!("{what}, native: {e}"));
    let browser = run_in_browser(b, kernel, given)
        .await
        .unwrap_or_else(|e| panic!("{what}, browser: {e}"));
    let names: Vec<&str> = kernel.outputs().map(|b| b.name.as_str()).collect();
    assert_eq!(
        browser
            .outputs
            .iter()
            .map(|o| o.0.as_str())
            .collect::<Vec<_>>(),
        names,
        "{what}: the browser's outputs"
    );
    assert_eq!(browser.outputs, native, "{what}: the engines disagree");
    let (exhausted, rest) = split_status(native);
    assert_eq!(browser.exhausted, exhausted, "{what}: splitStatus");
    assert_eq!(
        browser.rest,
        rest.iter().map(|o| o.0.clone()).collect::<Vec<_>>(),
        "{what}: splitStatus"
    );
    eprintln!("{what}: identical bytes on both engines");
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_and_native_engines_give_the_same_bytes() {
    if skip_browser() {
        return;
    }
    let Some(gpu) = native() else { return };
    let url = serve();
    let (mut driver, b) = browser().await;
    b.goto(&url).await.unwrap();
    wait_until(
        "the page to load web/gpu.js",
        Duration::from_secs(30),
        || {
            let b = &b;
            async move {
                b.execute("return !!window.runegridGpu", vec![])
                    .await
                    .ok()
                    .and_then(|v| v.as_bool())
                    .filter(|&ready| ready)
            }
        },
    )
    .await;

    // The adapters, reported alike.
    let info = call(&b, OPEN, vec![])
        .await
        .unwrap_or_else(|e| panic!("WebGPU does not open in Chromium ({CHROMIUM_ARGS:?}): {e}"));
    eprintln!("browser adapter: {info}");
    eprintln!(
        "native adapter: {}",
        serde_json::to_string(gpu.info()).unwrap()
    );
    let fields = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        fields(&info),
        fields(&serde_json::to_value(gpu.info()).unwrap()),
        "the browser's adapter info has other fields than AdapterInfo"
    );
    let browser_info: AdapterInfo = serde_json::from_value(info.clone()).unwrap();
    assert_eq!(browser_info.backend, "webgpu");
    assert!(!browser_info.name.is_empty());
    assert!(
        browser_info.max_buffer_bytes >= 256 << 20,
        "{browser_info:?}"
    );
    assert!(browser_info.max_storage_binding_bytes >= 128 << 20);
    assert!(browser_info.max_workgroups_per_dimension >= 65_535);
    assert!(browser_info.max_invocations_per_workgroup >= 256);
    assert_eq!(
        browser_info.software,
        browser_info.device_type == "cpu",
        "{browser_info:?}"
    );

    // Integer kernels: the same bytes, and what the CPU computes.
    let n = 1000u32;
    let a: Vec<u32> = (0..n).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    let bs: Vec<u32> = (0..n).map(|i| u32::MAX - i).collect();
    let add = add_kernel(u64::from(n));
    let add_inputs = inputs(&[("a", words(&a)), ("b", words(&bs))]);
    let out = same_bytes(&b, &gpu, "vector add", &add, &add_inputs).await;
    assert_eq!(from_words(&out.outputs[0].1), want_add(&a, &bs));
    assert!(!out.exhausted);

    let (rounds, salt) = (5u32, 0xdead_beef_u32);
    let hash = Kernel {
        loop_budget: None,
        work: None,
        shader: HASH.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("params", 0, Role::Uniform, None),
            buffer("state", 1, Role::Inout, None),
        ],
        dispatches: vec![[10, 1, 1]; 3],
    };
    let state: Vec<u32> = (0..300).collect();
    let hash_inputs = inputs(&[("params", words(&[rounds, salt])), ("state", words(&state))]);
    let out = same_bytes(
        &b,
        &gpu,
        "integer hash (uniform, inout, 3 dispatches)",
        &hash,
        &hash_inputs,
    )
    .await;
    assert_eq!(from_words(&out.outputs[0].1), hashed(&state, rounds, salt));

    // Integer edge cases WGSL defines (division and remainder by zero, i32::MIN / -1, shift
    // amounts past the width): the same bytes.
    let edges = Kernel {
        loop_budget: None,
        work: None,
        shader: EDGES.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("a", 0, Role::Input, None),
            buffer("b", 1, Role::Input, None),
            buffer("out", 2, Role::Output, Some(4 * 8 * 6)),
        ],
        dispatches: vec![[1, 1, 1]],
    };
    let ea: Vec<u32> = vec![7, 0x8000_0000, 0xffff_ffff, 12345, 0, 1, 0x7fff_ffff, 99];
    let eb: Vec<u32> = vec![0, 0xffff_ffff, 0, 33, 0, 32, 0xffff_ffff, 64];
    same_bytes(
        &b,
        &gpu,
        "integer edge cases",
        &edges,
        &inputs(&[("a", words(&ea)), ("b", words(&eb))]),
    )
    .await;

    // Out-of-bounds indexing: WGSL lets each implementation choose what such reads and writes
    // do (within the buffer), so the plain kernel is reported, not required to agree; clamped
    // (bounds.rs, as the coordinator stores every kernel) both engines give the same bytes.
    let oob = Kernel {
        loop_budget: None,
        work: None,
        shader: OOB.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("a", 0, Role::Input, None),
            buffer("out", 1, Role::Output, Some(64)),
        ],
        dispatches: vec![[4, 1, 1]],
    };
    let oob_inputs = inputs(&[("a", words(&(1..=16).collect::<Vec<u32>>()))]);
    let native = run_native(&gpu, &oob, &oob_inputs).unwrap();
    let browser = run_in_browser(&b, &oob, &oob_inputs).await.unwrap();
    assert_eq!(browser.outputs[0].1.len(), 64);
    let again = run_in_browser(&b, &oob, &oob_inputs).await.unwrap();
    assert_eq!(
        again.outputs, browser.outputs,
        "out-of-bounds indexing is not repeatable"
    );
    eprintln!(
        "out-of-bounds indexing, unclamped: {}\n  native:  {:?}\n  browser: {:?}",
        if browser.outputs == native {
            "identical bytes"
        } else {
            "NOT identical bytes"
        },
        from_words(&native[0].1),
        from_words(&browser.outputs[0].1)
    );
    let clamped = runegrid_gpu::guard(&oob, 1000).unwrap();
    let out = same_bytes(
        &b,
        &gpu,
        "out-of-bounds indexing, clamped",
        &clamped,
        &oob_inputs,
    )
    .await;
    // Invocation 0 reads a[100000], clamped to a[15]; the others write out[1000 * id], clamped
    // to out[15], all the same value.
    let mut want = vec![0u32; 16];
    want[0] = 16;
    want[15] = 16;
    assert_eq!(from_words(&out.outputs[0].1), want);

    // Every kind of out-of-bounds access (common::OUT_OF_BOUNDS): clamped, the same bytes on
    // both engines and what bounds.rs says.
    let hostile = out_of_bounds_kernel();
    let clamped = runegrid_gpu::guard(&hostile, 1000).unwrap();
    let out = same_bytes(
        &b,
        &gpu,
        "every kind of out-of-bounds access, clamped",
        &clamped,
        &out_of_bounds_inputs(),
    )
    .await;
    assert_eq!(from_words(&out.outputs[0].1), OUT_OF_BOUNDS_CLAMPED);
    // What each engine does on its own, reported: Tint's robustness transform clamps too, and
    // (Chromium 156) also takes a negative index to the last element; lavapipe reads zero past
    // a buffer's end (and a[i32::MIN] wraps to a[0]) and skips such writes.
    let raw = run_in_browser(&b, &hostile, &out_of_bounds_inputs())
        .await
        .unwrap();
    let native_raw = run_native(&gpu, &hostile, &out_of_bounds_inputs()).unwrap();
    let agrees = |bytes: &[u8]| {
        if from_words(bytes) == OUT_OF_BOUNDS_CLAMPED {
            "as clamped"
        } else {
            "NOT as clamped"
        }
    };
    eprintln!(
        "every kind of out-of-bounds access, unclamped: native {}, browser {}\n  clamped: {:?}\n  native:  {:?}\n  browser: {:?}",
        agrees(&native_raw[0].1),
        agrees(&raw.outputs[0].1),
        OUT_OF_BOUNDS_CLAMPED,
        from_words(&native_raw[0].1),
        from_words(&raw.outputs[0].1)
    );

    // Guarded kernels: an endless loop stops with the budget spent, on both alike; one that
    // finishes gives its plain bytes and a zero status.
    let forever = Kernel {
        loop_budget: None,
        work: None,
        shader: FOREVER.into(),
        entry_point: "main".into(),
        buffers: vec![buffer("out", 0, Role::Output, Some(32))],
        dispatches: vec![[1, 1, 1]],
    };
    let guarded = runegrid_gpu::guard(&forever, 1000).unwrap();
    let out = same_bytes(&b, &gpu, "guarded endless loop", &guarded, &BTreeMap::new()).await;
    assert!(out.exhausted);
    assert_eq!(out.outputs[1].0, STATUS_BUFFER);
    let stopped: Vec<u32> = (0..8u32)
        .map(|i| (0..1000).fold(i, |x, _| x.wrapping_mul(3).wrapping_add(1)))
        .collect();
    assert_eq!(from_words(&out.outputs[0].1), stopped);

    let nested = Kernel {
        loop_budget: None,
        work: None,
        shader: NESTED_FOREVER.into(),
        buffers: vec![buffer("out", 0, Role::Output, Some(16))],
        ..forever.clone()
    };
    let guarded = runegrid_gpu::guard(&nested, 1000).unwrap();
    let out = same_bytes(
        &b,
        &gpu,
        "guarded endless loop in a helper",
        &guarded,
        &BTreeMap::new(),
    )
    .await;
    assert!(out.exhausted);

    let guarded = runegrid_gpu::guard(&hash, 1000).unwrap();
    let out = same_bytes(&b, &gpu, "guarded hash", &guarded, &hash_inputs).await;
    assert!(!out.exhausted);
    assert_eq!(from_words(&out.outputs[0].1), hashed(&state, rounds, salt));

    // Float kernels: within a tolerance of each other and of the CPU; bitwise equality is
    // reported, not required. Arithmetic only (WGSL: division within 2.5 ULPs, fused
    // multiply-adds allowed), then transcendentals, whose WGSL accuracy is loose (sin within
    // 2^-11 absolute on [-pi, pi], exp within 3 + 2|x| ULPs), so an absolute bound.
    let arithmetic = |v: f32| v * v + 0.5 * v + 1.0 / (1.0 + v * v);
    float_case(
        &b,
        &gpu,
        "float arithmetic",
        FLOAT_ARITHMETIC,
        (-512..512).map(|i| i as f32 / 7.0),
        arithmetic,
        runegrid_core::Tolerance::new(0.0, 1e-5, 8).unwrap(),
    )
    .await;
    float_case(
        &b,
        &gpu,
        "float transcendentals",
        FLOAT_TRANSCENDENTAL,
        (-512..512).map(|i| i as f32 / 171.0 + 1e-3),
        |v: f32| arithmetic(v) + v.abs().sqrt() + (-v * v).exp() + v.sin(),
        runegrid_core::Tolerance::new(2e-3, 0.0, 0).unwrap(),
    )
    .await;

    // Bad tasks: the browser refuses them with native's messages, and keeps working.
    let ok = words(&[0; 16]);
    let small = add_kernel(16);
    for (what, given) in [
        ("a missing input", inputs(&[("a", ok.clone())])),
        (
            "an unknown input",
            inputs(&[("a", ok.clone()), ("b", ok.clone()), ("c", ok.clone())]),
        ),
        (
            "an input named as an output",
            inputs(&[("a", ok.clone()), ("b", ok.clone()), ("out", ok.clone())]),
        ),
        (
            "an unaligned input",
            inputs(&[("a", vec![0; 6]), ("b", ok.clone())]),
        ),
    ] {
        let native = run_native(&gpu, &small, &given).unwrap_err();
        assert!(matches!(native, GpuError::Kernel(_)), "{what}: {native}");
        let err = run_in_browser(&b, &small, &given).await.unwrap_err();
        assert_eq!(err, native.to_string(), "{what}");
        eprintln!("{what}: both engines say {err:?}");
    }
    assert_eq!(
        run_in_browser(&b, &small, &inputs(&[("a", ok.clone())]))
            .await
            .unwrap_err(),
        KernelError::MissingInput("b".into()).to_string()
    );

    // A binding the shader does not have: refused at upload (naga), and by both GPUs.
    let mut unbound = small.clone();
    unbound.buffers[2].binding = 5;
    let given = inputs(&[("a", ok.clone()), ("b", ok.clone())]);
    assert_eq!(
        check(&unbound, &GpuLimits::default()).unwrap_err(),
        KernelError::Undeclared {
            group: 0,
            binding: 2
        }
    );
    let checked = check(&small, &GpuLimits::default()).unwrap();
    let native = gpu
        .run(&unbound, &checked, &given, &GpuLimits::default())
        .unwrap_err();
    assert!(matches!(native, GpuError::Refused(_)), "{native}");
    let err = run_in_browser(&b, &unbound, &given).await.unwrap_err();
    assert!(err.starts_with("the GPU refused the kernel: "), "{err}");
    eprintln!("an invalid binding: native says {native:?}\n  the browser says {err:?}");

    // WGSL that does not compile: the browser says where, on every run (a refused kernel is
    // not kept with the compiled ones).
    let kept = cached_pipelines(&b).await;
    assert!((1..=16).contains(&kept), "{kept} pipelines kept");
    let mut broken = small.clone();
    broken.shader = ADD.replace("a[i] + b[i]", "a[i] +* b[i]");
    let err = run_in_browser(&b, &broken, &given).await.unwrap_err();
    assert!(
        err.starts_with("the GPU refused the kernel: the WGSL does not compile:\n10:"),
        "{err}"
    );
    eprintln!("WGSL that does not compile: the browser says {err:?}");
    assert_eq!(run_in_browser(&b, &broken, &given).await.unwrap_err(), err);
    assert_eq!(cached_pipelines(&b).await, kept);

    // The page (and its device) keep working after the refusals, with the vector add compiled
    // at the start.
    let out = same_bytes(&b, &gpu, "vector add after the refusals", &add, &add_inputs).await;
    assert_eq!(from_words(&out.outputs[0].1), want_add(&a, &bs));
    assert_eq!(cached_pipelines(&b).await, kept);

    // At most 16 kept, the least recently used going first.
    for k in 0..20u32 {
        let mut other = small.clone();
        other.shader = ADD.replace("a[i] + b[i]", &format!("a[i] + b[i] + {k}u"));
        let out = run_in_browser(&b, &other, &given).await.unwrap();
        assert_eq!(from_words(&out.outputs[0].1), vec![k; 16]);
    }
    assert_eq!(cached_pipelines(&b).await, 16);

    // A run past its wall time: abandoned, and its device destroyed (as native marks its
    // device lost); the page opens a new one and goes on.
    let slow = inputs(&[
        ("params", words(&[1 << 16, salt])),
        ("state", words(&state)),
    ]);
    let err = run_in_browser_with(&b, &hash, &slow, json!({ "wallTimeMs": 1 }))
        .await
        .unwrap_err();
    assert_eq!(err, GpuError::Timeout(1).to_string());
    let err = run_in_browser(&b, &add, &add_inputs).await.unwrap_err();
    assert!(err.starts_with("the GPU device was lost: "), "{err}");
    call(&b, OPEN, vec![]).await.unwrap();
    assert_eq!(cached_pipelines(&b).await, 0);
    let out = same_bytes(&b, &gpu, "vector add on a new device", &add, &add_inputs).await;
    assert_eq!(from_words(&out.outputs[0].1), want_add(&a, &bs));
    assert_eq!(cached_pipelines(&b).await, 1);

    b.close().await.unwrap();
    driver.session = None;
}

fn want_add(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}
