//! `render WIDTH HEIGHT TILE_X TILE_Y TILE_W TILE_H [MAX_ITER]`: renders one tile of a
//! smooth-coloured Mandelbrot image and writes it to stdout as a binary PPM
//! (`P6\n{TILE_W} {TILE_H}\n255\n` then the RGB bytes, row by row).
//!
//! The full image is WIDTH×HEIGHT pixels; the tile is the TILE_W×TILE_H rectangle whose top
//! left pixel is (TILE_X, TILE_Y). Every pixel depends only on its position in the full image,
//! so tiles rendered separately assemble into exactly the image rendered in one piece.
//! MAX_ITER (default 500) bounds the iterations per pixel.
//!
//! Deterministic: plain `f64` arithmetic plus `ln` and `sqrt`, which are compiled into the
//! module (no clock, no randomness), so every run of the module gives the same bytes.

use std::io::{self, Write};
use std::process::ExitCode;

const USAGE: &str = "usage: render WIDTH HEIGHT TILE_X TILE_Y TILE_W TILE_H [MAX_ITER]";

/// Default iteration bound.
const DEFAULT_MAX_ITER: u32 = 500;
/// Largest accepted image side, in pixels.
const MAX_SIDE: u32 = 1 << 16;
/// Centre of the view in the complex plane.
const CENTER: (f64, f64) = (-0.65, 0.0);
/// Extent of the view that always fits: 3.0 wide and 2.4 high.
const SPAN: (f64, f64) = (3.0, 2.4);
/// Squared escape radius; large so that the smooth colouring is accurate.
const BAILOUT_SQ: f64 = 1e6;
/// Colour stops of the palette, from 0 to 1 (the palette wraps around).
const STOPS: [(f64, [f64; 3]); 6] = [
    (0.0, [0.0, 7.0, 100.0]),
    (0.16, [32.0, 107.0, 203.0]),
    (0.42, [237.0, 255.0, 255.0]),
    (0.6425, [255.0, 170.0, 0.0]),
    (0.8575, [0.0, 2.0, 0.0]),
    (1.0, [0.0, 7.0, 100.0]),
];

/// What to render.
struct Job {
    width: u32,
    height: u32,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    max_iter: u32,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let job = match parse(&args) {
        Ok(job) => job,
        Err(msg) => {
            eprintln!("render: {msg}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let ppm = render(&job);
    let mut out = io::stdout().lock();
    match out.write_all(&ppm).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render: cannot write the tile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Job, String> {
    if !(6..=7).contains(&args.len()) {
        return Err(format!("expected 6 or 7 arguments, got {}", args.len()));
    }
    let mut nums = [0u32; 7];
    nums[6] = DEFAULT_MAX_ITER;
    for (slot, arg) in nums.iter_mut().zip(args) {
        *slot = arg
            .parse()
            .map_err(|_| format!("not a non-negative integer: {arg:?}"))?;
    }
    let [width, height, x, y, w, h, max_iter] = nums;
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "image size {width}x{height} is out of range 1..={MAX_SIDE}"
        ));
    }
    if w == 0
        || h == 0
        || u64::from(x) + u64::from(w) > u64::from(width)
        || u64::from(y) + u64::from(h) > u64::from(height)
    {
        return Err(format!(
            "tile {w}x{h} at ({x}, {y}) is not inside the {width}x{height} image"
        ));
    }
    if max_iter == 0 {
        return Err("max_iter must be at least 1".into());
    }
    Ok(Job {
        width,
        height,
        x,
        y,
        w,
        h,
        max_iter,
    })
}

/// The whole PPM file of the tile.
fn render(job: &Job) -> Vec<u8> {
    let header = format!("P6\n{} {}\n255\n", job.w, job.h);
    let mut ppm = Vec::with_capacity(header.len() + 3 * job.w as usize * job.h as usize);
    ppm.extend_from_slice(header.as_bytes());
    let scale = (SPAN.0 / f64::from(job.width)).max(SPAN.1 / f64::from(job.height));
    let half_w = f64::from(job.width) / 2.0;
    let half_h = f64::from(job.height) / 2.0;
    for py in job.y..job.y + job.h {
        let ci = CENTER.1 - (f64::from(py) + 0.5 - half_h) * scale;
        for px in job.x..job.x + job.w {
            let cr = CENTER.0 + (f64::from(px) + 0.5 - half_w) * scale;
            ppm.extend_from_slice(&colour(escape(cr, ci, job.max_iter)));
        }
    }
    ppm
}

/// Smooth (continuous) iteration count at which `c` escapes, or `None` if it stays bounded
/// for `max_iter` iterations.
fn escape(cr: f64, ci: f64, max_iter: u32) -> Option<f64> {
    // Points in the main cardioid or the period-2 bulb never escape.
    let xq = cr - 0.25;
    let q = xq * xq + ci * ci;
    if q * (q + xq) <= 0.25 * ci * ci || (cr + 1.0) * (cr + 1.0) + ci * ci <= 0.0625 {
        return None;
    }
    let (mut zr, mut zi) = (0.0f64, 0.0f64);
    for i in 0..max_iter {
        let (zr2, zi2) = (zr * zr, zi * zi);
        if zr2 + zi2 > BAILOUT_SQ {
            // Renormalised count: i + 1 - log2(ln |z|).
            let log_modulus = 0.5 * (zr2 + zi2).ln();
            return Some(f64::from(i) + 1.0 - (log_modulus.ln() / std::f64::consts::LN_2));
        }
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
    }
    None
}

/// Colour of a pixel: black inside the set, else the palette at a position that grows slowly
/// with the smooth iteration count.
fn colour(mu: Option<f64>) -> [u8; 3] {
    let Some(mu) = mu else {
        return [0, 0, 0];
    };
    let t = (mu.max(0.0).sqrt() * 0.2 + 0.75).fract();
    let mut rgb = STOPS[0].1;
    for pair in STOPS.windows(2) {
        let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
        if t >= t0 && t <= t1 {
            let f = (t - t0) / (t1 - t0);
            for (out, (a, b)) in rgb.iter_mut().zip(c0.iter().zip(c1)) {
                *out = a + (b - a) * f;
            }
            break;
        }
    }
    rgb.map(|v| (v + 0.5).clamp(0.0, 255.0) as u8)
}
