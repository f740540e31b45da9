//! The flags and signal handling every worker binary needs, so that users' own binaries (which
//! link their tasks) get the same command line as taskq's demo worker.

use std::time::Duration;

use taskq_core::{Client, Encryption, Keyring, SigningKey};

use crate::signal::Shutdown;
use taskq_worker::{Worker, WorkerBuilder, WorkerReport};

/// Where the broker is and how to reach it: the flags every taskq program shares (the worker's
/// [`WorkerArgs`], the `taskq` CLI, `taskq-beat`, `taskq-bench`, the demo producer), declared
/// once so their help and their environment variables cannot drift apart. Global: a parser
/// with subcommands takes them before or after the subcommand.
///
/// ```
/// use clap::Parser;
/// use taskq::cli::ConnectArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     connection: ConnectArgs,
/// }
///
/// let cli = Cli::parse_from(["my-producer", "--broker", "rediss://cache:6380", "--tls-ca", "ca.pem"]);
/// assert_eq!(cli.connection.url(), "rediss://cache:6380?tls_ca=ca.pem");
/// assert_eq!(Cli::parse_from(["p"]).connection.broker, "redis://127.0.0.1:6379");
/// ```
#[derive(Clone, Debug, clap::Args)]
#[command(about = None, long_about = None)]
#[non_exhaustive]
pub struct ConnectArgs {
    /// Broker URL: redis://HOST:PORT[/DB] (rediss:// for TLS), redis+cluster://H:P,H:P,
    /// redis+sentinel://H:P,H:P/MASTER (Redis: add ?durable=N to wait for N replicas),
    /// amqp://USER:PW@HOST:PORT/VHOST (amqps:// for TLS; RabbitMQ, with
    /// ?results=redis://HOST:PORT for a result store), postgres://USER:PW@HOST:PORT/DB
    /// (?schema=NAME, ?sslmode=require for TLS, ?migrate=auto to create the schema), or
    /// memory:// (in-process).
    #[arg(
        long,
        env = "TASKQ_BROKER",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    pub broker: String,
    /// PEM file of the certificate authority to trust for rediss:// and amqps:// (default:
    /// public roots).
    #[arg(long, env = "TASKQ_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM file of this program's client certificate, for servers that require one.
    #[arg(long, env = "TASKQ_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key.
    #[arg(long, env = "TASKQ_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    /// `--broker` with the TLS files added, ready for [`crate::connect`].
    pub fn url(&self) -> String {
        crate::url_with_tls(
            &self.broker,
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )
    }

    /// `--broker` without its password, for messages.
    pub fn redacted(&self) -> String {
        crate::redacted_url(&self.broker)
    }

    /// Connects to the broker.
    ///
    /// # Errors
    ///
    /// An unsupported URL or an unreachable broker, naming the broker without its password.
    pub async fn connect(&self) -> Result<Client, String> {
        crate::connect(&self.url()).await.map_err(|err| {
            format!(
                "cannot use the broker at {}: {}",
                self.redacted(),
                taskq_core::error_chain(&err)
            )
        })
    }
}

