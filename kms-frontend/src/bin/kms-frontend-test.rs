//! `kms-frontend` built with the test hooks (a clock the end-to-end suite can advance).
//! Never shipped: it exists only with the `test-hooks` feature.

fn main() -> std::process::ExitCode {
    kms_frontend::cli::main()
}
