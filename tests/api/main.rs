//! Black-box tests: the real server on a loopback port against local upstreams.

// First: its `on_both_stores!` is used by the others.
#[macro_use]
mod flows;
mod admin;
mod buyer;
mod commands;
mod database;
mod demo;
mod helpers;
mod home;
mod licensespring_client;
mod lifecycle;
mod ops;
#[path = "../common/postgres.rs"]
mod postgres;
#[path = "../common/server_process.rs"]
mod server_process;
#[path = "../common/spec_table.rs"]
mod spec_table;
mod startup;
mod stripe_client;
mod webhooks;
