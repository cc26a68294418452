//! Where state lives: each subscription's license ([`CacheEntry`]) and the record of webhook
//! deliveries. Two kinds, one interface ([`Store`]):
//! - the cache file (`CACHE_PATH`, the default): one process owns it; deliveries are remembered in
//!   memory, bounded;
//! - PostgreSQL (`DATABASE_URL`): any number of processes share it; the events of one subscription
//!   are serialised across them by a database lock, and deliveries are a table.
//!
//! The billing flows see only [`Store`]; which one is in use is decided once, at start.

pub mod deliveries;
pub mod postgres;

use chrono::Utc;

pub use deliveries::{Delivery, DeliveryLog, DeliveryRecord};
use postgres::{DatabaseError, PgStore, SubscriptionLock};

use crate::cache::{CacheEntry, CacheError, CacheSnapshot, SubscriptionCache};
use crate::model::SubscriptionId;
use crate::settings::Settings;

/// The subscription store in use.
pub enum Store {
    /// The server's cache file; deliveries in memory.
    File { cache: SubscriptionCache, deliveries: DeliveryLog },
    /// A command's read-only view of the cache file a running server owns (see [`CacheSnapshot`]).
    Snapshot { snapshot: CacheSnapshot, deliveries: DeliveryLog },
    /// PostgreSQL, shared by every replica.
    Postgres(PgStore),
}

/// Why the store could not answer. Every kind is answered 5xx, so Stripe delivers again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

/// Held while a flow of one subscription runs: with PostgreSQL, the database lock that keeps other
/// replicas' flows of that subscription waiting. Released when dropped (or when the process dies).
pub enum StoreLock {
    /// One process owns the file store: the in-process lock is all there is.
    Local,
    Database(Box<SubscriptionLock>),
}

impl Store {
    /// The server's store: PostgreSQL when `DATABASE_URL` is set (connected and migrated, or an
    /// error naming the host), else the cache file (a corrupt one is refused, never touched).
    pub async fn open(settings: &Settings) -> Result<Store, StoreError> {
        match &settings.database_url {
            Some(url) => Ok(Store::Postgres(PgStore::connect(url).await?)),
            None => Ok(Store::File {
                cache: SubscriptionCache::open(&settings.cache_path, settings.cache_capacity)?,
                deliveries: DeliveryLog::default(),
            }),
        }
    }

    /// The commands' store: the shared database, or a snapshot of the cache file (which the
    /// server beside them owns).
    pub async fn open_for_commands(settings: &Settings) -> Result<Store, StoreError> {
        match &settings.database_url {
            Some(url) => Ok(Store::Postgres(PgStore::connect(url).await?)),
            None => Ok(Store::Snapshot {
                snapshot: CacheSnapshot::read(&settings.cache_path)?,
                deliveries: DeliveryLog::default(),
            }),
        }
    }

    /// Which store, for people: `cache file cache.json`, `PostgreSQL at db.example.com:5432/billing`.
    pub fn describe(&self) -> String {
        match self {
            Store::File { cache, .. } => cache.description(),
            Store::Snapshot { .. } => "a read-only copy of the cache file".to_owned(),
            Store::Postgres(db) => format!("PostgreSQL at {}", db.target()),
        }
    }

    /// The entry for this subscription, if stored.
    pub async fn get(&self, sub_id: &SubscriptionId) -> Result<Option<CacheEntry>, StoreError> {
        match self {
            Store::File { cache, .. } => Ok(cache.get(sub_id)),
            Store::Snapshot { snapshot, .. } => Ok(snapshot.get(sub_id)),
            Store::Postgres(db) => Ok(db.get(sub_id).await?),
        }
    }

    /// Stores `entry`, replacing one with the same `sub_id` in place; durable once it answers `Ok`.
    pub async fn insert(&self, entry: CacheEntry) -> Result<(), StoreError> {
        match self {
            Store::File { cache, .. } => Ok(cache.insert(entry).await?),
            Store::Snapshot { snapshot, .. } => {
                snapshot.insert(entry);
                Ok(())
            }
            Store::Postgres(db) => Ok(db.insert(&entry).await?),
        }
    }

    /// Removes this subscription's entry and answers it, if there was one; durable once it answers.
    pub async fn remove(&self, sub_id: &SubscriptionId) -> Result<Option<CacheEntry>, StoreError> {
        match self {
            Store::File { cache, .. } => Ok(cache.remove(sub_id).await?),
            Store::Snapshot { snapshot, .. } => Ok(snapshot.remove(sub_id)),
            Store::Postgres(db) => Ok(db.remove(sub_id).await?),
        }
    }

