//! Building workflows: [`Chain`] (steps one after another) and [`Group`] (members in
//! parallel; followed by a step it is a chord). The output type travels in the builder, so a
//! step that cannot take its predecessor's output does not compile.

use std::marker::PhantomData;

use super::{GroupNode, Node, Signature, Step};
use crate::{error::Error, error::Result, id::TaskId, task::Run};

/// Steps run one after another, each receiving its predecessor's output; `O` is the last
/// step's output. Start one with [`chain`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{workflow::chain, Run, Task, TaskContext, TaskError};
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "pages.fetch")]
/// struct Fetch { url: String }
/// impl Run for Fetch {
///     type Output = String;
///     async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> { Ok(format!("<html>{}</html>", self.url)) }
/// }
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "pages.measure")]
/// struct Measure { #[task(input)] html: String }
/// impl Run for Measure {
///     type Output = usize;
///     async fn run(self, _ctx: TaskContext) -> Result<usize, TaskError> { Ok(self.html.len()) }
/// }
///
/// let workflow = chain(Fetch { url: "https://example.com".into() }).then(Measure { html: String::new() });
/// assert_eq!(workflow.len(), 2);
/// ```
#[derive(Debug)]
#[must_use = "a chain does nothing until it is sent with Client::send_chain"]
pub struct Chain<O> {
    nodes: Vec<Node>,
    error: Option<Error>,
    _output: PhantomData<fn() -> O>,
}

/// A chain starting with `first`.
pub fn chain<T: Run>(first: T) -> Chain<T::Output> {
    Chain::<()>::empty().pushed(Signature::of(&first).map(Node::Task))
}

impl<O> Chain<O> {
    fn empty() -> Self {
        Self {
            nodes: Vec::new(),
            error: None,
            _output: PhantomData,
        }
    }

    fn pushed<P>(mut self, node: Result<Node>) -> Chain<P> {
        match node {
            Ok(node) => self.nodes.push(node),
            Err(err) => {
                self.error.get_or_insert(err);
            }
        }
        Chain {
            nodes: self.nodes,
            error: self.error,
            _output: PhantomData,
        }
    }

    /// A chain of untyped steps, for producers that do not link the tasks' types; each step's
    /// input field (if it has one) receives its predecessor's output.
    pub fn of_signatures(steps: impl IntoIterator<Item = Signature>) -> Chain<serde_json::Value> {
        let mut chain = Chain::empty();
        chain.nodes = steps.into_iter().map(Node::Task).collect();
        chain
    }

    /// Runs `step` next, with this chain's output in its input field.
    pub fn then<S: Step<Input = O>>(self, step: S) -> Chain<S::Output> {
        let node = Signature::step(&step).map(Node::Task);
        self.pushed(node)
    }

    /// Runs `task` next, ignoring this chain's output (Celery's immutable signature).
    pub fn then_ignoring<T: Run>(self, task: T) -> Chain<T::Output> {
        let node = Signature::of(&task).map(Node::Task);
        self.pushed(node)
    }

    /// Runs an untyped step next.
    pub fn then_signature(self, step: Signature) -> Chain<serde_json::Value> {
        self.pushed(Ok(Node::Task(step)))
    }

    /// Runs `members` in parallel next, each receiving this chain's output, then `callback`
    /// with all their outputs in order (a chord inside a chain).
    pub fn then_chord<M, C>(
        self,
        members: impl IntoIterator<Item = M>,
        callback: C,
    ) -> Chain<C::Output>
    where
        M: Step<Input = O>,
        C: Step<Input = Vec<M::Output>>,
    {
        let group = members
            .into_iter()
            .map(|member| Signature::step(&member).map(|s| vec![Node::Task(s)]))
            .collect::<Result<Vec<_>>>()
            .map(|members| {
                Node::Group(GroupNode {
                    id: TaskId::new(),
                    members,
                    settled: false,
                })
            });
        self.pushed::<Vec<M::Output>>(group).then(callback)
    }

    /// Adds `callback` to the last step: sent with its output when it succeeds.
    pub fn on_success(mut self, callback: Signature) -> Self {
        if let Some(Node::Task(last)) = self.nodes.last_mut() {
            last.on_success.push(callback);
        }
        self
    }

    /// Adds `callback` to every step: sent with a [`Failed`](super::Failed) when that step
    /// ends without success.
    pub fn on_failure(mut self, callback: Signature) -> Self {
        for node in &mut self.nodes {
            node.signatures_mut(&mut |signature| signature.on_failure.push(callback.clone()));
        }
        self
    }

