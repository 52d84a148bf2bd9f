//! Hash map: inserts, looks up and removes `N` integer keys and `N / 4` string keys in std
//! `HashMap`s (SipHash with a random seed, so only order-independent results are printed).

use std::collections::HashMap;

/// A xorshift generator: the keys, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Integer keys from a range of 2n, so about a fifth of the inserts hit an existing key.
    let mut ints: HashMap<u64, u64> = HashMap::new();
    for i in 0..n {
        *ints.entry(rng.next() % (2 * n)).or_insert(0) += i;
    }
    let mut found = 0u64;
    let mut sum = 0u64;
    for _ in 0..n {
        if let Some(v) = ints.get(&(rng.next() % (2 * n))) {
            found += 1;
            sum = sum.wrapping_add(*v);
        }
    }
    let mut removed = 0u64;
    for k in (0..2 * n).step_by(3) {
        if ints.remove(&k).is_some() {
            removed += 1;
        }
    }
    let left: u64 = ints.values().fold(0u64, |a, v| a.wrapping_add(*v));
    println!(
        "ints: {} kept, {found} found (sum {sum}), {removed} removed, {left}",
        ints.len()
    );

    // String keys.
    let m = n / 4;
    let mut words: HashMap<String, u64> = HashMap::new();
    for i in 0..m {
        let key = format!("key-{:x}", rng.next() % (m + 1));
        let len = key.len();
        *words.entry(key).or_insert(0) += len as u64 + i;
    }
    let mut hits = 0u64;
    let mut key = String::new();
    for _ in 0..m {
        key.clear();
        use std::fmt::Write as _;
        let _ = write!(key, "key-{:x}", rng.next() % (m + 1));
        if words.contains_key(&key) {
            hits += 1;
        }
    }
    let before = words.len();
    words.retain(|k, v| (k.len() as u64 + *v).is_multiple_of(2));
    let total: u64 = words.values().sum();
    println!(
        "strings: {before} distinct, {hits} hits, {} kept, {total}",
        words.len()
    );
}
