//! The PostgreSQL broker's task catalog: the latest declaration published per task name.

use async_trait::async_trait;
use taskq_core::{Error, Result, TaskCatalog, TaskDeclaration};

use super::PostgresBroker;
use crate::error::pg_error;

#[async_trait]
impl TaskCatalog for PostgresBroker {
    async fn publish_tasks(&self, declarations: &[TaskDeclaration]) -> Result<()> {
        if declarations.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = declarations.iter().map(|d| d.name.as_str()).collect();
        let bodies = declarations
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| Error::Serialize {
                what: "task declaration",
                source,
            })?;
        sqlx::query(&self.names().fill(
            "INSERT INTO @s.declarations (name, declaration)
             SELECT DISTINCT ON (name) name, declaration
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS d(name, declaration, ord)
             ORDER BY name, ord DESC
             ON CONFLICT (name) DO UPDATE SET declaration = EXCLUDED.declaration",
        ))
        .bind(names)
        .bind(bodies)
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn task_declaration(&self, name: &str) -> Result<Option<TaskDeclaration>> {
        let body: Option<String> = sqlx::query_scalar(
            &self
                .names()
                .fill("SELECT declaration FROM @s.declarations WHERE name = $1"),
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .map_err(pg_error)?;
        body.map(|body| {
            serde_json::from_str(&body).map_err(|source| Error::Deserialize {
                what: "task declaration",
                source,
            })
        })
        .transpose()
    }

    async fn task_names(&self) -> Result<Vec<String>> {
        sqlx::query_scalar(
            &self
                .names()
                .fill("SELECT name FROM @s.declarations ORDER BY name COLLATE \"C\""),
        )
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)
    }
}
