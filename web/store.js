// The browser's persistent storage for runegrid (IndexedDB database "runegrid"), shared by the
// contribute page and its workers:
// - "keys": each worker slot's ed25519 key pair (non-extractable CryptoKeys), by slot index;
// - "programs": module bytes by their SHA-256, so a returning browser does not fetch a program
//   again (it still compiles it), with "program_index" ({size, used} by SHA-256, small enough
//   to scan); least recently used entries go past PROGRAM_CACHE_BYTES;
// - "blobs": the files tasks mount under /blobs (model weights…) by their SHA-256, with
//   "blob_index" ({size, used} by SHA-256); a separate budget (BLOB_SPACE_BYTES unless the page
//   says otherwise), least recently used blobs no task holds evicted to make room. Bytes are
//   stored only once checked against their hash; the worker hashes them again the first time a
//   page loads them (worker.js), so a damaged entry is fetched again, never mounted.
// Version 3 added the blob stores; upgrading keeps keys and programs.

const DB_NAME = "runegrid";
const DB_VERSION = 3;
export const PROGRAM_CACHE_BYTES = 256 << 20;
/** The browser's default blob space, shared by the page's workers: 1 GiB. */
export const BLOB_SPACE_BYTES = 2 ** 30;

export function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("keys")) db.createObjectStore("keys");
      if (!db.objectStoreNames.contains("programs")) db.createObjectStore("programs");
      if (!db.objectStoreNames.contains("program_index")) db.createObjectStore("program_index");
      if (!db.objectStoreNames.contains("blobs")) db.createObjectStore("blobs");
      if (!db.objectStoreNames.contains("blob_index")) db.createObjectStore("blob_index");
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    // Another tab holds an older version open: it is asked to close (below) and this waits.
    req.onblocked = () => {};
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function withDb(f) {
  const db = await openDb();
  // A newer page version upgrading the database: let it.
  db.onversionchange = () => db.close();
  try {
    return await f(db);
  } finally {
    db.close();
  }
}

export function getKeys(slot) {
  return withDb((db) => request(db.transaction("keys").objectStore("keys").get(slot)));
}

export function putKeys(slot, keys) {
  return withDb((db) => {
    const tx = db.transaction("keys", "readwrite");
    tx.objectStore("keys").put(keys, slot);
    return done(tx);
  });
}

// The cached bytes of program `sha256`, or null. Marks the entry as used.
export async function getProgram(sha256) {
  try {
    return await withDb(async (db) => {
      const tx = db.transaction(["programs", "program_index"], "readwrite");
      const bytes = await request(tx.objectStore("programs").get(sha256));
      if (!bytes) return null;
      tx.objectStore("program_index").put({ size: bytes.byteLength, used: Date.now() }, sha256);
      await done(tx);
      return new Uint8Array(bytes);
    });
  } catch {
    return null; // storage unavailable (private mode, quota): fetch from the coordinator
  }
}

// Keeps program bytes (already checked against their hash), dropping the least recently used
// entries beyond PROGRAM_CACHE_BYTES. Storage errors are ignored: the cache is an optimisation.
export async function putProgram(sha256, bytes) {
  try {
    await withDb(async (db) => {
      const tx = db.transaction(["programs", "program_index"], "readwrite");
      const programs = tx.objectStore("programs");
      const index = tx.objectStore("program_index");
      programs.put(bytes.slice().buffer, sha256);
      index.put({ size: bytes.length, used: Date.now() }, sha256);
      const entries = [];
      await new Promise((resolve, reject) => {
        const cur = index.openCursor();
        cur.onsuccess = () => {
          const c = cur.result;
          if (!c) return resolve();
          entries.push({ key: c.key, size: c.value.size, used: c.value.used });
          c.continue();
        };
        cur.onerror = () => reject(cur.error);
      });
      entries.sort((a, b) => b.used - a.used);
      let total = 0;
      for (const e of entries) {
        total += e.size;
        if (total > PROGRAM_CACHE_BYTES && e.key !== sha256) {
          programs.delete(e.key);
          index.delete(e.key);
        }
      }
      await done(tx);
    });
  } catch (e) {
    return e;
  }
  return null;
}

function indexEntries(index) {
  return new Promise((resolve, reject) => {
    const entries = [];
    const cur = index.openCursor();
    cur.onsuccess = () => {
      const c = cur.result;
      if (!c) return resolve(entries);
      entries.push({ sha256: c.key, size: c.value.size, used: c.value.used });
      c.continue();
    };
    cur.onerror = () => reject(cur.error);
  });
}

// The blobs kept: [{sha256, size, used}] ([] when storage is unavailable).
export async function listBlobs() {
  try {
    return await withDb((db) => indexEntries(db.transaction("blob_index").objectStore("blob_index")));
  } catch {
    return [];
  }
}

// The stored bytes of blob `sha256` (not checked here), or null. Marks the entry as used.
export async function getBlob(sha256) {
  try {
    return await withDb(async (db) => {
      const tx = db.transaction(["blobs", "blob_index"], "readwrite");
      const bytes = await request(tx.objectStore("blobs").get(sha256));
      if (!bytes) return null;
      tx.objectStore("blob_index").put({ size: bytes.byteLength, used: Date.now() }, sha256);
      await done(tx);
      return new Uint8Array(bytes);
    });
  } catch {
    return null;
  }
}

// Keeps blob bytes (already checked against their hash) within `space` bytes: least recently
// used blobs not in `keep` (a Set of SHA-256) are dropped to make room. Returns {stored,
// evicted: [sha256…]}; stored is false when the blobs in `keep` leave no room or storage fails
// (the bytes can still be used from memory).
export async function putBlob(sha256, bytes, space, keep) {
  try {
    return await withDb(async (db) => {
      const tx = db.transaction(["blobs", "blob_index"], "readwrite");
      const blobs = tx.objectStore("blobs");
      const index = tx.objectStore("blob_index");
      const entries = (await indexEntries(index)).filter((e) => e.sha256 !== sha256);
      let used = entries.reduce((n, e) => n + e.size, 0);
      // Least recently used first; nothing is dropped unless the new blob then fits.
      const evicted = [];
      entries.sort((a, b) => a.used - b.used);
      for (const e of entries) {
        if (used + bytes.length <= space) break;
        if (keep.has(e.sha256)) continue;
        used -= e.size;
        evicted.push(e.sha256);
      }
      const stored = used + bytes.length <= space;
      if (!stored) evicted.length = 0;
      for (const sha of evicted) {
        blobs.delete(sha);
        index.delete(sha);
      }
      if (stored) {
        // The whole buffer when the view covers it (a download), to avoid a copy.
        const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
        blobs.put(whole ? bytes.buffer : bytes.slice().buffer, sha256);
        index.put({ size: bytes.length, used: Date.now() }, sha256);
      }
      await done(tx);
      return { stored, evicted };
    });
  } catch {
    return { stored: false, evicted: [] };
  }
}

// Forgets blob `sha256` (its stored bytes did not match their hash).
export async function deleteBlob(sha256) {
  try {
    await withDb((db) => {
      const tx = db.transaction(["blobs", "blob_index"], "readwrite");
      tx.objectStore("blobs").delete(sha256);
      tx.objectStore("blob_index").delete(sha256);
      return done(tx);
    });
  } catch {
    // Nothing to do: the next load checks the hash again.
  }
}
