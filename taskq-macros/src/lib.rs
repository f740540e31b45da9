//! The proc-macro crate behind `#[derive(Task)]`.
//!
//! Use it through `taskq_core::Task`; this crate only holds the entry point. Parsing of
//! `#[task(...)]` lives in `attr.rs`, code generation in `expand.rs`.

mod attr;
mod expand;
mod input;
/// The rate-limit grammar, shared with taskq-core's `RateLimit` (one parser, one error text):
/// `src/rate_grammar.rs` is a symbolic link to taskq-core's file, which packaging turns into a
/// copy, so the published crate carries it.
mod rate_grammar;
mod shape;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Implements `taskq_core::Task` for a struct of task arguments.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskq_core::Task;
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s")]
/// struct SendEmail { to: String }
///
/// assert_eq!(SendEmail::NAME, "emails.send");
/// ```
///
/// Keys: `name` (required, the stable wire name), `queue`, `max_retries`, `timeout` (hard
/// limit), `soft_timeout`, `priority` (0..=9), `expires` (default time to live of an
/// invocation), `ignore_result`, `at_most_once`, `unique_for`, `rate_limit` (`"100/s"`),
/// `crate` (path to taskq-core when it is re-exported under another name).
///
/// A field marked `#[task(input)]` receives the predecessor's output in a workflow: the derive
/// then also implements `taskq_core::workflow::Step` with that field's type as the input.
#[proc_macro_derive(Task, attributes(task))]
pub fn derive_task(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive_task(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
