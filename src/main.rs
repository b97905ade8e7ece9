//! The `rewindb` binary: everything is in the library's `cli` module.

fn main() {
    std::process::exit(rewindb::cli::main());
}
