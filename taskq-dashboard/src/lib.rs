//! taskq's web dashboard: see and fix a running deployment in a browser.
//!
//! Every page reads the broker's own state through the [`Inspector`](taskq_core::Inspector)
//! role and the result backend (a restart loses nothing, no cache to warm), renders on the
//! server (maud escapes everything it prints), and stays bounded (pages of at most
//! [`MAX_PAGE`] entries). Live numbers arrive by server-sent events. Safe to expose: it binds
//! loopback by default and refuses any other address without [`Access::Token`] or
//! [`Access::Basic`]; open (loopback) mode answers only requests addressed to the machine
//! itself (DNS rebinding); basic auth's argon2 runs off the async runtime, cached and rate
//! limited; every action is a POST carrying a CSRF token; [`Dashboard::read_only`] hides and
//! refuses actions.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use taskq_dashboard::{Access, Dashboard};
//! let client = taskq_core::Client::in_memory();
//! Dashboard::new(client)
//!     .access(Access::token("a long random token")?)
//!     .serve("0.0.0.0:8080".parse()?, std::future::pending())
//!     .await?;
//! # Ok(()) }
//! ```

// Handlers and their helpers fail with a ready `Response` (an error page): axum's own error
// type, 128 bytes, returned once per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod access;
mod csrf;
mod error;
mod events;
mod gate;
mod host;
mod layout;
mod pages;
mod queue_metrics;
mod server;
mod state;

pub use access::{hash_password, Access};
pub use error::DashboardError;
pub use queue_metrics::{queue_metrics, serve_queue_metrics};
pub use server::Dashboard;
pub use state::MAX_PAGE;
