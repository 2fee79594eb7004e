fn main() -> std::process::ExitCode {
    lanchat::cli::main()
}
