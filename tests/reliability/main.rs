//! Reliability and security suites: the server binary under crashes, redelivery storms, hostile
//! input, fuzzing, secret-hunting, upstream faults, and several replicas sharing PostgreSQL. Run sizes and seeds come from the
//! environment (`CRASH_RUNS`, `SOAK_SUBSCRIPTIONS`, `PROPTEST_CASES`, ...) for longer runs.

mod crash;
mod fuzz;
mod hostile;
#[path = "../common/postgres.rs"]
mod postgres;
mod replicas;
mod secrets;
#[path = "../common/server_process.rs"]
mod server_process;
mod soak;
#[path = "../common/spec_table.rs"]
mod spec_table;
mod support;
#[path = "../common/tcp_proxy.rs"]
mod tcp_proxy;
mod upstream_faults;
