// Computes the browser worker's assignment digest (assignDigest in ../worker.js, which is not a
// module: its functions are read from its source) for the assignment JSON given on stdin, and
// prints its hex; then, on a second line, the hex public key of a fresh Ed25519 key and, on a
// third, the signature signFailure makes with it for that assignment, reason `late` and kind
// `wall_time`. Driven by crates/proto/src/worker.rs's test `browser_assign_digest_matches`,
// which compares the digest with proto::worker::assign_digest (the shared test vector) and
// checks the signature with proto::worker::check_failure.
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
const names = ['b64decode', 'sha256Hex', 'assignDigest', 'exactNumbers', 'sign', 'signFailure'];
const keys = await crypto.subtle.generateKey('Ed25519', true, ['sign', 'verify']);
const cfg = { keys };
const fns = new Function('toHex', 'cfg', `${names.map(fn).join('\n')}\nreturn { assignDigest, signFailure, exactNumbers };`)(toHex, cfg);
const text = readFileSync(0, 'utf8');
const assign = JSON.parse(text, fns.exactNumbers);
console.log(await fns.assignDigest(assign));
console.log(toHex(new Uint8Array(await crypto.subtle.exportKey('raw', keys.publicKey))));
console.log(await fns.signFailure(assign, 'late', 'wall_time'));
