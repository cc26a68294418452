//! Reads the settings and runs the server (or, with `--demo`, the offline sandbox).

use std::process::ExitCode;

use stripe_licensespring::settings::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    stripe_licensespring::init_tracing(&settings.log_filter);
    match stripe_licensespring::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
