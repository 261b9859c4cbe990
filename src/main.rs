fn main() -> std::process::ExitCode {
    bpf_migrate::cli::main()
}
