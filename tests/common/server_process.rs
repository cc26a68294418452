//! The server binary as a child process: what the load benchmark measures (CPU and memory of the
//! server alone, from the OS) and what the crash tests kill with SIGKILL. Shared by the test suites
//! and `benches/load.rs` (each includes this file with `#[path]`).
#![allow(dead_code)] // each includer uses a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stripe_licensespring::demo::Simulators;

/// A running server process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    /// The server's log lines (stdout and stderr), collected in the background.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `binary` with exactly `env` (nothing inherited but `PATH`) in `dir`, `PORT=0`, and
    /// waits until it logs the address it listens on.
    pub fn spawn(binary: &Path, dir: &Path, env: &[(String, String)]) -> std::io::Result<ServerProcess> {
        let mut command = Command::new(binary);
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn()?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for (stream, tx) in
            [(Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(address_tx)), (Box::new(stderr), None)]
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(rest)) = (&tx, line.split("listening on http://").nth(1)) {
                        // The address ends the text line; in a JSON line, a quote follows it.
                        let address = rest.split(|c: char| c == '"' || c.is_whitespace()).next();
                        let _ = tx.send(address.unwrap_or_default().to_owned());
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let address = match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(text) => text.parse().map_err(|_| std::io::Error::other(format!("bad address {text:?}")))?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lock().expect("log").join("\n");
                return Err(std::io::Error::other(format!("the server did not start:\n{lines}")));
            }
        };
        Ok(ServerProcess { child, address, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// User plus system CPU time the process has used, from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu_time(self.pid())
    }

    /// User plus system CPU time of the process's threads with this name (e.g. `cache-writer`).
    pub fn thread_cpu_time(&self, thread_name: &str) -> Option<Duration> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).ok()?;
        let name = format!("({thread_name})");
        Some(
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
                .filter(|stat| stat.contains(&name))
                .filter_map(|stat| cpu_time_in_stat(&stat))
                .sum(),
        )
    }

    /// The peak resident set size in KiB (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGKILL, as a crash: no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `patience` for a graceful exit; whether it exited by itself.
    pub fn terminate(mut self, patience: Duration) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < patience {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time process `pid` has used, from `/proc/<pid>/stat`; `None` once it exited.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    cpu_time_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime of a `/proc/.../stat` line. Fields after the command name (which may hold spaces)
/// start after the last ')'; utime and stime are the 12th and 13th of them, in clock ticks.
fn cpu_time_in_stat(stat: &str) -> Option<Duration> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()))
}

/// The kernel's clock ticks per second for `/proc` CPU times: 100 on every Linux this runs on
/// (`getconf CLK_TCK`), asked once in case it differs.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The environment of a server against `simulators` with this cache file: the settings that
/// point it at them, and `RUST_LOG=info`.
pub fn server_env(simulators: &Simulators, cache_path: &Path) -> Vec<(String, String)> {
    let mut env = simulators.settings();
    env.push(("CACHE_PATH".to_owned(), cache_path.to_string_lossy().into_owned()));
    env.push(("RUST_LOG".to_owned(), "info".to_owned()));
    env
}
