//! Blobs in PostgreSQL (`PostgresBlobs`) on a throwaway server this test process starts
//! (`testing`): stored whole or not at all, read back byte for byte, a chunk at a time. Without
//! PostgreSQL installed these tests print a note and pass, unless RUNEGRID_REQUIRE_POSTGRES=1.

use runegrid_store::{BlobDbError, CHUNK_BYTES, PostgresBlobs, Put, testing};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};

fn open(url: &str) -> PostgresBlobs {
    PostgresBlobs::open(url).unwrap_or_else(|e| panic!("{e}"))
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut r = Noise(seed);
    let mut buf = [0u8; 4096];
    while out.len() < len {
        let n = r.read(&mut buf).unwrap().min(len - out.len());
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// An endless stream of pseudo-random bytes (xorshift), never held in memory.
struct Noise(u64);

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for b in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            b.copy_from_slice(&self.0.to_le_bytes()[..b.len()]);
        }
        Ok(buf.len())
    }
}

fn put(b: &PostgresBlobs, bytes: &[u8]) -> Put {
    b.put(
        &sha(bytes),
        bytes.len() as u64,
        &mut &bytes[..],
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn get(b: &PostgresBlobs, sha256: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    b.get(sha256, &mut out)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|size| {
            assert_eq!(size, out.len() as u64);
            out
        })
}

fn count(url: &str, sql: &str) -> i64 {
    testing::execute(url, sql).unwrap()[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_blob_is_stored_once_and_read_back_byte_for_byte() {
    let Some(url) = testing::database() else {
        return;
    };
    let b = open(&url);
    let bytes = b"hello blob".to_vec();
    let name = sha(&bytes);
    assert_eq!(b.size(&name).unwrap(), None);
    assert_eq!(get(&b, &name), None, "a missing blob is None, not an error");
    assert_eq!(put(&b, &bytes), Put::Stored);
    assert_eq!(b.size(&name).unwrap(), Some(bytes.len() as u64));
    assert_eq!(get(&b, &name).unwrap(), bytes);
    // Stored once: the second put reads nothing.
    let mut unread = Noise(1);
    let r = b.put(&name, 10, &mut unread, &mut |_| panic!("read again"));
    assert_eq!(r.unwrap(), Put::AlreadyThere);
    assert_eq!(count(&url, "SELECT COUNT(*) FROM blob_chunks"), 1);
    // Another connection (another coordinator) sees it.
    let other = open(&url);
    assert_eq!(get(&other, &name).unwrap(), bytes);
}

#[test]
fn a_blob_of_many_chunks_comes_back_whole_with_progress() {
    let Some(url) = testing::database() else {
        return;
    };
    let b = open(&url);
    let bytes = noise(3 * CHUNK_BYTES + 12_345, 7);
    let name = sha(&bytes);
    let mut seen = Vec::new();
    let r = b.put(&name, bytes.len() as u64, &mut &bytes[..], &mut |n| {
        seen.push(n)
    });
    assert_eq!(r.unwrap(), Put::Stored);
    let c = CHUNK_BYTES as u64;
    assert_eq!(seen, vec![c, 2 * c, 3 * c, bytes.len() as u64]);
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM blob_chunks"),
        4,
        "1 MiB chunks"
    );
    assert_eq!(get(&b, &name).unwrap(), bytes);
}

#[test]
fn bytes_that_do_not_match_the_name_or_size_leave_nothing() {
    let Some(url) = testing::database() else {
        return;
    };
    let b = open(&url);
    let bytes = noise(2 * CHUNK_BYTES + 5, 3);
    let name = sha(&bytes);
    // Other bytes under this name.
    let other = noise(2 * CHUNK_BYTES + 5, 4);
    let e = b
        .put(&name, other.len() as u64, &mut &other[..], &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, BlobDbError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("nothing was stored"), "{e}");
    // Fewer bytes than promised, and more.
    for size in [bytes.len() as u64 + 1, bytes.len() as u64 - 1] {
        let e = b
            .put(&name, size, &mut &bytes[..], &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, BlobDbError::Mismatch { .. }), "{e}");
    }
    // A source that fails half way.
    let mut failing = (&bytes[..CHUNK_BYTES + 10]).chain(Failing);
    let e = b
        .put(&name, bytes.len() as u64, &mut failing, &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, BlobDbError::Read(_)), "{e}");
    assert!(
        e.to_string().starts_with("reading the blob's bytes: "),
        "{e}"
    );
    assert_eq!(b.size(&name).unwrap(), None);
    assert_eq!(count(&url, "SELECT COUNT(*) FROM blobs"), 0);
    assert_eq!(count(&url, "SELECT COUNT(*) FROM blob_chunks"), 0);
    // The connections are still good: the blob goes in after all.
    assert_eq!(put(&b, &bytes), Put::Stored);
    assert_eq!(get(&b, &name).unwrap(), bytes);
}

struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk on fire"))
    }
}

/// Two coordinators storing the same blob at once: one stores it, the other finds it there;
/// one copy of each chunk.
#[test]
fn concurrent_puts_of_the_same_blob_store_it_once() {
    let Some(url) = testing::database() else {
        return;
    };
    let bytes = std::sync::Arc::new(noise(3 * CHUNK_BYTES, 11));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, bytes, barrier) = (url.clone(), bytes.clone(), barrier.clone());
            std::thread::spawn(move || {
                let b = open(&url);
                barrier.wait();
                put(&b, &bytes)
            })
        })
        .collect();
    let results: Vec<Put> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| **r == Put::Stored).count(),
        1,
        "{results:?}"
    );
    assert_eq!(count(&url, "SELECT COUNT(*) FROM blob_chunks"), 3);
    assert_eq!(get(&open(&url), &sha(&bytes)).unwrap(), *bytes);
}

/// A writer that hashes what it is given and keeps nothing.
struct HashingSink(Sha256, u64);

impl Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A blob larger than anything the test holds: generated as it is read, hashed as it is
/// written back.
#[test]
fn a_large_blob_is_streamed_both_ways() {
    let Some(url) = testing::database() else {
        return;
    };
    let size: u64 = 48 << 20;
    let mut h = HashingSink(Sha256::new(), 0);
    std::io::copy(&mut Noise(5).take(size), &mut h).unwrap();
    let name = hex::encode(h.0.finalize());
    let b = open(&url);
    let mut progress = 0;
    let r = b.put(&name, size, &mut Noise(5).take(size), &mut |n| progress = n);
    assert_eq!(r.unwrap(), Put::Stored);
    assert_eq!(progress, size);
    let mut back = HashingSink(Sha256::new(), 0);
    assert_eq!(b.get(&name, &mut back).unwrap(), Some(size));
    assert_eq!((hex::encode(back.0.finalize()), back.1), (name, size));
}

/// A chunk lost in the database is found on reading, not served.
#[test]
fn a_damaged_blob_is_refused_on_reading() {
    let Some(url) = testing::database() else {
        return;
    };
    let b = open(&url);
    let bytes = noise(2 * CHUNK_BYTES, 9);
    let name = sha(&bytes);
    put(&b, &bytes);
    testing::execute(
        &url,
        &format!("UPDATE blob_chunks SET bytes = '\\x00' WHERE sha256 = '{name}' AND seq = 1"),
    )
    .unwrap();
    let e = b.get(&name, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, BlobDbError::Damaged { .. }), "{e}");
    testing::execute(
        &url,
        &format!("DELETE FROM blob_chunks WHERE sha256 = '{name}' AND seq = 1"),
    )
    .unwrap();
    let e = b.get(&name, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("chunk 1 is missing"), "{e}");
}
