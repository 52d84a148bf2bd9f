//! Sleeps as programs do: `std::thread::sleep` is a `poll_oneoff` clock subscription. On a
//! runegrid task's virtual clock a sleep takes no wall time and every replica sees the same
//! times, so what the program reports is the same everywhere.
//!
//! Usage: `sleep [SECONDS [TIMES]]` (default 1 second, 3 times).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let times: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let start = Instant::now();
    for i in 1..=times {
        std::thread::sleep(Duration::from_secs(secs));
        println!("slept {i} × {secs} s: {:.6} s since start", start.elapsed().as_secs_f64());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch");
    println!("realtime {}.{:09}", now.as_secs(), now.subsec_nanos());
}
