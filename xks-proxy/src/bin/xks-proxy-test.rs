//! `xks-proxy` built with the test hooks (failpoints, fault injection) for the end-to-end
//! suite. Never shipped: it exists only with the `test-hooks` feature.

fn main() -> std::process::ExitCode {
    xks_proxy::cli::main()
}
