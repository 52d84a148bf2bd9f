//! Uses the task's file system as command-line tools do, with nothing but `std::fs`: scratch
//! space under `/tmp`, outputs under `/out`, read-only inputs under `/blobs`. Every replica
//! sees the same tree (inode numbers, timestamps from the virtual clock, directory order), so
//! what it prints is the same on every engine.
//!
//! Usage:
//! - `files tour`: creates, appends, renames, seeks, truncates, lists and removes files and
//!   directories, provokes the usual errors, and prints a transcript.
//! - `files fill [CHUNK]`: writes `/tmp/fill` in chunks of CHUNK bytes (default 65536) until
//!   the scratch space is full, then removes it and writes again.
//! - `files sort IN OUT`: sorts the lines of IN into OUT (e.g. `/blobs/data.txt
//!   /out/sorted.txt`) and prints how many lines and bytes it wrote.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["tour"] => tour(),
        ["fill"] => fill(65536),
        ["fill", chunk] => match chunk.parse() {
            Ok(c) if c > 0 => fill(c),
            _ => return usage(),
        },
        ["sort", input, output] => sort(input, output),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("files: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: files tour | files fill [CHUNK] | files sort IN OUT");
    ExitCode::from(2)
}

/// How an operation ended: `ok`, or the error's kind and errno.
fn outcome<T>(r: &io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{:?} (errno {})", e.kind(), e.raw_os_error().unwrap_or(-1)),
    }
}

fn step<T>(what: &str, r: io::Result<T>) -> io::Result<T> {
    println!("{what}: {}", outcome(&r));
    r
}

fn expect_err<T>(what: &str, r: io::Result<T>) {
    println!("{what}: {}", outcome(&r));
}

/// Prints the tree under `dir`: type, size, inode number and modification time of each entry,
/// in the order the directory lists them.
fn tree(dir: &Path, depth: usize) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let mtime = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        println!(
            "{:indent$}{} {} {} bytes, mtime {mtime}",
            "",
            if meta.is_dir() { "dir " } else { "file" },
            entry.file_name().to_string_lossy(),
            meta.len(),
            indent = depth * 2
        );
        if meta.is_dir() {
            tree(&entry.path(), depth + 1)?;
        }
    }
    Ok(())
}