    /// Every entry, oldest first.
    pub async fn list(&self) -> Result<Vec<CacheEntry>, StoreError> {
        match self {
            Store::File { cache, .. } => Ok(cache.list()),
            Store::Snapshot { snapshot, .. } => Ok(snapshot.list()),
            Store::Postgres(db) => Ok(db.list().await?),
        }
    }

    /// The newest `limit` entries, newest first, and how many there are in all (for `/admin`:
    /// never the whole table).
    pub async fn newest(&self, limit: usize) -> Result<(Vec<CacheEntry>, usize), StoreError> {
        match self {
            Store::File { cache, .. } => Ok(cache.newest(limit)),
            // A snapshot keeps no order (the commands never ask for the newest).
            Store::Snapshot { snapshot, .. } => {
                let all = snapshot.list();
                Ok((all.iter().take(limit).cloned().collect(), all.len()))
            }
            Store::Postgres(db) => Ok(db.newest(limit).await?),
        }
    }

    /// Waits until no other process runs a flow of `sub_id` (the caller already holds the
    /// in-process lock), and keeps them waiting until the answer is dropped.
    pub async fn lock(&self, sub_id: &SubscriptionId) -> Result<StoreLock, StoreError> {
        match self {
            Store::File { .. } | Store::Snapshot { .. } => Ok(StoreLock::Local),
            Store::Postgres(db) => Ok(StoreLock::Database(Box::new(db.lock(sub_id, None).await?.0))),
        }
    }

    /// As [`Store::lock`], for a delivery of `event_id`: also answers whether that event was
    /// handled already (by any replica, before any restart, with PostgreSQL), counting the repeat.
    pub async fn lock_for_event(
        &self,
        sub_id: &SubscriptionId,
        event_id: &str,
    ) -> Result<(StoreLock, bool), StoreError> {
        match self {
            Store::File { deliveries, .. } | Store::Snapshot { deliveries, .. } => {
                Ok((StoreLock::Local, deliveries.repeat_if_handled(event_id, Utc::now())))
            }
            Store::Postgres(db) => {
                let (lock, handled) = db.lock(sub_id, Some(event_id)).await?;
                Ok((StoreLock::Database(Box::new(lock)), handled))
            }
        }
    }

    /// Whether this event (of no subscription, so taken without a lock) was handled already; if
    /// so, the repeat is counted.
    pub async fn delivery_handled(&self, event_id: &str) -> Result<bool, StoreError> {
        match self {
            Store::File { deliveries, .. } | Store::Snapshot { deliveries, .. } => {
                Ok(deliveries.repeat_if_handled(event_id, Utc::now()))
            }
            Store::Postgres(db) => Ok(db.repeat_if_handled(event_id).await?),
        }
    }

    /// Records what a delivery's flow did (a retry of a failed one updates its record), then
    /// releases `lock` (the record is in the store before another flow may look for it).
    pub async fn record_delivery(
        &self,
        delivery: &Delivery<'_>,
        lock: Option<StoreLock>,
    ) -> Result<(), StoreError> {
        match (self, lock) {
            (Store::File { deliveries, .. } | Store::Snapshot { deliveries, .. }, _) => {
                deliveries.record(delivery, Utc::now());
                Ok(())
            }
            (Store::Postgres(db), Some(StoreLock::Database(lock))) => {
                Ok(db.record_and_unlock(*lock, delivery).await?)
            }
            (Store::Postgres(db), _) => Ok(db.record_delivery(delivery).await?),
        }
    }

    /// The most recently seen deliveries, newest first; only those not handled with `failed_only`.
    pub async fn recent_deliveries(
        &self,
        limit: usize,
        failed_only: bool,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        match self {
            Store::File { deliveries, .. } | Store::Snapshot { deliveries, .. } => {
                Ok(deliveries.recent(limit, failed_only))
            }
            Store::Postgres(db) => Ok(db.recent_deliveries(limit, failed_only).await?),
        }
    }

    /// Whether the store can take changes now: what `/readyz` reports.
    pub async fn check(&self) -> Result<(), StoreError> {
        match self {
            Store::File { cache, .. } => Ok(cache.check().await?),
            Store::Snapshot { .. } => Ok(()),
            Store::Postgres(db) => Ok(db.check().await?),
        }
    }
}
