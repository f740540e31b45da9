//! What each subcommand does.

use std::{io::Write, time::Duration};

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;
use taskq_core::{error_chain, Client, ControlMessage, DeadLetter, Page, TaskId};

use crate::{
    args::{
        Cli, Command, DeadCommand, EnqueueArgs, MetricsCommand, OutboxCommand, PostgresCommand,
        QueueCommand,
    },
    table, Failure,
};

/// `taskq postgres migrate`: the schema the URL names, at this build's version.
async fn migrate_postgres(url: &str, json: bool) -> Result<String, Failure> {
    use taskq::postgres::{migrate, sqlx, PostgresConfig, SCHEMA_VERSION};
    if !taskq::postgres::handles_url(url) {
        return Err(format!(
            "`taskq postgres migrate` needs a postgres:// URL, not `{}`",
            taskq::redacted_url(url)
        )
        .into());
    }
    let config = PostgresConfig::new(url)?;
    let pool = sqlx::PgPool::connect(config.url())
        .await
        .map_err(|err| format!("cannot connect to {}: {err}", taskq::redacted_url(url)))?;
    let found = migrate(&pool, config.schema()).await?;
    pool.close().await;
    Ok(if json {
        json!({"schema": config.schema(), "from": found, "to": SCHEMA_VERSION}).to_string()
    } else if found == SCHEMA_VERSION {
        format!(
            "schema `{}` is at version {SCHEMA_VERSION}: nothing to do",
            config.schema()
        )
    } else {
        format!(
            "schema `{}`: version {found} -> {SCHEMA_VERSION}",
            config.schema()
        )
    })
}

/// A dead letter as JSON, with its payload as the JSON object it is (a payload that is not
/// JSON, such as a malformed message, stays a string).
fn readable(letter: &DeadLetter) -> Result<serde_json::Value, Failure> {
    let mut value = serde_json::to_value(letter)?;
    if let Ok(payload) = serde_json::from_str::<serde_json::Value>(&letter.payload) {
        value["payload"] = payload;
    }
    Ok(value)
}

pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Dashboard(args) = &cli.command {
        if args.hash_password {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err("no password on standard input".into());
            }
            println!("{}", taskq_dashboard::hash_password(password));
            return Ok(());
        }
        // Refused before connecting to anything.
        dashboard_access(args)?.check_listen(args.listen)?;
    }
    let url = cli.connection.url();
    if let Command::Postgres {
        command: PostgresCommand::Migrate,
    } = &cli.command
    {
        println!("{}", migrate_postgres(&url, cli.json).await?);
        return Ok(());
    }
    let client = connect(&url).await?;
    let client = match cli.signing_key.clone() {
        Some(key) => client.with_signing_key(key),
        None => client,
    };
    let client = match cli.encryption_keys.clone() {
        Some(keys) => client.with_encryption(keys),
        None => client,
    };
    let json = cli.json;
    match cli.command {
        Command::Status {
            partitions: Some(queue),
            limit,
            ..
        } => println!("{}", partitions(&client, &queue, limit, json).await?),
        Command::Status { watch: None, .. } => println!("{}", status(&client, json).await?),
        Command::Status {
            watch: Some(every), ..
        } => loop {
            let text = status(&client, json).await?;
            println!("\x1b[2J\x1b[H{text}");
            std::io::stdout().flush()?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(every) => {}
            }
        },
        Command::Workers => println!("{}", workers(&client, json).await?),
        Command::Active { queue } => {
            println!("{}", crate::held::active(&client, queue, json).await?)
        }
        Command::Enqueue(args) => println!("{}", enqueue(&client, args, json).await?),
        Command::History {
            queue,
            task,
            state,
            within,
            limit,
        } => {
            let search = crate::history::Search {
                queue,
                task,
                state,
                within,
                limit,
            };
            println!("{}", crate::history::history(&client, search, json).await?)
        }
        Command::Result { id, wait } => {
            println!("{}", result(&client, &parse_id(&id)?, wait, json).await?)
        }
        Command::Dead { command } => println!("{}", dead(&client, command, json).await?),
        Command::Queue {
            command: QueueCommand::Purge { queue, yes },
        } => println!("{}", purge_queue(&client, &queue, yes, json).await?),
        Command::Queue {
            command: QueueCommand::Pause { queue },
        } => println!("{}", set_paused(&client, &queue, true, json).await?),
        Command::Queue {
            command: QueueCommand::Resume { queue },
        } => println!("{}", set_paused(&client, &queue, false, json).await?),
        Command::Revoke { id, terminate } => {
            let id = parse_id(&id)?;
            if client.workflow(id).await?.is_some() {
                println!(
                    "{}",
                    crate::workflow::revoke(&client, id, terminate, json).await?
                );
                return Ok(());
            }
            // Revoked either way (it may still be queued without a record), but say what was
            // found: a run to stop, a record, or nothing (a mistyped id is then likelier).
            let recorded = client.result(id).await?.is_some();
            let held = client.find_held(id).await?;
            client.revoke(id, terminate).await?;
            let worker = held.as_ref().map(|(_, held)| held.worker.clone());
            println!(
                "{}",
                if json {
                    json!({"revoked": id, "terminate": terminate, "known": recorded || held.is_some(), "held_by": worker}).to_string()
                } else if let Some(worker) = worker {
                    if terminate {
                        format!("revoked {id}: worker {worker} holds it; told to stop it (it ends REVOKED)")
                    } else {
                        format!("revoked {id}: worker {worker} holds it; a run already started finishes (add --terminate to stop it)")
                    }
                } else if recorded {
                    format!("revoked {id}")
                } else {
                    format!("revoked {id}; note: nothing is known of this id yet (no result recorded, no worker holds it): if it is queued it will be skipped, otherwise check the id")
                }
            );
        }
        Command::Ping { timeout } => println!("{}", ping(&client, timeout, json).await?),
        Command::Shutdown { worker } => println!("{}", shutdown(&client, &worker, json).await?),
        // Migrated above, before connecting (a client refuses a schema that is not migrated).
        Command::Postgres { .. } => {}
        Command::Outbox {
            command:
                OutboxCommand::Relay {
                    outbox,
                    poll,
                    lease,
                },
        } => {
            let config = taskq::postgres::PostgresConfig::new(&outbox)?;
            eprintln!(
                "relaying the outbox at {} to {}",
                taskq::redacted_url(&outbox),
                taskq::redacted_url(&url)
            );
            let outbox = taskq::postgres::PostgresOutbox::connect(config)
                .await?
                .with_lease(lease);
            let shutdown = taskq::signal::Shutdown::listen();
            outbox
                .relay(client.broker().clone(), poll, shutdown.requested())
                .await;
        }
        Command::Metrics {
            command: MetricsCommand::Serve { listen },
        } => {
            eprintln!("taskq queue metrics on http://{listen}/metrics");
            taskq_dashboard::serve_queue_metrics(
                client,
                listen,
                taskq::signal::Shutdown::listen().requested(),
            )
            .await?;
        }
        Command::Dashboard(args) => {
            let beat = taskq::connect_beat_store(&url).await?;
            dashboard(client, args, beat).await?
        }
    }
    Ok(())
}

/// Connects to the broker an operator names, with errors that say what to check, on one line.
async fn connect(url: &str) -> Result<Client, Failure> {
    if url.starts_with("memory") {
        return Err(
            "memory:// is a broker inside one process: the CLI needs the one your workers use (redis://HOST:PORT, or $TASKQ_BROKER)"
                .into(),
        );
    }
    taskq::connect(url).await.map_err(|err| {
        let shown = taskq::redacted_url(url);
        let cause = first_line(&error_chain(&err));
        match err {
            taskq_core::Error::Invalid { .. } => format!("invalid broker URL `{shown}`: {cause}"),
            // The transports name the place and the likely fix themselves.
            _ => format!("cannot reach the broker: {cause}"),
        }
        .into()
    })
}

