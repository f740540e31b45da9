//! taskq-bench: measures enqueue throughput, drain throughput, round-trip latency and the CPU,
//! memory and Redis commands they cost, for no-op tasks with one small integer argument.
//!
//! `cargo run --release -p taskq-bench -- --broker redis://127.0.0.1:6379` (spawns nothing; uses
//! the given Redis) or `--broker memory://`. See `docs/performance.md`.

mod amqp_floor;
mod baseline;
mod floor;
mod measure;
mod tasks;
mod workloads;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Command line of the benchmark.
#[derive(Debug, Parser)]
#[command(about = "Benchmark taskq against a broker")]
struct Cli {
    /// Where the broker is (`--broker`, TLS files; Redis counters are not collected over TLS).
    #[command(flatten)]
    connection: taskq::cli::ConnectArgs,
    /// Workloads to run (default: every one that applies to the broker).
    #[arg(long, value_enum, value_delimiter = ',')]
    workload: Vec<Workload>,
    /// Tasks per throughput workload.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Round trips for the latency workload (at least one: its percentiles need a sample).
    #[arg(long, default_value_t = 1_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    round_trips: usize,
    /// Worker concurrency for the drain workloads.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds W4 keeps its producers running.
    #[arg(long, default_value_t = 30)]
    w4_seconds: u64,
    /// Share of the W2b rate (measured in the same run) W4 offers.
    #[arg(long, default_value_t = 0.5)]
    w4_share: f64,
    /// Tasks of the drain that measures the W2b rate W4 offers a share of: seconds long, so
    /// that the rate is what a worker sustains, not a half-second burst that swings with the
    /// moment (docs/performance.md).
    #[arg(long, default_value_t = 200_000)]
    w4_rate_n: usize,
    /// Seconds the idle workload observes an idle worker.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    /// Idle workers the idle workloads start in this process (each with its own blocking
    /// connection and background duties, as separate worker processes have); the report is per
    /// worker.
    #[arg(long, default_value_t = 1)]
    idle_workers: usize,
    /// Sign every task with this key (KEY-ID:HEX-SECRET) and make the worker require
    /// signatures, to measure what signing costs.
    #[arg(long)]
    signing_key: Option<taskq_core::SigningKey>,
    /// Seal every task's arguments and result with these keys (KEY-ID:64-HEX), to measure what
    /// encryption costs.
    #[arg(long)]
    encryption_keys: Option<taskq_core::Encryption>,
    /// Export every span over OTLP/HTTP to this collector while measuring (`--features otel`;
    /// `taskq-otlp-sink` is a local stand-in), to measure what exporting costs.
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// A saved `--json` report: print each workload's ratios to it as well (in JSON, under
    /// "vs_baseline").
    #[arg(long, value_name = "FILE.json")]
    baseline: Option<String>,
}

