//! Allocation: `N` rounds of allocating, growing, filling and freeing `Vec`s and `String`s of
//! mixed sizes (small, medium, a few large), with a window of live allocations so frees happen
//! out of allocation order.

/// A xorshift generator: the sizes, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

enum Item {
    Bytes(Vec<u8>),
    Words(Vec<u64>),
    Text(String),
}

impl Item {
    fn weight(&self) -> u64 {
        match self {
            Item::Bytes(b) => b.iter().map(|&x| u64::from(x)).sum(),
            Item::Words(w) => w.iter().fold(0u64, |a, &x| a.wrapping_add(x)),
            Item::Text(s) => s.len() as u64,
        }
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    const WINDOW: usize = 1024;
    let mut live: Vec<Option<Item>> = (0..WINDOW).map(|_| None).collect();
    let mut total = 0u64;
    let mut allocated = 0u64;
    for i in 0..n {
        let r = rng.next();
        // Mostly small, some medium, rarely large.
        let size = match r % 100 {
            0 => 16_384 + (r >> 8) % 65_536,
            1..=14 => 256 + (r >> 8) % 4096,
            _ => 1 + (r >> 8) % 128,
        } as usize;
        allocated += size as u64;
        let item = match (r >> 40) % 3 {
            0 => Item::Bytes(vec![(i % 251) as u8; size]),
            1 => {
                // Grown one push at a time: reallocations.
                let mut w = Vec::new();
                for k in 0..size / 8 + 1 {
                    w.push(i ^ k as u64);
                }
                Item::Words(w)
            }
            _ => {
                let mut s = String::new();
                while s.len() < size {
                    s.push_str(if s.len().is_multiple_of(3) {
                        "ab"
                    } else {
                        "xyz"
                    });
                }
                Item::Text(s)
            }
        };
        let slot = ((r >> 16) as usize) % WINDOW;
        if let Some(old) = live[slot].replace(item) {
            total = total.wrapping_add(old.weight());
        }
    }
    for item in live.into_iter().flatten() {
        total = total.wrapping_add(item.weight());
    }
    println!("{n} allocations, {allocated} bytes, weight {total}");
}
