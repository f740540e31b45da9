//! Enqueue inside the application's own transaction: the same builder as always, written
//! through the caller's connection or transaction instead of the pool, so that the task
//! exists if and only if the transaction commits (and its NOTIFY, sent at commit, wakes the
//! workers only then). One statement; no second connection.

use async_trait::async_trait;
use sqlx::PgConnection;
use taskq_core::{AsyncResult, Enqueue, Error, Result, Sent};

use crate::PostgresBroker;

/// `client.enqueue(task).within(&mut tx)`: see the [module](self) and the README.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use taskq_postgres::EnqueueWithin;
/// let client = taskq_postgres::client(
///     taskq_postgres::PostgresConfig::new("postgres://app@127.0.0.1/app?migrate=auto")?,
/// ).await?;
/// let pool = taskq_postgres::pool_of(&client).expect("a PostgreSQL client").clone();
/// let mut tx = pool.begin().await.expect("begin");
/// // … the application's own writes in `tx` …
/// let receipt = client
///     .enqueue_by_name("emails.receipt", &serde_json::json!({"order": 42}))
///     .within(&mut tx)
///     .await?;
/// tx.commit().await.expect("commit"); // the task exists from here on, and only if this commits
/// # let _ = receipt;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait EnqueueWithin<O> {
    /// Writes the enqueue through `conn` (a transaction, usually) and returns its handle; a
    /// unique enqueue whose key is held returns the holder's handle.
    ///
    /// # Errors
    ///
    /// As [`Enqueue::send`]; [`Error::Invalid`] when the client's broker is not PostgreSQL
    /// (use an outbox there).
    async fn within(self, conn: &mut PgConnection) -> Result<AsyncResult<O>>;

    /// As [`EnqueueWithin::within`], saying whether it enqueued or found a unique key held.
    ///
    /// # Errors
    ///
    /// As [`EnqueueWithin::within`].
    async fn send_within(self, conn: &mut PgConnection) -> Result<Sent<O>>;
}

#[async_trait]
impl<'a, O: Send + 'a> EnqueueWithin<O> for Enqueue<'a, O> {
    async fn within(self, conn: &mut PgConnection) -> Result<AsyncResult<O>> {
        self.send_within(conn).await.map(Sent::into_handle)
    }

    async fn send_within(self, conn: &mut PgConnection) -> Result<Sent<O>> {
        let prepared = self.prepare().await?;
        let broker = prepared
            .broker()
            .as_any()
            .and_then(|any| any.downcast_ref::<PostgresBroker>())
            .ok_or_else(|| Error::Invalid {
                what: "transactional enqueue",
                reason: "the client's broker is not PostgreSQL: a transaction of this database \
                         cannot hold its tasks"
                    .into(),
            })?;
        let holder = broker
            .write_within(conn, prepared.message(), prepared.unique())
            .await?;
        Ok(prepared.written(holder))
    }
}