/// One measured scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Workload {
    /// One producer, one awaited enqueue at a time.
    W1,
    /// 64 concurrent producers sharing one client.
    W1c,
    /// The bulk enqueue API.
    W1bulk,
    /// Drain N queued tasks, results off.
    W2,
    /// Drain N queued tasks, results stored.
    W2b,
    /// W2b from Celery's list: N Celery-protocol messages (as Python's `send_task` writes
    /// them) drained by a worker serving Celery's queue, each result written where Celery's
    /// client reads it (`redis://` only; compare with a Celery worker on the same queue,
    /// docs/celery.md).
    Celery,
    /// Enqueue then wait for the result, sequentially.
    W3,
    /// The floor W3 is judged against: the least any Redis queue with a result does per round
    /// trip (LPUSH, a consumer's BLPOP and LPUSH of a reply, the producer's BLPOP), with
    /// redis-rs on the same runtime; `redis://` only. Run it beside w3: the report prints
    /// W3's p50 over the floor's.
    Floor,
    /// RabbitMQ's floor for W1: a plain lapin publisher with confirms, one message at a
    /// time, persistent, into a quorum queue of the same node (`amqp://` only).
    FloorAmqpW1,
    /// RabbitMQ's floor for W1c: 64 such publishers at once.
    FloorAmqpW1c,
    /// RabbitMQ's floor for W1bulk: batches of 1,000, then their confirms.
    FloorAmqpBulk,
    /// RabbitMQ's floor for W3: a lapin producer publishes with a confirm into a quorum queue
    /// and awaits it, a consumer takes the message, hands its result over in-process (as W3
    /// with `results=memory` gets it) and acknowledges it (`amqp://` only). Run it beside w3:
    /// the report prints W3's p50 over the floor's.
    FloorAmqpW3,
    /// W3 with a worker of three queues, every task sent to the last one (the worker looks at
    /// the other two first, as a worker of several queues does).
    W3q3,
    /// Latency under load: producers enqueue at a steady share (--w4-share, half by default)
    /// of the W2b rate measured in the same run (W4's tasks store results, as W2b's do) for
    /// --w4-seconds while one worker drains; p50/p99/p99.9 from enqueue to start (table: p50,
    /// p99) and, sampled, from enqueue to result.
    W4,
    /// W4 at 80 % of the W2b rate.
    #[value(name = "w4-80")]
    #[serde(rename = "w4-80")]
    W4x80,
    /// A chord of N no-op members and a callback summing their outputs: from the worker's
    /// start to the callback's result (compare with W2b, which drains N tasks with results).
    Chord,
    /// W2 with the N tasks spread evenly over 1,000 partitions (tenants): the cost of taking
    /// turns (compare with W2 in the same run).
    Fair,
    /// A hot partition's N queued tasks, then, with the worker running, 2 tasks in each of 999
    /// cold partitions: the cold tasks' enqueue-to-start p50/p99 (table: p50, p99) and the
    /// drain rate of all of them.
    FairHot,
    /// FairHot without partition keys: the cold tasks wait behind the hot backlog (the
    /// baseline FairHot is judged against).
    FairHotPlain,
    /// Redis commands and Redis CPU per second of an idle worker (`--idle-workers` of them:
    /// the table's tasks column is the workers, `redis c/s` and `redis us/t` are per worker:
    /// commands per second, and Redis CPU microseconds per second).
    Idle,
    /// Idle with three queues per worker whose slots fall in the thirds of the slot range (one
    /// per master of a default 3-master cluster).
    Idle3,
}

impl Workload {
    /// What a run without `--workload` runs on `broker`, in the table's order.
    fn default_run(broker: &str) -> Vec<Workload> {
        Workload::value_variants()
            .iter()
            .copied()
            .filter(|workload| workload.runs_by_default_on(broker))
            .collect()
    }

    /// Whether a run without `--workload` includes this workload on `broker`: the floors
    /// speak to one kind of server, Celery's drain and the idle workloads need Redis, and
    /// RabbitMQ carries no workflows (no uniqueness keys), so no chord.
    fn runs_by_default_on(self, broker: &str) -> bool {
        match self {
            Workload::Chord => !broker.starts_with("amqp"),
            Workload::Floor => broker.starts_with("redis://"),
            Workload::Celery | Workload::Idle | Workload::Idle3 => broker.starts_with("redis"),
            Workload::FloorAmqpW1
            | Workload::FloorAmqpW1c
            | Workload::FloorAmqpBulk
            | Workload::FloorAmqpW3 => broker.starts_with("amqp"),
            _ => true,
        }
    }
}