/// The first line of `text`: client libraries may append multi-line protocol dumps.
fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

fn parse_id(text: &str) -> Result<TaskId, Failure> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a task id (a UUID)").into())
}

async fn status(client: &Client, json: bool) -> Result<String, Failure> {
    let broker = client.broker();
    let now = client.clock().now();
    let mut rows = Vec::new();
    let mut stats = Vec::new();
    for queue in broker.queues().await? {
        let s = broker.stats(&queue).await?;
        let oldest = s.oldest_pending.map(|t| (now - t).num_seconds());
        rows.push(vec![
            if s.paused {
                format!("{queue} (paused)")
            } else {
                queue.clone()
            },
            s.pending.to_string(),
            s.scheduled.to_string(),
            s.processing.to_string(),
            if s.dead_dropped > 0 {
                format!("{} (+{} dropped)", s.dead, s.dead_dropped)
            } else {
                s.dead.to_string()
            },
            oldest.map_or("-".into(), table::age),
        ]);
        stats.push(
            json!({"queue": queue, "pending": s.pending, "scheduled": s.scheduled,
            "processing": s.processing, "dead": s.dead, "dead_dropped": s.dead_dropped,
            "oldest_pending_seconds": oldest, "paused": s.paused}),
        );
    }
    let workers = broker.workers().await?.len();
    let warnings = broker.durability_warnings().await?;
    if json {
        return Ok(
            json!({"queues": stats, "live_workers": workers, "warnings": warnings}).to_string(),
        );
    }
    let header = [
        "QUEUE",
        "PENDING",
        "SCHEDULED",
        "PROCESSING",
        "DEAD",
        "OLDEST",
    ];
    let mut text = format!(
        "{}\n\n{workers} live worker(s)",
        table::render(&header, &rows)
    );
    for warning in warnings {
        text.push_str(&format!("\nwarning: {warning}"));
    }
    Ok(text)
}

/// `taskq status --partitions QUEUE`: the queue's busy partitions.
async fn partitions(
    client: &Client,
    queue: &str,
    limit: usize,
    json: bool,
) -> Result<String, Failure> {
    let busy = client.broker().partitions(queue, limit).await?;
    if json {
        return Ok(json!({"queue": queue, "partitions": busy}).to_string());
    }
    let rows: Vec<_> = busy
        .iter()
        .map(|p| {
            vec![
                p.key.clone(),
                p.pending.to_string(),
                p.running.to_string(),
                p.limit.map_or("-".into(), |l| l.to_string()),
                if p.at_limit() { "at limit" } else { "" }.to_owned(),
            ]
        })
        .collect();
    let header = ["PARTITION", "PENDING", "RUNNING", "LIMIT", ""];
    Ok(format!(
        "{}

{} busy partition(s) shown of queue `{queue}`",
        table::render(&header, &rows),
        busy.len()
    ))
}

async fn workers(client: &Client, json: bool) -> Result<String, Failure> {
    let workers = client.broker().workers().await?;
    if json {
        return Ok(serde_json::to_string(&workers)?);
    }
    let now = client.clock().now();
    let rows: Vec<_> = workers
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.host.clone(),
                w.pid.to_string(),
                w.queues.join(","),
                w.concurrency.to_string(),
                w.in_flight.to_string(),
                w.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                format!("{} ago", table::age((now - w.last_heartbeat).num_seconds())),
                w.clock_skew_ms.map_or_else(
                    || "-".to_owned(),
                    |ms| format!("{:+.1}s", ms as f64 / 1000.0),
                ),
            ]
        })
        .collect();
    let header = [
        "ID",
        "HOST",
        "PID",
        "QUEUES",
        "CONCURRENCY",
        "IN-FLIGHT",
        "STARTED",
        "LAST HEARTBEAT",
        "CLOCK SKEW",
    ];
    Ok(table::render(&header, &rows))
}

