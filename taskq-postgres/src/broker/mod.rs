//! [`PostgresBroker`]: every broker role on PostgreSQL. Each transition is one statement or
//! one call of a function the migrations installed (`fetch`, `requeue`, `dead_letter`,
//! `recover`, …, like the Redis broker's Lua scripts), so each is atomic; wake-ups come by
//! LISTEN/NOTIFY (one notification per statement, not per message), with a slow poll behind
//! them.

mod catalog;
mod control;
mod inspector;
mod membership;
mod rate_limiter;
mod transport;

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use sqlx::PgPool;
use taskq_core::{Broker, Clock, Membership, Result};
use tokio::sync::Notify;

use crate::{
    config::PostgresConfig,
    listen::{self, ListenTask},
    pool,
    schema::Names,
};

/// The PostgreSQL broker; cheap to clone.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use taskq_postgres::{PostgresBroker, PostgresConfig};
/// let config = PostgresConfig::new("postgres://app@127.0.0.1:5432/app?migrate=auto")?;
/// let broker = PostgresBroker::connect(config).await?;
/// # let _ = broker;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pool: PgPool,
    config: PostgresConfig,
    names: Names,
    /// Statements with the schema filled in, made once.
    sql: transport::Statements,
    /// Woken when messages become ready (any queue): idle fetches look again.
    ready: Arc<Notify>,
    /// The server's clock minus the host's, in milliseconds.
    correction: Arc<AtomicI64>,
    _listening: ListenTask,
}

impl PostgresBroker {
    /// Connects to the database in `config`, checking (or, with `migrate=auto`, migrating)
    /// its schema, and starts listening for wake-ups.
    ///
    /// # Errors
    ///
    /// [`taskq_core::Error::Broker`] naming the database when it cannot be reached,
    /// [`taskq_core::Error::Invalid`] when its schema is not at this build's version.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let pool = pool::open(&config).await?;
        let names = Names::new(config.schema());
        let ready = Arc::new(Notify::new());
        let woken = ready.clone();
        let listening = listen::spawn(
            pool.clone(),
            vec![(
                names.ready.clone(),
                Arc::new(move |_: &str| woken.notify_waiters()),
            )],
        );
        let correction = Arc::new(AtomicI64::new(pool::clock_offset(&pool).await?));
        Ok(Self {
            shared: Arc::new(Shared {
                sql: transport::Statements::new(&names),
                pool,
                config,
                names,
                ready,
                correction,
                _listening: listening,
            }),
        })
    }

    /// `broker` as a PostgreSQL broker, when it is one (the one place that downcasts).
    pub fn of(broker: &dyn Broker) -> Option<&Self> {
        broker.as_any()?.downcast_ref::<Self>()
    }

    /// The pool statements go through, for transactional enqueue and tests.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// The configuration it was made from.
    pub fn config(&self) -> &PostgresConfig {
        &self.shared.config
    }

    fn names(&self) -> &Names {
        &self.shared.names
    }

    /// The database's clock, as the host sees it (corrected by the measured offset).
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
            + chrono::Duration::milliseconds(self.shared.correction.load(Ordering::Relaxed))
    }

    fn server_clock(&self) -> Clock {
        Clock::system().corrected(self.shared.correction.clone())
    }
}

impl Broker for PostgresBroker {
    fn membership(&self) -> Option<&dyn Membership> {
        Some(self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// `duration` in whole milliseconds, saturating.
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
