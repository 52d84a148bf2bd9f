//! Upload throughput of a blob: local only (what a coordinator on SQLite does: hashed into a
//! temporary file, fsynced, renamed into place) against local plus PostgreSQL (the same, then
//! copied into the database in 1 MiB `bytea` chunks, one transaction: `PostgresBlobs::put`),
//! beside the alternative not taken (PostgreSQL large objects, `lo_put` of 1 MiB pieces), and
//! the read back (`PostgresBlobs::get` into a file). The server is a throwaway one
//! (`runegrid_store::testing`) with PostgreSQL's default durability (fsync on) and data in
//! /tmp, so the figures are of this machine's disk.
//!
//! `cargo run --release -p runegrid-store --features testing --example blob_throughput [-- MIB [ROUNDS]]`
//! (defaults: 100 MiB, 3 rounds; the median of each is printed).

use runegrid_store::{PostgresBlobs, Put, testing::PgServer};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Seek, Write};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(100, |a| a.parse().expect("MIB"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let server = PgServer::start(&[]).unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut local, mut chunks, mut lob, mut read) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let data = noise(mib << 20, round as u64 + 1);
        let sha = hex::encode(Sha256::digest(&data));
        let url = server.create_database().unwrap();
        let blobs = PostgresBlobs::open(&url).unwrap_or_else(|e| panic!("{e}"));

        // Local only: what every upload does first.
        let t = Instant::now();
        let tmp = store_locally(work.path(), &data, &sha);
        local.push(t.elapsed().as_secs_f64());

        // Local, then into the database.
        let t = Instant::now();
        let mut tmp2 = store_locally(work.path(), &data, &format!("{sha}.2"));
        tmp2.rewind().unwrap();
        let put = blobs.put(&sha, data.len() as u64, &mut tmp2, &mut |_| {});
        assert_eq!(put.unwrap_or_else(|e| panic!("{e}")), Put::Stored);
        chunks.push(t.elapsed().as_secs_f64());

        // Back out of the database into a file.
        let t = Instant::now();
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(work.path().join("back")).unwrap(),
        );
        assert_eq!(blobs.get(&sha, &mut out).unwrap(), Some(data.len() as u64));
        out.into_inner().unwrap().sync_all().unwrap();
        read.push(t.elapsed().as_secs_f64());

        // The alternative: a large object, written in the same 1 MiB pieces.
        let t = Instant::now();
        let mut tmp3 = store_locally(work.path(), &data, &format!("{sha}.3"));
        tmp3.rewind().unwrap();
        rt.block_on(large_object(&url, &mut tmp3));
        lob.push(t.elapsed().as_secs_f64());
        drop((tmp, tmp2, tmp3));
    }
    let mb = (mib << 20) as f64 / 1e6;
    println!("blob of {mib} MiB, median of {rounds} rounds (MB/s: megabytes uploaded per second)");
    for (what, times) in [
        ("local file only (SQLite store)", &mut local),
        (
            "local file + PostgreSQL, bytea chunks (PostgreSQL store)",
            &mut chunks,
        ),
        (
            "local file + PostgreSQL, a large object (not used)",
            &mut lob,
        ),
        (
            "PostgreSQL -> local file (a standby's first read)",
            &mut read,
        ),
    ] {
        times.sort_by(f64::total_cmp);
        let s = times[times.len() / 2];
        println!("{what:<58} {s:>7.2} s {:>8.0} MB/s", mb / s);
    }
}

/// Hashes bytes into a temporary file, fsyncs it and renames it into place (a coordinator's
/// `Upload`); returns the file, open.
fn store_locally(dir: &std::path::Path, data: &[u8], name: &str) -> std::fs::File {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
    let mut h = Sha256::new();
    for chunk in data.chunks(64 << 10) {
        h.update(chunk);
        tmp.write_all(chunk).unwrap();
    }
    let _ = h.finalize();
    tmp.as_file().sync_all().unwrap();
    tmp.persist(dir.join(name)).unwrap()
}

async fn large_object(url: &str, file: &mut std::fs::File) {
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    let oid: u32 = tx
        .query_one("SELECT lo_create(0)", &[])
        .await
        .unwrap()
        .get(0);
    let put = tx.prepare("SELECT lo_put($1, $2, $3)").await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset: i64 = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        tx.execute(&put, &[&oid, &offset, &&buf[..n]])
            .await
            .unwrap();
        offset += n as i64;
    }
    tx.commit().await.unwrap();
}

/// Bytes that do not compress, like weights.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = vec![0u8; len];
    for b in out.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        b.copy_from_slice(&s.to_le_bytes()[..b.len()]);
    }
    out
}
