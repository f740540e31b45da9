//! An HTTP service that enqueues a task per request and answers with its id at once, and a
//! route that reports the task's state and result.
//!
//! `cargo run --example axum_enqueue` (in-memory broker and an in-process worker), or
//! `TASKQ_BROKER=redis://127.0.0.1:6379 cargo run --example axum_enqueue` with a worker
//! elsewhere. Then:
//!
//! ```sh
//! curl -s -XPOST localhost:3000/emails -H 'content-type: application/json' \
//!      -d '{"to":"ada@example.com","subject":"Hi"}'          # {"id":"…"}
//! curl -s localhost:3000/tasks/<id>                           # {"state":"SUCCESS",…}
//! ```

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use taskq::prelude::*;

/// Sends an email (pretends to).
#[derive(Task, Serialize, Deserialize)]
#[task(name = "emails.send", queue = "emails", max_retries = 5)]
struct SendEmail {
    to: String,
    subject: String,
}

impl Run for SendEmail {
    type Output = String;
    async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        Ok(format!("sent `{}` to {}", self.subject, self.to))
    }
}

/// `POST /emails`: enqueue and return the id; the request does not wait for the task.
async fn send(
    State(client): State<Client>,
    Json(email): Json<SendEmail>,
) -> Result<(StatusCode, Json<serde_json::Value>), (StatusCode, String)> {
    let handle = client
        .enqueue(email)
        .await
        .map_err(|err| (StatusCode::SERVICE_UNAVAILABLE, taskq::error_chain(&err)))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": handle.id() })),
    ))
}

/// `GET /tasks/{id}`: the task's record (PENDING while nothing is known).
async fn task(
    State(client): State<Client>,
    Path(id): Path<TaskId>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let record = client
        .result(id)
        .await
        .map_err(|err| (StatusCode::SERVICE_UNAVAILABLE, taskq::error_chain(&err)))?;
    Ok(Json(match record {
        Some(record) => serde_json::to_value(record).unwrap_or_default(),
        None => serde_json::json!({ "id": id, "state": "PENDING" }),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("TASKQ_BROKER").unwrap_or_else(|_| "memory://".into());
    let client = Client::connect(&url).await?;
    if url.starts_with("memory") {
        // The in-memory broker lives in this process, so its worker must too.
        let worker = Worker::builder(client.clone())
            .register::<SendEmail>()
            .build()?;
        tokio::spawn(worker.run(std::future::pending::<()>()));
    }
    let app = Router::new()
        .route("/emails", post(send))
        .route("/tasks/{id}", get(task))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000 (broker {url})");
    axum::serve(listener, app).await?;
    Ok(())
}
