//! `kms-frontend`: see `kms-frontend --help`.

fn main() -> std::process::ExitCode {
    kms_frontend::cli::main()
}
