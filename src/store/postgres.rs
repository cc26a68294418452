//! The PostgreSQL store (`DATABASE_URL`): the subscriptions' licenses and the deliveries table,
//! shared by any number of server processes.
//!
//! - The schema is migrated at start ([`MIGRATIONS`], under a lock, so replicas starting together
//!   take turns).
//! - The events of one subscription are serialised across processes by a session-level advisory
//!   lock ([`PgStore::lock`]) held on a connection of its own while the flow runs. It is released
//!   when the guard drops, and by PostgreSQL itself when the process dies (its connections close).
//!   Locks and statements use separate pools, so flows waiting for a lock never starve the
//!   statements of the flows holding one.
//! - Every statement and every wait has a time limit: a database that hangs is an error (5xx, so
//!   Stripe delivers again), never a stuck webhook.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use serde_json::{Map, Value};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::deliveries::{Delivery, DeliveryRecord};
use crate::cache::CacheEntry;
use crate::metrics;
use crate::model::{LicenseId, LicenseKey, SubscriptionId, error_chain};
use crate::settings::DatabaseUrl;

/// The schema's versions, applied in order; each runs once, in a transaction.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/0001_initial.sql"))];

/// Connections for statements, and for the subscription locks, per process. With several
/// replicas, mind PostgreSQL's `max_connections` (100 by default): 24 each fits four.
const STATEMENT_CONNECTIONS: usize = 8;
const LOCK_CONNECTIONS: usize = 16;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement (with getting a connection for it) may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a flow waits for another process's flow of the same subscription: well inside the
/// 25 s a webhook may take.
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// The advisory locks' first key ("SLSB"), so they do not meet another application's.
const LOCK_NAMESPACE: i32 = 0x534c_5342;
/// The lock migrations run under.
const MIGRATION_LOCK: i64 = 0x534c_5342_0000_0001;
/// The `store` label of this store's metrics.
const STORE: &str = "postgres";
/// Deliveries older than this are deleted, at start and daily (Stripe retries for three days).
const DELIVERIES_KEPT_DAYS: i32 = 90;

/// Why the database could not answer. Messages name the database (host, port, name), never the
/// password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot reach the database at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("the database at {target} did not answer within {} s", .after.as_secs())]
    Timeout { target: String, after: Duration },
    #[error("the database at {target} failed: {reason}")]
    Failed { target: String, reason: String },
    #[error("cannot migrate the database at {target}: {reason}")]
    Migration { target: String, reason: String },
}

/// The store. Cheap to share: the pools are handles.
pub struct PgStore {
    statements: Pool,
    locks: Pool,
    target: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("target", &self.target).finish_non_exhaustive()
    }
}

const LOCK_SQL: &str = "SELECT pg_advisory_lock($1, hashtext($2))";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock($1, hashtext($2))";
const REPEAT_SQL: &str =
    "UPDATE deliveries SET attempts = attempts + 1, last_seen = now() WHERE event_id = $1 AND handled";
const RECORD_SQL: &str =
    "INSERT INTO deliveries (event_id, event_type, subscription_id, outcome, error, handled)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (event_id) DO UPDATE SET outcome = EXCLUDED.outcome, error = EXCLUDED.error,
         handled = deliveries.handled OR EXCLUDED.handled, last_seen = now(),
         attempts = deliveries.attempts + 1,
         subscription_id = coalesce(EXCLUDED.subscription_id, deliveries.subscription_id)";

/// A delivery as [`RECORD_SQL`]'s parameters.
struct DeliveryValues<'a> {
    delivery: &'a Delivery<'a>,
    subscription: Option<&'a str>,
    handled: bool,
}

