//! Every page and action of the dashboard over HTTP, against a real redis-server with a real
//! worker producing the state it shows.

use std::time::Duration;

use support::{csrf_of, deployment, get, http, post, serve, settled, Double};
use taskq_core::{Client, TaskId, TaskState};
use taskq_dashboard::{Access, Dashboard};

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_deployment() {
    let deployment = deployment().await;
    every_page_shows(&deployment.client).await;
}

/// The same pages on PostgreSQL: queues, priorities, workers, results, dead letters, history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_deployment_on_postgres() {
    let (_server, client, _worker) = support::postgres_deployment().await;
    every_page_shows(&client).await;
}

async fn every_page_shows(client: &Client) {
    let ok = client
        .enqueue(Double {
            n: 21,
            note: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(ok.wait(Duration::from_secs(10)).await.unwrap(), 42);
    let failed = client
        .enqueue(Double {
            n: 13,
            note: "x".into(),
        })
        .await
        .unwrap();
    assert!(failed.wait(Duration::from_secs(10)).await.is_err());
    settled(client, "dash", 1).await;
    // Waiting work on another queue nobody consumes.
    for n in 0..3 {
        client
            .enqueue(Double {
                n,
                note: String::new(),
            })
            .queue("later")
            .priority(n as u8)
            .await
            .unwrap();
    }
    let (address, _server) = serve(Dashboard::new(client.clone())).await;

    let (status, overview) = get(address, "/").await;
    assert_eq!(status, 200);
    assert!(overview.contains(r#"<tr data-queue="dash">"#), "{overview}");
    assert!(
        overview.contains(r#"data-field="pending">3<"#),
        "the later queue's three: {overview}"
    );
    assert!(overview.contains(r#"id="chart""#));

    let (status, queue) = get(address, "/queues/later").await;
    assert_eq!(status, 200);
    let first = queue
        .find("&quot;n&quot;: 2")
        .or_else(|| queue.find("\"n\": 2"))
        .expect("n=2 shown");
    let last = queue
        .find("\"n\": 0")
        .or_else(|| queue.find("&quot;n&quot;: 0"))
        .expect("n=0 shown");
    assert!(first < last, "highest priority first");
    // Each message's JSON is folded in the list (a click opens it), not printed open.
    assert_eq!(queue.matches("<details>").count(), 3, "{queue}");
    assert!(!queue.contains("<details open"), "{queue}");

    let lost = taskq_core::WorkerId::generate();
    let membership = client.broker().membership().unwrap();
    membership
        .record_lost(std::slice::from_ref(&lost), client.clock().now())
        .await
        .unwrap();
    let (status, workers) = get(address, "/workers").await;
    assert_eq!(status, 200);
    assert!(workers.contains("<td>dash</td>"), "{workers}");
    let recently = &workers[workers.find("Recently lost").unwrap()..];
    assert!(recently.contains(lost.as_str()), "{workers}");

    let (status, task) = get(address, &format!("/tasks?id={}", ok.id())).await;
    assert_eq!(status, 200);
    assert!(task.contains(">SUCCESS<") && task.contains("42"), "{task}");
    let (status, unknown) = get(address, "/tasks?id=not-a-uuid").await;
    assert_eq!(status, 400);
    assert!(unknown.contains("is not a task id"));

    let (status, failure) = get(address, &format!("/tasks?id={}", failed.id())).await;
    assert_eq!(status, 200);
    assert!(
        failure.contains(">FAILURE<") && failure.contains("Dead letter"),
        "{failure}"
    );
    assert!(
        failure.contains("&quot;note&quot;") || failure.contains("\"note\""),
        "the arguments show: {failure}"
    );

    let (status, tasks) = get(address, "/tasks").await;
    assert_eq!(status, 200);
    assert!(tasks.contains("Recent failures") && tasks.contains(&failed.id().to_string()));

    // Recent outcomes, searched; per-task numbers (kept by the broker: Redis and PostgreSQL).
    let (status, history) = get(address, "/history?queue=dash").await;
    assert_eq!(status, 200);
    for (id, state) in [(ok.id(), "SUCCESS"), (failed.id(), "FAILURE")] {
        let row = format!(r#"<tr data-id="{id}" data-task="dash.double" data-ended="{state}">"#);
        assert!(history.contains(&row), "{row} in {history}");
    }
    let (_, failures) = get(address, "/history?state=FAILURE&task=dash.double").await;
    assert!(
        failures.contains(&failed.id().to_string()) && !failures.contains(&ok.id().to_string()),
        "{failures}"
    );
    let (status, refused) = get(address, "/history?state=DONE").await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("not a state a run ends in"), "{refused}");
    let (status, numbers) = get(address, "/numbers").await;
    assert_eq!(status, 200);
    let row = numbers
        .find(r#"data-queue="dash" data-task="dash.double""#)
        .map(|at| &numbers[at..])
        .unwrap_or_else(|| panic!("a row for dash.double: {numbers}"));
    assert!(
        row.contains(r#"data-runs="2">2<"#),
        "one success, one failure: {row}"
    );
    assert!(row.contains("50.0 %"), "the failure rate: {row}");

    let (status, dead) = get(address, "/dead?queue=dash").await;
    assert_eq!(status, 200);
    assert!(
        dead.contains(&failed.id().to_string()) && dead.contains("unlucky: x"),
        "{dead}"
    );
    let (_, filtered) = get(address, "/dead?queue=dash&reason=malformed").await;
    assert!(
        !filtered.contains(&failed.id().to_string()),
        "filtered out by reason"
    );
    let (_, by_task) = get(address, "/dead?queue=dash&task=dash.double&reason=failed").await;
    assert!(by_task.contains(&failed.id().to_string()), "{by_task}");

    let (status, letter) = get(address, &format!("/dead/dash/{}", failed.id())).await;
    assert_eq!(status, 200);
    assert!(letter.contains("dash.double"));
    let (status, payload) = get(address, &format!("/dead/dash/{}/payload.json", failed.id())).await;
    assert_eq!(status, 200);
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["id"], failed.id().to_string());
    let (status, _) = get(address, &format!("/dead/dash/{}", TaskId::new())).await;
    assert_eq!(status, 404);

    // Live numbers: the first server-sent event carries the overview.
    let mut events = http()
        .get(format!("http://{address}/events"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = events.chunk().await.unwrap().expect("an event");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: overview"), "{text}");
    let data: serde_json::Value =
        serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert!(data["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["processed"].as_u64() == Some(1)));
    assert!(data["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["failed"].as_u64() == Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_their_csrf_token_and_do_what_they_say() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let mut failed = Vec::new();
    for note in ["a", "b", "c"] {
        failed.push(
            client
                .enqueue(Double {
                    n: 13,
                    note: note.into(),
                })
                .await
                .unwrap()
                .id(),
        );
    }
    settled(client, "dash", 3).await;
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (_, page) = get(address, "/dead?queue=dash").await;
    let csrf = csrf_of(&page);

    let requeue = format!("/dead/dash/{}/requeue", failed[0]);
    assert_eq!(
        post(address, &requeue, "forged").await,
        403,
        "a wrong token is refused"
    );
    assert_eq!(post(address, &requeue, "").await, 403, "so is none");
    let cross_site = http()
        .post(format!("http://{address}{requeue}"))
        .header("Origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status().as_u16(), 403, "and another origin");
    assert_eq!(client.inspector().stats("dash").await.unwrap().dead, 3);

    assert_eq!(post(address, &requeue, &csrf).await, 303);
    // Requeued, it runs again (and fails again: 13 is still unlucky): a second attempt.
    settled(client, "dash", 3).await;
    let letter = client
        .inspector()
        .find_dead_letter("dash", failed[0])
        .await
        .unwrap()
        .unwrap();
    assert!(
        letter.at
            > client
                .inspector()
                .find_dead_letter("dash", failed[2])
                .await
                .unwrap()
                .unwrap()
                .at
    );

    assert_eq!(
        post(address, &format!("/dead/dash/{}/delete", failed[1]), &csrf).await,
        303
    );
    assert_eq!(client.inspector().stats("dash").await.unwrap().dead, 2);
    assert!(client
        .inspector()
        .find_dead_letter("dash", failed[1])
        .await
        .unwrap()
        .is_none());

    assert_eq!(post(address, "/dead/dash/requeue-all", &csrf).await, 303);
    settled(client, "dash", 2).await;

    client
        .enqueue(Double {
            n: 1,
            note: String::new(),
        })
        .queue("idle")
        .await
        .unwrap();
    assert_eq!(post(address, "/queues/idle/purge", &csrf).await, 303);
    assert_eq!(client.inspector().stats("idle").await.unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_hides_and_refuses_actions() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let failed = client
        .enqueue(Double {
            n: 13,
            note: String::new(),
        })
        .await
        .unwrap()
        .id();
    settled(client, "dash", 1).await;
    let (address, _server) = serve(Dashboard::new(client.clone()).read_only(true)).await;
    let (_, page) = get(address, "/dead?queue=dash").await;
    assert!(page.contains("read-only"));
    assert!(!page.contains(r#"method="post""#), "no action is offered");
    assert_eq!(
        post(address, &format!("/dead/dash/{failed}/requeue"), "any").await,
        403
    );
    assert_eq!(client.inspector().stats("dash").await.unwrap().dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_basic_access_and_the_loopback_rule() {
    let client = Client::in_memory();
    let token = "0123456789abcdef-token";
    let (address, _server) =
        serve(Dashboard::new(client.clone()).access(Access::token(token).unwrap())).await;
    assert_eq!(get(address, "/").await.0, 401);
    let with_header = http()
        .get(format!("http://{address}/"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status().as_u16(), 200);
    let login = http()
        .get(format!("http://{address}/login?token={token}"))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let with_cookie = http()
        .get(format!("http://{address}/workers"))
        .header("Cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status().as_u16(), 200);
    assert_eq!(get(address, "/login?token=wrong").await.0, 401);

    let hash = taskq_dashboard::hash_password("s3cret password");
    let (address, _basic) =
        serve(Dashboard::new(client.clone()).access(Access::basic("ops", hash).unwrap())).await;
    let refused = http()
        .get(format!("http://{address}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let wrong = http()
        .get(format!("http://{address}/"))
        .basic_auth("ops", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = http()
        .get(format!("http://{address}/"))
        .basic_auth("ops", Some("s3cret password"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);

    let open = Dashboard::new(client.clone());
    let err = open
        .clone()
        .serve("0.0.0.0:0".parse().unwrap(), async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without authentication"), "{err}");
    assert!(open.check_listen("[::1]:0".parse().unwrap()).is_ok());
    assert!(Access::token("short").is_err());
}

/// DNS rebinding: a page on `attacker.example` whose name resolves to 127.0.0.1 sends the
/// attacker's name as `Host` and the same as `Origin`; an open dashboard must answer neither
/// its reads (the CSRF token) nor its actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dashboard_refuses_requests_for_another_host_name() {
    let client = Client::in_memory();
    client
        .enqueue_by_name("dash.double", &serde_json::json!({"n": 1}))
        .queue("rebind")
        .await
        .unwrap();
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (status, page) = get(address, "/queues/rebind").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    let rebound = format!("attacker.example:{}", address.port());

    let read = http()
        .get(format!("http://{address}/queues/rebind"))
        .header("Host", &rebound)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 403);
    assert!(!read.text().await.unwrap().contains(&csrf));
    let purge = http()
        .post(format!("http://{address}/queues/rebind/purge"))
        .header("Host", &rebound)
        .header("Origin", format!("http://{rebound}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status().as_u16(), 403);
    assert_eq!(client.inspector().stats("rebind").await.unwrap().pending, 1);

    // Names the operator allows, `localhost` and IP literals still pass.
    let (allowed, _other) =
        serve(Dashboard::new(client.clone()).allow_host("taskq.internal")).await;
    for host in [
        format!("taskq.internal:{}", allowed.port()),
        format!("localhost:{}", allowed.port()),
        allowed.to_string(),
    ] {
        let answered = http()
            .get(format!("http://{allowed}/"))
            .header("Host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status().as_u16(), 200, "{host}");
    }
}

/// Basic auth with wrong passwords: after a few failures a client is answered 429 without an
/// argon2 check, while a client that logged in before keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_slowed_down() {
    let hash = taskq_dashboard::hash_password("s3cret password");
    let (address, _server) =
        serve(Dashboard::new(Client::in_memory()).access(Access::basic("ops", hash).unwrap()))
            .await;
    let attempt = |password: &'static str| {
        http()
            .get(format!("http://{address}/"))
            .basic_auth("ops", Some(password))
            .send()
    };
    assert_eq!(
        attempt("s3cret password").await.unwrap().status().as_u16(),
        200
    );
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(attempt("guess").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses[..10], [401; 10]);
    let slowed = attempt("guess").await.unwrap();
    assert_eq!(slowed.status().as_u16(), 429);
    assert!(slowed.headers().contains_key("retry-after"));
    assert_eq!(statuses[10..], [429, 429]);
    // Credentials verified before still pass (remembered, no argon2 check needed).
    assert_eq!(
        attempt("s3cret password").await.unwrap().status().as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_as_text() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let hostile = r#"<script>document.title='owned'</script><img src=x onerror=alert(1)>"#;
    let failed = client
        .enqueue(Double {
            n: 13,
            note: hostile.into(),
        })
        .await
        .unwrap()
        .id();
    settled(client, "dash", 1).await;
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    for path in [
        "/dead?queue=dash".to_owned(),
        format!("/dead/dash/{failed}"),
        "/tasks".to_owned(),
        format!("/tasks?id={failed}"),
        "/history".to_owned(),
    ] {
        let (status, page) = get(address, &path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !page.contains("<script>document"),
            "{path} printed the script as markup"
        );
        assert!(
            !page.contains("<img src=x"),
            "{path} printed the image as markup"
        );
        assert!(
            page.contains("&lt;script&gt;document.title"),
            "{path} shows it as text"
        );
    }
    let record = client.result(failed).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_are_listed_and_run_now_or_deleted() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let mut ids = Vec::new();
    for minutes in [30u64, 10, 20] {
        let handle = client
            .enqueue(Double {
                n: minutes as i64,
                note: String::new(),
            })
            .queue("later")
            .countdown(Duration::from_secs(minutes * 60))
            .await
            .unwrap();
        ids.push(handle.id());
    }
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (status, page) = get(address, "/scheduled?queue=later").await;
    assert_eq!(status, 200);
    let position = |id: &TaskId| page.find(&format!("/tasks?id={id}")).expect("listed");
    assert!(
        position(&ids[1]) < position(&ids[2]) && position(&ids[2]) < position(&ids[0]),
        "soonest first"
    );

    let csrf = csrf_of(&page);
    let due_of = |id: &TaskId| {
        let form = &page[page.find(&format!("/scheduled/later/{id}/run")).unwrap()..];
        let start = form.find(r#"name="due" value=""#).unwrap() + 18;
        form[start..start + form[start..].find('"').unwrap()].to_owned()
    };
    let settle = async |id: &TaskId, verb: &str, due: &str| {
        http()
            .post(format!("http://{address}/scheduled/later/{id}/{verb}"))
            .form(&[("csrf", csrf.as_str()), ("due", due)])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(settle(&ids[1], "run", &due_of(&ids[1])).await, 303);
    assert_eq!(settle(&ids[0], "delete", &due_of(&ids[0])).await, 303);
    let stats = client.inspector().stats("later").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (1, 1));
    assert_eq!(settle(&ids[2], "launch", &due_of(&ids[2])).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_beat_page_shows_the_leader_and_its_entries() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let config = taskq_redis::RedisConfig::new(deployment.server.url());
    let store: std::sync::Arc<dyn taskq_core::BeatStore> =
        std::sync::Arc::new(taskq_redis::RedisBeatStore::connect(&config).await.unwrap());
    let (address, _server) = serve(Dashboard::new(client.clone()).beat_store(store.clone())).await;
    let (_, before) = get(address, "/beat").await;
    assert!(before.contains("No beat leads"), "{before}");

    let entries = vec![
        taskq_beat::Entry::new(
            "nightly-report",
            "dash.double",
            taskq_beat::Every::new(Duration::from_secs(3600)).unwrap(),
        ),
        taskq_beat::Entry::new(
            "standup",
            "dash.double",
            taskq_beat::CronSchedule::parse("0 30 9 * * MON-FRI", "Europe/Berlin").unwrap(),
        ),
    ];
    let beat = taskq_beat::Beat::new(client.clone(), store.clone(), entries).unwrap();
    let owner = beat.owner().to_owned();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let running = tokio::spawn(beat.run(async move { stopped.notified().await }));
    let mut page = String::new();
    for _ in 0..100 {
        page = get(address, "/beat").await.1;
        if page.contains("nightly-report") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(page.contains(&owner), "names the leader: {page}");
    assert!(
        page.contains("nightly-report") && page.contains("dash.double"),
        "{page}"
    );
    // Schedules as written, with their zone; no Rust debug output; entries that have not
    // fired yet say so; three next fires each.
    assert!(
        page.contains("0 30 9 * * MON-FRI (Europe/Berlin)"),
        "{page}"
    );
    assert!(page.contains("every 1h"), "{page}");
    assert!(
        !page.contains("every_ms") && !page.contains("CronSchedule"),
        "{page}"
    );
    assert_eq!(page.matches(">never<").count(), 2, "{page}");
    let upcoming = page.split("<td class=\"upcoming\">").skip(1);
    for cell in upcoming {
        let cell = cell.split("</td>").next().unwrap();
        assert_eq!(cell.matches("<time").count(), 3, "{cell}");
    }
    stop.notify_one();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_with_url_characters_still_link_to_themselves() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let odd = "odd#q?x=1&y%";
    client
        .enqueue(Double {
            n: 1,
            note: String::new(),
        })
        .queue(odd)
        .await
        .unwrap();
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (_, overview) = get(address, "/").await;
    let link = "/queues/odd%23q%3Fx%3D1%26y%25";
    assert!(
        overview.contains(&format!(r#"href="{link}""#)),
        "{overview}"
    );
    let (status, page) = get(address, link).await;
    assert_eq!(status, 200);
    assert!(page.contains("Queue odd#q?x=1&amp;y%"), "{page}");
    let csrf = csrf_of(&page);
    assert_eq!(post(address, &format!("{link}/purge"), &csrf).await, 303);
    assert_eq!(client.inspector().stats(odd).await.unwrap().pending, 0);
}

/// The overview names a durable master short of replicas (here a lone server asked for one
/// replica), and a deployment without durable writes sees no such warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_warns_of_a_durable_master_short_of_replicas() {
    let server = taskq_testkit::RedisServer::start();
    let durable = taskq_redis::client(
        taskq_redis::RedisConfig::new(server.url())
            .with_durable_writes(1, Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let (address, _served) = serve(Dashboard::new(durable)).await;
    let (status, page) = get(address, "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("durable writes degraded: the master has 0 of durable=1"),
        "{page}"
    );

    let plain = taskq::connect(&server.url()).await.unwrap();
    let (address, _served) = serve(Dashboard::new(plain)).await;
    let (_, page) = get(address, "/").await;
    assert!(!page.contains("durable writes degraded"), "{page}");
}

/// A task a worker holds but that recorded nothing (no track_started) shows as RECEIVED with
/// its worker, not as "nothing recorded".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_without_a_record_shows_with_its_worker() {
    let server = taskq_testkit::RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let id = client
        .enqueue_by_name("dash.long", &serde_json::json!({}))
        .queue("held")
        .await
        .unwrap()
        .id();
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (_, queued) = get(address, &format!("/tasks?id={id}")).await;
    assert!(queued.contains("Nothing is recorded"), "{queued}");

    // What a worker's fetch does: the message moves into its processing list.
    let worker = taskq_core::WorkerId::generate();
    let fetched = client
        .broker()
        .fetch(&worker, &["held".into()], 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fetched.len(), 1);
    let (status, held) = get(address, &format!("/tasks?id={id}")).await;
    assert_eq!(status, 200);
    assert!(
        held.contains(">RECEIVED<") && held.contains(worker.as_str()) && held.contains("dash.long"),
        "{held}"
    );
    let (status, metrics) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("taskq_queue_processing{queue=\"held\"} 1"),
        "{metrics}"
    );
    let (_, queue) = get(address, "/queues/held").await;
    let section = &queue[queue.find("Held by workers").expect("a held section")..];
    assert!(
        section.contains(&id.to_string()) && section.contains(worker.as_str()),
        "{queue}"
    );
}

/// The rates count what ended in the last five whole minutes: 120 successes and 30 failures
/// a minute ago read as 0.4 and 0.1 per second (on the memory broker, whose clock follows
/// tokio's paused time).
#[tokio::test(start_paused = true)]
async fn the_metrics_rates_count_the_last_five_whole_minutes() {
    let client = Client::in_memory();
    let worker = taskq_worker::Worker::builder(client.clone())
        .register::<Double>()
        .build()
        .unwrap()
        .start();
    let succeeding = client
        .enqueue_many((100..220).map(|n| Double {
            n,
            note: String::new(),
        }))
        .await
        .unwrap();
    let failing = client
        .enqueue_many((0..30).map(|_| Double {
            n: 13,
            note: String::new(),
        }))
        .await
        .unwrap();
    for handle in &succeeding {
        handle.wait(Duration::from_secs(60)).await.unwrap();
    }
    for handle in &failing {
        assert!(handle.wait(Duration::from_secs(60)).await.is_err());
    }
    worker.stop().await.unwrap();
    // Into the next minute: the one they ended in is whole now.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let text = taskq_dashboard::queue_metrics(&client).await.unwrap();
    assert!(
        text.contains("taskq_queue_completed_per_second{queue=\"dash\"} 0.4"),
        "{text}"
    );
    assert!(
        text.contains("taskq_queue_failed_per_second{queue=\"dash\"} 0.1"),
        "{text}"
    );
}

/// A queue shared by tenants: its page lists the busy partitions with pending, running and
/// limit, and `/metrics` counts them per queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_partitions_show_on_the_queue_page_and_in_metrics() {
    let server = taskq_testkit::RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    for (tenant, count) in [("acme", 3), ("globex", 1)] {
        for _ in 0..count {
            client
                .enqueue_by_name("dash.report", &serde_json::json!({}))
                .queue("shared")
                .partition(tenant)
                .partition_concurrency(1)
                .await
                .unwrap();
        }
    }
    let worker = taskq_core::WorkerId::generate();
    let fetched = client
        .broker()
        .fetch(&worker, &["shared".into()], 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fetched.len(), 2, "one of each tenant: their limit is 1");
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (status, page) = get(address, "/queues/shared").await;
    assert_eq!(status, 200);
    let section = &page[page.find("Busy partitions").expect("a partitions section")..];
    let acme = section.find("<code>acme</code>").expect("acme listed");
    let globex = section.find("<code>globex</code>").expect("globex listed");
    assert!(acme < globex, "most pending first: {section}");
    assert!(section.contains("at limit"), "{section}");
    let (_, metrics) = get(address, "/metrics").await;
    assert!(
        metrics.contains("taskq_queue_busy_partitions{queue=\"shared\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("taskq_queue_partitions_at_limit{queue=\"shared\"} 2"),
        "{metrics}"
    );
}

/// A task's page lists the errors of its earlier attempts, numbered by attempt, escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_page_lists_earlier_attempts_errors() {
    let client = Client::in_memory();
    let id = taskq_core::TaskId::new();
    let record = taskq_core::TaskResult::new(
        id,
        "reports.build",
        taskq_core::TaskState::Retry,
        client.clock().now(),
    )
    .with_attempts(4)
    .with_error("connection refused")
    .with_earlier_errors(vec![
        "timed out <after 30 s>".into(),
        "task panicked at src/reports.rs:12:5: no rows".into(),
        "connection reset".into(),
    ]);
    client
        .backend()
        .store(&record, Duration::from_secs(60))
        .await
        .unwrap();
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (status, page) = get(address, &format!("/tasks?id={id}")).await;
    assert_eq!(status, 200);
    let list = &page[page
        .find(r#"<ol id="earlier-errors" start="1">"#)
        .expect("the list")..];
    let list = &list[..list.find("</ol>").unwrap()];
    assert_eq!(list.matches("<li>").count(), 3, "{list}");
    assert!(
        list.contains("timed out &lt;after 30 s&gt;"),
        "escaped: {list}"
    );
    assert!(list.contains("src/reports.rs:12:5"), "{list}");
}

/// The scheduled list filters by task name, and runs now or deletes every match at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_of_one_task_are_run_or_deleted_in_bulk() {
    let client = Client::in_memory();
    for n in 0..3 {
        client
            .enqueue_by_name("reports.build", &serde_json::json!({ "n": n }))
            .queue("bulk")
            .countdown(Duration::from_secs(3600))
            .await
            .unwrap();
    }
    for n in 0..2 {
        client
            .enqueue_by_name("emails.send", &serde_json::json!({ "n": n }))
            .queue("bulk")
            .countdown(Duration::from_secs(3600))
            .await
            .unwrap();
    }
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (status, page) = get(address, "/scheduled?queue=bulk&task=reports.build").await;
    assert_eq!(status, 200);
    assert_eq!(page.matches("<td>reports.build</td>").count(), 3, "{page}");
    assert!(!page.contains("<td>emails.send</td>"), "filtered: {page}");
    let csrf = csrf_of(&page);
    let bulk = |task: &'static str, verb: &'static str| {
        let csrf = csrf.clone();
        async move {
            http()
                .post(format!("http://{address}/scheduled/bulk/bulk"))
                .form(&[("csrf", csrf.as_str()), ("task", task), ("verb", verb)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(bulk("reports.build", "run").await, 303);
    let stats = client.inspector().stats("bulk").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (3, 2), "{stats:?}");
    assert_eq!(bulk("emails.send", "delete").await, 303);
    let stats = client.inspector().stats("bulk").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (3, 0), "{stats:?}");
    assert_eq!(bulk("emails.send", "explode").await, 404);
}

/// The workers page pings every worker, and shuts one down warm by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_pinged_and_one_is_shut_down_from_the_page() {
    let deployment = deployment().await;
    let client = &deployment.client;
    let mut workers = Vec::new();
    for _ in 0..100 {
        workers = client.inspector().workers().await.unwrap();
        if !workers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = workers.first().expect("the deployment's worker").id.clone();
    let (address, _server) = serve(Dashboard::new(client.clone())).await;
    let (status, pong) = get(address, "/workers/ping").await;
    assert_eq!(status, 200);
    assert!(
        pong.contains(r#"<table id="pongs">"#) && pong.contains(&id),
        "{pong}"
    );
    let (_, page) = get(address, "/workers").await;
    let csrf = csrf_of(&page);
    let path = format!("/workers/{}/shutdown", id.replace(':', "%3A"));
    assert!(page.contains(&format!(r#"action="{path}""#)), "{page}");
    assert_eq!(post(address, &path, &csrf).await, 303);
    let mut gone = false;
    for _ in 0..300 {
        if client.inspector().workers().await.unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the worker stopped and left the list");
    let (_, silence) = get(address, "/workers/ping").await;
    assert!(silence.contains(r#"id="no-answer""#), "{silence}");
}
