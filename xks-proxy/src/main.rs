//! `xks-proxy`: see `xks-proxy --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = xks_proxy::cli::Cli::parse();
    match xks_proxy::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xks-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