impl<'a> DeliveryValues<'a> {
    fn of(delivery: &'a Delivery<'a>) -> DeliveryValues<'a> {
        DeliveryValues {
            delivery,
            subscription: delivery.subscription.map(|s| s.0.as_str()),
            handled: delivery.handled(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        let d = self.delivery;
        [&d.event_id, &d.event_type, &self.subscription, &d.outcome, &d.error, &self.handled]
    }
}

/// A subscription's lock, held on its own connection; released on drop.
pub struct SubscriptionLock {
    client: Option<Object>,
    sub_id: String,
}

impl PgStore {
    /// Connects, migrates the schema and deletes old deliveries; an error names the database.
    pub async fn connect(url: &DatabaseUrl) -> Result<PgStore, DatabaseError> {
        let target = url.target();
        let mut config = url.config().clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A connection whose peer vanished (a database host that died) is noticed within a minute.
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("stripe-licensespring");
        }
        // `sslmode=require`: TLS, the server's certificate verified; otherwise plain TCP, as
        // `disable` or `prefer` without TLS would be.
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(
                tls_connector()
                    .map_err(|reason| DatabaseError::Unreachable { target: target.clone(), reason })?,
            ),
            _ => None,
        };
        let pool = |size: usize, wait: Duration| {
            let settings = ManagerConfig { recycling_method: RecyclingMethod::Fast };
            let manager = match &tls {
                Some(tls) => Manager::from_config(config.clone(), tls.clone(), settings),
                None => Manager::from_config(config.clone(), NoTls, settings),
            };
            Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(wait))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(STATEMENT_TIMEOUT))
                .build()
                .expect("a pool with a runtime builds")
        };
        let store = PgStore {
            statements: pool(STATEMENT_CONNECTIONS, STATEMENT_TIMEOUT),
            locks: pool(LOCK_CONNECTIONS, LOCK_WAIT),
            target,
        };
        let mut client = store.statements.get().await.map_err(|e| store.pool_error(e))?;
        store.within(STATEMENT_TIMEOUT * 6, store.migrate(&mut client)).await?;
        let pruned = prune(&client, &store.target).await?;
        if pruned > 0 {
            tracing::info!(pruned, "deliveries older than {DELIVERIES_KEPT_DAYS} days deleted");
        }
        tokio::spawn(prune_daily(store.statements.weak(), store.target.clone()));
        Ok(store)
    }

    /// `host:port/database`.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn migrate(&self, client: &mut Object) -> Result<(), DatabaseError> {
        let fail = |e: tokio_postgres::Error| DatabaseError::Migration {
            target: self.target.clone(),
            reason: error_chain(&e),
        };
        let transaction = client.transaction().await.map_err(fail)?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(fail)?;
        // "already exists, skipping" is no news at every start.
        transaction.batch_execute("SET LOCAL client_min_messages = warning").await.map_err(fail)?;
        transaction
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(fail)?;
        let row = transaction
            .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
            .await
            .map_err(fail)?;
        let applied: i32 = row.get(0);
        let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if applied > known {
            // A newer binary migrated it (a rolling update in progress): its changes only add, so
            // this one goes on.
            tracing::warn!(
                applied,
                known,
                "the database schema is newer than this binary knows; carrying on with it"
            );
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
            transaction.batch_execute(sql).await.map_err(fail)?;
            transaction
                .execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
                .await
                .map_err(fail)?;
            tracing::info!(version, "database schema migrated");
        }
        transaction.commit().await.map_err(fail)
    }

    pub async fn get(&self, sub_id: &SubscriptionId) -> Result<Option<CacheEntry>, DatabaseError> {
        let row = self
            .statement(
                "SELECT sub_id, license_key, interval, license_id, extra FROM subscriptions WHERE sub_id = $1",
                async |client, statement| { client.query_opt(statement, &[&sub_id.0]).await },
            )
            .await?;
        Ok(row.as_ref().map(entry_of))
    }

    pub async fn insert(&self, entry: &CacheEntry) -> Result<(), DatabaseError> {
        metrics::timed_store_write(STORE, "insert", self.upsert(entry)).await
    }

    async fn upsert(&self, entry: &CacheEntry) -> Result<(), DatabaseError> {
        let extra = Value::Object(entry.extra.clone());
        self.statement(
            "INSERT INTO subscriptions (sub_id, license_key, interval, license_id, extra)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (sub_id) DO UPDATE SET license_key = EXCLUDED.license_key,
                 interval = EXCLUDED.interval, license_id = EXCLUDED.license_id,
                 extra = EXCLUDED.extra, updated_at = now()",
            async |client, statement| {
                client
                    .execute(
                        statement,
                        &[
                            &entry.sub_id.0,
                            &entry.license_key.0,
                            &entry.interval,
                            &entry.license_id.0,
                            &extra,
                        ],
                    )
                    .await
            },
        )
        .await
        .map(drop)
    }

    pub async fn remove(&self, sub_id: &SubscriptionId) -> Result<Option<CacheEntry>, DatabaseError> {
        metrics::timed_store_write(STORE, "remove", self.delete(sub_id)).await
    }

    async fn delete(&self, sub_id: &SubscriptionId) -> Result<Option<CacheEntry>, DatabaseError> {
        let row = self
            .statement(
                "DELETE FROM subscriptions WHERE sub_id = $1
                 RETURNING sub_id, license_key, interval, license_id, extra",
                async |client, statement| client.query_opt(statement, &[&sub_id.0]).await,
            )
            .await?;
        Ok(row.as_ref().map(entry_of))
    }

    /// Every entry, oldest first.
    pub async fn list(&self) -> Result<Vec<CacheEntry>, DatabaseError> {
        let rows = self
            .statement(
                "SELECT sub_id, license_key, interval, license_id, extra FROM subscriptions ORDER BY seq",
                async |client, statement| client.query(statement, &[]).await,
            )
            .await?;
        Ok(rows.iter().map(entry_of).collect())
    }

    /// The newest `limit` entries, newest first, and how many there are in all.
    pub async fn newest(&self, limit: usize) -> Result<(Vec<CacheEntry>, usize), DatabaseError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .statement(
                "SELECT sub_id, license_key, interval, license_id, extra, count(*) OVER () FROM subscriptions
                 ORDER BY seq DESC LIMIT $1",
                async |client, statement| client.query(statement, &[&limit]).await,
            )
            .await?;
        let total = rows.first().map_or(0, |row| row.get::<_, i64>(5));
        Ok((rows.iter().map(entry_of).collect(), usize::try_from(total).unwrap_or(usize::MAX)))
    }

    /// Adds the entries the database does not hold yet (oldest first, in one transaction); an entry
    /// already there is left as it is. Answers how many were added.
    pub async fn import(&self, entries: &[CacheEntry]) -> Result<u64, DatabaseError> {
        let mut client = self.statements.get().await.map_err(|e| self.pool_error(e))?;
        let work = async {
            let transaction = client.transaction().await?;
            let statement = transaction
                .prepare(
                    "INSERT INTO subscriptions (sub_id, license_key, interval, license_id, extra)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sub_id) DO NOTHING",
                )
                .await?;
            let mut added = 0;
            for entry in entries {
                let extra = Value::Object(entry.extra.clone());
                added += transaction
                    .execute(
                        &statement,
                        &[
                            &entry.sub_id.0,
                            &entry.license_key.0,
                            &entry.interval,
                            &entry.license_id.0,
                            &extra,
                        ],
                    )
                    .await?;
            }
            transaction.commit().await?;
            Ok::<u64, tokio_postgres::Error>(added)
        };
        // Large files take a while; each row is one short statement.
        let limit = STATEMENT_TIMEOUT + Duration::from_millis(entries.len() as u64);
        self.within(limit, async { work.await.map_err(|e| self.failed(&e)) }).await
    }

    /// Waits (at most [`LOCK_WAIT`]) until no other process runs a flow of `sub_id`. With an
    /// event, also answers whether that event was handled already (counting the repeat): asked
    /// on the same connection right behind the lock, so in the same round trip, and only once the
    /// lock is held (so it sees what the previous holder recorded).
    pub async fn lock(
        &self,
        sub_id: &SubscriptionId,
        event_id: Option<&str>,
    ) -> Result<(SubscriptionLock, bool), DatabaseError> {
        let started = tokio::time::Instant::now();
        let client = self.locks.get().await.map_err(|e| self.pool_error(e))?;
        let left = LOCK_WAIT.saturating_sub(started.elapsed());
        let work = async {
            let (lock, repeat) =
                tokio::try_join!(client.prepare_cached(LOCK_SQL), client.prepare_cached(REPEAT_SQL))?;
            let lock_params: [&(dyn ToSql + Sync); 2] = [&LOCK_NAMESPACE, &sub_id.0];
            let locked = client.execute(&lock, &lock_params);
            match event_id {
                None => locked.await.map(|_| false),
                Some(event_id) => {
                    let repeat_params: [&(dyn ToSql + Sync); 1] = [&event_id];
                    let (_, repeated) = tokio::try_join!(locked, client.execute(&repeat, &repeat_params))?;
                    Ok(repeated > 0)
                }
            }
        };
        match tokio::time::timeout(left, work).await {
            Ok(Ok(handled)) => {
                Ok((SubscriptionLock { client: Some(client), sub_id: sub_id.0.clone() }, handled))
            }
            failed => {
                // The request may still be waiting in the database: closing the connection
                // withdraws it (and would release a lock granted meanwhile).
                drop(Object::take(client));
                Err(match failed {
                    Ok(Err(error)) => self.failed(&error),
                    _ => DatabaseError::Timeout { target: self.target.clone(), after: LOCK_WAIT },
                })
            }
        }
    }

    /// Whether this event was handled already; if so, counts the repeat.
    pub async fn repeat_if_handled(&self, event_id: &str) -> Result<bool, DatabaseError> {
        let updated = self
            .statement(REPEAT_SQL, async |client, statement| client.execute(statement, &[&event_id]).await)
            .await?;
        Ok(updated > 0)
    }

    /// Records what a delivery did (for an event of no subscription: no lock is held).
    pub async fn record_delivery(&self, delivery: &Delivery<'_>) -> Result<(), DatabaseError> {
        let values = DeliveryValues::of(delivery);
        self.statement(RECORD_SQL, async |client, statement| {
            client.execute(statement, &values.params()).await
        })
        .await
        .map(drop)
    }

    /// Records what a delivery did and releases its subscription's lock, in one round trip on the
    /// lock's connection (the record is committed before the lock is let go).
    pub async fn record_and_unlock(
        &self,
        mut lock: SubscriptionLock,
        delivery: &Delivery<'_>,
    ) -> Result<(), DatabaseError> {
        let Some(client) = lock.client.take() else { return self.record_delivery(delivery).await };
        let values = DeliveryValues::of(delivery);
        let work = async {
            let (record, unlock) =
                tokio::try_join!(client.prepare_cached(RECORD_SQL), client.prepare_cached(UNLOCK_SQL))?;
            let (record_params, unlock_params): (_, [&(dyn ToSql + Sync); 2]) =
                (values.params(), [&LOCK_NAMESPACE, &lock.sub_id]);
            let (_, row) = tokio::try_join!(
                client.execute(&record, &record_params),
                client.query_one(&unlock, &unlock_params),
            )?;
            Ok::<bool, tokio_postgres::Error>(row.get(0))
        };
        let answer = tokio::time::timeout(STATEMENT_TIMEOUT, work).await;
        if !matches!(answer, Ok(Ok(true))) {
            // Not known to be released: close the connection, which releases it for sure.
            drop(Object::take(client));
        }
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(self.failed(&error)),
            Err(_) => Err(DatabaseError::Timeout { target: self.target.clone(), after: STATEMENT_TIMEOUT }),
        }
    }

    /// The latest deliveries, newest first; only those not handled with `failed_only`.
    pub async fn recent_deliveries(
        &self,
        limit: usize,
        failed_only: bool,
    ) -> Result<Vec<DeliveryRecord>, DatabaseError> {
        // Two texts, so that the failed ones are read through their own (partial) index.
        let sql = if failed_only {
            "SELECT event_id, event_type, subscription_id, outcome, error, handled, first_seen, last_seen,
                 attempts FROM deliveries WHERE NOT handled ORDER BY last_seen DESC LIMIT $1"
        } else {
            "SELECT event_id, event_type, subscription_id, outcome, error, handled, first_seen, last_seen,
                 attempts FROM deliveries ORDER BY last_seen DESC LIMIT $1"
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows =
            self.statement(sql, async |client, statement| client.query(statement, &[&limit]).await).await?;
        Ok(rows
            .iter()
            .map(|row| DeliveryRecord {
                event_id: row.get(0),
                event_type: row.get(1),
                subscription: row.get(2),
                outcome: row.get(3),
                error: row.get(4),
                handled: row.get(5),
                first_seen: row.get(6),
                last_seen: row.get(7),
                attempts: u32::try_from(row.get::<_, i32>(8)).unwrap_or(0),
            })
            .collect())
    }

    /// Whether the database answers now.
    pub async fn check(&self) -> Result<(), DatabaseError> {
        self.statement("SELECT 1", async |client, statement| client.query_one(statement, &[]).await)
            .await
            .map(drop)
    }

    /// A pooled connection and `sql` prepared on it (once per connection: the statement is cached).
    async fn prepared(&self, sql: &str) -> Result<(Object, tokio_postgres::Statement), DatabaseError> {
        let client = self.statements.get().await.map_err(|e| self.pool_error(e))?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.failed(&e))?;
        Ok((client, statement))
    }

    /// Runs `sql` through `run` on a pooled connection, within [`STATEMENT_TIMEOUT`].
    async fn statement<T>(
        &self,
        sql: &str,
        run: impl AsyncFnOnce(&Object, &tokio_postgres::Statement) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, DatabaseError> {
        self.within(STATEMENT_TIMEOUT, async {
            let (client, statement) = self.prepared(sql).await?;
            run(&client, &statement).await.map_err(|e| self.failed(&e))
        })
        .await
    }

    async fn within<T>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T, DatabaseError>>,
    ) -> Result<T, DatabaseError> {
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(DatabaseError::Timeout { target: self.target.clone(), after: limit }))
    }

    fn failed(&self, error: &tokio_postgres::Error) -> DatabaseError {
        failed(&self.target, error)
    }

    fn pool_error(&self, error: PoolError) -> DatabaseError {
        match error {
            PoolError::Timeout(_) => {
                DatabaseError::Timeout { target: self.target.clone(), after: STATEMENT_TIMEOUT }
            }
            PoolError::Backend(error) => self.failed(&error),
            other => DatabaseError::Unreachable { target: self.target.clone(), reason: error_chain(&other) },
        }
    }
}

