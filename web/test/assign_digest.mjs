// Computes the browser worker's assignment digest (assignDigest in ../worker.js, which is not a
// module: its functions are read from its source) for the assignment JSON given on stdin, and
// prints its hex. Driven by crates/proto/src/worker.rs's test `browser_assign_digest_matches`,
// which compares it with proto::worker::assign_digest (the shared test vector).
//
// usage: node web/test/assign_digest.mjs < ASSIGN.json

import { readFileSync } from 'node:fs';
import { toHex } from '../exec.js';

const source = readFileSync(new URL('../worker.js', import.meta.url), 'utf8');
const fn = (name) => {
  const m = source.match(new RegExp(`^(async )?function ${name}\\([^]*?\\n}\\n`, 'm'));
  if (!m) throw new Error(`no function ${name} in worker.js`);
  return m[0];
};
const names = ['b64decode', 'sha256Hex', 'assignDigest', 'exactNumbers'];
const digestOf = new Function('toHex', `${names.map(fn).join('\n')}\nreturn (text) => assignDigest(JSON.parse(text, exactNumbers));`)(toHex);
console.log(await digestOf(readFileSync(0, 'utf8')));