    /// Number of steps (a group counts as one).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a chain without steps.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub(crate) fn into_nodes(self) -> Result<Vec<Node>> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.nodes),
        }
    }
}

/// Members run in parallel; `O` is each member's output. Start one with [`group`] or
/// [`Group::of_chains`]; follow it with [`Group::then`] to make a chord.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{workflow::group, Run, Task, TaskContext, TaskError};
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "math.square")]
/// struct Square(i64);
/// impl Run for Square {
///     type Output = i64;
///     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.0 * self.0) }
/// }
///
/// let squares = group((1..=10).map(Square));
/// assert_eq!(squares.len(), 10);
/// ```
#[derive(Debug)]
#[must_use = "a group does nothing until it is sent with Client::send_group"]
pub struct Group<O> {
    id: TaskId,
    members: Vec<Vec<Node>>,
    error: Option<Error>,
    _output: PhantomData<fn() -> O>,
}

/// A group of `tasks`, one member each.
pub fn group<T: Run>(tasks: impl IntoIterator<Item = T>) -> Group<T::Output> {
    let mut error = None;
    let members = tasks
        .into_iter()
        .filter_map(|task| match Signature::of(&task) {
            Ok(signature) => Some(vec![Node::Task(signature)]),
            Err(err) => {
                error.get_or_insert(err);
                None
            }
        })
        .collect();
    Group {
        id: TaskId::new(),
        members,
        error,
        _output: PhantomData,
    }
}

impl<O> Group<O> {
    /// A group whose members are chains; each member's output is its chain's last output.
    pub fn of_chains(chains: impl IntoIterator<Item = Chain<O>>) -> Self {
        let mut error = None;
        let members = chains
            .into_iter()
            .filter_map(|chain| match chain.into_nodes() {
                Ok(nodes) => Some(nodes),
                Err(err) => {
                    error.get_or_insert(err);
                    None
                }
            })
            .collect();
        Self {
            id: TaskId::new(),
            members,
            error,
            _output: PhantomData,
        }
    }

    /// A group of untyped calls.
    pub fn of_signatures(members: impl IntoIterator<Item = Signature>) -> Group<serde_json::Value> {
        Group {
            id: TaskId::new(),
            members: members.into_iter().map(|s| vec![Node::Task(s)]).collect(),
            error: None,
            _output: PhantomData,
        }
    }

    /// A chord: when every member has succeeded, `callback` runs once with all their outputs
    /// in member order. If a member ends as FAILURE, REVOKED or EXPIRED (dead letters
    /// included), the callback never runs and ends as FAILURE naming that member.
    pub fn then<C: Step<Input = Vec<O>>>(self, callback: C) -> Chain<C::Output> {
        let node = Signature::step(&callback).map(Node::Task);
        self.into_chain(false).pushed(node)
    }

    /// A chord with an untyped callback (its input field receives the outputs).
    pub fn then_signature(self, callback: Signature) -> Chain<serde_json::Value> {
        self.into_chain(false).pushed(Ok(Node::Task(callback)))
    }

    /// A chord whose `callback` runs once every member has ended, whatever the outcomes, with
    /// a [`Settled`](super::Settled) per member in member order (Sidekiq's batch "complete"
    /// callback, BullMQ's `ignoreDependencyOnFailure`): for work where partial results are
    /// still worth using.
    pub fn then_settled<C>(self, callback: C) -> Chain<C::Output>
    where
        C: Step<Input = Vec<super::Settled<O>>>,
    {
        let node = Signature::step(&callback).map(Node::Task);
        self.into_chain(true).pushed(node)
    }

    /// This group as the first step of a chain.
    fn into_chain(self, settled: bool) -> Chain<Vec<O>> {
        let node = match self.error {
            Some(err) => Err(err),
            None => Ok(Node::Group(GroupNode {
                id: self.id,
                members: self.members,
                settled,
            })),
        };
        Chain::<()>::empty().pushed(node)
    }

    /// The group's id (a chord's id too): `taskq result <id>` shows its members.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for a group without members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(crate) fn into_parts(self) -> Result<(TaskId, Vec<Vec<Node>>)> {
        match self.error {
            Some(err) => Err(err),
            None => Ok((self.id, self.members)),
        }
    }
}
