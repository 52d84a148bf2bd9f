// runegrid's browser GPU engine: runs one GPU task (a WGSL compute kernel, runegrid_gpu's
// `Kernel`) with WebGPU and returns the final bytes of its `output` and `inout` buffers, as
// the native worker does with wgpu.
//
// This file MIRRORS crates/gpu/src/device.rs (`AdapterInfo::of`, `Gpu::open`, `Gpu::run`), the
// input checks of `check_inputs` in crates/gpu/src/validate.rs and `split_status` in
// crates/gpu/src/guard.rs, and must be changed together with them.
// crates/gpu/tests/browser.rs runs both engines on the same kernels and compares the bytes.
//
// Kernels given to `runKernel` have been checked with naga at upload (and guarded: their loops
// stop once an invocation's loop budget is spent, see guard.rs, and their indices are clamped
// into bounds, see bounds.rs, so WebGPU's own robustness never changes a result), so this
// engine trusts their shape; it checks the task's inputs, and WebGPU's own validation catches the rest (refused
// kernels throw "the GPU refused the kernel: ...").
//
// No DOM: it runs in a page and in a (dedicated) Web Worker.

/** The hidden output buffer of a guarded kernel (guard.rs STATUS_BUFFER). */
export const STATUS_BUFFER = '__runegrid_status';

/** PCI vendor ids of WebGPU's vendor names (`GPUAdapterInfo.vendor`), for `info.vendor`. */
const VENDOR_IDS = {
  amd: 0x1002,
  apple: 0x106b,
  arm: 0x13b5,
  broadcom: 0x14e4,
  google: 0x1ae0,
  imagination: 0x1010,
  intel: 0x8086,
  mesa: 0x10005,
  microsoft: 0x1414,
  nvidia: 0x10de,
  qualcomm: 0x5143,
  samsung: 0x144d,
};

/** The features `info.features` reports, those device.rs reports (none is requested). */
const REPORTED_FEATURES = ['shader-f16'];

/**
 * Limits the device is opened with at the adapter's value rather than WebGPU's default, as
 * device.rs opens its device with the adapter's limits: big buffers, big workgroups, more
 * storage buffers.
 */
const ADAPTER_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxUniformBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBuffersPerShaderStage',
  'maxBindGroups',
  'maxBindingsPerBindGroup',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
];

/** Devices whose `lost` promise resolved → the reason. */
const lostDevices = new WeakMap();
const watched = new WeakSet();

/** How many compiled kernels a device keeps (device.rs `PIPELINE_CACHE`). */
export const PIPELINE_CACHE = 16;

/**
 * Device → its compiled kernels: a Map from `[shader, entry point]` (as JSON: compared in full,
 * so two kernels never share a pipeline) to the pipeline, least recently used first (a Map
 * keeps insertion order). A grid sends a worker many tasks of the same kernel, and compiling
 * one can cost more than running it.
 */
const pipelines = new WeakMap();

function watch(device) {
  if (watched.has(device)) return;
  watched.add(device);
  device.lost.then((info) => {
    lostDevices.set(device, info.message || info.reason || 'lost');
    pipelines.delete(device);
  });
}

/** How many compiled kernels `device` keeps now (at most PIPELINE_CACHE). */
export function cachedPipelines(device) {
  const cache = pipelines.get(device);
  return cache ? cache.size : 0;
}

/**
 * `kernel`'s pipeline on `device` (device.rs `Gpu::pipeline`): compiled once, then kept. A
 * kernel the GPU refuses is not kept, so every run of it throws the same error.
 */
