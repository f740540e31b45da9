//! The client's workflow calls: send a chain or a group, read a workflow's record, revoke one.

use super::{
    flow::chain_output_id,
    plan::{invalid, Context, Plan},
    Chain, ChainResult, Group, GroupNode, GroupResult, Node, WorkflowKind, WorkflowRecord,
};
use crate::{Client, Result, TaskId};

impl Client {
    /// Sends a workflow made of `nodes` run one after another; the root record lists every id
    /// under `root`.
    async fn send_workflow(
        &self,
        root: TaskId,
        kind: WorkflowKind,
        mut nodes: Vec<Node>,
    ) -> Result<WorkflowRecord> {
        self.check_workflows_supported()?;
        self.resolve(&mut nodes).await?;
        if let Some(keys) = self.encryption() {
            // Later steps travel in flows and group records: sealed like any task's arguments.
            for node in &mut nodes {
                node.signatures_mut(&mut |signature| signature.seal_args(keys));
            }
        }
        let mut all = Vec::new();
        for node in &nodes {
            node.task_ids(&mut all);
        }
        let members = match (kind, nodes.first()) {
            (WorkflowKind::Chain, _) => nodes.iter().map(Node::output_id).collect(),
            (_, Some(Node::Group(group))) => group
                .members
                .iter()
                .filter_map(|member| chain_output_id(member))
                .collect(),
            _ => Vec::new(),
        };
        let record = WorkflowRecord {
            id: root,
            kind,
            members,
            all,
            then: Vec::new(),
            member_of: None,
            root: Some(root),
            created_at: self.clock().now(),
            settled: false,
        };
        let Some((first, rest)) = nodes.split_first() else {
            return Err(invalid("a workflow needs at least one step"));
        };
        let mut plan = Plan::default();
        let context = Context {
            root: Some(root),
            then: rest.to_vec(),
            member_of: None,
        };
        self.spawn(&mut plan, first, None, context)?;
        // A group's root record is the group's own record (it holds the continuation).
        match plan.groups.iter_mut().find(|group| group.id == root) {
            Some(group) => {
                group.all = record.all.clone();
                group.kind = kind;
            }
            None => plan.groups.push(record.clone()),
        }
        self.commit(plan, false, self.workflow_ttl()).await?;
        Ok(record)
    }

    /// Sends a chain (or a chord: a group followed by steps). Every id is assigned and the
    /// workflow's record is written before the first step is enqueued.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use serde::{Deserialize, Serialize};
    /// use taskq_core::{workflow::chain, Client, Run, Task, TaskContext, TaskError};
    ///
    /// #[derive(Task, Serialize, Deserialize)]
    /// #[task(name = "math.double")]
    /// struct Double { #[task(input)] n: i64 }
    /// impl Run for Double {
    ///     type Output = i64;
    ///     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.n * 2) }
    /// }
    ///
    /// let client = Client::in_memory();
    /// let sent = client
    ///     .send_chain(chain(Double { n: 1 }).then(Double { n: 0 }).then(Double { n: 0 }))
    ///     .await?;
    /// assert_eq!(client.inspector().stats("default").await?.pending, 1, "one step at a time");
    /// assert_eq!(client.workflow(sent.id()).await?.unwrap().members.len(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Encoding and validation errors ([`Error::Invalid`](crate::Error::Invalid) for an empty
    /// chain or group, or a bad name), or the broker's or backend's error.
    pub async fn send_chain<O>(&self, chain: Chain<O>) -> Result<ChainResult<O>> {
        let nodes = chain.into_nodes()?;
        let (root, kind) = match nodes.first() {
            Some(Node::Group(group)) => (group.id, WorkflowKind::Chord),
            _ => (TaskId::new(), WorkflowKind::Chain),
        };
        let last = nodes.last().map(Node::output_id).unwrap_or(root);
        self.send_workflow(root, kind, nodes).await?;
        Ok(ChainResult {
            id: root,
            last: self.result_handle(last),
        })
    }

    /// Sends a group: every member is enqueued at once (in one broker call).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use taskq_core::{workflow::{Group, Signature}, Client};
    /// let client = Client::in_memory();
    /// let members = (0..3).map(|i| Signature::by_name("math.square", serde_json::json!([i])));
    /// let sent = client.send_group(Group::<serde_json::Value>::of_signatures(members)).await?;
    /// assert_eq!(sent.members().len(), 3);
    /// assert_eq!(client.inspector().stats("default").await?.pending, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::send_chain`].
    pub async fn send_group<O>(&self, group: Group<O>) -> Result<GroupResult<O>> {
        let (id, members) = group.into_parts()?;
        let node = Node::Group(GroupNode {
            id,
            members,
            settled: false,
        });
        let record = self
            .send_workflow(id, WorkflowKind::Group, vec![node])
            .await?;
        Ok(GroupResult {
            id,
            members: record
                .members
                .iter()
                .map(|member| self.result_handle(*member))
                .collect(),
        })
    }

    /// The record of a workflow (by the id its handle gives) or of a group inside one.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn workflow(&self, id: TaskId) -> Result<Option<WorkflowRecord>> {
        self.backend().workflow(id).await
    }

    /// Revokes every task of the workflow `id` that has not finished: pending ones are skipped
    /// and end REVOKED, steps not yet sent end REVOKED when their turn comes, and what follows
    /// them ends too. With `terminate`, running members are stopped. Returns how many ids were
    /// revoked (0 for an unknown workflow).
    ///
    /// # Errors
    ///
    /// The broker's or backend's error.
    pub async fn revoke_workflow(&self, id: TaskId, terminate: bool) -> Result<usize> {
        let Some(record) = self.workflow(id).await? else {
            return Ok(0);
        };
        let ids = if record.all.is_empty() {
            record.members
        } else {
            record.all
        };
        futures_util::future::try_join_all(ids.iter().map(|id| self.revoke(*id, terminate)))
            .await?;
        Ok(ids.len())
    }
}
