//! A fresh PostgreSQL database per test. The server to create them on is `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). When none answers, a test that needs
//! one says so on stderr and passes, except when `CI` is set: there it fails, so that CI always
//! runs the PostgreSQL tests (`.ci/run` installs and starts PostgreSQL).
#![allow(dead_code)] // each includer uses a different part

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own, dropped (with its connections) when this is.
pub struct TestDatabase {
    /// What `DATABASE_URL` is set to.
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl TestDatabase {
    /// A new empty database, or `None` after saying why when no PostgreSQL answers outside CI.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let admin = match connect(&admin_url).await {
            Ok(client) => client,
            Err(error) => {
                let tried = url::Url::parse(&admin_url)
                    .map(|url| format!("{}:{}", url.host_str().unwrap_or("?"), url.port().unwrap_or(5432)))
                    .unwrap_or_else(|_| "an unparsable TEST_DATABASE_URL".to_owned());
                skip_or_fail(&format!(
                    "no PostgreSQL answers at {tried} (TEST_DATABASE_URL, default {DEFAULT_ADMIN_URL}): {error}"
                ));
                return None;
            }
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sl_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Some(TestDatabase { url: url.to_string(), name, admin_url })
    }

    /// A client of this database, for the tests' own reading of what the server stored.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await.expect("the test database answers")
    }

    /// The subscriptions stored, oldest first.
    pub async fn subscriptions(&self) -> Vec<String> {
        let rows = self.client().await.query("SELECT sub_id FROM subscriptions ORDER BY seq", &[]).await;
        rows.expect("subscriptions table").iter().map(|row| row.get(0)).collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Its own thread and runtime: a drop may happen inside or outside one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(admin) = connect(&admin_url).await {
                        let _ = admin
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn skip_or_fail(why: &str) {
    let in_ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0");
    assert!(!in_ci, "PostgreSQL test failed in CI (CI is set): {why}");
    // Straight to stderr, past the test harness's capture, so the skip is seen in every run.
    let _ = writeln!(std::io::stderr(), "PostgreSQL test skipped: {why}");
}