/// Command-line flags of a worker process; flatten them into your own clap parser. Every flag
/// can also be set by an environment variable (`TASKQ_BROKER`, `TASKQ_QUEUES`,
/// `TASKQ_CONCURRENCY`, ...), as containers expect.
///
/// ```
/// use clap::Parser;
/// use taskq::cli::WorkerArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     worker: WorkerArgs,
/// }
///
/// let cli = Cli::parse_from(["my-worker", "--broker", "redis://127.0.0.1:6379", "--queues", "a,b"]);
/// assert_eq!(cli.worker.queues, ["a", "b"]);
/// ```
#[derive(Clone, Debug, clap::Args)]
// Without these, a binary whose parser has no doc comment shows this rustdoc as its help.
#[command(about = None, long_about = None)]
#[non_exhaustive]
pub struct WorkerArgs {
    /// Where the broker is (`--broker`, TLS files).
    #[command(flatten)]
    pub connection: ConnectArgs,
    /// Keys whose signatures this worker accepts, KEY-ID:HEX-SECRET, comma-separated (rotation:
    /// list the old and the new key).
    #[arg(long, env = "TASKQ_SIGNING_KEYS", value_delimiter = ',')]
    pub signing_keys: Vec<SigningKey>,
    /// Refuse unsigned messages (dead-lettered as bad_signature, never run).
    #[arg(long, env = "TASKQ_REQUIRE_SIGNATURES", requires = "signing_keys")]
    pub require_signatures: bool,
    /// The key this worker's own enqueues (tasks sending tasks) are signed with.
    #[arg(long, env = "TASKQ_SIGNING_KEY")]
    pub signing_key: Option<SigningKey>,
    /// Keys that open encrypted task arguments and seal results, KEY-ID:64-HEX, comma-separated,
    /// the first sealing (rotation: list the new key first, then the old).
    #[arg(long, env = "TASKQ_ENCRYPTION_KEYS")]
    pub encryption_keys: Option<Encryption>,
    /// Queues to consume, in order of preference (default: the registered tasks' queues).
    #[arg(long, env = "TASKQ_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Queues of Python's Celery to serve as well (Redis, RabbitMQ): what `send_task` puts there runs the
    /// registered task of that name, its result readable by `AsyncResult.get()`
    /// (docs/celery.md).
    #[arg(long, env = "TASKQ_CELERY_QUEUES", value_delimiter = ',')]
    pub celery_queues: Vec<String>,
    /// Most tasks running at once.
    #[arg(long, env = "TASKQ_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// Messages fetched ahead of a free slot (default: equal to concurrency).
    #[arg(long, env = "TASKQ_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Time running tasks get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "TASKQ_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub shutdown_grace: Duration,
    /// How often liveness is renewed.
    #[arg(long, env = "TASKQ_HEARTBEAT", value_parser = humantime::parse_duration, default_value = "1s")]
    pub heartbeat: Duration,
    /// How long after its last heartbeat this worker's tasks are recovered by others.
    #[arg(long, env = "TASKQ_LIVENESS_TTL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub liveness_ttl: Duration,
    /// Times a task may be recovered from lost workers before it is dead-lettered as
    /// `worker_lost` (a poison message that keeps killing its workers).
    #[arg(long, env = "TASKQ_MAX_REDELIVERIES", default_value_t = 3)]
    pub max_redeliveries: u32,
    /// Export spans over OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318 (the service
    /// name from OTEL_SERVICE_NAME, default taskq-worker).
    #[cfg(feature = "otel")]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9090 (path /metrics).
    #[arg(long, env = "TASKQ_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log format on stderr; `RUST_LOG` sets the level (default info).
    #[arg(long, env = "TASKQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Also relay the PostgreSQL outbox at this URL (`postgres://…?schema=NAME`) to the
    /// broker, until shutdown (see `taskq outbox relay`).
    #[cfg(feature = "postgres")]
    #[arg(long, env = "TASKQ_OUTBOX")]
    pub outbox: Option<String>,
}

pub use crate::log_format::LogFormat;

impl WorkerArgs {
    /// Installs the `tracing` subscriber for `--log-format`, honouring `RUST_LOG`; does
    /// nothing when the program already installed one.
    pub fn init_logging(&self) {
        #[cfg(feature = "otel")]
        if let Some(endpoint) = &self.otlp_endpoint {
            match init_logging_exporting(self.log_format, endpoint) {
                Ok(()) => return,
                Err(err) => eprintln!("taskq worker: spans not exported to {endpoint}: {err}"),
            }
        }
        init_logging(self.log_format);
    }

