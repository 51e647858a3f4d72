fn main() -> std::process::ExitCode {
    vmvault::cli::main()
}
