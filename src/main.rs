use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = dalemeetslangevin::cli::Cli::parse();
    match dalemeetslangevin::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
