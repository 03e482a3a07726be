fn main() -> std::process::ExitCode {
    let outcome = dalemeetslangevin::cli::parse().and_then(dalemeetslangevin::cli::run);
    match outcome {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