impl Drop for SubscriptionLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let sub_id = std::mem::take(&mut self.sub_id);
        let unlock = async move {
            let unlocked = tokio::time::timeout(
                STATEMENT_TIMEOUT,
                client.query_one(UNLOCK_SQL, &[&LOCK_NAMESPACE, &sub_id]),
            )
            .await;
            if !matches!(unlocked, Ok(Ok(ref row)) if row.get::<_, bool>(0)) {
                // Not known to be released: close the connection, which releases it for sure.
                drop(Object::take(client));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(unlock)),
            // No runtime left (the process is ending): dropping the future drops the connection.
            Err(_) => drop(unlock),
        }
    }
}

/// TLS for `sslmode=require`: the server's certificate must chain to a root this machine trusts
/// (its CA store, or the PEM file `SSL_CERT_FILE` names) and name the host connected to.
fn tls_connector() -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    if roots.is_empty() {
        return Err("sslmode=require, but no trusted root certificate was found on this machine \
                    (install ca-certificates, or set SSL_CERT_FILE to the database's CA certificate)"
            .to_owned());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn failed(target: &str, error: &tokio_postgres::Error) -> DatabaseError {
    let (target, reason) = (target.to_owned(), error_chain(error));
    if error.is_closed() || error.as_db_error().is_none() {
        DatabaseError::Unreachable { target, reason }
    } else {
        DatabaseError::Failed { target, reason }
    }
}

/// Deletes the deliveries older than [`DELIVERIES_KEPT_DAYS`]; how many.
async fn prune(client: &Object, target: &str) -> Result<u64, DatabaseError> {
    let sql = "DELETE FROM deliveries WHERE last_seen < now() - make_interval(days => $1)";
    match tokio::time::timeout(STATEMENT_TIMEOUT * 6, client.execute(sql, &[&DELIVERIES_KEPT_DAYS])).await {
        Ok(result) => result.map_err(|e| failed(target, &e)),
        Err(_) => Err(DatabaseError::Timeout { target: target.to_owned(), after: STATEMENT_TIMEOUT * 6 }),
    }
}

/// [`prune`] once a day while the store lives (the task holds only a weak handle on its pool).
async fn prune_daily(statements: deadpool_postgres::WeakPool, target: String) {
    let mut daily = tokio::time::interval(Duration::from_secs(24 * 60 * 60));
    daily.tick().await;
    loop {
        daily.tick().await;
        let Some(statements) = statements.upgrade() else { return };
        if let Ok(client) = statements.get().await
            && let Err(error) = prune(&client, &target).await
        {
            tracing::warn!(%error, "old deliveries could not be deleted; trying again tomorrow");
        }
    }
}

fn entry_of(row: &Row) -> CacheEntry {
    let extra = match row.get::<_, Value>(4) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    CacheEntry {
        sub_id: SubscriptionId(row.get(0)),
        license_key: LicenseKey(row.get(1)),
        interval: row.get(2),
        license_id: LicenseId(row.get(3)),
        extra,
    }
}
