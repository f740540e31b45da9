//! Enqueue inside the application's own transaction: the same builder as always, written
//! through the caller's connection or transaction instead of the pool, so that the task
//! exists if and only if the transaction commits (and its NOTIFY, sent at commit, wakes the
//! workers only then). One statement; no second connection.

use async_trait::async_trait;
use sqlx::PgConnection;
use taskq_core::{
    workflow::{Chain, ChainResult, Group, GroupResult, PreparedWorkflow},
    AsyncResult, Client, Enqueue, Error, Prepared, Result, Run, Sent,
};

use crate::{PostgresBroker, PostgresResultBackend};

/// `client.enqueue(task).within(&mut tx)`: the task exists if and only if the transaction
/// commits (its NOTIFY is sent at commit too); one statement, no second connection.
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
        let broker = postgres_broker(&prepared)?;
        let holder = broker
            .write_within(conn, prepared.message(), prepared.unique())
            .await?;
        Ok(prepared.written(holder))
    }
}

/// The client's broker, when it is PostgreSQL.
fn postgres_broker<'b, O>(prepared: &'b Prepared<'_, O>) -> Result<&'b PostgresBroker> {
    PostgresBroker::of(prepared.broker().as_ref()).ok_or_else(|| Error::Invalid {
        what: "transactional enqueue",
        reason: "the client's broker is not PostgreSQL: a transaction of this database \
                     cannot hold its tasks"
            .into(),
    })
}

/// Bulk enqueue inside the application's transaction: `client.enqueue_many_within(&mut tx,
/// tasks)`, one statement for every invocation (each task's declared options apply; a task
/// that declares uniqueness is written one claim at a time).
#[async_trait]
pub trait EnqueueManyWithin {
    /// Writes one invocation per element of `tasks` through `conn`; their handles, in order.
    ///
    /// # Errors
    ///
    /// As [`EnqueueWithin::within`].
    async fn enqueue_many_within<T: Run>(
        &self,
        conn: &mut PgConnection,
        tasks: Vec<T>,
    ) -> Result<Vec<AsyncResult<T::Output>>>;
}

#[async_trait]
impl EnqueueManyWithin for Client {
    async fn enqueue_many_within<T: Run>(
        &self,
        conn: &mut PgConnection,
        tasks: Vec<T>,
    ) -> Result<Vec<AsyncResult<T::Output>>> {
        let mut prepared = Vec::with_capacity(tasks.len());
        for task in tasks {
            prepared.push(self.enqueue(task).prepare().await?);
        }
        let Some(first) = prepared.first() else {
            return Ok(Vec::new());
        };
        let broker = postgres_broker(first)?.clone();
        if first.unique().is_some() {
            let mut handles = Vec::with_capacity(prepared.len());
            for one in prepared {
                let holder = broker
                    .write_within(&mut *conn, one.message(), one.unique())
                    .await?;
                handles.push(one.written(holder).into_handle());
            }
            return Ok(handles);
        }
        let messages: Vec<&taskq_core::OutboundMessage> =
            prepared.iter().map(Prepared::message).collect();
        broker.write_many_within(&mut *conn, &messages).await?;
        Ok(prepared
            .into_iter()
            .map(|one| one.written(None).into_handle())
            .collect())
    }
}

/// Workflows inside the application's transaction: `client.send_chain_within(&mut tx,
/// chain)`: the workflow's records and its first steps are written through `conn`, so the
/// whole workflow exists if and only if the transaction commits.
#[async_trait]
pub trait WorkflowWithin {
    /// [`Client::send_chain`] through `conn`.
    ///
    /// # Errors
    ///
    /// As [`Client::send_chain`]; [`Error::Invalid`] unless both the client's broker and its
    /// result backend are PostgreSQL in one schema.
    async fn send_chain_within<O: Send + 'static>(
        &self,
        conn: &mut PgConnection,
        chain: Chain<O>,
    ) -> Result<ChainResult<O>>;

    /// [`Client::send_group`] through `conn`.
    ///
    /// # Errors
    ///
    /// As [`WorkflowWithin::send_chain_within`].
    async fn send_group_within<O: Send + 'static>(
        &self,
        conn: &mut PgConnection,
        group: Group<O>,
    ) -> Result<GroupResult<O>>;
}

#[async_trait]
impl WorkflowWithin for Client {
    async fn send_chain_within<O: Send + 'static>(
        &self,
        conn: &mut PgConnection,
        chain: Chain<O>,
    ) -> Result<ChainResult<O>> {
        let prepared = self.prepare_chain(chain).await?;
        write_workflow(conn, &prepared).await?;
        Ok(prepared.into_handle())
    }

    async fn send_group_within<O: Send + 'static>(
        &self,
        conn: &mut PgConnection,
        group: Group<O>,
    ) -> Result<GroupResult<O>> {
        let prepared = self.prepare_group(group).await?;
        write_workflow(conn, &prepared).await?;
        Ok(prepared.into_handle())
    }
}

/// Writes a prepared workflow through `conn`: records, then messages, then ended records.
async fn write_workflow<H>(conn: &mut PgConnection, prepared: &PreparedWorkflow<H>) -> Result<()> {
    let refused = |why: &str| Error::Invalid {
        what: "transactional workflow",
        reason: why.to_owned(),
    };
    let broker = PostgresBroker::of(prepared.broker().as_ref())
        .ok_or_else(|| refused("the client's broker is not PostgreSQL"))?;
    let backend = prepared
        .backend()
        .as_any()
        .and_then(|any| any.downcast_ref::<PostgresResultBackend>())
        .ok_or_else(|| refused("the client's result backend is not PostgreSQL"))?;
    if backend.schema() != broker.config().schema() {
        return Err(refused(
            "the client's broker and result backend are in different schemas",
        ));
    }
    broker
        .write_workflow_within(&mut *conn, prepared.records(), prepared.ttl())
        .await?;
    let messages: Vec<&taskq_core::OutboundMessage> = prepared.messages().iter().collect();
    if !messages.is_empty() {
        broker.write_many_within(&mut *conn, &messages).await?;
    }
    if !prepared.ended().is_empty() {
        backend
            .store_through(&mut *conn, prepared.ended(), prepared.ttl())
            .await?;
    }
    Ok(())
}
