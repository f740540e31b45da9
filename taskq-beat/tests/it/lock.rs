//! The leader lock: acquire, extend by owner only, release by owner only, takeover after
//! expiry; on the memory store (paused clock) and on Redis (real time).

use std::sync::Arc;

use taskq_beat::MemoryBeatStore;
use taskq_redis::RedisBeatStore;
use taskq_testkit::RedisServer;

#[tokio::test(start_paused = true)]
async fn memory_lock() {
    taskq_testkit::beat_store_suite::lock_behaviour(Arc::new(MemoryBeatStore::new())).await;
}

#[tokio::test]
async fn redis_lock() {
    let server = RedisServer::start();
    taskq_testkit::beat_store_suite::lock_behaviour(Arc::new(
        RedisBeatStore::connect(&taskq_redis::RedisConfig::new(server.url()))
            .await
            .unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn redis_last_fire_never_moves_backwards() {
    let server = RedisServer::start();
    let store = RedisBeatStore::connect(&taskq_redis::RedisConfig::new(server.url()))
        .await
        .unwrap();
    taskq_testkit::beat_store_suite::last_fire_never_moves_backwards(Arc::new(store)).await;
}
