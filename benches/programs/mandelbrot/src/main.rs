//! Mandelbrot: the `N`×`N` bitmap of the set over [-1.5, 0.5] × [-1, 1] (50 iterations, as
//! the benchmark's PBM), printed as the number of points in the set and an FNV-1a hash of the
//! packed bitmap bytes.

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut inside = 0u64;
    let scale = 2.0 / n as f64;
    for y in 0..n {
        let ci = y as f64 * scale - 1.0;
        let mut byte = 0u8;
        let mut bits = 0;
        for x in 0..n {
            let cr = x as f64 * scale - 1.5;
            let (mut zr, mut zi, mut tr, mut ti) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            let mut i = 0;
            while i < 50 && tr + ti <= 4.0 {
                zi = 2.0 * zr * zi + ci;
                zr = tr - ti + cr;
                tr = zr * zr;
                ti = zi * zi;
                i += 1;
            }
            byte <<= 1;
            if tr + ti <= 4.0 {
                byte |= 1;
                inside += 1;
            }
            bits += 1;
            if bits == 8 || x == n - 1 {
                byte <<= 8 - bits;
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
                byte = 0;
                bits = 0;
            }
        }
    }
    println!("{n}x{n}: {inside} points in the set, bitmap fnv1a {hash:016x}");
}
