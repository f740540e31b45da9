//! Running tasks as the broker sees them: the messages workers hold (`taskq active`), and how
//! `taskq result` words one of them that has no record yet (`Client::find_held` finds it).
//! Tasks record STARTED only with `track_started`; a worker's processing list knows either way.

use serde_json::json;
use taskq_core::{Client, HeldMessage, PayloadFields, TaskId};

use crate::{table, Failure};

/// Most held messages listed per queue by `taskq active`.
const HELD_LISTED: usize = 10_000;

/// What `taskq result` says of a held task without a record.
pub(crate) fn describe(id: TaskId, queue: &str, held: &HeldMessage, json: bool) -> String {
    if json {
        return json!({
            "id": id,
            "state": "RECEIVED",
            "queue": queue,
            "worker": held.worker,
            "task": PayloadFields::read(&held.payload).task,
        })
        .to_string();
    }
    format!(
        "RECEIVED: held by worker {} on queue {queue}, running or about to run (the task \
         records no STARTED; `track_started` would)",
        held.worker
    )
}

/// `taskq active [--queue Q]`: every held message, with its worker.
pub(crate) async fn active(
    client: &Client,
    queue: Option<String>,
    json: bool,
) -> Result<String, Failure> {
    let broker = client.broker();
    if !broker.sees_held() {
        return Err("this broker does not show the messages workers hold (RabbitMQ without \
                    its management plugin); tasks with track_started show STARTED in `taskq result`"
            .into());
    }
    let queues = match queue {
        Some(queue) => vec![queue],
        None => broker.queues().await?,
    };
    let mut rows = Vec::new();
    let mut listed = Vec::new();
    for queue in queues {
        for held in broker.held(&queue, HELD_LISTED).await? {
            let fields = PayloadFields::read(&held.payload);
            let id = fields.id.map(|id| id.to_string()).unwrap_or_default();
            let task = fields.task.unwrap_or_default();
            listed.push(json!({"id": id, "task": task, "queue": queue, "worker": held.worker}));
            rows.push(vec![id, task, queue.clone(), held.worker]);
        }
    }
    Ok(if json {
        serde_json::Value::Array(listed).to_string()
    } else if rows.is_empty() {
        "no task is held by a worker".to_owned()
    } else {
        table::render(&["ID", "TASK", "QUEUE", "WORKER"], &rows)
    })
}
