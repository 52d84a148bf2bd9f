//! Gives the runner an 8 MiB stack (the default for wasm32-wasip1 is 1 MiB), so the compiler's
//! recursion over deeply nested scripts meets the injected call-depth limit (a clean
//! `stack_overflow`) before the end of its stack.

fn main() {
    println!("cargo::rustc-link-arg-bins=-zstack-size=8388608");
}
