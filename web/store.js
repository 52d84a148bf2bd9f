// The browser's persistent storage for runegrid (IndexedDB database "runegrid"), shared by the
// contribute page and its workers:
// - "keys": each worker slot's ed25519 key pair (non-extractable CryptoKeys), by slot index;
// - "programs": module bytes by their SHA-256, so a returning browser does not fetch a program
//   again (it still compiles it), with "program_index" ({size, used} by SHA-256, small enough
//   to scan); least recently used entries go past PROGRAM_CACHE_BYTES.

const DB_NAME = "runegrid";
const DB_VERSION = 2;
export const PROGRAM_CACHE_BYTES = 256 << 20;

export function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("keys")) db.createObjectStore("keys");
      if (!db.objectStoreNames.contains("programs")) db.createObjectStore("programs");
      if (!db.objectStoreNames.contains("program_index")) db.createObjectStore("program_index");
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
