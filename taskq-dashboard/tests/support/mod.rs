//! What the dashboard tests share: a deployment (a redis-server or a PostgreSQL server, a
//! client, a worker running [`Double`]) and a dashboard served on a free loopback port.

#![allow(dead_code)] // each test binary uses its own part

use std::{collections::HashSet, net::SocketAddr, sync::Mutex, time::Duration};

use serde::{Deserialize, Serialize};
use taskq_core::{Client, Run, Task, TaskContext, TaskError, TaskId};
use taskq_dashboard::Dashboard;
use taskq_testkit::{PostgresServer, RedisServer};
use taskq_worker::Worker;

/// Stops a spawned server or worker when dropped.
pub(crate) struct Stop(tokio::task::JoinHandle<()>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ids of `once` tasks that already failed.
static FAILED_ONCE: Mutex<Option<HashSet<TaskId>>> = Mutex::new(None);

/// Succeeds with its input doubled; fails permanently on 13.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "dash.double", queue = "dash", max_retries = 0)]
pub(crate) struct Double {
    pub(crate) n: i64,
    #[serde(default)]
    pub(crate) note: String,
}

impl Run for Double {
    type Output = i64;
    async fn run(self, ctx: TaskContext) -> Result<i64, TaskError> {
        if self.n == 13 {
            return Err(TaskError::permanent(format!("unlucky: {}", self.note)));
        }
        // `once`: fails its first run only (a requeued dead letter then succeeds).
        if self.note == "once"
            && FAILED_ONCE
                .lock()
                .unwrap()
                .get_or_insert_with(HashSet::new)
                .insert(ctx.id())
        {
            return Err(TaskError::permanent("failing once"));
        }
        Ok(self.n * 2)
    }
}

pub(crate) struct Deployment {
    pub(crate) server: RedisServer,
    pub(crate) client: Client,
    _worker: Stop,
}

pub(crate) async fn deployment() -> Deployment {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.expect("connect");
    let worker = worker_for(client.clone());
    Deployment {
        server,
        client,
        _worker: worker,
    }
}

/// The same on a private PostgreSQL server (the broker, result backend and history in one
/// schema).
pub(crate) async fn postgres_deployment() -> (PostgresServer, Client, Stop) {
    let server = PostgresServer::start();
    let url = format!("{}&migrate=auto", server.fresh_url());
    let client = taskq::connect(&url).await.expect("connect");
    let worker = worker_for(client.clone());
    (server, client, worker)
}

/// A worker running [`Double`] on `client`, stopped when the returned [`Stop`] is dropped.
fn worker_for(client: Client) -> Stop {
    let worker = Worker::builder(client)
        .register::<Double>()
        .build()
        .unwrap();
    Stop(tokio::spawn(async move {
        let _ = worker.run(std::future::pending::<()>()).await;
    }))
}

/// Serves `dashboard` on a free loopback port.
pub(crate) async fn serve(dashboard: Dashboard) -> (SocketAddr, Stop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let service = dashboard
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    (address, Stop(handle))
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let response = http()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

pub(crate) async fn post(address: SocketAddr, path: &str, csrf: &str) -> u16 {
    http()
        .post(format!("http://{address}{path}"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The CSRF token a page's forms carry.
pub(crate) fn csrf_of(html: &str) -> String {
    let start = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

pub(crate) async fn settled(client: &Client, queue: &str, dead: usize) {
    for _ in 0..200 {
        let stats = client.inspector().stats(queue).await.unwrap();
        if stats.pending + stats.processing + stats.scheduled == 0 && stats.dead == dead {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("queue {queue} did not settle");
}
