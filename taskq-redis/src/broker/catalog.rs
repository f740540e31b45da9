//! The Redis broker's task catalog: one hash, task name -> declaration (JSON).

use async_trait::async_trait;
use taskq_core::{Error, Result, TaskCatalog, TaskDeclaration};

use super::RedisBroker;
use crate::{error::redis_error, keys};

#[async_trait]
impl TaskCatalog for RedisBroker {
    async fn publish_tasks(&self, declarations: &[TaskDeclaration]) -> Result<()> {
        if declarations.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("HSET");
        command.arg(keys::TASKS);
        for declaration in declarations {
            let json = serde_json::to_string(declaration).map_err(|source| Error::Serialize {
                what: "task declaration",
                source,
            })?;
            command.arg(&declaration.name).arg(json);
        }
        command
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn task_declaration(&self, name: &str) -> Result<Option<TaskDeclaration>> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(keys::TASKS)
            .arg(name)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        json.map(|json| {
            serde_json::from_str(&json).map_err(|source| Error::Deserialize {
                what: "task declaration",
                source,
            })
        })
        .transpose()
    }

    async fn task_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = redis::cmd("HKEYS")
            .arg(keys::TASKS)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        names.sort();
        Ok(names)
    }
}
