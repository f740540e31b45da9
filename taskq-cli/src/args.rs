//! Command-line grammar.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// See and fix a running taskq deployment.
#[derive(Debug, Parser)]
#[command(name = "taskq", version)]
pub struct Cli {
    /// Where the broker is (`--broker`, TLS files), before or after the subcommand.
    #[command(flatten)]
    pub connection: taskq::cli::ConnectArgs,
    /// Keys task arguments are sealed (and results opened) with, KEY-ID:64-HEX, comma-separated.
    #[arg(long, env = "TASKQ_ENCRYPTION_KEYS", global = true)]
    pub encryption_keys: Option<taskq_core::Encryption>,
    /// The key enqueued tasks are signed with, KEY-ID:HEX-SECRET (for workers that verify).
    #[arg(long, env = "TASKQ_SIGNING_KEY", global = true)]
    pub signing_key: Option<taskq_core::SigningKey>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per-queue counts, oldest pending age and live workers.
    Status {
        /// Refresh every INTERVAL until interrupted (default 2s).
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = humantime::parse_duration)]
        watch: Option<Duration>,
        /// Instead, the busy partitions of QUEUE (tenants, accounts): pending, running and
        /// limit of each, most pending first.
        #[arg(long, visible_alias = "groups", value_name = "QUEUE")]
        partitions: Option<String>,
        /// Most partitions listed with --partitions.
        #[arg(long, default_value_t = 50, requires = "partitions")]
        limit: usize,
    },
    /// Live workers.
    Workers,
    /// Enqueue a task by name with JSON arguments; prints its id.
    Enqueue(EnqueueArgs),
    /// Tasks workers hold now (running, or fetched and about to run), with their worker.
    Active {
        /// Only this queue (default: all).
        #[arg(long)]
        queue: Option<String>,
    },
    /// How recent runs ended, newest first (each queue's record of its last 10,000
    /// outcomes in the broker), searched by queue, task, state and age.
    History {
        /// Only this queue (default: all).
        #[arg(long)]
        queue: Option<String>,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only runs that ended so: SUCCESS, FAILURE, RETRY, REVOKED or EXPIRED.
        #[arg(long)]
        state: Option<String>,
        /// Only runs that ended within this long (e.g. 15m).
        #[arg(long, value_parser = humantime::parse_duration)]
        within: Option<Duration>,
        /// Most runs listed.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// State, result or error, and attempts of a task.
    Result {
        /// Task id.
        id: String,
        /// Wait up to this long for a final state.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// Dead letters.
    Dead {
        /// What to do with them.
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Queue maintenance.
    Queue {
        /// What to do.
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Revoke a task: workers skip it (REVOKED); with --terminate, stop it if running.
    Revoke {
        /// Task id.
        id: String,
        /// Also stop a running execution.
        #[arg(long)]
        terminate: bool,
    },
    /// Ask every live worker to answer; prints who did and how fast.
    Ping {
        /// How long to collect answers.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Ask one live worker (by id, as `taskq workers` lists it) to shut down warm: it takes
    /// nothing more, finishes what it runs within its grace period, and exits its run.
    Shutdown {
        /// The worker's id.
        worker: String,
    },
    /// Serve the web dashboard: queues, workers, tasks, dead letters (loopback only unless
    /// --token or --basic-user is given).
    Dashboard(DashboardArgs),
    /// Queue signals for Prometheus and autoscalers, read from the broker.
    Metrics {
        /// What to do.
        #[command(subcommand)]
        command: MetricsCommand,
    },
    /// The PostgreSQL outbox of an application whose tasks go to this broker.
    Outbox {
        /// What to do.
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// PostgreSQL: create or upgrade taskq's schema (`--broker postgres://…?schema=NAME`).
    Postgres {
        /// What to do.
        #[command(subcommand)]
        command: PostgresCommand,
    },
}

/// `taskq metrics ...`.
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Serve per-queue pending, scheduled, processing, dead, oldest pending age and rates at
    /// /metrics (Prometheus text format) until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9808")]
        listen: std::net::SocketAddr,
    },
}

/// `taskq outbox ...`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Move committed outbox rows to the broker (`--broker`) until SIGINT or SIGTERM; several
    /// relays may run at once.
    Relay {
        /// The application's database and the schema of its outbox
        /// (`postgres://…?schema=NAME`).
        #[arg(long, env = "TASKQ_OUTBOX")]
        outbox: String,
        /// How often to look without a notification.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        poll: Duration,
        /// How long a relay's claim on a batch lasts: rows of a relay killed mid-round are
        /// sent again once it runs out.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        lease: Duration,
    },
}

/// `taskq postgres ...`.
#[derive(Debug, Subcommand)]
pub enum PostgresCommand {
    /// Bring the schema to this build's version (creating it when missing); safe to run again
    /// and from several hosts at once.
    Migrate,
}

/// `taskq dashboard` flags.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Address to listen on; anything but loopback needs --token or --basic-user.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Require this bearer token (at least 16 characters); browsers log in once at
    /// /login?token=TOKEN.
    #[arg(long, env = "TASKQ_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Require HTTP basic auth as this user (with --basic-password-hash).
    #[arg(long, env = "TASKQ_DASHBOARD_USER", requires = "basic_password_hash")]
    pub basic_user: Option<String>,
    /// The argon2 hash of the basic-auth password (make one with --hash-password).
    #[arg(
        long,
        env = "TASKQ_DASHBOARD_PASSWORD_HASH",
        hide_env_values = true,
        requires = "basic_user"
    )]
    pub basic_password_hash: Option<String>,
    /// Show, never change: no requeue, delete or purge.
    #[arg(long)]
    pub read_only: bool,
    /// Without authentication the dashboard answers only requests addressed to localhost or
    /// an IP address (against DNS rebinding); also answer this host name (repeatable).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Read a password from standard input, print its argon2 hash for --basic-password-hash,
    /// and exit.
    #[arg(long)]
    pub hash_password: bool,
}

