//! The memory broker's task catalog: a map in the broker's state.

use async_trait::async_trait;

use super::MemoryBroker;
use crate::{
    broker::{TaskCatalog, TaskDeclaration},
    error::Result,
};

#[async_trait]
impl TaskCatalog for MemoryBroker {
    async fn publish_tasks(&self, declarations: &[TaskDeclaration]) -> Result<()> {
        let mut state = self.lock();
        for declaration in declarations {
            state
                .declarations
                .insert(declaration.name.clone(), declaration.clone());
        }
        Ok(())
    }

    async fn task_declaration(&self, name: &str) -> Result<Option<TaskDeclaration>> {
        Ok(self.lock().declarations.get(name).cloned())
    }

    async fn task_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.lock().declarations.keys().cloned().collect();
        names.sort();
        Ok(names)
    }
}
