//! Fannkuch-redux: for every permutation of 1..=N, counts the pancake flips until 1 comes
//! first. Prints a checksum (alternating sum of flip counts) and the most flips.

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7)
        .clamp(1, 16);
    let mut perm: Vec<u8> = (0..n as u8).collect();
    let mut work = vec![0u8; n];
    // count[i]: how many more times the first i + 1 elements rotate before the next level.
    let mut count: Vec<usize> = (0..n).map(|i| i + 1).collect();
    let mut checksum: i64 = 0;
    let mut max_flips = 0u32;
    let mut index: i64 = 0;
    loop {
        if perm[0] != 0 {
            work.copy_from_slice(&perm);
            let mut flips = 0u32;
            let mut first = work[0] as usize;
            while first != 0 {
                work[..=first].reverse();
                flips += 1;
                first = work[0] as usize;
            }
            max_flips = max_flips.max(flips);
            checksum += if index % 2 == 0 {
                flips as i64
            } else {
                -(flips as i64)
            };
        }
        index += 1;
        // Next permutation in the benchmark's rotation order.
        let mut level = 1;
        loop {
            if level == n {
                println!("{checksum}\nPfannkuchen({n}) = {max_flips}");
                return;
            }
            perm[..=level].rotate_left(1);
            count[level] -= 1;
            if count[level] > 0 {
                break;
            }
            count[level] = level + 1;
            level += 1;
        }
    }
}
