//! The beat store on PostgreSQL: the leader lock and last fires behave as on memory and Redis.

use std::sync::Arc;

use taskq_postgres::PostgresBeatStore;

use super::support::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_lock_is_taken_extended_and_released_by_its_owner_only() {
    let store = PostgresBeatStore::connect(config()).await.unwrap();
    taskq_testkit::beat_store_suite::lock_behaviour(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_fire_never_moves_backwards() {
    let store = PostgresBeatStore::connect(config()).await.unwrap();
    taskq_testkit::beat_store_suite::last_fire_never_moves_backwards(Arc::new(store)).await;
}