async function pipelineFor(device, kernel, entryPoint) {
  const key = JSON.stringify([kernel.shader, entryPoint]);
  let cache = pipelines.get(device);
  if (!cache) {
    cache = new Map();
    pipelines.set(device, cache);
  }
  const kept = cache.get(key);
  if (kept) {
    cache.delete(key);
    cache.set(key, kept);
    return kept;
  }
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let module, pipeline, validation, oom;
  try {
    module = device.createShaderModule({ label: 'kernel', code: kernel.shader });
    pipeline = device.createComputePipeline({
      label: 'kernel',
      layout: 'auto',
      compute: { module, entryPoint },
    });
  } finally {
    // Popped whatever happened, so that the run starts with a clean scope stack.
    validation = await device.popErrorScope();
    oom = await device.popErrorScope();
  }
  const compiled = await module.getCompilationInfo();
  const errors = compiled.messages.filter((m) => m.type === 'error');
  if (errors.length > 0) {
    const text = errors.map((m) => `${m.lineNum}:${m.linePos}: ${m.message}`).join('\n');
    throw new Error(`the GPU refused the kernel: the WGSL does not compile:\n${text}`);
  }
  if (validation) throw new Error(`the GPU refused the kernel: ${describe(validation)}`);
  if (oom) throw new Error(`the GPU ran out of memory: ${describe(oom)}`);
  // Not kept for a device lost meanwhile: nothing runs on it again.
  if (!lostDevices.has(device) && pipelines.get(device) === cache) {
    cache.set(key, pipeline);
    while (cache.size > PIPELINE_CACHE) cache.delete(cache.keys().next().value);
  }
  return pipeline;
}

/** A PCI id from WebGPU's vendor or device string: a known name, a hex number, else 0. */
function pciId(text) {
  const s = String(text || '').trim().toLowerCase();
  if (Object.hasOwn(VENDOR_IDS, s)) return VENDOR_IDS[s];
  const m = /^(?:0x)?([0-9a-f]{1,8})$/.exec(s);
  return m ? parseInt(m[1], 16) : 0;
}

/**
 * The browser and its major version ("chrome 156", "firefox 141", "safari 18"), or ''. It is part
 * of the adapter's driver info: the browser compiles WGSL itself, so two versions of one
 * browser on one GPU are different drivers as far as homogeneous redundancy is concerned.
 */
