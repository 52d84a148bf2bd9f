//! `runegrid`: the one binary — coordinator, worker, and the user's CLI (see the library).

fn main() {
    runegrid_cli::main()
}