    /// Starts the Prometheus endpoint if `--metrics-addr` was given.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound or a recorder is already installed.
    pub fn install_metrics(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(addr) = self.metrics_addr {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                // Histograms (what the metrics table promises), not the exporter's default
                // summaries: buckets aggregate across workers, quantiles do not.
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
                    ],
                )
                .map_err(|err| format!("cannot configure metrics buckets: {err}"))?
                .with_http_listener(addr)
                .install()
                .map_err(|err| format!("cannot serve metrics on {addr}: {err}"))?;
            tracing::info!(%addr, "serving Prometheus metrics");
        }
        Ok(())
    }

    /// Connects to `--broker`.
    ///
    /// # Errors
    ///
    /// An unsupported URL or an unreachable broker.
    pub async fn connect(&self) -> taskq_core::Result<Client> {
        let client = crate::connect(&self.connection.url()).await?;
        let client = match &self.signing_key {
            Some(key) => client.with_signing_key(key.clone()),
            None => client,
        };
        Ok(match &self.encryption_keys {
            Some(keys) => client.with_encryption(keys.clone()),
            None => client,
        })
    }

    /// Applies the flags to a builder.
    pub fn configure(&self, builder: WorkerBuilder) -> WorkerBuilder {
        let mut builder = builder
            .concurrency(self.concurrency)
            .prefetch(self.prefetch.unwrap_or(self.concurrency))
            .shutdown_grace(self.shutdown_grace)
            .liveness(self.heartbeat, self.liveness_ttl)
            .configure(|config| config.max_redeliveries = self.max_redeliveries);
        if !self.queues.is_empty() {
            builder = builder.queues(self.queues.clone());
        }
        if !self.celery_queues.is_empty() {
            builder = builder.celery_queues(self.celery_queues.clone());
        }
        if let Some(keys) = &self.encryption_keys {
            builder = builder.encryption(keys.clone());
        }
        if !self.signing_keys.is_empty() {
            let keyring = Keyring::new(self.signing_keys.clone());
            builder = builder.verify_signatures(if self.require_signatures {
                keyring.required()
            } else {
                keyring
            });
        }
        builder
    }

    /// Installs logging (`--log-format`, `RUST_LOG`) and the metrics endpoint, connects,
    /// builds a worker with the tasks `register` adds, and runs it until SIGINT or SIGTERM
    /// (see [`Shutdown`]); a second signal stops it at once, leaving unfinished work to the
    /// reaper of another worker.
    ///
    /// # Errors
    ///
    /// Connection, configuration or deregistration failures.
    pub async fn run(
        &self,
        register: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
    ) -> Result<WorkerReport, Box<dyn std::error::Error + Send + Sync>> {
        self.init_logging();
        self.install_metrics()?;
        let client = self.connect().await.map_err(|err| {
            format!(
                "cannot use the broker at {}: {}",
                self.connection.redacted(),
                taskq_core::error_chain(&err)
            )
        })?;
        let signals = Shutdown::listen();
        let relay = self.start_relay(&client, &signals).await?;
        let worker = self
            .configure(register(Worker::builder(client)))
            .metrics(self.metrics_addr.is_some())
            .build()?;
        tracing::info!(worker = %worker.id(), queues = ?worker.queues(), "starting");
        let report = tokio::select! {
            report = worker.run(signals.requested()) => report?,
            _ = signals.forced() => return Err("stopped at once by a second signal".into()),
        };
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        #[cfg(feature = "otel")]
        flush_exported_spans();
        Ok(report)
    }

    /// With `--outbox`, the outbox relay, running until `signals` ask for shutdown.
    #[allow(clippy::unused_async)]
    async fn start_relay(
        &self,
        client: &taskq_core::Client,
        signals: &Shutdown,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, Box<dyn std::error::Error + Send + Sync>> {
        #[cfg(feature = "postgres")]
        if let Some(url) = &self.outbox {
            let config = taskq_postgres::PostgresConfig::new(url)?;
            let outbox = taskq_postgres::PostgresOutbox::connect(config)
                .await
                .map_err(|err| {
                    format!(
                        "cannot use the outbox at {}: {}",
                        crate::redacted_url(url),
                        taskq_core::error_chain(&err)
                    )
                })?;
            let broker = client.broker().clone();
            let stop = signals.requested();
            tracing::info!(outbox = %crate::redacted_url(url), "relaying the outbox");
            return Ok(Some(tokio::spawn(async move {
                outbox.relay(broker, Duration::from_secs(5), stop).await;
            })));
        }
        let _ = (client, signals);
        Ok(None)
    }

    /// What a worker binary's `main` does: [`WorkerArgs::run`], then a failure reported on
    /// one line (`taskq worker: <what failed>: <causes>`) with exit status 1.
    ///
    /// ```no_run
    /// # #[derive(taskq::Task, serde::Serialize, serde::Deserialize)]
    /// # #[task(name = "noop")] struct Noop;
    /// # impl taskq::Run for Noop {
    /// #     type Output = ();
    /// #     async fn run(self, _: taskq::TaskContext) -> Result<(), taskq::TaskError> { Ok(()) }
    /// # }
    /// use clap::Parser;
    ///
    /// #[derive(Parser)]
    /// struct Cli {
    ///     #[command(flatten)]
    ///     worker: taskq::cli::WorkerArgs,
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> std::process::ExitCode {
    ///     Cli::parse().worker.main(|w| w.register::<Noop>()).await
    /// }
    /// ```
    pub async fn main(
        &self,
        register: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
    ) -> std::process::ExitCode {
        match self.run(register).await {
            Ok(report) => {
                tracing::info!(?report, "stopped");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("taskq worker: {}", taskq_core::error_chain(err.as_ref()));
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// Installs the `tracing` subscriber of taskq's binaries on stderr: `format` lines, level from
/// `RUST_LOG` (default `info`). Does nothing when the program already installed one.
///
/// ```
/// taskq::cli::init_logging(taskq::cli::LogFormat::Text);
/// tracing::info!("visible on stderr");
/// ```
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// [`init_logging`], and every `info` span also exported over OTLP/HTTP to the collector at
/// `endpoint` (its base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it), in batches on the
/// SDK's own thread, service name from `OTEL_SERVICE_NAME` (default `taskq-worker`):
/// `--otlp-endpoint` of [`WorkerArgs`], for programs that install their worker without it.
/// Call [`flush_exported_spans`] before the program exits.
///
/// # Errors
///
/// When the exporter cannot be built or a subscriber is already installed.
///
/// ```no_run
/// taskq::cli::init_logging_exporting(taskq::cli::LogFormat::Text, "http://127.0.0.1:4318")?;
/// // ... run the worker ...
/// taskq::cli::flush_exported_spans();
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[cfg(feature = "otel")]
pub fn init_logging_exporting(
    format: LogFormat,
    endpoint: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    crate::otlp::init_logging(format, endpoint)
}

/// Sends the spans [`init_logging_exporting`] still holds in its batch; does nothing when it
/// was not installed.
#[cfg(feature = "otel")]
pub fn flush_exported_spans() {
    crate::otlp::flush();
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    // A binary built as the README shows: no doc comment of its own.
    #[derive(Parser)]
    struct ReadmeWorker {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    #[test]
    fn help_of_a_binary_flattening_the_args_shows_flags_not_rustdoc() {
        let help = ReadmeWorker::command().render_long_help().to_string();
        assert!(help.contains("--broker"), "{help}");
        assert!(!help.contains("```"), "rustdoc leaked into --help:\n{help}");
        assert!(
            !help.contains("flatten them"),
            "rustdoc leaked into --help:\n{help}"
        );
    }

    #[test]
    fn the_one_broker_help_names_every_scheme() {
        let help = ReadmeWorker::command().render_long_help().to_string();
        for scheme in [
            "redis://",
            "rediss://",
            "redis+cluster://",
            "redis+sentinel://",
            "amqp://",
            "amqps://",
            "postgres://",
            "memory://",
            "TASKQ_BROKER",
        ] {
            assert!(help.contains(scheme), "{scheme} missing from:\n{help}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_named_with_its_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let cli = ReadmeWorker::parse_from(["w", "--broker", &url]);
        let err = cli.worker.run(|w| w).await.unwrap_err();
        let text = taskq_core::error_chain(err.as_ref());
        assert!(
            text.starts_with(&format!(
                "cannot use the broker at {url}: redis command failed: "
            )),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[test]
    fn every_flag_can_come_from_the_environment() {
        let help = ReadmeWorker::command().render_long_help().to_string();
        for env in [
            "TASKQ_BROKER",
            "TASKQ_TLS_CA",
            "TASKQ_TLS_CERT",
            "TASKQ_TLS_KEY",
            "TASKQ_SIGNING_KEYS",
            "TASKQ_REQUIRE_SIGNATURES",
            "TASKQ_SIGNING_KEY",
            "TASKQ_ENCRYPTION_KEYS",
            "TASKQ_QUEUES",
            "TASKQ_CELERY_QUEUES",
            "TASKQ_CONCURRENCY",
            "TASKQ_PREFETCH",
            "TASKQ_SHUTDOWN_GRACE",
            "TASKQ_HEARTBEAT",
            "TASKQ_LIVENESS_TTL",
            "TASKQ_MAX_REDELIVERIES",
            "TASKQ_METRICS_ADDR",
            "TASKQ_LOG_FORMAT",
        ]
        .into_iter()
        .chain(cfg!(feature = "postgres").then_some("TASKQ_OUTBOX"))
        .chain(cfg!(feature = "otel").then_some("OTEL_EXPORTER_OTLP_ENDPOINT"))
        {
            assert!(
                help.contains(&format!("[env: {env}")),
                "{env} missing:\n{help}"
            );
        }
        let flags = help.matches("\n      --").count();
        assert_eq!(
            flags,
            18 + usize::from(cfg!(feature = "postgres")) + usize::from(cfg!(feature = "otel")),
            "a new flag needs an environment variable too:\n{help}"
        );
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = ReadmeWorker::parse_from(["w", "--queues", "a,b", "--log-format", "json"]);
        assert_eq!(cli.worker.queues, ["a", "b"]);
        assert_eq!(cli.worker.log_format, LogFormat::Json);
        assert_eq!(cli.worker.concurrency, 32);
    }
}
