//! Black-box tests: the real server on a loopback port against local upstreams.

mod buyer;
mod commands;
mod demo;
mod flows;
mod helpers;
mod home;
mod licensespring_client;
mod lifecycle;
mod ops;
#[path = "../common/server_process.rs"]
mod server_process;
#[path = "../common/spec_table.rs"]
mod spec_table;
mod startup;
mod stripe_client;
mod webhooks;