export function browserEngine(userAgent) {
  const ua = String(userAgent || '');
  for (const [re, name] of [
    [/\bEdg\/(\d+)/, 'edge'],
    [/\bFirefox\/(\d+)/, 'firefox'],
    [/Chrom(?:e|ium)\/(\d+)/, 'chrome'],
    [/\bVersion\/(\d+)[^ ]* .*Safari\//, 'safari'],
  ]) {
    const m = re.exec(ua);
    if (m) return `${name} ${m[1]}`;
  }
  return '';
}

/** What a worker tells the coordinator about its GPU: device.rs `AdapterInfo`, as its JSON. */
export function adapterInfo(adapter) {
  const i = adapter.info || {};
  const vendor = i.vendor || '';
  const architecture = i.architecture || '';
  const description = i.description || '';
  const software =
    i.isFallbackAdapter === true ||
    adapter.isFallbackAdapter === true ||
    (vendor === 'google' && architecture === 'swiftshader') ||
    /swiftshader|llvmpipe|lavapipe/i.test(description);
  const limits = adapter.limits;
  return {
    name: description || [vendor, architecture].filter(Boolean).join(' ') || 'WebGPU adapter',
    vendor: pciId(vendor),
    device: pciId(i.device),
    device_type: software ? 'cpu' : 'other',
    backend: 'webgpu',
    driver: [vendor, architecture].filter(Boolean).join(' '),
    driver_info: [description, browserEngine(globalThis.navigator && globalThis.navigator.userAgent)]
      .filter(Boolean)
      .join('; '),
    software,
    features: REPORTED_FEATURES.filter((f) => adapter.features.has(f)),
    max_buffer_bytes: Number(limits.maxBufferSize),
    max_storage_binding_bytes: Number(limits.maxStorageBufferBindingSize),
    max_workgroups_per_dimension: limits.maxComputeWorkgroupsPerDimension,
    max_invocations_per_workgroup: limits.maxComputeInvocationsPerWorkgroup,
  };
}

/**
 * Opens the browser's GPU (device.rs `Gpu::open`): `{device, info}`. A software adapter
 * (SwiftShader, a fallback adapter) is accepted only with `allowSoftware`, like
 * `OpenOptions::allow_software`. Throws when WebGPU is missing or gives no adapter.
 */
export async function openGpu({ allowSoftware = false } = {}) {
  const gpu = globalThis.navigator && globalThis.navigator.gpu;
  if (!gpu) {
    throw new Error(
      'no GPU adapter found: this browser has no WebGPU (navigator.gpu is missing; it needs a ' +
        'secure context, and Chromium on Linux needs --enable-unsafe-webgpu)',
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new Error('no GPU adapter found: navigator.gpu.requestAdapter() gave none');
  }
  const info = adapterInfo(adapter);
  if (info.software && !allowSoftware) {
    throw new Error(`no GPU adapter found but a software one (${info.name}), which was not allowed`);
  }
  const requiredLimits = {};
  for (const name of ADAPTER_LIMITS) {
    if (adapter.limits[name] !== undefined) requiredLimits[name] = adapter.limits[name];
  }
  let device;
  try {
    device = await adapter.requestDevice({ label: 'runegrid', requiredFeatures: [], requiredLimits });
  } catch (e) {
    throw new Error(`cannot open the GPU: ${e && e.message ? e.message : e}`);
  }
  watch(device);
  return { device, info };
}

/** `{:?}` of a Rust string, for names (letters, digits, '_', '-', '.'): `"name"`. */
const quoted = (name) => JSON.stringify(String(name));

/**
 * Checks a task's inputs against its kernel as validate.rs `check_inputs` does, with its
 * messages: one for every `input`, `uniform` and `inout` buffer and no other, each a multiple
 * of 4 bytes. (The minimum and maximum sizes need naga and the job's limits: the coordinator
 * checked them; WebGPU refuses a buffer too small for its binding.)
 */
export function checkInputs(kernel, inputs) {
  const supplied = new Set(kernel.buffers.filter((b) => b.role !== 'output').map((b) => b.name));
  for (const name of Object.keys(inputs).sort()) {
    if (!supplied.has(name)) {
      throw new Error(`input ${quoted(name)} is not a buffer the kernel fills from its inputs`);
    }
  }
  for (const b of kernel.buffers) {
    if (b.size !== undefined && b.size !== null) continue;
    const bytes = Object.hasOwn(inputs, b.name) ? inputs[b.name] : undefined;
    if (bytes === undefined) throw new Error(`input ${quoted(b.name)} is missing`);
    if (!(bytes instanceof ArrayBuffer) && !ArrayBuffer.isView(bytes)) {
      throw new Error(`input ${quoted(b.name)} is not bytes (a Uint8Array)`);
    }
    if (bytes.byteLength % 4 !== 0) {
      throw new Error(
        `input ${quoted(b.name)} is ${bytes.byteLength} bytes: buffers are a multiple of 4 bytes`,
      );
    }
  }
}

/** The messages of a scope's error, or of a shader's compilation. */
function describe(error) {
  return error && error.message ? error.message : String(error);
}

/**
 * Runs `kernel` (its parsed JSON) on `inputs` (buffer name → Uint8Array, an object or a Map)
 * with `device` from `openGpu`, as device.rs `Gpu::run`: its dispatches in order, in one compute
 * pass, over the same buffers; then `[{name, bytes}]`, the final bytes of its `output` and
 * `inout` buffers in declaration order (with a guarded kernel's STATUS_BUFFER: see
 * `splitStatus`). With `wallTimeMs` (the task's `limits.wall_time_ms`), a run that has not
 * finished by then throws and the device is destroyed (the GPU may still be running it: open
 * a new one), like native's `Timeout`.
 */
export async function runKernel(device, kernel, inputs, { wallTimeMs } = {}) {
  watch(device);
  if (lostDevices.has(device)) {
    throw new Error(`the GPU device was lost: lost before this run (${lostDevices.get(device)})`);
  }
  if (inputs instanceof Map) inputs = Object.fromEntries(inputs);
  inputs = inputs || {};
  checkInputs(kernel, inputs);

  const entryPoint = kernel.entry_point === undefined ? 'main' : kernel.entry_point;
  const pipeline = await pipelineFor(device, kernel, entryPoint);
  const created = [];
  const newBuffer = (descriptor) => {
    const buffer = device.createBuffer(descriptor);
    created.push(buffer);
    return buffer;
  };
  try {
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let validation, oom;
    const staging = [];
    try {
      const buffers = kernel.buffers.map((b) => {
        const uniform = b.role === 'uniform';
        const usage = uniform
          ? GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
          : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
        if (b.size !== undefined && b.size !== null) {
          // Zero-filled, as WebGPU creates every buffer.
          return newBuffer({ label: b.name, size: b.size, usage });
        }
        const bytes = Object.hasOwn(inputs, b.name) ? inputs[b.name] : new Uint8Array(0);
        const buffer = newBuffer({ label: b.name, size: bytes.byteLength, usage });
        if (bytes.byteLength > 0) device.queue.writeBuffer(buffer, 0, bytes);
        return buffer;
      });
      const groups = [...new Set(kernel.buffers.map((b) => b.group || 0))].sort((x, y) => x - y);
      const bindGroups = groups.map((group) => [
        group,
        device.createBindGroup({
          layout: pipeline.getBindGroupLayout(group),
          entries: kernel.buffers
            .map((b, i) => [b, buffers[i]])
            .filter(([b]) => (b.group || 0) === group)
            .map(([b, buffer]) => ({ binding: b.binding, resource: { buffer } })),
        }),
      ]);

      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      for (const [group, bindGroup] of bindGroups) pass.setBindGroup(group, bindGroup);
      for (const [x, y, z] of kernel.dispatches) pass.dispatchWorkgroups(x, y, z);
      pass.end();
      kernel.buffers.forEach((b, i) => {
        if (b.role !== 'output' && b.role !== 'inout') return;
        const size = buffers[i].size;
        const read = newBuffer({
          label: 'read back',
          size,
          usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        });
        encoder.copyBufferToBuffer(buffers[i], 0, read, 0, size);
        staging.push([b.name, read]);
      });
      device.queue.submit([encoder.finish()]);
    } finally {
      // Popped whatever happened, so that the next run starts with a clean scope stack.
      validation = await device.popErrorScope();
      oom = await device.popErrorScope();
    }
    if (validation) throw new Error(`the GPU refused the kernel: ${describe(validation)}`);
    if (oom) throw new Error(`the GPU ran out of memory: ${describe(oom)}`);

    const mapped = Promise.all(staging.map(([, read]) => read.mapAsync(GPUMapMode.READ)));
    let timer;
    const deadline =
      wallTimeMs === undefined
        ? null
        : new Promise((_, reject) => {
            timer = setTimeout(() => reject(new TimedOut()), wallTimeMs);
          });
    try {
      await (deadline ? Promise.race([mapped, deadline]) : mapped);
    } catch (e) {
      if (e instanceof TimedOut) {
        mapped.catch(() => {});
        pipelines.delete(device);
        device.destroy();
        throw new Error(`the run did not finish within ${wallTimeMs} ms`);
      }
      throw new Error(`the GPU device was lost: ${describe(e)}`);
    } finally {
      clearTimeout(timer);
    }
    return staging.map(([name, read]) => {
      const bytes = new Uint8Array(read.getMappedRange()).slice();
      read.unmap();
      return { name, bytes };
    });
  } finally {
    for (const buffer of created) buffer.destroy();
  }
}

class TimedOut extends Error {}

/**
 * Splits a guarded kernel's outputs (guard.rs `split_status`): `{exhausted, outputs}`, whether
 * some invocation spent its loop budget, and the outputs without STATUS_BUFFER.
 */
export function splitStatus(outputs) {
  let exhausted = false;
  const rest = outputs.filter(({ name, bytes }) => {
    if (name !== STATUS_BUFFER) return true;
    exhausted = bytes.some((b) => b !== 0);
    return false;
  });
  return { exhausted, outputs: rest };
}
