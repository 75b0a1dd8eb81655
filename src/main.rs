#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    azgate::cli::main()
}
