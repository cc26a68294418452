//! Reads the command line and the settings, and runs the server (the default), the sandbox
//! (`--demo`), or one of the commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stripe_licensespring::App;
use stripe_licensespring::commands::{self, exit};
use stripe_licensespring::settings::{Settings, SettingsError};

/// Sells a software subscription through Stripe and keeps a LicenseSpring license in step with it.
///
/// With no command, serves the store, the thank-you page and Stripe's webhooks, with the settings
/// from the environment and `.env`.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Run against built-in Stripe and LicenseSpring simulators (no account, no network).
    #[arg(long)]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Compare every license with its Stripe subscription and print each difference (exit 1 when
    /// there are some); with --apply, repair them through the webhooks' own code.
    Reconcile {
        /// Repair each difference, then report what changed.
        #[arg(long)]
        apply: bool,
    },
    /// Handle again the events Stripe sent since a date (Stripe keeps 30 days), oldest first, as
    /// if they were delivered now.
    Replay {
        /// A date (2026-11-24) or an RFC 3339 time (2026-11-24T08:00:00Z).
        #[arg(long, value_name = "DATE OR TIME")]
        since: String,
    },
    /// Validate the settings and ask Stripe and LicenseSpring one harmless question each.
    Check,
    /// Import the cache file into the database (DATABASE_URL) once; running it again changes
    /// nothing. Subscriptions the database holds already are left as they are.
    MigrateCache {
        /// The cache file to import (default: CACHE_PATH).
        #[arg(long, value_name = "FILE")]
        from: Option<std::path::PathBuf>,
    },
}

// One thread serves every request: the work per request is a few HTTP exchanges and tens of
// microseconds of CPU, and the cache's fsyncs run on their own thread. A multi-threaded scheduler
// on a small machine mostly adds cross-thread wake-ups (about a quarter more CPU per renewal; see
// `benches/load.rs`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match (cli.demo, cli.command) {
        (true, None) => demo().await,
        (true, Some(_)) => {
            eprintln!("error: --demo runs the sandbox server; it takes no command");
            exit::STOPPED
        }
        (false, None) => serve().await,
        (false, Some(command)) => run_command(command).await,
    };
    ExitCode::from(status)
}

async fn serve() -> u8 {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => return settings_refused(&error),
    };
    stripe_licensespring::init_tracing(&settings.log_filter, settings.log_format);
    let app = match App::build(&settings).await {
        Ok(app) => app,
        Err(error) => return fail(error, 1),
    };
    match app.run().await {
        Ok(()) => exit::OK,
        Err(error) => fail(error, 1),
    }
}

async fn run_command(command: Command) -> u8 {
    let settings = match Settings::from_env_for_commands() {
        Ok(settings) => settings,
        Err(error) => return settings_refused(&error),
    };
    // Only warnings and errors: the commands print their own results.
    stripe_licensespring::init_tracing("warn", settings.log_format);
    match &command {
        Command::Check => return commands::check::run(&settings).await,
        Command::MigrateCache { from } => {
            return commands::migrate_cache::run(&settings, from.as_deref()).await;
        }
        Command::Reconcile { .. } | Command::Replay { .. } => {}
    }
    let billing = match commands::billing(&settings).await {
        Ok(billing) => billing,
        Err(error) => return fail(error, exit::STOPPED),
    };
    match command {
        Command::Reconcile { apply } => commands::reconcile::run(&billing, apply).await,
        Command::Replay { since } => match commands::replay::parse_since(&since, chrono::Utc::now()) {
            Ok(since) => commands::replay::run(&billing, since).await,
            Err(error) => fail(error, exit::STOPPED),
        },
        Command::Check | Command::MigrateCache { .. } => unreachable!("handled above"),
    }
}

#[cfg(feature = "demo")]
async fn demo() -> u8 {
    use stripe_licensespring::demo::{self, DemoOptions};

    // The sandbox generates its own keys: no .env is read, so a real one is never touched.
    let options = match DemoOptions::from_env() {
        Ok(options) => options,
        Err(error) => return fail(error, exit::STOPPED),
    };
    stripe_licensespring::init_tracing(&options.log_filter, options.log_format);
    match demo::run_demo(options).await {
        Ok(()) => exit::OK,
        Err(error) => fail(error, 1),
    }
}

#[cfg(not(feature = "demo"))]
async fn demo() -> u8 {
    fail("this build has no sandbox: build with the `demo` feature (on by default) for --demo", exit::STOPPED)
}

/// Settings problems stop everything before it starts (exit 2); with no settings at all, the
/// sandbox is suggested.
fn settings_refused(error: &SettingsError) -> u8 {
    eprintln!("error: {error}");
    if error.nothing_set() {
        eprintln!("No settings found. To try it without any account: stripe-licensespring --demo");
    }
    exit::STOPPED
}

fn fail(error: impl std::fmt::Display, status: u8) -> u8 {
    eprintln!("error: {error}");
    status
}
