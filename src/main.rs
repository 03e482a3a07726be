fn main() -> std::process::ExitCode {
    let cli = dalemeetslangevin::cli::parse();
    match dalemeetslangevin::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
