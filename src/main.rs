//! Reads the settings and runs the server (or, with `--demo`, the offline sandbox).

use std::process::ExitCode;

use stripe_licensespring::settings::Settings;

// One thread serves every request: the work per request is a few HTTP exchanges and tens of
// microseconds of CPU, and the cache's fsyncs run on their own thread. A multi-threaded scheduler
// on a small machine mostly adds cross-thread wake-ups (about a quarter more CPU per renewal; see
// `benches/load.rs`).
#[tokio::main(flavor = "current_thread")]
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
