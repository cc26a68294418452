//! Serialising the events of one subscription inside this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::SubscriptionId;

/// Serialises the events of one subscription inside this process. Entries are dropped as soon as no
/// event of that subscription is in flight, so the map stays as small as the concurrency.
#[derive(Default)]
pub struct SubscriptionLocks {
    locks: Mutex<HashMap<SubscriptionId, Arc<tokio::sync::Mutex<()>>>>,
}

pub struct SubscriptionGuard<'a> {
    owner: &'a SubscriptionLocks,
    id: SubscriptionId,
    lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SubscriptionLocks {
    pub async fn lock(&self, id: &SubscriptionId) -> SubscriptionGuard<'_> {
        let mutex = {
            let mut locks = self.locks.lock().expect("lock map poisoned");
            locks.entry(id.clone()).or_default().clone()
        };
        let lock = mutex.lock_owned().await;
        SubscriptionGuard { owner: self, id: id.clone(), lock: Some(lock) }
    }
}

impl Drop for SubscriptionGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.owner.locks.lock().expect("lock map poisoned");
        drop(self.lock.take());
        // Only the map holds it now: nobody waits for this subscription.
        if locks.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn events_of_one_subscription_wait_for_each_other_and_locks_are_dropped_after() {
        let locks = Arc::new(SubscriptionLocks::default());
        let sub = SubscriptionId("sub_1".into());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (locks, sub, in_flight, most) =
                    (locks.clone(), sub.clone(), in_flight.clone(), most.clone());
                tokio::spawn(async move {
                    let _guard = locks.lock(&sub).await;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Another subscription is not held up meanwhile.
        drop(locks.lock(&SubscriptionId("sub_2".into())).await);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
        assert!(locks.locks.lock().unwrap().is_empty(), "no lock kept once nobody waits");
    }
}
