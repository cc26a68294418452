//! Reads the command line and the settings, and runs the server (or, with `--demo`, the sandbox).

use std::process::ExitCode;

use stripe_licensespring::App;
use stripe_licensespring::settings::Settings;

const USAGE: &str = "usage: stripe-licensespring [--demo]\n  \
                     --demo  run against built-in Stripe and LicenseSpring simulators (no account, no network)";

// One thread serves every request: the work per request is a few HTTP exchanges and tens of
// microseconds of CPU, and the cache's fsyncs run on their own thread. A multi-threaded scheduler
// on a small machine mostly adds cross-thread wake-ups (about a quarter more CPU per renewal; see
// `benches/load.rs`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [] => serve().await,
        [flag] if flag == "--demo" => demo().await,
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => return exit_with(error, 2),
    };
    stripe_licensespring::init_tracing(&settings.log_filter);
    let app = match App::build(&settings).await {
        Ok(app) => app,
        Err(error) => return exit_with(error, 1),
    };
    match app.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit_with(error, 1),
    }
}

#[cfg(feature = "demo")]
async fn demo() -> ExitCode {
    use stripe_licensespring::demo::{self, DemoOptions};

    // The sandbox generates its own keys: no .env is read, so a real one is never touched.
    let options = match DemoOptions::from_env() {
        Ok(options) => options,
        Err(error) => return exit_with(error, 2),
    };
    stripe_licensespring::init_tracing(&options.log_filter);
    match demo::run_demo(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit_with(error, 1),
    }
}

#[cfg(not(feature = "demo"))]
async fn demo() -> ExitCode {
    exit_with("this build has no sandbox: build with the `demo` feature (on by default) for --demo", 2)
}

/// Settings problems exit 2 before anything listens; a failure while starting or running exits 1.
fn exit_with(error: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(code)
}