/// Everything measured for one workload.
#[derive(Debug, Default, Serialize)]
struct Row {
    workload: String,
    tasks: usize,
    seconds: f64,
    tasks_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p999_ms: Option<f64>,
    /// W4: the rate producers held, and enqueue-to-result percentiles (sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    offered_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_p999_ms: Option<f64>,
    /// W3: enqueue-to-start percentiles beside the round trip (`p50_ms`), the figure queues
    /// that report only when a job starts (graphile-worker, pg-boss) compare with.
    #[serde(skip_serializing_if = "Option::is_none")]
    start_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_p99_ms: Option<f64>,
    /// CPU of this process (producer and/or worker) per task.
    process_cpu_us_per_task: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_cpu_us_per_task: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_commands_per_second: Option<f64>,
}

/// With `--features mimalloc`, the whole benchmark allocates through mimalloc instead of the
/// system allocator (glibc's): the same code, to show what the allocator costs a drain.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut cli = Cli::parse();
    #[cfg(feature = "otel")]
    if let Some(endpoint) = &cli.otlp_endpoint {
        // Log lines at RUST_LOG (default info); spans at info go to the collector.
        taskq::cli::init_logging_exporting(taskq::cli::LogFormat::Text, endpoint)?;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    cli.connection.broker = cli.connection.url();
    let workloads = if cli.workload.is_empty() {
        Workload::default_run(&cli.connection.broker)
    } else {
        cli.workload.clone()
    };
    // Read before the run: a wrong path fails at once, not after minutes of measuring.
    let baseline = cli
        .baseline
        .as_deref()
        .map(baseline::Baseline::load)
        .transpose()?;
    let bench = workloads::Bench::connect(&cli).await?;
    let json = cli.json;
    // Run on a runtime worker thread, where applications' own tasks run, rather than on the
    // thread blocked in `main`: every await would otherwise hop between threads.
    let rows = tokio::spawn(async move {
        let mut rows = Vec::new();
        for workload in workloads {
            if matches!(workload, Workload::Idle | Workload::Idle3) && bench.redis().is_none() {
                continue;
            }
            let row = bench.run(workload).await?;
            if !json {
                eprintln!("{}", table_row(&row));
            }
            rows.push(row);
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(rows)
    })
    .await??;
    let mut report = serde_json::json!({
        "broker": cli.connection.broker,
        "n": cli.n,
        "concurrency": cli.concurrency,
        "peak_rss_mib": measure::peak_rss_kib().map(|k| k as f64 / 1024.0),
        "rows": rows,
        "postgres_tables": measure::postgres_tables(&cli.connection.broker).await,
    });
    let row_values = report["rows"].as_array().cloned().unwrap_or_default();
    if let Some(baseline) = &baseline {
        let ratios: serde_json::Map<String, serde_json::Value> = row_values
            .iter()
            .filter_map(|row| {
                let ratios = baseline.ratios(row)?;
                let ratios: serde_json::Map<String, serde_json::Value> = ratios
                    .into_iter()
                    .map(|(label, ratio)| (label.to_owned(), ratio.into()))
                    .collect();
                Some((row["workload"].as_str()?.to_owned(), ratios.into()))
            })
            .collect();
        report["vs_baseline"] = ratios.into();
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", table_header());
        for row in &rows {
            println!("{}", table_row(row));
        }
        if let Some(rss) = report["peak_rss_mib"].as_f64() {
            println!("peak RSS of the benchmark process (producer + worker): {rss:.1} MiB");
        }
        if let Some(tables) = report["postgres_tables"].as_object() {
            let sizes: Vec<String> = tables
                .iter()
                .map(|(table, bytes)| format!("{table} {} KiB", bytes.as_i64().unwrap_or(0) / 1024))
                .collect();
            println!(
                "postgres tables with their indexes, after the run: {}",
                sizes.join(", ")
            );
        }
        for row in rows.iter().filter(|row| row.offered_per_second.is_some()) {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
            println!(
                "{}: offered {:.0}/s; enqueue->start p50/p99/p99.9 {} / {} / {} ms; enqueue->result p50/p99/p99.9 {} / {} / {} ms",
                row.workload,
                row.offered_per_second.unwrap_or_default(),
                ms(row.p50_ms),
                ms(row.p99_ms),
                ms(row.p999_ms),
                ms(row.result_p50_ms),
                ms(row.result_p99_ms),
                ms(row.result_p999_ms),
            );
        }
        let p50_of = |name: &str| {
            rows.iter()
                .find(|r| r.workload == name)
                .and_then(|r| r.p50_ms)
        };
        for floor_name in ["floor", "floor-amqp-w3"] {
            if let (Some(w3), Some(floor)) = (p50_of("w3"), p50_of(floor_name)) {
                println!(
                    "w3 / {floor_name}: p50 {w3:.3} / {floor:.3} ms = {:.2}x",
                    w3 / floor
                );
            }
        }
        for row in rows.iter().filter(|row| row.start_p50_ms.is_some()) {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
            println!(
                "{}: enqueue->start p50/p99 {} / {} ms; enqueue->result p50/p99 {} / {} ms",
                row.workload,
                ms(row.start_p50_ms),
                ms(row.start_p99_ms),
                ms(row.p50_ms),
                ms(row.p99_ms),
            );
        }
        if let Some(baseline) = &baseline {
            println!("{}", baseline.report(&row_values));
        }
    }
    #[cfg(feature = "otel")]
    taskq::cli::flush_exported_spans();
    Ok(())
}

fn table_header() -> String {
    format!(
        "{:<8} {:>7} {:>9} {:>11} {:>8} {:>8} {:>10} {:>10} {:>9}",
        "workload",
        "tasks",
        "seconds",
        "tasks/s",
        "p50 ms",
        "p99 ms",
        "cpu us/t",
        "redis us/t",
        "redis c/s"
    )
}

fn table_row(row: &Row) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    format!(
        "{:<8} {:>7} {:>9.3} {:>11.0} {:>8} {:>8} {:>10.2} {:>10} {:>9}",
        row.workload,
        row.tasks,
        row.seconds,
        row.tasks_per_second,
        opt(row.p50_ms, 3),
        opt(row.p99_ms, 3),
        row.process_cpu_us_per_task,
        opt(row.redis_cpu_us_per_task, 2),
        opt(row.redis_commands_per_second, 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zero round trips would leave W3 and the floors no sample to take percentiles of (they
    /// panicked on an empty list): refused when parsed, with the option named.
    #[test]
    fn zero_round_trips_are_refused_with_a_clear_error() {
        let err = Cli::try_parse_from(["taskq-bench", "--round-trips", "0"]).unwrap_err();
        assert!(err.to_string().contains("--round-trips"), "{err}");
        let cli = Cli::try_parse_from(["taskq-bench", "--round-trips", "1"]).unwrap();
        assert_eq!(cli.round_trips, 1);
    }

    #[test]
    fn a_run_without_workloads_leaves_out_what_the_broker_cannot_serve() {
        let memory = Workload::default_run("memory://");
        assert!(memory.contains(&Workload::W3) && memory.contains(&Workload::W4));
        for foreign in [
            Workload::Floor,
            Workload::Celery,
            Workload::FloorAmqpW1,
            Workload::FloorAmqpW3,
        ] {
            assert!(!memory.contains(&foreign), "{foreign:?} on memory://");
        }
        let redis = Workload::default_run("redis://127.0.0.1:6379");
        assert!(redis.contains(&Workload::Floor) && redis.contains(&Workload::Idle));
        assert!(!redis.contains(&Workload::FloorAmqpBulk));
        let amqp = Workload::default_run("amqp://guest:guest@127.0.0.1:5672/%2f");
        assert!(amqp.contains(&Workload::FloorAmqpW3) && amqp.contains(&Workload::W2b));
        assert!(!amqp.contains(&Workload::Floor) && !amqp.contains(&Workload::Celery));
        assert!(!amqp.contains(&Workload::Chord) && memory.contains(&Workload::Chord));
    }
}