fn tour() -> io::Result<()> {
    println!("== the tree at start");
    tree(Path::new("/"), 0)?;

    println!("== directories");
    step("mkdir /tmp/a", fs::create_dir("/tmp/a"))?;
    step("mkdir -p /tmp/a/b/c/d", fs::create_dir_all("/tmp/a/b/c/d"))?;
    expect_err("mkdir /tmp/a again", fs::create_dir("/tmp/a"));
    expect_err("mkdir /nowhere/x", fs::create_dir("/nowhere/x"));

    println!("== write, append, read");
    step("write /tmp/a/hello.txt", fs::write("/tmp/a/hello.txt", "hello\n"))?;
    let mut f = step(
        "open for append",
        OpenOptions::new().append(true).open("/tmp/a/hello.txt"),
    )?;
    step("append", f.write_all(b"world\n"))?;
    drop(f);
    let text = step("read back", fs::read_to_string("/tmp/a/hello.txt"))?;
    println!("content: {text:?}");
    let meta = fs::metadata("/tmp/a/hello.txt")?;
    println!("size {}, file {}, dir {}", meta.len(), meta.is_file(), meta.is_dir());

    println!("== seek and overwrite, truncate, extend");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/tmp/a/hello.txt")?;
    step("seek to 2", f.seek(SeekFrom::Start(2)))?;
    step("write XY", f.write_all(b"XY"))?;
    step("seek to end", f.seek(SeekFrom::End(0)))?;
    let mut all = String::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_string(&mut all)?;
    println!("content: {all:?}");
    step("truncate to 3", f.set_len(3))?;
    step("extend to 6", f.set_len(6))?;
    let bytes = fs::read("/tmp/a/hello.txt")?;
    println!("bytes: {bytes:?}");
    step("write past the end", f.write_all_at_end(b"!"))?;
    println!("bytes: {:?}", fs::read("/tmp/a/hello.txt")?);
    drop(f);

    println!("== rename");
    step(
        "mv hello.txt b/greeting.txt",
        fs::rename("/tmp/a/hello.txt", "/tmp/a/b/greeting.txt"),
    )?;
    expect_err("read the old name", fs::read("/tmp/a/hello.txt"));
    fs::write("/tmp/a/other.txt", "other")?;
    step(
        "mv other.txt onto b/greeting.txt",
        fs::rename("/tmp/a/other.txt", "/tmp/a/b/greeting.txt"),
    )?;
    println!("greeting: {:?}", fs::read_to_string("/tmp/a/b/greeting.txt")?);
    expect_err("mv a into a/b", fs::rename("/tmp/a", "/tmp/a/b/a"));
    step("mv a/b/c to /tmp/c", fs::rename("/tmp/a/b/c", "/tmp/c"))?;

    println!("== remove");
    expect_err("rmdir /tmp/c (not empty)", fs::remove_dir("/tmp/c"));
    expect_err("unlink a directory", fs::remove_file("/tmp/c"));
    expect_err("rmdir a file", fs::remove_dir("/tmp/a/b/greeting.txt"));
    step("rm -r /tmp/c", fs::remove_dir_all("/tmp/c"))?;

    println!("== many files, removed while listing");
    fs::create_dir("/tmp/many")?;
    for i in 0..300 {
        fs::write(format!("/tmp/many/file-{i:03}"), i.to_string())?;
    }
    println!("listed {}", fs::read_dir("/tmp/many")?.count());
    step("rm -r /tmp/many", fs::remove_dir_all("/tmp/many"))?;
    expect_err("list it", fs::read_dir("/tmp/many").map(|_| ()));

    println!("== removed while open");
    fs::write("/tmp/ghost", "still here")?;
    let mut ghost = File::open("/tmp/ghost")?;
    step("rm /tmp/ghost", fs::remove_file("/tmp/ghost"))?;
    let mut s = String::new();
    step("read the open file", ghost.read_to_string(&mut s))?;
    println!("content: {s:?}, size {}", ghost.metadata()?.len());

    println!("== the read-only inputs");
    match fs::read_dir("/blobs") {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                let data = fs::read(e.path())?;
                println!("blob {} ({} bytes)", e.file_name().to_string_lossy(), data.len());
            }
            expect_err("create /blobs/new", fs::write("/blobs/new", "x"));
        }
        Err(e) => println!("no /blobs: {:?}", e.kind()),
    }

    println!("== outputs");
    fs::write("/out/report.txt", "the tour is over\n")?;
    fs::create_dir("/out/parts")?;
    for i in 0..3 {
        fs::write(format!("/out/parts/part-{i}"), vec![b'0' + i; 10 * usize::from(i)])?;
    }
    println!("== the tree at the end");
    tree(Path::new("/"), 0)?;
    Ok(())
}

trait AtEnd {
    fn write_all_at_end(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl AtEnd for File {
    /// Seeks 4 bytes past the end and writes there (the gap reads as zeros).
    fn write_all_at_end(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.seek(SeekFrom::End(4))?;
        self.write_all(bytes)
    }
}

fn fill(chunk: usize) -> io::Result<()> {
    let data = vec![0x5a; chunk];
    let mut f = File::create("/tmp/fill")?;
    let mut total = 0u64;
    let err = loop {
        match f.write(&data) {
            Ok(n) => total += n as u64,
            Err(e) => break e,
        }
    };
    println!(
        "wrote {total} bytes, then {:?} (errno {})",
        err.kind(),
        err.raw_os_error().unwrap_or(-1)
    );
    println!("size on record {}", f.metadata()?.len());
    drop(f);
    expect_err("mkdir /tmp/more", fs::create_dir("/tmp/more"));
    step("rm /tmp/fill", fs::remove_file("/tmp/fill"))?;
    step("write again", fs::write("/tmp/again", &data))?;
    println!("size {}", fs::metadata("/tmp/again")?.len());
    Ok(())
}

fn sort(input: &str, output: &str) -> io::Result<()> {
    let text = fs::read_to_string(input)?;
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    let mut out = io::BufWriter::new(File::create(output)?);
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    drop(out);
    println!(
        "sorted {} lines into {output} ({} bytes)",
        lines.len(),
        fs::metadata(output)?.len()
    );
    Ok(())
}
