//! Control messages: broadcast to every worker rather than delivered to one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TaskId;

/// A message on the control channel (Redis pub/sub `taskq:control`, an in-process broadcast
/// channel for the memory broker). Workers act on `Ping` and `Revoke`; everyone may listen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlMessage {
    /// Every live worker answers with a [`ControlMessage::Pong`] carrying `nonce`.
    Ping {
        /// Chosen by the pinger to recognise the answers.
        nonce: String,
    },
    /// A worker's answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: String,
        /// The answering worker.
        worker: String,
        /// When the worker answered.
        at: DateTime<Utc>,
    },
    /// Do not run `id`; with `terminate`, also stop it if it is running.
    Revoke {
        /// The task.
        id: TaskId,
        /// Stop a running execution too.
        terminate: bool,
    },
}

/// What a worker publishes about itself for operators, refreshed with every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queues consumed, in order of preference.
    pub queues: Vec<String>,
    /// Most executions at once.
    pub concurrency: usize,
    /// Executions running now.
    pub in_flight: usize,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
    /// When this record was written.
    pub last_heartbeat: DateTime<Utc>,
}

impl WorkerInfo {
    /// A record for worker `id` of this process.
    pub fn new(
        id: &str,
        queues: Vec<String>,
        concurrency: usize,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            host: id.split(':').next().unwrap_or_default().to_owned(),
            pid: std::process::id(),
            queues,
            concurrency,
            in_flight: 0,
            started_at,
            last_heartbeat: started_at,
        }
    }
}
