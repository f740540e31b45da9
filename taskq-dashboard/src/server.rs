//! [`Dashboard`]: its settings, its routes, and the listener that refuses an exposed address
//! without authentication.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use taskq_core::{BeatStore, Client};

use crate::{
    access::Access,
    csrf::Csrf,
    error::DashboardError,
    events,
    gate::{Gate, Verdict},
    host::AllowedHosts,
    layout, pages,
    state::{AppState, Shared},
};

/// The web dashboard over one deployment (the client's broker and result backend).
///
/// ```
/// use taskq_dashboard::{Access, Dashboard};
/// let dashboard = Dashboard::new(taskq_core::Client::in_memory()).read_only(true);
/// // Loopback is fine without authentication; anything else is refused.
/// assert!(dashboard.check_listen("127.0.0.1:8080".parse().unwrap()).is_ok());
/// assert!(dashboard.check_listen("0.0.0.0:8080".parse().unwrap()).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Dashboard {
    client: Client,
    access: Access,
    read_only: bool,
    beat: Option<Arc<dyn BeatStore>>,
    hosts: AllowedHosts,
}

impl Dashboard {
    /// A dashboard over `client`'s deployment: open to loopback only, actions enabled.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            access: Access::Open,
            read_only: false,
            beat: None,
            hosts: AllowedHosts::default(),
        }
    }

    /// Shows the beat page from `store` (the beat store the `taskq-beat` processes use).
    pub fn beat_store(mut self, store: Arc<dyn BeatStore>) -> Self {
        self.beat = Some(store);
        self
    }

    /// Requires `access` of every request.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Also answers requests addressed to `name` (a `Host` header without its port) when open.
    ///
    /// An open dashboard answers only `localhost`, names under `.localhost` and IP literals, so
    /// that a web page whose own name an attacker made resolve to 127.0.0.1 (DNS rebinding)
    /// cannot use it. Allow the names a proxy or an SSH tunnel reaches it by.
    ///
    /// ```
    /// let dashboard = taskq_dashboard::Dashboard::new(taskq_core::Client::in_memory())
    ///     .allow_host("taskq.internal");
    /// # let _ = dashboard;
    /// ```
    pub fn allow_host(mut self, name: &str) -> Self {
        self.hosts.allow(name);
        self
    }

    /// Hides every action and refuses every POST.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Checks that the dashboard may listen on `listen`: any address with authentication,
    /// only a loopback one without.
    ///
    /// # Errors
    ///
    /// [`DashboardError::Config`] for a non-loopback address without authentication.
    pub fn check_listen(&self, listen: SocketAddr) -> Result<(), DashboardError> {
        self.access.check_listen(listen)
    }

    /// The routes, for embedding the dashboard in an application's own server.
    ///
    /// Serve them with `into_make_service_with_connect_info::<SocketAddr>()` so that basic
    /// auth counts failed attempts per client address (without it, all clients share one
    /// count).
    pub fn router(self) -> Router {
        let state = Arc::new(AppState {
            client: self.client,
            gate: Gate::new(self.access),
            hosts: self.hosts,
            read_only: self.read_only,
            csrf: Csrf::new(),
            beat: self.beat,
        });
        Router::new()
            .route("/", get(pages::overview::page))
            .route("/events", get(events::stream))
            .route("/metrics", get(crate::queue_metrics::serve))
            .route("/queues/{queue}", get(pages::queue::page))
            .route("/queues/{queue}/purge", post(pages::queue::purge))
            .route("/queues/{queue}/pause", post(pages::queue::pause))
            .route("/queues/{queue}/resume", post(pages::queue::resume))
            .route("/workers", get(pages::workers::page))
            .route("/workers/ping", get(pages::workers::ping))
            .route("/workers/{id}/shutdown", post(pages::workers::shutdown))
            .route("/active", get(pages::active::page))
            .route("/active/{id}/terminate", post(pages::active::terminate))
            .route("/scheduled", get(pages::scheduled::list))
            .route("/scheduled/{queue}/bulk", post(pages::scheduled::bulk))
            .route("/beat", get(pages::beat::page))
            .route(
                "/scheduled/{queue}/{id}/{verb}",
                post(pages::scheduled::settle),
            )
            .route("/tasks", get(pages::tasks::page))
            .route("/history", get(pages::history::page))
            .route("/numbers", get(pages::numbers::page))
            .route("/dead", get(pages::dead::list))
            .route("/dead/{queue}/requeue-all", post(pages::dead::requeue_all))
            .route("/dead/{queue}/{id}", get(pages::dead::show))
            .route("/dead/{queue}/{id}/payload.json", get(pages::dead::payload))
            .route("/dead/{queue}/{id}/requeue", post(pages::dead::requeue))
            .route("/dead/{queue}/{id}/delete", post(pages::dead::delete))
            .route("/login", get(login))
            .route("/assets/dashboard.js", get(layout::script))
            .route("/assets/dashboard.css", get(layout::style))
            .layer(middleware::from_fn_with_state(state.clone(), guard))
            .with_state(state)
    }

    /// Listens on `listen` until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// [`DashboardError::Config`] as [`Dashboard::check_listen`]; [`DashboardError::Io`] when
    /// the address cannot be bound.
    pub async fn serve(
        self,
        listen: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        self.check_listen(listen)?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(address = %listener.local_addr()?, "dashboard listening");
        let service = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

/// For every route: an open dashboard answers only requests addressed to this machine,
/// authentication (the login route checks its own token), and no POST at all in read-only mode.
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let open = !state.gate.access().is_required();
    if open && !state.hosts.admit(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "unknown Host: an open dashboard answers only localhost and IP addresses; allow this name with --allow-host",
        )
            .into_response();
    }
    let login = request.uri().path() == "/login";
    if !login {
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        match state.gate.check(request.headers(), client).await {
            Verdict::Pass => {}
            Verdict::Refuse => return unauthorized(state.gate.access()),
            Verdict::Slow(wait) => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins; try later",
                )
                    .into_response();
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs().max(1)),
                );
                return response;
            }
        }
    }
    if state.read_only && request.method() == axum::http::Method::POST {
        return (StatusCode::FORBIDDEN, "the dashboard is read-only").into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // Nothing this dashboard shows may run script it did not send, or be framed elsewhere.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it, browsers send `Origin: null` on the dashboard's own forms.
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// 401, asking a browser for basic credentials when those are what it needs.
fn unauthorized(access: &Access) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
    if matches!(access, Access::Basic { .. }) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"taskq\""),
        );
    }
    response
}

/// `/login?token=...`: checks the token and keeps it in a cookie, so a browser can use token
/// access without sending a header.
async fn login(
    State(state): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Access::Token(_) = state.gate.access() else {
        return axum::response::Redirect::to("/").into_response();
    };
    let given = query.get("token").cloned().unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {given}")).unwrap_or(HeaderValue::from_static("")),
    );
    if state.gate.check(&headers, None).await != Verdict::Pass {
        return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
    }
    let cookie = format!(
        "{}={given}; HttpOnly; SameSite=Strict; Path=/",
        crate::access::TOKEN_COOKIE
    );
    let mut response = axum::response::Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
