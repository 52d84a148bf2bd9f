// Runs the cases of a conformance fixture with the browser engine (../exec.js) and prints a
// JSON report on stdout. Driven by crates/sandbox/tests/browser_conformance.rs, which writes
// the fixture (modules and tasks, plus what the native sandbox produced) and compares.
//
// usage: node web/test/conformance.mjs FIXTURE.json

import { readFileSync } from 'node:fs';
import { runTask, digestHex, fileRecords } from '../exec.js';

const [fixturePath] = process.argv.slice(2);
if (!fixturePath) {
  console.error('usage: node conformance.mjs FIXTURE.json');
  process.exit(2);
}
const fixture = JSON.parse(readFileSync(fixturePath, 'utf8'));
const fromB64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));
const toB64 = (b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');

const modules = new Map();
function compiled(name) {
  if (!modules.has(name)) {
    modules.set(name, new WebAssembly.Module(fromB64(fixture.modules[name])));
  }
  return modules.get(name);
}

const results = [];
for (const c of fixture.cases) {
  const task = {
    args: c.task.args,
    env: c.task.env,
    stdin: fromB64(c.task.stdin),
    seed: c.task.seed,
    limits: c.task.limits,
    blobs: (c.task.blobs ?? []).map((b) => ({ name: b.name, bytes: fromB64(b.bytes) })),
  };
  try {
    const chunks = [];
    const started = performance.now();
    const r = runTask(compiled(c.module), task, (chunk) => chunks.push(chunk));
    const ms = performance.now() - started;
    // What onStdout saw must be exactly the stdout returned.
    const streamed = Buffer.concat(chunks.map((x) => Buffer.from(x)));
    const files = await fileRecords(r.files);
    results.push({
      name: c.name,
      status: r.status,
      code: r.code,
      fuel: r.fuel,
      stdout: toB64(r.stdout),
      stderr_len: r.stderr.length,
      streamed_matches: streamed.equals(Buffer.from(r.stdout)),
      files,
      digest: await digestHex(r.code, r.fuel, r.stdout, files),
      ms: Math.round(ms),
    });
  } catch (e) {
    results.push({
      name: c.name,
      error: { kind: e?.kind ?? null, message: String(e?.stack ?? e) },
    });
  }
}
process.stdout.write(JSON.stringify({ node: process.version, results }) + '\n');
