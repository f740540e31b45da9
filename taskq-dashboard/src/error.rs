//! [`DashboardError`]: why the dashboard could not start.

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// A setting is wrong, e.g. a public address without authentication.
    #[error("{0}")]
    Config(String),
    /// The address could not be bound or the server failed.
    #[error("dashboard server failed")]
    Io(#[from] std::io::Error),
}
