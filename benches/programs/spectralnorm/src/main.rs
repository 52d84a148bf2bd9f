//! Spectral norm: the largest singular value of the infinite matrix A(i, j) = 1 / ((i + j)(i +
//! j + 1) / 2 + i + 1), approximated on an `N`×`N` corner by 10 power iterations of AᵀA.

fn a(i: usize, j: usize) -> f64 {
    1.0 / (((i + j) * (i + j + 1) / 2 + i + 1) as f64)
}

/// out = A v
fn mul_a(v: &[f64], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = v.iter().enumerate().map(|(j, x)| a(i, j) * x).sum();
    }
}

/// out = Aᵀ v
fn mul_at(v: &[f64], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = v.iter().enumerate().map(|(j, x)| a(j, i) * x).sum();
    }
}

fn mul_ata(v: &[f64], tmp: &mut [f64], out: &mut [f64]) {
    mul_a(v, tmp);
    mul_at(tmp, out);
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let mut u = vec![1.0; n];
    let mut v = vec![0.0; n];
    let mut tmp = vec![0.0; n];
    for _ in 0..10 {
        mul_ata(&u, &mut tmp, &mut v);
        mul_ata(&v, &mut tmp, &mut u);
    }
    let vbv: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
    let vv: f64 = v.iter().map(|x| x * x).sum();
    println!("{:.9}", (vbv / vv).sqrt());
}
