//! Prints what the task was given, for tests:
//!
//! - each argument after `argv[0]` as `arg[i]=VALUE`, where `i` is its index in argv
//!   (so the first argument is `arg[1]`);
//! - every environment variable as `env KEY=VALUE`, sorted by key (bytewise);
//! - for each argument `cat:PATH`, `cat PATH=` followed by the file's bytes and a newline (a
//!   file that cannot be read fails the program: exit 1, the reason on stderr);
//! - `stdin=` followed by all of stdin, as is (no newline added).
//!
//! Arguments, variables and stdin are copied as raw bytes, so non-UTF-8 input is echoed
//! faithfully.

use std::io::{self, Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let mut out = Vec::new();
    for (i, arg) in std::env::args_os().enumerate().skip(1) {
        write!(out, "arg[{i}]=")?;
        out.extend_from_slice(arg.as_encoded_bytes());
        out.push(b'\n');
    }
    let mut vars: Vec<_> = std::env::vars_os().collect();
    vars.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    for (key, value) in vars {
        out.extend_from_slice(b"env ");
        out.extend_from_slice(key.as_encoded_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_encoded_bytes());
        out.push(b'\n');
    }
    for arg in std::env::args_os().skip(1) {
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("cat:")) {
            let bytes = std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
            write!(out, "cat {path}=")?;
            out.extend_from_slice(&bytes);
            out.push(b'\n');
        }
    }
    out.extend_from_slice(b"stdin=");
    io::stdin().lock().read_to_end(&mut out)?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()
}