async fn enqueue(client: &Client, args: EnqueueArgs, json: bool) -> Result<String, Failure> {
    let values: serde_json::Value = serde_json::from_str(&args.args)
        .map_err(|err| format!("--args is not valid JSON: {err}"))?;
    if !args.force {
        check_declared(client, &args.name, &values).await?;
    }
    let mut call = client.enqueue_by_name(&args.name, &values);
    if let Some(queue) = args.queue {
        call = call.queue(queue);
    }
    if let Some(delay) = args.countdown {
        call = call.countdown(delay);
    }
    if let Some(at) = args.eta {
        call = call.eta(at);
    }
    if let Some(key) = args.partition {
        call = call.partition(key);
    }
    if let (Some(key), Some(window)) = (args.debounce, args.window) {
        call = call.debounce(key, window);
        if let Some(max_wait) = args.max_wait {
            call = call.debounce_max_wait(max_wait);
        }
    } else if let (Some(key), Some(window)) = (args.throttle, args.window) {
        call = if args.keep_last {
            call.throttle_keep_last(key, window)
        } else {
            call.throttle(key, window)
        };
    }
    if let Some(limit) = args.partition_concurrency {
        call = call.partition_concurrency(limit);
    }
    if let Some(priority) = args.priority {
        call = call.priority(priority);
    }
    if let Some(expires) = args.expires {
        call = match expires.parse::<chrono::DateTime<Utc>>() {
            Ok(at) => call.expires_at(at),
            Err(_) => call.expires_in(humantime::parse_duration(&expires).map_err(|_| {
                format!("--expires `{expires}` is neither a duration (1h) nor an RFC 3339 instant")
            })?),
        };
    }
    let handle = call.await?;
    Ok(if json {
        json!({"id": handle.id()}).to_string()
    } else {
        handle.id().to_string()
    })
}

/// Refuses what a worker would only dead-letter: a task no worker declared (naming the ones
/// that are) or arguments that do not fit the fields it declared. Brokers that keep no catalog
/// (RabbitMQ) cannot tell, and nothing is checked there.
async fn check_declared(
    client: &Client,
    name: &str,
    args: &serde_json::Value,
) -> Result<(), Failure> {
    let catalog = client.broker();
    if !catalog.keeps_catalog() {
        return Ok(());
    }
    let Some(declared) = catalog.task_declaration(name).await? else {
        let known = catalog.task_names().await?;
        let known = if known.is_empty() {
            "no worker has declared any task yet (workers publish the tasks they register as they start)".to_owned()
        } else {
            format!("known tasks: {}", known.join(", "))
        };
        return Err(format!(
            "no worker has declared a task named `{name}`; {known}; pass --force to send it anyway"
        )
        .into());
    };
    if let Some(shape) = &declared.arguments {
        shape
            .check(args)
            .map_err(|wrong| format!("task `{name}` {wrong}; pass --force to send it anyway"))?;
    }
    Ok(())
}

async fn result(
    client: &Client,
    id: &TaskId,
    wait: Option<Duration>,
    json: bool,
) -> Result<String, Failure> {
    if let Some(workflow) = client.workflow(*id).await? {
        return crate::workflow::show(client, &workflow, json).await;
    }
    let record = match wait {
        Some(timeout) => client
            .backend()
            .wait(*id, timeout)
            .await?
            .map(|record| client.opened(record)),
        None => client.result(*id).await?,
    };
    let Some(record) = record else {
        if let Some((queue, held)) = client.find_held(*id).await? {
            return Ok(crate::held::describe(*id, &queue, &held, json));
        }
        return Err(format!("no result for {id}: unknown, not finished yet, or expired").into());
    };
    if wait.is_some() && !record.state.is_ready() {
        return Err(format!("timed out waiting for {id}: still {}", record.state).into());
    }
    if json {
        return Ok(serde_json::to_string(&record)?);
    }
    let mut lines = vec![
        format!("state     {}", record.state),
        format!("attempts  {}", record.attempts),
    ];
    if let Some(result) = &record.result {
        lines.push(format!("result    {}", result.get()));
    }
    if let Some(error) = &record.error {
        lines.push(format!("error     {error}"));
    }
    if let Some(progress) = &record.progress {
        lines.push(format!("progress  {progress}"));
    }
    if let Some(started) = record.started_at {
        lines.push(format!("started   {}", started.to_rfc3339()));
    }
    if let Some(worker) = &record.worker {
        lines.push(format!("worker    {worker}"));
    }
    lines.push(format!("updated   {}", record.updated_at.to_rfc3339()));
    Ok(lines.join("\n"))
}

