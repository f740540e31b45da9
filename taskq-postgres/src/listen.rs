//! One LISTEN connection per broker or backend, turned into wake-ups: a notification on a
//! channel calls its handler; a lost connection is opened again, and every handler is called
//! once after, since notifications sent meanwhile are gone (the waiters look again).

use std::{sync::Arc, time::Duration};

use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::watch;

/// What a notification on one channel does.
pub(crate) type Handler = Arc<dyn Fn(&str) + Send + Sync>;

/// Listens on `channels` in the background until the returned handle is dropped.
pub(crate) fn spawn(pool: PgPool, channels: Vec<(String, Handler)>) -> ListenTask {
    let (listening, ready) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut missed = false;
        loop {
            match listen(&pool, &channels, missed, &listening).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "postgres LISTEN connection lost; opening it again");
                    missed = true;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    ListenTask { task, ready }
}

async fn listen(
    pool: &PgPool,
    channels: &[(String, Handler)],
    missed: bool,
    listening: &watch::Sender<bool>,
) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    let names: Vec<&str> = channels.iter().map(|(name, _)| name.as_str()).collect();
    listener.listen_all(names).await?;
    listening.send_replace(true);
    if missed {
        for (_, handler) in channels {
            handler("");
        }
    }
    loop {
        // `None`: the connection was lost (the next call opens it again), and with it what
        // was sent meanwhile.
        let Some(notification) = listener.try_recv().await? else {
            for (_, handler) in channels {
                handler("");
            }
            continue;
        };
        if let Some((_, handler)) = channels
            .iter()
            .find(|(name, _)| name == notification.channel())
        {
            handler(notification.payload());
        }
    }
}

/// The listening task; it stops when this is dropped.
#[derive(Debug)]
pub(crate) struct ListenTask {
    task: tokio::task::JoinHandle<()>,
    ready: watch::Receiver<bool>,
}

impl ListenTask {
    /// Completes once the channels are listened to (or after 10 s, when the database does not
    /// answer: the caller goes on, and the listener keeps trying).
    pub(crate) async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|ready| *ready)).await;
    }
}

impl Drop for ListenTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}
