//! Idle waiting on a cluster: blocking pops on the queues' wake-up tokens, one per slot. (On
//! one server a worker's pop and its fetch share one pipeline instead; see
//! `RedisBroker::wait_then_fetch`.)
//!
//! The wake lists of queues in different slots cannot share a command, so each slot gets its
//! own blocking pop on its own connection, and the first token to arrive wins. The others stay in
//! flight for the next wait instead of being cancelled (a cancelled pop may still take a token
//! on the server); a token taken while nobody waits on that slot is pushed back, so it wakes
//! someone else.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use taskq_core::Result;

use crate::{
    conn::Conn,
    error::redis_error,
    server::{by_slot, Server},
};

/// Wake lists grouped so that each group is one blocking command.
type GroupKey = Vec<String>;

/// The blocking connections and their pops in flight.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    state: tokio::sync::Mutex<HashMap<GroupKey, Group>>,
    /// Groups someone is waiting on now: a token popped for another group goes back.
    waiting: Arc<Mutex<HashSet<GroupKey>>>,
}

#[derive(Debug)]
struct Group {
    conn: Conn,
    in_flight: Option<JoinHandle<Result<bool>>>,
}

impl Wakers {
    /// Waits up to `wait` for a token on any of `wake_keys`; true when one arrived.
    /// `connect` opens a blocking connection (its response timeout exceeds `wait`).
    pub(crate) async fn wait(
        &self,
        server: &Server,
        connect_timeout: Duration,
        wake_keys: Vec<String>,
        wait: Duration,
    ) -> Result<bool> {
        let groups = by_slot(server.is_cluster(), wake_keys, |key| key.as_str());
        let mut state = self.state.lock().await;
        let _waiting = WaitingGuard::new(&self.waiting, &groups);
        let mut handles = Vec::with_capacity(groups.len());
        for keys in &groups {
            if !state.contains_key(keys) {
                let conn = server.connect(connect_timeout).await?;
                state.insert(
                    keys.clone(),
                    Group {
                        conn,
                        in_flight: None,
                    },
                );
            }
            let group = state.get_mut(keys).expect("inserted above");
            if group.in_flight.is_none() {
                group.in_flight = Some(tokio::spawn(pop(
                    group.conn.clone(),
                    keys.clone(),
                    wait,
                    self.waiting.clone(),
                )));
            }
        }
        // Take the handles out to wait on them together, then put back the unfinished ones.
        for keys in &groups {
            let group = state.get_mut(keys).expect("present");
            handles.push((keys.clone(), group.in_flight.take().expect("spawned")));
        }
        let (first, index, rest) =
            futures_util::future::select_all(handles.iter_mut().map(|(_, h)| h)).await;
        drop(rest);
        // A pop that panicked counts as an empty wait; a failed one is reported.
        let woke = first.unwrap_or(Ok(false));
        for (position, (keys, handle)) in handles.into_iter().enumerate() {
            if position == index {
                continue;
            }
            let group = state.get_mut(&keys).expect("present");
            if handle.is_finished() {
                // Popped a token together with the winner: give it to someone else.
                if matches!(handle.await, Ok(Ok(true))) {
                    push_back(&mut group.conn, &keys[0]).await?;
                }
            } else {
                group.in_flight = Some(handle);
            }
        }
        woke
    }
}

/// Marks groups as waited on for as long as it lives.
struct WaitingGuard<'a> {
    waiting: &'a Mutex<HashSet<GroupKey>>,
    groups: Vec<GroupKey>,
}

impl<'a> WaitingGuard<'a> {
    fn new(waiting: &'a Mutex<HashSet<GroupKey>>, groups: &[GroupKey]) -> Self {
        waiting.lock().extend(groups.iter().cloned());
        Self {
            waiting,
            groups: groups.to_vec(),
        }
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock();
        for group in &self.groups {
            waiting.remove(group);
        }
    }
}

/// One blocking pop; a token that arrives when nobody waits on `keys` is pushed back.
async fn pop(
    mut conn: Conn,
    keys: GroupKey,
    wait: Duration,
    waiting: Arc<Mutex<HashSet<GroupKey>>>,
) -> Result<bool> {
    let token: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
        .arg(&keys)
        .arg(wait.as_secs_f64())
        .query_async(&mut conn)
        .await;
    match token {
        Ok(Some((key, _))) => {
            if waiting.lock().contains(&keys) {
                return Ok(true);
            }
            push_back(&mut conn, &key).await?;
            Ok(false)
        }
        Ok(None) => Ok(false),
        Err(err) => Err(redis_error(err)),
    }
}

/// Puts one wake-up token back on `wake` (at most one is ever kept).
pub(crate) async fn push_back(conn: &mut Conn, wake: &str) -> Result<()> {
    redis::pipe()
        .lpush(wake, 1)
        .ignore()
        .ltrim(wake, 0, 0)
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(redis_error)
}
