//! The CPU twins of the WGSL kernels of `runegrid bench gpu`: the same inputs, the same output
//! bytes. Inputs are the blobs `/blobs/a` and `/blobs/b` (the GPU task mounts the same blobs as
//! its buffers `a` and `b`), the output is `/out/c` (the GPU task's output buffer `c`), all
//! little-endian. Nothing is printed.
//!
//! - `linalg vadd N`: `c[i] = a[i] + b[i]` over N `u32`s, wrapping.
//! - `linalg matmul-f32 N`: `c = a × b`, N×N `f32` matrices, row-major; each element summed
//!   over k in ascending order from 0.0 with a separate multiply and add (a GPU may fuse them,
//!   so the result agrees within a relative tolerance, not bit for bit).
//! - `linalg matmul-i8 N`: `c = a × b`, N×N `i8` matrices, `i32` results (wrapping); `a`
//!   row-major, `b` given transposed (`b[j*N + k]` is row k, column j), so that both are read
//!   four bytes at a time as the GPU's packed `u32`s. Equal bytes on every machine.
//!
//! Bad arguments print the usage on stderr and exit with code 2; missing or mis-sized inputs
//! exit with code 1.

use std::process::ExitCode;

const USAGE: &str = "usage: linalg vadd N | linalg matmul-f32 N | linalg matmul-i8 N";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (op, n) = match args.as_slice() {
        [op, n] => match n.parse::<usize>() {
            Ok(n) if n > 0 && n <= 1 << 26 => (op.as_str(), n),
            _ => return usage(),
        },
        _ => return usage(),
    };
    let (elems, width) = match op {
        "vadd" => (n, 4),
        "matmul-f32" if n <= 8192 => (n * n, 4),
        "matmul-i8" if n <= 8192 => (n * n, 1),
        _ => return usage(),
    };
    let read = |name: &str| -> Result<Vec<u8>, String> {
        let path = format!("/blobs/{name}");
        let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        if bytes.len() != elems * width {
            return Err(format!(
                "{path}: {} bytes, expected {}",
                bytes.len(),
                elems * width
            ));
        }
        Ok(bytes)
    };
    let run = || -> Result<Vec<u8>, String> {
        let (a, b) = (read("a")?, read("b")?);
        Ok(match op {
            "vadd" => vadd(&a, &b),
            "matmul-f32" => matmul_f32(n, &a, &b),
            _ => matmul_i8(n, &a, &b),
        })
    };
    match run().and_then(|c| std::fs::write("/out/c", c).map_err(|e| format!("/out/c: {e}"))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linalg: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn words(bytes: &[u8]) -> impl Iterator<Item = [u8; 4]> + '_ {
    bytes
        .chunks_exact(4)
        .map(|w| w.try_into().expect("4 bytes"))
}

fn vadd(a: &[u8], b: &[u8]) -> Vec<u8> {
    words(a)
        .zip(words(b))
        .flat_map(|(x, y)| {
            u32::from_le_bytes(x)
                .wrapping_add(u32::from_le_bytes(y))
                .to_le_bytes()
        })
        .collect()
}

fn matmul_f32(n: usize, a: &[u8], b: &[u8]) -> Vec<u8> {
    let a: Vec<f32> = words(a).map(f32::from_le_bytes).collect();
    let b: Vec<f32> = words(b).map(f32::from_le_bytes).collect();
    let mut c = vec![0f32; n * n];
    for i in 0..n {
        let row = &mut c[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = a[i * n + k];
            for (cij, bkj) in row.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                *cij += aik * bkj;
            }
        }
    }
    c.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn matmul_i8(n: usize, a: &[u8], bt: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(n * n * 4);
    for i in 0..n {
        let row = &a[i * n..(i + 1) * n];
        for j in 0..n {
            let col = &bt[j * n..(j + 1) * n];
            let dot = row.iter().zip(col).fold(0i32, |acc, (&x, &y)| {
                acc.wrapping_add(i32::from(x as i8) * i32::from(y as i8))
            });
            c.extend_from_slice(&dot.to_le_bytes());
        }
    }
    c
}
