//! Reliability and security suites: the server binary under crashes, redelivery storms, hostile
//! input, fuzzing, secret-hunting and upstream faults. Run sizes and seeds come from the
//! environment (`CRASH_RUNS`, `SOAK_SUBSCRIPTIONS`, `PROPTEST_CASES`, ...) for longer runs.

mod crash;
mod fuzz;
mod hostile;
mod secrets;
#[path = "../common/server_process.rs"]
mod server_process;
mod soak;
#[path = "../common/spec_table.rs"]
mod spec_table;
mod support;
mod upstream_faults;
