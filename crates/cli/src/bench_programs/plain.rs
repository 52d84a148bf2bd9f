//! The "plain wasmtime" column of `bench programs`: a module run as built, without the
//! instrumentation, in an engine configured like the sandbox's, with a WASI host of its own.

use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// The "plain wasmtime" column: the module as built, in an engine configured like the
/// sandbox's (`runegrid_sandbox`'s private `engine_config`, mirrored: Cranelift at `Speed`, no
/// wasmtime fuel, no Cranelift NaN canonicalization, no epoch interruption (on, with a deadline
/// never reached, with `--epoch`), the same wasm features and stack limit) but without
/// the instrumentation, and with a minimal WASI preview-1 host: arguments, stdout/stderr,
/// clocks, random bytes, `proc_exit`; every other WASI function the module imports fails with
/// `ENOSYS`.
pub(super) struct Plain {
    /// Whether the engine checks the epoch (`--epoch`).
    epoch: bool,
    engine: wasmtime::Engine,
}

pub(super) struct PlainModule {
    module: wasmtime::Module,
    linker: wasmtime::Linker<PlainHost>,
}

struct PlainHost {
    args: Vec<Vec<u8>>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    rng: u64,
    memory: Option<wasmtime::Memory>,
}

/// `proc_exit(code)`.
#[derive(Debug)]
struct Exit(i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proc_exit({})", self.0)
    }
}

impl std::error::Error for Exit {}

const WASI: &str = "wasi_snapshot_preview1";
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

/// The functions [`Plain`]'s host implements.
const PLAIN_FUNCS: &[&str] = &[
    "args_sizes_get",
    "args_get",
    "environ_sizes_get",
    "environ_get",
    "fd_write",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "sched_yield",
    "fd_close",
    "fd_seek",
    "fd_fdstat_get",
    "fd_prestat_get",
];

fn slice(mem: &mut [u8], ptr: i32, len: u32) -> Result<&mut [u8], i32> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as usize).ok_or(EFAULT)?;
    mem.get_mut(start..end).ok_or(EFAULT)
}

