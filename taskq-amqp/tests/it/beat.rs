//! The beat store on RabbitMQ alone: one replica leads (the single active consumer holding
//! the token), a claimed slot is never claimed again, the state goes with the token to the
//! next leader, and leading outlasts the node's `consumer_timeout`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use taskq_amqp::{AmqpBeatStore, AmqpConfig};
use taskq_core::BeatStore;

use crate::support::config;

const TTL: Duration = Duration::from_secs(10);

fn slot(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

async fn store(config: &AmqpConfig) -> AmqpBeatStore {
    AmqpBeatStore::connect(config.clone()).await.unwrap()
}

/// Polls `store` until it leads, for up to five seconds.
async fn leads_soon(store: &AmqpBeatStore) -> bool {
    for _ in 0..50 {
        if store.try_acquire("b", TTL).await.unwrap() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_its_claims_go_to_the_next() {
    let config = config();
    let (a, b) = (store(&config).await, store(&config).await);
    assert!(
        a.try_acquire("a", TTL).await.unwrap(),
        "the first replica leads"
    );
    assert!(
        !b.try_acquire("b", TTL).await.unwrap(),
        "one leader at a time"
    );
    assert!(a.claims_fires());
    assert!(a.claim_fire("tick", slot(1)).await.unwrap());
    assert!(
        !a.claim_fire("tick", slot(1)).await.unwrap(),
        "a slot is claimed once"
    );
    assert!(a.claim_fire("tick", slot(2)).await.unwrap());
    a.set_last_fire("tock", slot(5)).await.unwrap();
    assert!(
        b.claim_fire("tick", slot(3)).await.is_err(),
        "a replica that does not lead claims nothing"
    );

    a.release("a").await.unwrap();
    assert!(
        leads_soon(&b).await,
        "the next replica leads once the first lets go"
    );
    assert_eq!(b.last_fire("tick").await.unwrap(), Some(slot(2)));
    assert_eq!(b.last_fire("tock").await.unwrap(), Some(slot(5)));
    assert!(
        !b.claim_fire("tick", slot(2)).await.unwrap(),
        "claimed by the last leader"
    );
    assert!(b.claim_fire("tick", slot(3)).await.unwrap());
    assert!(!a.extend("a", TTL).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_goes_away_hands_over_at_once_with_its_state() {
    let config = config();
    let (a, b) = (store(&config).await, store(&config).await);
    assert!(a.try_acquire("a", TTL).await.unwrap());
    assert!(!b.try_acquire("b", TTL).await.unwrap());
    assert!(a.claim_fire("tick", slot(7)).await.unwrap());
    // Its connection goes (as when its process dies): no lock expiry to wait for.
    a.close().await;
    assert!(leads_soon(&b).await);
    assert_eq!(b.last_fire("tick").await.unwrap(), Some(slot(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_outlasts_the_consumer_timeout() {
    // The node closes a channel that holds a delivery past 5 s, checking about once a minute.
    let config = config().with_consumer_timeout(Duration::from_secs(5));
    let (a, b) = (store(&config).await, store(&config).await);
    assert!(a.try_acquire("a", TTL).await.unwrap());
    assert!(a.claim_fire("tick", slot(1)).await.unwrap());
    let until = tokio::time::Instant::now() + Duration::from_secs(75);
    while tokio::time::Instant::now() < until {
        assert!(
            a.extend("a", TTL).await.unwrap(),
            "the leader lost its token"
        );
        assert!(!b.try_acquire("b", TTL).await.unwrap(), "two leaders");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(a.claim_fire("tick", slot(2)).await.unwrap());
}
