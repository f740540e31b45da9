//! Workflows: chains, groups, chords and callbacks, typed where the types are known.
//!
//! - [`chain`]`(a).then(b).then(c)`: each step receives its predecessor's output in the field
//!   it marks `#[task(input)]` ([`Step`]); chaining a step that cannot take the output does not
//!   compile.
//! - [`group`]`(tasks)`: members run in parallel; [`GroupResult::wait`] returns their outputs in
//!   order or names the members that failed.
//! - `group(tasks).then(callback)`: a chord; the callback runs **once** with every output
//!   when all members succeeded, however often members were redelivered, retried or run.
//! - [`Signature::on_success`] / [`Signature::on_failure`]: callbacks of one task.
//!
//! Nothing coordinates a workflow from outside: the rest of a chain travels in each message's
//! envelope ([`Flow`]), a group's members report their outcome to the result backend (one
//! record per member, first report wins), and the worker that records the last one sends the
//! next step. Every message a worker sends for a workflow is enqueued once per id (a claim
//! atomic with the enqueue), and a step whose SUCCESS is already stored is not run again, so
//! a worker killed between any two of these writes loses nothing and duplicates nothing the
//! next delivery would see. `docs/workflows.md` has the data model and the guarantees.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
//! use serde::{Deserialize, Serialize};
//! use taskq_core::{workflow::group, Client, Run, Task, TaskContext, TaskError};
//!
//! #[derive(Task, Serialize, Deserialize)]
//! #[task(name = "math.square")]
//! struct Square { n: i64 }
//! impl Run for Square {
//!     type Output = i64;
//!     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.n * self.n) }
//! }
//!
//! #[derive(Task, Serialize, Deserialize)]
//! #[task(name = "math.sum")]
//! struct Sum { #[task(input)] values: Vec<i64> }
//! impl Run for Sum {
//!     type Output = i64;
//!     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.values.iter().sum()) }
//! }
//!
//! let client = Client::in_memory();
//! let chord = group((1..=100).map(|n| Square { n })).then(Sum { values: vec![] });
//! let sent = client.send_chain(chord).await?;
//! assert_eq!(client.inspector().stats("default").await?.pending, 100);
//! # let _ = sent;
//! # Ok(()) }
//! ```

mod advance;
mod canvas;
mod finished;
mod flow;
mod handle;
mod plan;
mod prepared;
mod send;
mod signature;

pub(crate) use advance::advance;
pub use canvas::{chain, group, Chain, Group};
pub use finished::{Ending, Finished};
pub use flow::{
    Failed, Flow, GroupNode, GroupStatus, MemberOf, MemberOutcome, Node, Settled, WorkflowKind,
    WorkflowRecord,
};
pub use handle::{ChainResult, GroupResult};
pub(crate) use plan::{check_supported, resolve_callbacks};
pub use prepared::PreparedWorkflow;
pub(crate) use send::{plan_workflow, send_workflow};
pub use signature::{Signature, Step};
