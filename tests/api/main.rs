//! Black-box tests: the real server on a loopback port against local upstreams.

mod demo;
mod flows;
mod helpers;
mod home;
mod licensespring_client;
#[path = "../common/server_process.rs"]
mod server_process;
mod startup;
mod stripe_client;
mod webhooks;
