//! The commands besides serving: `reconcile`, `replay`, `check` and `migrate-cache`. Each reads the same settings
//! (and `.env`) as the server, talks to Stripe and LicenseSpring through the same clients, and
//! repairs through the same billing code as the webhooks. Each answers an exit status: 0 all is
//! well, 1 something was found (or failed) and said, 2 bad settings or an upstream failure that
//! stopped it, 130 interrupted (Ctrl-C).

pub mod check;
pub mod migrate_cache;
pub mod reconcile;
pub mod replay;

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::billing::Billing;
use crate::settings::Settings;
use crate::store::Store;

/// The exit statuses of the commands.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FOUND: u8 = 1;
    pub const STOPPED: u8 = 2;
    pub const INTERRUPTED: u8 = 130;
}

/// The billing layer as the server builds it: over the shared database, or over a snapshot of the
/// cache file (which a running server owns: the commands never write it).
pub async fn billing(settings: &Settings) -> Result<Billing, crate::StartError> {
    Ok(Billing::from_settings(settings, Store::open_for_commands(settings).await?))
}

/// How far a command is: a progress bar on a terminal, plain lines otherwise (a CI log, a pipe).
pub struct Progress {
    bar: Option<ProgressBar>,
    silent: bool,
}

impl Progress {
    /// Says nothing (the sandbox's Reconcile button shows the result on its page instead).
    pub fn silent() -> Progress {
        Progress { bar: None, silent: true }
    }

    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar, silent: false }
    }

    /// Says what is being done now (replacing the bar's message, or as a line on stderr).
    pub fn step(&self, message: impl Into<String>) {
        let message = message.into();
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None if self.silent => {}
            None => eprintln!("{message}"),
        }
    }

    /// A line of the result, on stdout, above the bar.
    pub fn say(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(line.as_ref()),
            None if self.silent => {}
            None => println!("{}", line.as_ref()),
        }
    }

    /// Runs `work` to its exit status, or stops it on Ctrl-C saying `interrupted` (exit 130).
    pub async fn until_interrupted(
        &self,
        work: impl std::future::Future<Output = u8>,
        interrupted: &str,
    ) -> u8 {
        tokio::select! {
            status = work => status,
            _ = tokio::signal::ctrl_c() => {
                self.finish();
                eprintln!("{interrupted}");
                exit::INTERRUPTED
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}
