//! Beat store behaviour every implementation must show (the leader lock, last fires), written
//! once and run on memory, Redis and PostgreSQL.

use std::{sync::Arc, time::Duration};

use taskq_core::BeatStore;

/// The leader lock: acquire, extend by owner only, release by owner only, takeover after
/// expiry (sleeps 700 ms: run on a paused clock for the memory store).
pub async fn lock_behaviour(store: Arc<dyn BeatStore>) {
    let ttl = Duration::from_millis(500);
    assert!(store.try_acquire("a", ttl).await.unwrap());
    assert!(!store.try_acquire("b", ttl).await.unwrap(), "held by a");
    assert!(store.extend("a", ttl).await.unwrap());
    assert!(!store.extend("b", ttl).await.unwrap(), "b does not own it");
    store.release("b").await.unwrap();
    assert!(
        !store.try_acquire("b", ttl).await.unwrap(),
        "release by a non-owner changes nothing"
    );
    // Let it expire without extension: b takes over, and a can no longer extend.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(store.try_acquire("b", ttl).await.unwrap());
    assert!(!store.extend("a", ttl).await.unwrap(), "a lost it");
    store.release("b").await.unwrap();
    assert!(
        store.try_acquire("a", ttl).await.unwrap(),
        "released by its owner"
    );
}

/// A last fire never moves backwards (a late writer cannot make the beat fire a slot again).
pub async fn last_fire_never_moves_backwards(store: Arc<dyn BeatStore>) {
    let later: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:10Z".parse().unwrap();
    let earlier: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:05Z".parse().unwrap();
    assert_eq!(store.last_fire("e").await.unwrap(), None);
    store.set_last_fire("e", later).await.unwrap();
    store.set_last_fire("e", earlier).await.unwrap();
    assert_eq!(store.last_fire("e").await.unwrap(), Some(later));
}
