//! The schema: versioned migrations shipped with the crate, applied by an explicit call
//! ([`migrate`], `taskq postgres migrate`) or at connect when the URL says `migrate=auto`, in
//! one transaction under an advisory lock, so that two processes migrating at once apply
//! each version once.

use sqlx::{Executor, PgPool, Row};
use taskq_core::{Error, Result};

use crate::error::pg_error;

/// Every migration, in order: (version, SQL with the schema and channels left as `@s`,
/// `@ready`, `@control`, `@results`, `@outbox`).
const MIGRATIONS: [(i32, &str); 7] = [
    (1, include_str!("../migrations/0001_queue.sql")),
    (2, include_str!("../migrations/0002_beat.sql")),
    (3, include_str!("../migrations/0003_workflows.sql")),
    (4, include_str!("../migrations/0004_outbox.sql")),
    (5, include_str!("../migrations/0005_outbox_lease.sql")),
    (
        6,
        include_str!("../migrations/0006_partitions_and_flow.sql"),
    ),
    (7, include_str!("../migrations/0007_outcomes.sql")),
];

/// The version this build's statements expect.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The names taskq's statements use in one schema.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    /// The schema, quoted for splicing into statements.
    pub(crate) schema: String,
    /// Notified when messages become ready.
    pub(crate) ready: String,
    /// Carries control messages.
    pub(crate) control: String,
    /// Notified with a task id when its result is written.
    pub(crate) results: String,
    /// Notified when tasks are written to the outbox.
    pub(crate) outbox: String,
}

impl Names {
    pub(crate) fn new(schema: &str) -> Self {
        Self {
            schema: format!("\"{schema}\""),
            ready: format!("{schema}_ready"),
            control: format!("{schema}_control"),
            results: format!("{schema}_results"),
            outbox: format!("{schema}_outbox"),
        }
    }

    /// `sql` with the schema and channel placeholders filled in.
    pub(crate) fn fill(&self, sql: &str) -> String {
        sql.replace("@ready", &self.ready)
            .replace("@outbox", &self.outbox)
            .replace("@control", &self.control)
            .replace("@results", &self.results)
            .replace("@s", &self.schema)
    }
}

/// Brings `schema` to [`SCHEMA_VERSION`], creating it when missing; returns the version it
/// found.
///
/// # Errors
///
/// The database's error, e.g. no permission to create the schema.
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<i32> {
    let names = Names::new(schema);
    let mut tx = pool.begin().await.map_err(pg_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("taskq-migrate:{schema}"))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    let bookkeeping = names.fill(
        "CREATE SCHEMA IF NOT EXISTS @s;
         CREATE TABLE IF NOT EXISTS @s.schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    );
    // A plain string runs in the simple query protocol: several statements in one call.
    (&mut *tx)
        .execute(bookkeeping.as_str())
        .await
        .map_err(pg_error)?;
    let found = current_version(&mut tx, &names).await?;
    for (version, sql) in MIGRATIONS {
        if version <= found {
            continue;
        }
        let filled = names.fill(sql);
        (&mut *tx)
            .execute(filled.as_str())
            .await
            .map_err(pg_error)?;
        sqlx::query(&names.fill("INSERT INTO @s.schema_version (version) VALUES ($1)"))
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tracing::info!(schema, version, "applied taskq migration");
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(found)
}

/// Refuses a schema that is not at [`SCHEMA_VERSION`], naming the fix.
pub(crate) async fn check(pool: &PgPool, schema: &str) -> Result<()> {
    let names = Names::new(schema);
    // The catalog, not information_schema: a role without privileges on the schema must be
    // told so (by the next query), not that the schema is missing.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = $1 AND c.relname = 'schema_version')",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .map_err(pg_error)?;
    let found = if exists {
        let mut conn = pool.acquire().await.map_err(pg_error)?;
        current_version(&mut conn, &names).await?
    } else {
        0
    };
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    Err(Error::Invalid {
        what: "postgres schema",
        reason: format!(
            "schema `{schema}` is at taskq version {found}, this build needs {SCHEMA_VERSION}: \
             run `taskq postgres migrate --broker <url>` or add `migrate=auto` to the URL"
        ),
    })
}

async fn current_version(conn: &mut sqlx::PgConnection, names: &Names) -> Result<i32> {
    let row = sqlx::query(&names.fill("SELECT coalesce(max(version), 0) FROM @s.schema_version"))
        .fetch_one(&mut *conn)
        .await
        .map_err(pg_error)?;
    row.try_get::<i32, _>(0).map_err(pg_error)
}
