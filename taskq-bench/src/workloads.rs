//! The workloads: each runs on a fresh queue and returns one [`Row`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use taskq_core::{Client, Task, TaskId};
use taskq_worker::{Worker, WorkerReport};
use tokio_util::sync::CancellationToken;

use crate::{
    amqp_floor::Publishing,
    measure::{self, RedisCounters, RedisNodes},
    tasks::{self, Noop, QuietNoop},
    Cli, Row, Workload,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Concurrent producers in W1c.
const PRODUCERS: usize = 64;
/// Tasks per bulk call.
const BULK: usize = 1_000;

pub(crate) struct Bench {
    client: Client,
    /// The broker URL, for workloads that talk to the server without taskq (the floor).
    url: String,
    redis: Option<RedisNodes>,
    n: usize,
    round_trips: usize,
    concurrency: usize,
    idle_seconds: u64,
    idle_workers: usize,
    w4_seconds: u64,
    w4_share: f64,
    w4_rate_n: usize,
    /// Producers sign and workers require signatures with this key.
    signing_key: Option<taskq_core::SigningKey>,
    /// Producers seal arguments and workers seal results with these keys.
    encryption: Option<taskq_core::Encryption>,
}

/// Costs observed across one measured stretch.
struct Costs {
    started: Instant,
    cpu: Duration,
    redis: Option<RedisCounters>,
}

impl Bench {
    pub(crate) async fn connect(cli: &Cli) -> Result<Self, BoxError> {
        let client = if cli.connection.broker.starts_with("memory") {
            // Room for the largest --n, so the bounded queue never refuses the benchmark.
            let broker = taskq_core::MemoryBroker::with_config(
                taskq_core::MemoryBrokerConfig::default().with_capacity(cli.n.max(100_000) * 2),
            );
            Client::new(
                Arc::new(broker),
                Arc::new(taskq_core::MemoryResultBackend::new()),
            )
        } else {
            taskq::connect(&cli.connection.broker).await?
        };
        let client = match &cli.signing_key {
            Some(key) => client.with_signing_key(key.clone()),
            None => client,
        };
        let client = match &cli.encryption_keys {
            Some(keys) => client.with_encryption(keys.clone()),
            None => client,
        };
        let redis = RedisNodes::connect(&cli.connection.broker).await?;
        Ok(Self {
            client,
            url: cli.connection.broker.clone(),
            redis,
            n: cli.n,
            round_trips: cli.round_trips,
            concurrency: cli.concurrency,
            idle_seconds: cli.idle_seconds,
            idle_workers: cli.idle_workers.max(1),
            w4_seconds: cli.w4_seconds,
            w4_share: cli.w4_share,
            w4_rate_n: cli.w4_rate_n,
            signing_key: cli.signing_key.clone(),
            encryption: cli.encryption_keys.clone(),
        })
    }

    pub(crate) fn redis(&self) -> Option<&RedisNodes> {
        self.redis.as_ref()
    }

    pub(crate) async fn run(&self, workload: Workload) -> Result<Row, BoxError> {
        let queue = format!("bench-{}", TaskId::new());
        let name = serde_json::to_value(workload)?
            .as_str()
            .unwrap_or("?")
            .to_owned();
        let mut row = match workload {
            Workload::W1 => self.w1(&queue).await?,
            Workload::W1c => self.w1c(&queue).await?,
            Workload::W1bulk => self.w1_bulk(&queue).await?,
            Workload::W2 => self.drain::<QuietNoop>(&queue).await?,
            Workload::Fair => self.fair(&queue).await?,
            Workload::FairHot => self.fair_hot(&queue, true).await?,
            Workload::FairHotPlain => self.fair_hot(&queue, false).await?,
            Workload::W2b => self.drain::<Noop>(&queue).await?,
            Workload::Celery => self.celery(&queue).await?,
            Workload::W3 => self.w3(&[queue]).await?,
            Workload::Floor => crate::floor::redis_floor(&self.url, self.round_trips).await?,
            Workload::FloorAmqpW1 => {
                crate::amqp_floor::amqp_floor(&self.url, self.n, Publishing::OneAtATime).await?
            }
            Workload::FloorAmqpW1c => {
                crate::amqp_floor::amqp_floor(&self.url, self.n, Publishing::Concurrent).await?
            }
            Workload::FloorAmqpW3 => {
                crate::amqp_floor::amqp_w3_floor(&self.url, self.round_trips).await?
            }
            Workload::FloorAmqpBulk => {
                crate::amqp_floor::amqp_floor(&self.url, self.n, Publishing::Bulk).await?
            }
            Workload::W3q3 => {
                self.w3(&spread_queues(&queue, self.redis.as_ref()).await?)
                    .await?
            }
            Workload::Chord => self.chord(&queue).await?,
            Workload::W4 => self.w4(&queue, self.w4_share).await?,
            Workload::W4x80 => self.w4(&queue, 0.8).await?,
            Workload::Idle => self.idle(&[queue]).await?,
            Workload::Idle3 => {
                self.idle(&spread_queues(&queue, self.redis.as_ref()).await?)
                    .await?
            }
        };
        row.workload = name;
        Ok(row)
    }

    async fn costs(&self) -> Result<Costs, BoxError> {
        let redis = match &self.redis {
            Some(nodes) => Some(nodes.counters().await?),
            None => None,
        };
        Ok(Costs {
            started: Instant::now(),
            cpu: measure::process_cpu(),
            redis,
        })
    }

    async fn row(&self, before: Costs, tasks: usize) -> Result<Row, BoxError> {
        let seconds = before.started.elapsed().as_secs_f64();
        let cpu = measure::process_cpu().saturating_sub(before.cpu);
        let per_task = |seconds: f64| seconds * 1e6 / tasks.max(1) as f64;
        let mut row = Row {
            tasks,
            seconds,
            tasks_per_second: tasks as f64 / seconds,
            process_cpu_us_per_task: per_task(cpu.as_secs_f64()),
            ..Row::default()
        };
        if let (Some(nodes), Some(start)) = (&self.redis, before.redis) {
            let end = nodes.counters().await?;
            row.redis_cpu_us_per_task = Some(per_task(end.cpu - start.cpu));
            row.redis_commands_per_second = Some((end.commands - start.commands) as f64 / seconds);
        }
        Ok(row)
    }

    async fn w1(&self, queue: &str) -> Result<Row, BoxError> {
        let before = self.costs().await?;
        for n in 0..self.n {
            self.client
                .enqueue(QuietNoop { n: n as u64 })
                .queue(queue)
                .await?;
        }
        let row = self.row(before, self.n).await?;
        self.purge(queue).await?;
        Ok(row)
    }

    async fn w1c(&self, queue: &str) -> Result<Row, BoxError> {
        let per_producer = self.n / PRODUCERS;
        let before = self.costs().await?;
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (client, queue) = (self.client.clone(), queue.to_owned());
                tokio::spawn(async move {
                    for i in 0..per_producer {
                        client
                            .enqueue(QuietNoop {
                                n: (p * per_producer + i) as u64,
                            })
                            .queue(queue.clone())
                            .await?;
                    }
                    Ok::<_, taskq_core::Error>(())
                })
            })
            .collect();
        for producer in producers {
            producer.await??;
        }
        let row = self.row(before, per_producer * PRODUCERS).await?;
        self.purge(queue).await?;
        Ok(row)
    }

    async fn w1_bulk(&self, queue: &str) -> Result<Row, BoxError> {
        let before = self.costs().await?;
        self.fill(queue, QuietNoop::NAME, self.n).await?;
        let row = self.row(before, self.n).await?;
        self.purge(queue).await?;
        Ok(row)
    }

    /// Enqueues `n` quiet no-ops in bulk calls.
    /// Enqueues `n` invocations of `task` (argument `{"n": 1}`) on `queue`, in bulk calls.
    ///
    /// The typed bulk API routes by the task's own queue; the benchmark needs a fresh queue per
    /// workload, so it builds the envelopes itself.
    async fn fill(&self, queue: &str, task: &str, n: usize) -> Result<(), BoxError> {
        self.fill_partitioned(queue, task, n, |_| None).await
    }

    /// [`Self::fill`], the `i`th task in partition `partition(i)`.
    async fn fill_partitioned(
        &self,
        queue: &str,
        task: &str,
        n: usize,
        partition: impl Fn(usize) -> Option<String>,
    ) -> Result<(), BoxError> {
        let args = serde_json::json!({"n": 1});
        let now = self.client.clock().now();
        let mut sent = 0;
        while sent < n {
            let batch = BULK.min(n - sent);
            let mut messages = Vec::with_capacity(batch);
            for i in sent..sent + batch {
                let mut envelope = taskq_core::Envelope::new(task, &args, queue, now)?;
                envelope.partition = partition(i);
                if let Some(keys) = &self.encryption {
                    let sealed = keys.seal(
                        envelope.args.get(),
                        &taskq_core::Encryption::associated(envelope.id, &envelope.task),
                    );
                    envelope.args = serde_json::value::to_raw_value(&sealed)?;
                }
                if let Some(key) = &self.signing_key {
                    key.sign(&mut envelope);
                }
                messages.push(taskq_core::OutboundMessage::from_envelope(
                    &envelope,
                    self.client.max_payload_bytes(),
                )?);
            }
            self.client.broker().enqueue(messages).await?;
            sent += batch;
        }
        Ok(())
    }

    async fn drain<T: taskq_core::Run>(&self, queue: &str) -> Result<Row, BoxError> {
        self.drain_n::<T>(queue, self.n).await
    }

    /// [`Self::drain`] of `n` tasks.
    async fn drain_n<T: taskq_core::Run>(&self, queue: &str, n: usize) -> Result<Row, BoxError> {
        self.fill(queue, T::NAME, n).await?;
        self.drain_filled_with(queue, n, &[] as &[&str]).await
    }

    /// W2 over 1,000 partitions.
    async fn fair(&self, queue: &str) -> Result<Row, BoxError> {
        self.fill_partitioned(queue, QuietNoop::NAME, self.n, |i| {
            Some(format!("tenant-{}", i % 1_000))
        })
        .await?;
        self.drain_filled(queue).await
    }

    /// FairHot (`partitioned`) or FairHotPlain.
    async fn fair_hot(&self, queue: &str, partitioned: bool) -> Result<Row, BoxError> {
        const COLD_PARTITIONS: usize = 999;
        const PER_COLD: usize = 2;
        let cold = COLD_PARTITIONS * PER_COLD;
        self.fill_partitioned(queue, QuietNoop::NAME, self.n, |_| {
            partitioned.then(|| "hot".to_owned())
        })
        .await?;
        tasks::reset(self.n);
        tasks::take_starts();
        let before = self.costs().await?;
        let (stop, running) = self.start_worker(&[queue])?;
        for batch in 0..cold / BULK + 1 {
            let mut messages = Vec::with_capacity(BULK);
            for i in batch * BULK..((batch + 1) * BULK).min(cold) {
                let stamp = tasks::Stamp {
                    sent_us: tasks::now_us(),
                };
                let now = self.client.clock().now();
                let mut envelope =
                    taskq_core::Envelope::new(tasks::Stamp::NAME, &stamp, queue, now)?;
                envelope.partition = partitioned.then(|| format!("cold-{}", i % COLD_PARTITIONS));
                messages.push(taskq_core::OutboundMessage::from_envelope(
                    &envelope,
                    self.client.max_payload_bytes(),
                )?);
            }
            if !messages.is_empty() {
                self.client.broker().enqueue(messages).await?;
            }
        }
        tasks::finished().await;
        let mut waits = Vec::with_capacity(cold);
        while waits.len() < cold {
            waits.extend(tasks::take_starts());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.settled(queue).await?;
        let mut row = self.row(before, self.n + cold).await?;
        waits.sort_unstable();
        let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize] as f64 / 1e3;
        row.p50_ms = Some(at(0.50));
        row.p99_ms = Some(at(0.99));
        stop.cancel();
        running.await??;
        Ok(row)
    }

    /// Waits until nothing of `queue` is pending or held (the last acks landed).
    async fn settled(&self, queue: &str) -> Result<(), BoxError> {
        loop {
            let stats = self.client.broker().stats(queue).await?;
            if stats.pending + stats.processing == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Times a worker draining the `self.n` tasks already in `queue`.
    async fn drain_filled(&self, queue: &str) -> Result<Row, BoxError> {
        self.drain_filled_with(queue, self.n, &[] as &[&str]).await
    }

    /// [`Self::drain_filled`] of `n` tasks by a worker that also serves `celery_queues` as
    /// Celery's.
    async fn drain_filled_with(
        &self,
        queue: &str,
        n: usize,
        celery_queues: &[&str],
    ) -> Result<Row, BoxError> {
        tasks::reset(n);
        let before = self.costs().await?;
        let (stop, running) = self.start_worker_with(&[queue], celery_queues)?;
        tasks::finished().await;
        // Wait for the last acks too: the drain is done when nothing is held any more.
        self.settled(queue).await?;
        let row = self.row(before, n).await?;
        stop.cancel();
        running.await??;
        Ok(row)
    }

    /// Fills Celery's list of `queue` with N `bench.noop` messages in Celery's protocol
    /// (untimed), then times a worker serving it as a Celery queue until all are settled.
    async fn celery(&self, queue: &str) -> Result<Row, BoxError> {
        let broker = self.client.broker();
        for start in (0..self.n).step_by(BULK) {
            let sends = (start..(start + BULK).min(self.n)).map(|n| {
                let mut kwargs = serde_json::Map::new();
                kwargs.insert("n".into(), n.into());
                let message = taskq_core::celery::message(
                    Noop::NAME,
                    taskq_core::TaskId::new(),
                    &[],
                    &kwargs,
                    queue,
                );
                broker.send_celery(queue, message)
            });
            futures_util::future::try_join_all(sends).await?;
        }
        self.drain_filled_with(queue, self.n, &[queue]).await
    }

    /// Sends a chord of `n` no-ops (untimed, like the drains' fill), then times the worker from
    /// its start to the callback's result.
    async fn chord(&self, queue: &str) -> Result<Row, BoxError> {
        use taskq_core::workflow::{Group, Signature};
        let members = (0..self.n as u64)
            .map(|n| Signature::of(&Noop { n }).map(|s| s.queue(queue)))
            .collect::<Result<Vec<_>, _>>()?;
        let callback = Signature::step(&tasks::Sum { values: Vec::new() })?.queue(queue);
        let chord = Group::<serde_json::Value>::of_signatures(members).then_signature(callback);
        let sent = self.client.send_chain(chord).await?;
        tasks::reset(self.n);
        let before = self.costs().await?;
        let (stop, running) = self.start_worker(&[queue])?;
        let sum = sent.wait(Duration::from_secs(600)).await?;
        let row = self.row(before, self.n).await?;
        let expected = (self.n as u64).saturating_sub(1) * self.n as u64 / 2;
        if sum != serde_json::json!(expected) {
            return Err(format!("the chord's callback returned {sum}, expected {expected}").into());
        }
        stop.cancel();
        running.await??;
        Ok(row)
    }

    /// W4: measures the W2b rate on a side queue (a drain of `w4_rate_n` tasks with results:
    /// what a results-storing worker sustains), then offers `share` of it steadily for
    /// `w4_seconds` (a bulk enqueue per millisecond of what is due) while one worker drains.
    /// Every run records its enqueue-to-start wait; one message in 500 is also waited for, for
    /// enqueue-to-result.
    ///
    /// The rate's drain is long on purpose: a drain of 20,000 lasts under half a second, and
    /// its rate swings with whatever the machine does in that moment (39,600–54,100/s in four
    /// runs of one sitting, against 39,500–43,100/s for 200,000 over four to five seconds). A
    /// share of a burst that read high is more than a worker sustains, and W4 would measure the
    /// backlog that follows rather than latency under the load it means to offer.
    async fn w4(&self, queue: &str, share: f64) -> Result<Row, BoxError> {
        const RESULT_SAMPLE: u64 = 500;
        let side = format!("{queue}-rate");
        let rate = self
            .drain_n::<Noop>(&side, self.w4_rate_n)
            .await?
            .tasks_per_second
            * share;
        let (stop, running) = self.start_worker(&[queue])?;
        // As W3 does: the worker's start (registration, scripts loaded, its first passes) is
        // not latency under load, and at 40,000 tasks/s its first 100 ms are 1 % of the run.
        self.warm_up(queue).await?;
        let before = self.costs().await?;
        let started = Instant::now();
        let run_for = Duration::from_secs(self.w4_seconds);
        let mut sent: u64 = 0;
        let mut waits = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while started.elapsed() < run_for {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due <= sent {
                continue;
            }
            let now = self.client.clock().now();
            let mut messages = Vec::with_capacity((due - sent) as usize);
            let mut sampled = Vec::new();
            for n in sent..due {
                let stamp = tasks::Stamp {
                    sent_us: tasks::now_us(),
                };
                let envelope = taskq_core::Envelope::new(tasks::Stamp::NAME, &stamp, queue, now)?;
                if n % RESULT_SAMPLE == 0 {
                    sampled.push((envelope.id, stamp.sent_us));
                }
                messages.push(taskq_core::OutboundMessage::from_envelope(
                    &envelope,
                    self.client.max_payload_bytes(),
                )?);
            }
            self.client.broker().enqueue(messages).await?;
            for (id, sent_us) in sampled {
                let handle = self.client.result_handle::<()>(id);
                waits.spawn(async move {
                    handle.wait(Duration::from_secs(60)).await.ok()?;
                    Some(tasks::now_us().saturating_sub(sent_us))
                });
            }
            sent = due;
        }
        // Let the backlog drain before the figures are taken.
        loop {
            let stats = self.client.broker().stats(queue).await?;
            if stats.pending + stats.processing == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut row = self.row(before, sent as usize).await?;
        let mut starts = tasks::take_starts();
        let mut results: Vec<u64> = waits.join_all().await.into_iter().flatten().collect();
        let at = |sorted: &mut Vec<u64>, q: f64| {
            sorted.sort_unstable();
            (!sorted.is_empty())
                .then(|| sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1e3)
        };
        row.offered_per_second = Some(rate);
        row.p50_ms = at(&mut starts, 0.50);
        row.p99_ms = at(&mut starts, 0.99);
        row.p999_ms = at(&mut starts, 0.999);
        row.result_p50_ms = at(&mut results, 0.50);
        row.result_p99_ms = at(&mut results, 0.99);
        row.result_p999_ms = at(&mut results, 0.999);
        stop.cancel();
        running.await??;
        Ok(row)
    }

    /// Sequential round trips to a worker of `queues`, every task sent to the last queue:
    /// enqueue to result (`p50_ms`), and enqueue to start as the task saw it (`start_p50_ms`).
    async fn w3(&self, queues: &[String]) -> Result<Row, BoxError> {
        let (stop, running) = self.start_worker(queues)?;
        let queue = queues.last().ok_or("w3 needs a queue")?.as_str();
        let stamp = || tasks::Stamp {
            sent_us: tasks::now_us(),
        };
        self.warm_up(queue).await?;
        let before = self.costs().await?;
        let mut latencies = Vec::with_capacity(self.round_trips);
        for _ in 0..self.round_trips {
            let started = Instant::now();
            let handle = self.client.enqueue(stamp()).queue(queue).await?;
            handle.wait(Duration::from_secs(10)).await?;
            latencies.push(started.elapsed());
        }
        let mut row = self.row(before, self.round_trips).await?;
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        row.p50_ms = Some(at(0.50));
        row.p99_ms = Some(at(0.99));
        let mut starts = tasks::take_starts();
        starts.sort_unstable();
        let start_at = |q: f64| {
            (!starts.is_empty())
                .then(|| starts[((starts.len() - 1) as f64 * q) as usize] as f64 / 1e3)
        };
        row.start_p50_ms = start_at(0.50);
        row.start_p99_ms = start_at(0.99);
        stop.cancel();
        running.await??;
        Ok(row)
    }

    /// Twenty round trips through a freshly started worker of `queue` (connections opened,
    /// scripts loaded, its first passes made), then forgets their starts.
    async fn warm_up(&self, queue: &str) -> Result<(), BoxError> {
        for _ in 0..20 {
            let stamp = tasks::Stamp {
                sent_us: tasks::now_us(),
            };
            let handle = self.client.enqueue(stamp).queue(queue).await?;
            handle.wait(Duration::from_secs(10)).await?;
        }
        tasks::take_starts();
        Ok(())
    }

    /// `idle_workers` idle workers on `queues`: Redis commands and Redis CPU per second, per
    /// worker (the tasks column counts the workers).
    async fn idle(&self, queues: &[String]) -> Result<Row, BoxError> {
        let workers = self.idle_workers;
        let running = (0..workers)
            .map(|_| self.start_worker(queues))
            .collect::<Result<Vec<_>, _>>()?;
        // Past the start-up (registration, first heartbeat and fetch of every worker).
        tokio::time::sleep(Duration::from_secs(2 + workers as u64 / 50)).await;
        let before = self.costs().await?;
        tokio::time::sleep(Duration::from_secs(self.idle_seconds)).await;
        let mut row = self.row(before, 0).await?;
        let per_worker = workers as f64;
        // The two INFO calls of the measurement itself are not the workers'.
        if let Some(rate) = row.redis_commands_per_second.as_mut() {
            *rate = (*rate - 2.0 / row.seconds) / per_worker;
        }
        // With no tasks, `row` put the window's whole Redis CPU in the per-task column.
        row.redis_cpu_us_per_task = row
            .redis_cpu_us_per_task
            .map(|us| us / row.seconds / per_worker);
        row.tasks = workers;
        row.tasks_per_second = 0.0;
        row.process_cpu_us_per_task = 0.0;
        for (stop, _) in &running {
            stop.cancel();
        }
        for (_, run) in running {
            run.await??;
        }
        Ok(row)
    }

    fn start_worker<Q: AsRef<str>>(&self, queues: &[Q]) -> Result<RunningBench, BoxError> {
        self.start_worker_with(queues, &[] as &[&str])
    }

    /// A worker on `queues` that also serves `celery_queues` as Celery's queues.
    fn start_worker_with<Q: AsRef<str>, C: AsRef<str>>(
        &self,
        queues: &[Q],
        celery_queues: &[C],
    ) -> Result<RunningBench, BoxError> {
        let mut builder = Worker::builder(self.client.clone())
            .celery_queues(celery_queues.iter().map(AsRef::as_ref))
            .register::<Noop>()
            .register::<QuietNoop>()
            .register::<tasks::Sum>()
            .register::<tasks::Stamp>()
            .queues(queues.iter().map(AsRef::as_ref))
            .concurrency(self.concurrency)
            .prefetch(self.concurrency)
            .shutdown_grace(Duration::from_secs(5));
        if let Some(keys) = &self.encryption {
            builder = builder.encryption(keys.clone());
        }
        if let Some(key) = &self.signing_key {
            builder =
                builder.verify_signatures(taskq_core::Keyring::new(vec![key.clone()]).required());
        }
        let worker = builder.build()?;
        let stop = CancellationToken::new();
        let running = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
        Ok((stop, running))
    }

    /// Removes what a producer-only workload left behind.
    async fn purge(&self, queue: &str) -> Result<(), BoxError> {
        self.client.broker().purge_queue(queue).await?;
        Ok(())
    }
}

/// A worker the bench started: its stop signal and its run.
type RunningBench = (
    CancellationToken,
    tokio::task::JoinHandle<taskq_worker::Result<WorkerReport>>,
);

/// Three queue names derived from `base`. On a cluster their hash slots fall in the three
/// thirds of the slot range (one per master of a cluster created by `redis-cli --cluster
/// create` with three masters); elsewhere any three names do.
async fn spread_queues(base: &str, nodes: Option<&RedisNodes>) -> Result<Vec<String>, BoxError> {
    let mut found: [Option<String>; 3] = Default::default();
    for n in 0.. {
        let queue = format!("{base}-{n}");
        let third = match nodes {
            Some(nodes) => nodes
                .keyslot(&format!("{{{queue}}}"))
                .await?
                .map_or(n % 3, |slot| usize::from(slot) * 3 / 16_384),
            None => n % 3,
        };
        if found[third].is_none() {
            found[third] = Some(queue);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    Ok(found.into_iter().flatten().collect())
}
