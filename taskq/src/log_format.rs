//! [`LogFormat`]: how a worker binary writes its logs (a leaf: the flags and the OTLP layer
//! both read it).

/// How a worker binary writes its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with span fields (task id, name, queue, attempt, worker).
    Json,
}