/// The queues a command applies to: the one named, or all.
async fn target_queues(client: &Client, queue: Option<String>) -> Result<Vec<String>, Failure> {
    Ok(match queue {
        Some(queue) => vec![queue],
        None => client.broker().queues().await?,
    })
}

async fn dead(client: &Client, command: DeadCommand, json: bool) -> Result<String, Failure> {
    let inspector = client.inspector();
    match command {
        DeadCommand::List {
            queue,
            limit,
            offset,
        } => {
            let mut letters: Vec<DeadLetter> = Vec::new();
            for queue in target_queues(client, queue).await? {
                letters.extend(
                    inspector
                        .dead_letters(&queue, Page::new(offset, limit))
                        .await?,
                );
            }
            if json {
                return Ok(serde_json::to_string(&letters)?);
            }
            let rows: Vec<_> = letters
                .iter()
                .map(|d| {
                    vec![
                        d.id.map_or("-".into(), |id| id.to_string()),
                        d.queue.clone(),
                        d.reason.to_string(),
                        d.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        d.error
                            .as_deref()
                            .map_or_else(String::new, |error| table::shorten(error, 60)),
                    ]
                })
                .collect();
            Ok(table::render(
                &["ID", "QUEUE", "REASON", "AT", "ERROR"],
                &rows,
            ))
        }
        DeadCommand::Show { id, queue } => {
            let id = parse_id(&id)?;
            for queue in target_queues(client, queue).await? {
                if let Some(letter) = inspector.find_dead_letter(&queue, id).await? {
                    return Ok(serde_json::to_string_pretty(&readable(&letter)?)?);
                }
            }
            Err(format!("no dead letter with id {id}").into())
        }
        DeadCommand::Requeue { ids, all, queue } => {
            let ids = ids
                .iter()
                .map(|id| parse_id(id))
                .collect::<Result<Vec<_>, _>>()?;
            let mut moved = 0;
            for queue in target_queues(client, queue).await? {
                moved += inspector
                    .requeue_dead(&queue, if all { None } else { Some(&ids) })
                    .await?;
            }
            if !all && moved < ids.len() {
                return Err(format!(
                    "requeued {moved} of {}: the others are not dead letters",
                    ids.len()
                )
                .into());
            }
            Ok(if json {
                json!({"requeued": moved}).to_string()
            } else {
                format!("requeued {moved}")
            })
        }
        DeadCommand::Purge {
            queue,
            older_than,
            yes,
        } => {
            if queue.is_none() && !yes {
                confirm("purge the dead letters of every queue")?;
            }
            let cutoff = older_than.map(|age| {
                client.clock().now()
                    - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
            });
            let mut purged = 0;
            for queue in target_queues(client, queue).await? {
                purged += inspector.purge_dead(&queue, cutoff).await?;
            }
            Ok(if json {
                json!({"purged": purged}).to_string()
            } else {
                format!("purged {purged}")
            })
        }
    }
}

async fn purge_queue(
    client: &Client,
    queue: &str,
    yes: bool,
    json: bool,
) -> Result<String, Failure> {
    let stats = client.broker().stats(queue).await?;
    let waiting = stats.pending + stats.scheduled;
    if !yes {
        confirm(&format!(
            "purge {waiting} waiting message(s) from `{queue}`"
        ))?;
    }
    let purged = client.broker().purge_queue(queue).await?;
    Ok(if json {
        json!({"purged": purged}).to_string()
    } else {
        format!("purged {purged}")
    })
}

