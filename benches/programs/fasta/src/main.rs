//! Fasta: generates the benchmark's three DNA sequences (a repeated ALU string, then IUB and
//! Homo sapiens codes drawn with its linear congruential generator) as 60-column FASTA text,
//! and prints the byte count and an FNV-1a hash of that text instead of the text itself.

const ALU: &[u8] = b"GGCCGGGCGCGGTGGCTCACGCCTGTAATCCCAGCACTTTGGGAGGCCGAGGCGGGCGGATCACCTGAGGTCAGGAGTTCGAGACCAGCCTGGCCAACATGGTGAAACCCCGTCTCTACTAAAAATACAAAAATTAGCCGGGCGTGGTGGCGCGCGCCTGTAATCCCAGCTACTCGGGAGGCTGAGGCAGGAGAATCGCTTGAACCCGGGAGGCGGAGGTTGCAGTGAGCCGAGATCGCGCCACTGCACTCCAGCCTGGGCGACAGAGCGAGACTCCGTCTCAAAAA";

const IUB: &[(u8, f64)] = &[
    (b'a', 0.27),
    (b'c', 0.12),
    (b'g', 0.12),
    (b't', 0.27),
    (b'B', 0.02),
    (b'D', 0.02),
    (b'H', 0.02),
    (b'K', 0.02),
    (b'M', 0.02),
    (b'N', 0.02),
    (b'R', 0.02),
    (b'S', 0.02),
    (b'V', 0.02),
    (b'W', 0.02),
    (b'Y', 0.02),
];

const HOMO_SAPIENS: &[(u8, f64)] = &[
    (b'a', 0.302_954_942_668_6),
    (b'c', 0.197_988_333_634_7),
    (b'g', 0.197_547_351_853_9),
    (b't', 0.301_509_370_405_2),
];

const LINE: usize = 60;

/// Where the text goes: hashed and counted, never stored.
struct Sink {
    hash: u64,
    bytes: u64,
}

impl Sink {
    fn write(&mut self, text: &[u8]) {
        for &b in text {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.bytes += text.len() as u64;
    }
}

/// The benchmark's generator: seed 42, x = (x * 3877 + 29573) mod 139968.
struct Lcg(u32);

impl Lcg {
    fn next(&mut self, max: f64) -> f64 {
        self.0 = (self.0 * 3877 + 29573) % 139_968;
        max * f64::from(self.0) / 139_968.0
    }
}

fn repeat(sink: &mut Sink, header: &[u8], n: usize) {
    sink.write(header);
    let mut pos = 0;
    let mut line = [0u8; LINE + 1];
    let mut left = n;
    while left > 0 {
        let len = left.min(LINE);
        for b in &mut line[..len] {
            *b = ALU[pos];
            pos = (pos + 1) % ALU.len();
        }
        line[len] = b'\n';
        sink.write(&line[..=len]);
        left -= len;
    }
}

fn random(sink: &mut Sink, rng: &mut Lcg, header: &[u8], table: &[(u8, f64)], n: usize) {
    sink.write(header);
    // Cumulative probabilities.
    let mut acc = 0.0;
    let cumulative: Vec<(u8, f64)> = table
        .iter()
        .map(|&(c, p)| {
            acc += p;
            (c, acc)
        })
        .collect();
    let mut line = [0u8; LINE + 1];
    let mut left = n;
    while left > 0 {
        let len = left.min(LINE);
        for b in &mut line[..len] {
            let r = rng.next(1.0);
            *b = cumulative
                .iter()
                .find(|&&(_, p)| r < p)
                .map_or(cumulative[cumulative.len() - 1].0, |&(c, _)| c);
        }
        line[len] = b'\n';
        sink.write(&line[..=len]);
        left -= len;
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut sink = Sink {
        hash: 0xcbf2_9ce4_8422_2325,
        bytes: 0,
    };
    let mut rng = Lcg(42);
    repeat(&mut sink, b">ONE Homo sapiens alu\n", 2 * n);
    random(
        &mut sink,
        &mut rng,
        b">TWO IUB ambiguity codes\n",
        IUB,
        3 * n,
    );
    random(
        &mut sink,
        &mut rng,
        b">THREE Homo sapiens frequency\n",
        HOMO_SAPIENS,
        5 * n,
    );
    println!("{} bytes, fnv1a {:016x}", sink.bytes, sink.hash);
}
