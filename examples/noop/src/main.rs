//! Does nothing and exits 0: the smallest possible task, for round-trip benchmarks.

fn main() {}