fn put_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), i32> {
    slice(mem, ptr, 4)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn get_u32(mem: &mut [u8], ptr: i32) -> Result<u32, i32> {
    let b = slice(mem, ptr, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn errno(r: Result<(), i32>) -> i32 {
    r.err().unwrap_or(ESUCCESS)
}

/// Runs `f` on the caller's memory and host state.
fn with_mem(
    c: &mut wasmtime::Caller<'_, PlainHost>,
    f: impl FnOnce(&mut [u8], &mut PlainHost) -> Result<(), i32>,
) -> wasmtime::Result<i32> {
    let Some(memory) = c.data().memory else {
        return Ok(EFAULT);
    };
    let (mem, host) = memory.data_and_store_mut(c);
    Ok(errno(f(mem, host)))
}

impl Plain {
    pub(super) fn new(epoch: bool) -> Result<Plain> {
        let allowed = runegrid_instrument::ALLOWED_FEATURES;
        let mut config = wasmtime::Config::new();
        config
            .strategy(wasmtime::Strategy::Cranelift)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .cranelift_nan_canonicalization(false)
            .consume_fuel(false)
            .epoch_interruption(epoch)
            .max_wasm_stack(runegrid_sandbox::MAX_WASM_STACK_BYTES)
            .async_stack_size(runegrid_sandbox::MAX_WASM_STACK_BYTES + (1 << 20))
            .parallel_compilation(true)
            .wasm_features(wasmtime::WasmFeatures::all().difference(allowed), false)
            .wasm_features(allowed, true);
        let engine = wasmtime::Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(Plain { epoch, engine })
    }

    pub(super) fn compile(&self, wasm: &[u8]) -> Result<PlainModule> {
        let module =
            wasmtime::Module::new(&self.engine, wasm).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let unknown: Vec<String> = module
            .imports()
            .filter(|i| i.module() != WASI || !PLAIN_FUNCS.contains(&i.name()))
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        if !unknown.is_empty() {
            eprintln!(
                "note: the plain wasmtime host answers ENOSYS to {}",
                unknown.join(", ")
            );
        }
        let linker = self.linker(&module).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(PlainModule { module, linker })
    }

    fn linker(&self, module: &wasmtime::Module) -> wasmtime::Result<wasmtime::Linker<PlainHost>> {
        use wasmtime::Caller;
        type C<'a> = Caller<'a, PlainHost>;
        let mut l = wasmtime::Linker::new(&self.engine);
        l.func_wrap(WASI, "args_sizes_get", |mut c: C<'_>, n: i32, size: i32| {
            with_mem(&mut c, |m, h| {
                let bytes: usize = h.args.iter().map(|a| a.len() + 1).sum();
                put_u32(m, n, h.args.len() as u32)?;
                put_u32(m, size, bytes as u32)
            })
        })?;
        l.func_wrap(WASI, "args_get", |mut c: C<'_>, ptrs: i32, buf: i32| {
            with_mem(&mut c, |m, h| {
                let mut at = buf as u32;
                for (i, a) in h.args.iter().enumerate() {
                    put_u32(m, ptrs.wrapping_add(4 * i as i32), at)?;
                    let dst = slice(m, at as i32, a.len() as u32 + 1)?;
                    dst[..a.len()].copy_from_slice(a);
                    dst[a.len()] = 0;
                    at += a.len() as u32 + 1;
                }
                Ok(())
            })
        })?;
        l.func_wrap(
            WASI,
            "environ_sizes_get",
            |mut c: C<'_>, n: i32, size: i32| {
                with_mem(&mut c, |m, _| {
                    put_u32(m, n, 0)?;
                    put_u32(m, size, 0)
                })
            },
        )?;
        l.func_wrap(WASI, "environ_get", |_: C<'_>, _: i32, _: i32| ESUCCESS)?;
        l.func_wrap(
            WASI,
            "fd_write",
            |mut c: C<'_>, fd: i32, iovs: i32, count: i32, written: i32| {
                with_mem(&mut c, |m, h| {
                    if fd != 1 && fd != 2 {
                        return Err(EBADF);
                    }
                    let mut data = Vec::new();
                    for i in 0..count as u32 {
                        let iov = iovs.wrapping_add(8 * i as i32);
                        let (ptr, len) = (get_u32(m, iov)?, get_u32(m, iov.wrapping_add(4))?);
                        data.extend_from_slice(slice(m, ptr as i32, len)?);
                    }
                    put_u32(m, written, data.len() as u32)?;
                    let sink = if fd == 1 {
                        &mut h.stdout
                    } else {
                        &mut h.stderr
                    };
                    sink.extend_from_slice(&data);
                    Ok(())
                })
            },
        )?;
        let start = Instant::now();
        l.func_wrap(
            WASI,
            "clock_time_get",
            move |mut c: C<'_>, id: i32, _precision: i64, out: i32| {
                with_mem(&mut c, |m, _| {
                    let ns = match id {
                        0 => std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_nanos() as u64,
                        1..=3 => start.elapsed().as_nanos() as u64,
                        _ => return Err(EINVAL),
                    };
                    slice(m, out, 8)?.copy_from_slice(&ns.to_le_bytes());
                    Ok(())
                })
            },
        )?;
        l.func_wrap(WASI, "random_get", |mut c: C<'_>, buf: i32, len: i32| {
            with_mem(&mut c, |m, h| {
                for b in slice(m, buf, len as u32)? {
                    // xorshift64
                    h.rng ^= h.rng << 13;
                    h.rng ^= h.rng >> 7;
                    h.rng ^= h.rng << 17;
                    *b = h.rng as u8;
                }
                Ok(())
            })
        })?;
        l.func_wrap(
            WASI,
            "proc_exit",
            |_: C<'_>, code: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::new(Exit(code))) },
        )?;
        l.func_wrap(WASI, "sched_yield", || ESUCCESS)?;
        l.func_wrap(WASI, "fd_close", |_: C<'_>, _: i32| EBADF)?;
        l.func_wrap(
            WASI,
            "fd_seek",
            |_: C<'_>, _: i32, _: i64, _: i32, _: i32| EBADF,
        )?;
        l.func_wrap(WASI, "fd_fdstat_get", |_: C<'_>, _: i32, _: i32| EBADF)?;
        l.func_wrap(WASI, "fd_prestat_get", |_: C<'_>, _: i32, _: i32| EBADF)?;
        // Anything else the module imports from WASI fails with ENOSYS.
        for import in module.imports() {
            if import.module() != WASI || PLAIN_FUNCS.contains(&import.name()) {
                continue;
            }
            if let wasmtime::ExternType::Func(ty) = import.ty() {
                let returns_errno = ty.results().len() == 1;
                l.func_new(WASI, import.name(), ty, move |_, _, results| {
                    if returns_errno {
                        results[0] = wasmtime::Val::I32(ENOSYS);
                    }
                    Ok(())
                })?;
            }
        }
        Ok(l)
    }

    pub(super) fn run(&self, m: &PlainModule, args: &[String]) -> Result<(Duration, Vec<u8>)> {
        let mut argv = vec![b"main".to_vec()];
        argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        let host = PlainHost {
            args: argv,
            stdout: Vec::new(),
            stderr: Vec::new(),
            rng: 0x853c_49e6_748f_ea9b,
            memory: None,
        };
        let t = Instant::now();
        let mut store = wasmtime::Store::new(&self.engine, host);
        if self.epoch {
            store.set_epoch_deadline(1 << 40);
            store.epoch_deadline_trap();
        }
        let result = (|| -> wasmtime::Result<i32> {
            let instance = m.linker.instantiate(&mut store, &m.module)?;
            let memory = instance.get_memory(&mut store, "memory");
            store.data_mut().memory = memory;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            match start.call(&mut store, ()) {
                Ok(()) => Ok(0),
                Err(e) => match e.downcast_ref::<Exit>() {
                    Some(Exit(code)) => Ok(*code),
                    None => Err(e),
                },
            }
        })();
        let t = t.elapsed();
        let host = store.into_data();
        match result {
            Ok(0) => Ok((t, host.stdout)),
            Ok(code) => bail!(
                "exited with code {code}: {}",
                String::from_utf8_lossy(&host.stderr)
            ),
            Err(e) => bail!("{e:#}: {}", String::from_utf8_lossy(&host.stderr)),
        }
    }
}
