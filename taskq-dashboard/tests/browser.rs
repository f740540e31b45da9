//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver: what a person sees and clicks. Each test starts its own chromedriver
//! on a free port and fails loudly when it cannot.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use support::{deployment, serve, settled, Double};
use taskq_core::TaskState;
use taskq_dashboard::Dashboard;

mod support;

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = taskq_testkit::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian package chromium-driver; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    async fn browser(&self) -> Browser {
        // Two TLS backends are linked (ring and aws-lc); say which one WebDriver's client uses
        // (ring, deprecated from rustls 0.23.48 for lacking post-quantum key exchange: see
        // taskq-redis's server.rs).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"]}),
        );
        ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a headless Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds (the page updates by itself).
async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `path` of the dashboard at `address`.
async fn open(browser: &Browser, address: std::net::SocketAddr, path: &str) {
    browser
        .goto(&format!("http://{address}{path}"))
        .await
        .unwrap();
}

/// Clicks the button of the form whose action ends with `action` (within `scope`, a CSS
/// selector, or the whole page for ""), and accepts the page's confirmation when it asks.
async fn press(browser: &Browser, scope: &str, action: &str, confirms: bool) {
    browser
        .find(Locator::Css(&format!(
            "{scope} form[action$='{action}'] button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    if confirms {
        browser.accept_alert().await.unwrap();
    }
}

/// The overview's state cell of `queue` ("paused" or empty).
async fn queue_state(browser: &Browser, address: std::net::SocketAddr, queue: &str) -> String {
    open(browser, address, "/").await;
    browser
        .find(Locator::Css(&format!(
            r#"tr[data-queue="{queue}"] td[data-field="paused"]"#
        )))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_the_counts_and_its_chart_follows_finished_tasks() {
    let deployment = deployment().await;
    let client = &deployment.client;
    for n in 0..3 {
        client
            .enqueue(Double {
                n,
                note: String::new(),
            })
            .queue("parked")
            .await
            .unwrap();
    }
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&format!("http://{address}/")).await.unwrap();
    let pending = browser
        .find(Locator::Css(
            r#"tr[data-queue="parked"] td[data-field="pending"]"#,
        ))
        .await
        .unwrap();
    assert_eq!(pending.text().await.unwrap(), "3");

    let chart = browser.find(Locator::Id("chart")).await.unwrap();
    let before: u64 = chart
        .attr("data-processed-total")
        .await
        .unwrap()
        .expect("the script drew the chart")
        .parse()
        .unwrap();
    for n in 0..5 {
        let handle = client
            .enqueue(Double {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    eventually(
        "the chart counts the five new tasks",
        Duration::from_secs(10),
        async || {
            let total = chart
                .attr("data-processed-total")
                .await
                .unwrap()
                .unwrap_or_default();
            total.parse::<u64>().unwrap_or(0) >= before + 5
        },
    )
    .await;
    // The counts follow too, without a reload.
    client
        .enqueue(Double {
            n: 9,
            note: String::new(),
        })
        .queue("parked")
        .await
        .unwrap();
    eventually(
        "the parked queue shows 4",
        Duration::from_secs(10),
        async || pending.text().await.unwrap() == "4",
    )
    .await;
    // The chart says what its lines count and when: a legend, and a time axis whose marks
    // are the first, middle and last minutes of the hour shown.
    let legend = browser
        .find(Locator::Id("chart-legend"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        legend.contains("finished") && legend.contains("dead-lettered"),
        "{legend}"
    );
    let axis = chart.attr("data-axis").await.unwrap().expect("an axis");
    let marks: Vec<chrono::DateTime<chrono::Utc>> =
        axis.split(' ').map(|m| m.parse().unwrap()).collect();
    assert_eq!(marks.len(), 3, "{axis}");
    assert!(marks[0] < marks[1] && marks[1] < marks[2], "{axis}");
    assert!(
        (marks[2] - marks[0]).num_minutes() >= 50,
        "about an hour: {axis}"
    );
    // Broken down by queue: the parked queue (no worker serves it) finished nothing, the
    // worker's queue the tasks above.
    let pick = browser.find(Locator::Id("chart-queue")).await.unwrap();
    let total = async || -> u64 {
        let total = chart.attr("data-processed-total").await.unwrap();
        total.unwrap_or_default().parse().unwrap_or(0)
    };
    pick.select_by_value("parked").await.unwrap();
    assert_eq!(total().await, 0, "the parked queue's own line");
    pick.select_by_value("dash").await.unwrap();
    assert!(total().await >= before + 5, "the worker's queue");
    pick.select_by_value("").await.unwrap();
    assert!(total().await >= before + 5, "every queue again");
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_from_the_dead_letter_list_runs_the_task_again() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let handle = client
        .enqueue(Double {
            n: 4,
            note: "once".into(),
        })
        .await
        .unwrap();
    settled(client, "dash", 1).await;
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    open(&browser, address, "/dead?queue=dash").await;
    let row = format!(r#"tr[data-id="{}"]"#, handle.id());
    press(&browser, &row, "/requeue", false).await;
    eventually(
        "the list shows again, without the dead letter",
        Duration::from_secs(10),
        async || {
            let url = browser.current_url().await.unwrap();
            url.path() == "/dead"
                && browser
                    .find(Locator::Css("table#dead, p.note"))
                    .await
                    .is_ok()
                && browser.find(Locator::Css(&row)).await.is_err()
        },
    )
    .await;
    // Its record said FAILURE until the requeued run wrote SUCCESS over it.
    eventually(
        "the requeued task succeeds",
        Duration::from_secs(10),
        async || handle.state().await.unwrap() == TaskState::Success,
    )
    .await;
    assert_eq!(handle.wait(Duration::from_secs(1)).await.unwrap(), 8);
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_payload_shows_as_text_and_runs_no_script() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let hostile =
        r#"<script>document.title='owned'</script><img src=x onerror="document.title='owned'">"#;
    let id = client
        .enqueue(Double {
            n: 13,
            note: hostile.into(),
        })
        .await
        .unwrap()
        .id();
    settled(client, "dash", 1).await;
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    for path in ["/dead?queue=dash".to_owned(), format!("/dead/dash/{id}")] {
        browser
            .goto(&format!("http://{address}{path}"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let title = browser.title().await.unwrap();
        assert!(!title.contains("owned"), "a script ran on {path}: {title}");
        let shown = browser
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            shown.contains("<script>document.title='owned'</script>"),
            "{path} shows the text: {shown}"
        );
        let injected = browser
            .find_all(Locator::Css("main img, main script"))
            .await
            .unwrap();
        assert!(injected.is_empty(), "{path} made elements from the payload");
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_beat_page_shows_each_schedule_as_written_with_its_zone() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let config = taskq_redis::RedisConfig::new(deployment.server.url());
    let store: std::sync::Arc<dyn taskq_core::BeatStore> =
        std::sync::Arc::new(taskq_redis::RedisBeatStore::connect(&config).await.unwrap());
    let entries = vec![taskq_beat::Entry::new(
        "standup",
        "dash.double",
        taskq_beat::CronSchedule::parse("0 30 9 * * MON-FRI", "Europe/Berlin").unwrap(),
    )];
    let beat = taskq_beat::Beat::new(client.clone(), store.clone(), entries).unwrap();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let running = tokio::spawn(beat.run(async move { stopped.notified().await }));
    let (address, _server) = serve(Dashboard::new(client.clone()).beat_store(store)).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    let url = format!("http://{address}/beat");
    eventually(
        "the leader published its entries",
        Duration::from_secs(10),
        async || {
            browser.goto(&url).await.unwrap();
            browser
                .find(Locator::Css("#beat-entries code.schedule"))
                .await
                .is_ok()
        },
    )
    .await;
    let schedule = browser
        .find(Locator::Css("#beat-entries code.schedule"))
        .await
        .unwrap();
    assert_eq!(
        schedule.text().await.unwrap(),
        "0 30 9 * * MON-FRI (Europe/Berlin)"
    );
    let row = browser
        .find(Locator::Css("#beat-entries tbody tr"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row.contains("never"), "not fired yet: {row}");
    let next = browser
        .find_all(Locator::Css("#beat-entries td.upcoming time"))
        .await
        .unwrap();
    assert_eq!(next.len(), 3, "three next fires");
    // 09:30 in Berlin is 07:30 or 08:30 UTC, on a weekday.
    for time in next {
        let at = time.attr("datetime").await.unwrap().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
        let berlin = at.with_timezone(&chrono_tz::Europe::Berlin);
        assert_eq!(berlin.format("%H:%M").to_string(), "09:30", "{at}");
        assert!(
            !matches!(
                chrono::Datelike::weekday(&berlin),
                chrono::Weekday::Sat | chrono::Weekday::Sun
            ),
            "{at}"
        );
    }
    browser.close().await.unwrap();
    stop.notify_one();
    running.await.unwrap().unwrap();
}

/// Runs until its worker cancels it (a minute at most).
#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "dash.hang", queue = "hanging", max_retries = 0)]
struct Hang;

impl taskq_core::Run for Hang {
    type Output = ();
    async fn run(self, ctx: taskq_core::TaskContext) -> Result<(), taskq_core::TaskError> {
        for _ in 0..600 {
            if ctx.is_cancelled() {
                return Err(taskq_core::TaskError::permanent("cancelled"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_shows_as_active_and_is_terminated_from_the_page() {
    let server = taskq_testkit::RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = taskq_worker::Worker::builder(client.clone())
        .register::<Hang>()
        .build()
        .unwrap();
    let running = tokio::spawn(async move {
        let _ = worker.run(std::future::pending::<()>()).await;
    });
    let handle = client.enqueue(Hang).await.unwrap();
    eventually(
        "a worker holds the task",
        Duration::from_secs(10),
        async || {
            !client
                .inspector()
                .held("hanging", 10)
                .await
                .unwrap()
                .is_empty()
        },
    )
    .await;
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    browser
        .goto(&format!("http://{address}/active"))
        .await
        .unwrap();
    let row = format!(r#"table#active tr[data-id="{}"]"#, handle.id());
    let shown = browser
        .find(Locator::Css(&row))
        .await
        .expect("the running task is listed")
        .text()
        .await
        .unwrap();
    assert!(
        shown.contains("dash.hang") && shown.contains("hanging"),
        "{shown}"
    );
    // The page asks first (a destructive action).
    press(&browser, &row, "/terminate", true).await;
    eventually(
        "the task ended REVOKED",
        Duration::from_secs(15),
        async || handle.state().await.unwrap() == TaskState::Revoked,
    )
    .await;
    eventually(
        "the list no longer shows it",
        Duration::from_secs(10),
        async || {
            browser
                .goto(&format!("http://{address}/active"))
                .await
                .unwrap();
            browser.find(Locator::Css(&row)).await.is_err()
        },
    )
    .await;
    browser.close().await.unwrap();
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_paused_from_its_page_runs_nothing_until_resumed() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    // The queue exists once something was sent to it; its worker drains it.
    client
        .enqueue(Double {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap()
        .wait(Duration::from_secs(10))
        .await
        .unwrap();
    open(&browser, address, "/queues/dash").await;
    press(&browser, "", "/queues/dash/pause", true).await;
    eventually(
        "the page says paused",
        Duration::from_secs(10),
        async || browser.find(Locator::Id("paused")).await.is_ok(),
    )
    .await;
    let handles = client
        .enqueue_many((0..5).map(|n| Double {
            n,
            note: String::new(),
        }))
        .await
        .unwrap();
    assert_eq!(
        queue_state(&browser, address, "dash").await,
        "paused",
        "the overview says so"
    );
    // The worker is idle and keeps fetching: nothing of the paused queue is taken.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = client.inspector().stats("dash").await.unwrap();
    assert_eq!((stats.pending, stats.processing), (5, 0), "{stats:?}");
    open(&browser, address, "/queues/dash").await;
    press(&browser, "", "/queues/dash/resume", false).await;
    for handle in handles {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(queue_state(&browser, address, "dash").await, "");
    browser.close().await.unwrap();
}

/// Sleeps `ms` and succeeds.
#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "dash.nap", queue = "napping", max_retries = 0)]
struct Nap {
    ms: u64,
}

impl taskq_core::Run for Nap {
    type Output = ();
    async fn run(self, _ctx: taskq_core::TaskContext) -> Result<(), taskq_core::TaskError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

/// A worker running [`Nap`] on `client` (with `concurrency` at once) until aborted.
fn nap_worker(client: &taskq_core::Client, concurrency: usize) -> tokio::task::JoinHandle<()> {
    let worker = taskq_worker::Worker::builder(client.clone())
        .register::<Nap>()
        .concurrency(concurrency)
        .build()
        .unwrap();
    tokio::spawn(async move {
        let _ = worker.run(std::future::pending::<()>()).await;
    })
}

/// The `data-id`s of the rows of the table `table` on the page shown now.
async fn row_ids(browser: &Browser, table: &str) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for row in browser
        .find_all(Locator::Css(&format!("table#{table} tbody tr")))
        .await
        .unwrap()
    {
        ids.insert(row.attr("data-id").await.unwrap().expect("a row's id"));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_searched_by_task_name_and_state() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let napping = nap_worker(client, 4);
    let doubled = client
        .enqueue_many((1..=4).map(|n| Double {
            n,
            note: String::new(),
        }))
        .await
        .unwrap();
    let unlucky = client
        .enqueue_many((0..2).map(|_| Double {
            n: 13,
            note: "history".into(),
        }))
        .await
        .unwrap();
    let naps = client
        .enqueue_many((0..3).map(|_| Nap { ms: 1 }))
        .await
        .unwrap();
    fn ids<T: serde::de::DeserializeOwned>(
        handles: &[taskq_core::AsyncResult<T>],
    ) -> std::collections::BTreeSet<String> {
        handles.iter().map(|h| h.id().to_string()).collect()
    }
    let every: Vec<taskq_core::TaskId> = [ids(&doubled), ids(&unlucky), ids(&naps)]
        .iter()
        .flatten()
        .map(|id| id.parse().unwrap())
        .collect();
    eventually("every task ended", Duration::from_secs(15), async || {
        let states = client.states(&every).await.unwrap();
        states.iter().all(|state| state.is_ready())
    })
    .await;
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    open(&browser, address, "/history").await;
    assert_eq!(
        row_ids(&browser, "history").await.len(),
        9,
        "every run, unfiltered"
    );
    // The form, as a person fills it: a task name and a state.
    let task = browser
        .find(Locator::Css("form.filters input[name='task']"))
        .await
        .unwrap();
    task.send_keys("dash.double").await.unwrap();
    browser
        .find(Locator::Css("form.filters select[name='state']"))
        .await
        .unwrap()
        .select_by_value("FAILURE")
        .await
        .unwrap();
    browser
        .find(Locator::Css("form.filters button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the search ran", Duration::from_secs(10), async || {
        browser
            .current_url()
            .await
            .is_ok_and(|url| url.as_str().contains("state=FAILURE"))
    })
    .await;
    assert_eq!(row_ids(&browser, "history").await, ids(&unlucky));
    let error = browser
        .find(Locator::Css("table#history tbody tr code.error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(error.contains("unlucky: history"), "{error}");
    open(
        &browser,
        address,
        "/history?task=dash.double&state=SUCCESS&within=5m",
    )
    .await;
    assert_eq!(row_ids(&browser, "history").await, ids(&doubled));
    open(&browser, address, "/history?queue=napping").await;
    assert_eq!(row_ids(&browser, "history").await, ids(&naps));
    open(&browser, address, "/history?task=dash.nap&state=FAILURE").await;
    assert!(browser.find(Locator::Id("no-outcomes")).await.is_ok());
    browser.close().await.unwrap();
    napping.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_numbers_match_a_known_workload() {
    let server = taskq_testkit::RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let napping = nap_worker(&client, 10);
    let handles = client
        .enqueue_many((0..100).map(|_| Nap { ms: 50 }))
        .await
        .unwrap();
    for handle in &handles {
        handle.wait(Duration::from_secs(30)).await.unwrap();
    }
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    open(&browser, address, "/numbers").await;
    let row = browser
        .find(Locator::Css(
            r#"table#task-numbers tr[data-queue="napping"][data-task="dash.nap"]"#,
        ))
        .await
        .expect("a row for the task");
    let runs = row
        .find(Locator::Css("td[data-runs]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(runs, "100");
    let p50_us: f64 = row
        .find(Locator::Css("td[data-runtime-p50-us]"))
        .await
        .unwrap()
        .attr("data-runtime-p50-us")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (40_000.0..=60_000.0).contains(&p50_us),
        "p50 runtime {p50_us} µs for tasks of 50 ms"
    );
    let shown = row.text().await.unwrap();
    assert!(shown.contains(" ms"), "{shown}");
    browser.close().await.unwrap();
    napping.abort();
}