/// `taskq enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Registered task name.
    pub name: String,
    /// Arguments as JSON.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Queue (default: `default`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Run no earlier than this from now, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub countdown: Option<Duration>,
    /// Run no earlier than this instant (RFC 3339).
    #[arg(long)]
    pub eta: Option<chrono::DateTime<chrono::Utc>>,
    /// Priority 0..=9 (higher first).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    /// Expire if not started by then: a duration from now (1h) or an RFC 3339 instant.
    #[arg(long)]
    pub expires: Option<String>,
    /// Partition key (a tenant, an account): the queue takes turns between partitions.
    #[arg(long)]
    pub partition: Option<String>,
    /// At most this many of the partition run at once across all workers.
    #[arg(long, requires = "partition", value_parser = clap::value_parser!(u32).range(1..))]
    pub partition_concurrency: Option<u32>,
    /// Debounce on this key: one pending invocation per key, each call replacing its
    /// arguments and starting --window after the last call.
    #[arg(
        long,
        value_name = "KEY",
        requires = "window",
        conflicts_with = "throttle"
    )]
    pub debounce: Option<String>,
    /// Throttle on this key: at most one run per --window; calls inside it are dropped.
    #[arg(long, value_name = "KEY", requires = "window")]
    pub throttle: Option<String>,
    /// The debounce or throttle window, e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
    /// With --debounce: start no later than this after the first call of the burst.
    #[arg(long, requires = "debounce", value_parser = humantime::parse_duration)]
    pub max_wait: Option<Duration>,
    /// With --throttle: keep the latest call inside a window for the window's end.
    #[arg(long, requires = "throttle")]
    pub keep_last: bool,
    /// Send even if no worker declared the task or the arguments do not fit its fields.
    #[arg(long)]
    pub force: bool,
}

/// `taskq dead ...`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead letters, newest first.
    List {
        /// Only this queue (default: all).
        #[arg(long)]
        queue: Option<String>,
        /// At most this many per queue.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Skip this many of the newest per queue (the next page starts at offset + limit).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Show one dead letter in full.
    Show {
        /// Task id.
        id: String,
        /// Only look in this queue.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Put dead letters back in their queue (atomically, attempts reset).
    Requeue {
        /// Task ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter (of --queue, or of all queues).
        #[arg(long)]
        all: bool,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Delete dead letters.
    Purge {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only those dead-lettered longer ago than this, e.g. 7d.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Do not ask for confirmation (asked only when purging every queue).
        #[arg(long)]
        yes: bool,
    },
}

/// `taskq queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Delete every waiting (pending and scheduled) message of a queue.
    Purge {
        /// The queue.
        queue: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Pause a queue: every worker's fetch skips it until it is resumed (enqueues still land,
    /// running tasks finish). Redis, PostgreSQL and memory; RabbitMQ refuses.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume a paused queue: workers take from it again at once.
    Resume {
        /// The queue.
        queue: String,
    },
}
