#![forbid(unsafe_code)]

// mimalloc's thread-local free lists make the many small, short-lived allocations of the
// request path cheaper than glibc's malloc (bench/README.md has the numbers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    azgate::cli::main()
}
