//! `xks-proxy`: see `xks-proxy --help`.

fn main() -> std::process::ExitCode {
    xks_proxy::cli::main()
}