/// `taskq queue pause|resume QUEUE`.
async fn set_paused(
    client: &Client,
    queue: &str,
    paused: bool,
    json: bool,
) -> Result<String, Failure> {
    client.broker().set_paused(queue, paused).await?;
    let state = if paused { "paused" } else { "resumed" };
    Ok(if json {
        json!({"queue": queue, "paused": paused}).to_string()
    } else {
        format!("{state} `{queue}`")
    })
}

/// `taskq shutdown WORKER`: refuses an id no live worker has (a typo would otherwise ask
/// nobody, silently).
async fn shutdown(client: &Client, worker: &str, json: bool) -> Result<String, Failure> {
    let broker = client.broker();
    if !broker.workers().await?.iter().any(|live| live.id == worker) {
        return Err(format!("no live worker `{worker}` (see `taskq workers`)").into());
    }
    broker
        .broadcast(&ControlMessage::Shutdown {
            worker: worker.to_owned(),
        })
        .await?;
    Ok(if json {
        json!({"asked": worker}).to_string()
    } else {
        format!("asked `{worker}` to shut down")
    })
}

/// Asks on the terminal; anything but yes (or no terminal answer at all) refuses.
fn confirm(what: &str) -> Result<(), Failure> {
    eprint!("{what}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err("not purged (answer y, or pass --yes)".into())
    }
}

async fn ping(client: &Client, timeout: Duration, json: bool) -> Result<String, Failure> {
    let broker = client.broker();
    let mut replies = broker.subscribe_control().await?;
    let nonce = TaskId::new().to_string();
    let sent = tokio::time::Instant::now();
    broker
        .broadcast(&ControlMessage::Ping {
            nonce: nonce.clone(),
        })
        .await?;
    let deadline = sent + timeout;
    let mut answers = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let ControlMessage::Pong {
            nonce: n, worker, ..
        } = message
        {
            if n == nonce {
                answers.push((worker, sent.elapsed()));
            }
        }
    }
    if answers.is_empty() {
        return Err(format!(
            "no worker answered within {}",
            humantime::format_duration(timeout)
        )
        .into());
    }
    if json {
        let list: Vec<_> = answers
            .iter()
            .map(|(worker, latency)| json!({"worker": worker, "latency_ms": latency.as_secs_f64() * 1e3}))
            .collect();
        return Ok(serde_json::to_string(&list)?);
    }
    let rows: Vec<_> = answers
        .iter()
        .map(|(worker, latency)| {
            vec![
                worker.clone(),
                format!("{:.2}", latency.as_secs_f64() * 1e3),
            ]
        })
        .collect();
    Ok(table::render(&["WORKER", "LATENCY MS"], &rows))
}

/// Serves the dashboard until Ctrl-C or SIGTERM.
async fn dashboard(
    client: Client,
    args: crate::args::DashboardArgs,
    beat: std::sync::Arc<dyn taskq_core::BeatStore>,
) -> Result<(), Failure> {
    let mut dashboard = taskq_dashboard::Dashboard::new(client)
        .access(dashboard_access(&args)?)
        .read_only(args.read_only)
        .beat_store(beat);
    for name in &args.allow_hosts {
        dashboard = dashboard.allow_host(name);
    }
    eprintln!("taskq dashboard on http://{}/", args.listen);
    dashboard
        .serve(args.listen, taskq::signal::Shutdown::listen().requested())
        .await?;
    Ok(())
}

/// The dashboard's access from its flags.
fn dashboard_access(args: &crate::args::DashboardArgs) -> Result<taskq_dashboard::Access, Failure> {
    use taskq_dashboard::Access;
    Ok(
        match (&args.token, &args.basic_user, &args.basic_password_hash) {
            (Some(_), Some(_), _) => {
                return Err("give either --token or --basic-user, not both".into())
            }
            (Some(token), None, _) => Access::token(token.clone())?,
            (None, Some(user), Some(hash)) => Access::basic(user.clone(), hash.clone())?,
            _ => Access::Open,
        },
    )
}
