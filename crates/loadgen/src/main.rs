//! `xks-load`: see the `loadgen` library (`loadgen::cli`) for the command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    loadgen::cli::main(std::env::args().collect())
}
