//! The `fitz` binary; everything lives in the `fitz_cli` library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    fitz_cli::main()
}
