//! The HTTP side: the HTTPS listener serving `/.well-known/mta-sts.txt` for every configured
//! `mta-sts.<domain>` (chosen by SNI and Host), and the plain HTTP listener that answers ACME
//! http-01 challenges and nothing else.
//!
//! Servers only read [`Served`] snapshots that the daemon swaps whole; this module never
//! decides what is published.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What the HTTP listeners serve, swapped whole by the daemon.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// Policy text by HTTPS host (`mta-sts.<domain>`, lowercase).
    pub policies: ArcSwap<super::texts::PolicyTexts>,
    /// ACME http-01 key authorizations by token.
    pub challenges: ArcSwap<HashMap<String, Arc<str>>>,
}

/// Timeouts and limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// HTTP/1 request headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection (including keep-alive) lives at most this long.
    pub connection_lifetime: Duration,
    /// Concurrent connections; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Concurrent connections from one address; further ones from it are closed at once, so
    /// one address cannot take the listener.
    pub max_per_source: usize,
    /// A connection that has not started a request this long after it was accepted is
    /// closed (an idle HTTP/2 connection after the preface, for example).
    pub first_request_timeout: Duration,
    /// A connection with no bytes read or written for this long is closed (HTTP/1 keep-alive
    /// and HTTP/2 alike).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(300),
            max_connections: 4096,
            max_per_source: 1024,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
        }
    }
}

/// The SNI name of the TLS connection a request came in on.
#[derive(Debug, Clone)]
struct Sni(Option<String>);

/// Routes of the HTTPS listener.
pub(crate) fn https_router(served: Arc<Served>) -> Router {
    Router::new()
        .route("/.well-known/mta-sts.txt", get(policy))
        .fallback(not_found)
        .with_state(served)
}

/// Routes of the plain HTTP listener: challenges only, never the policy.
pub(crate) fn http_router(served: Arc<Served>) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(not_found)
        .with_state(served)
}

/// What the admin listener reports on: TLS-RPT intake and/or the served zones.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub intake: Option<Arc<crate::tlsrpt::intake::Intake>>,
    pub zones: Option<Arc<ArcSwap<crate::zone::Zones>>>,
    /// `dnssec.refresh`: a zone whose signatures were due for replacement more than an hour
    /// ago (or expire within a day) is unhealthy.
    pub refresh: Duration,
    /// Other parts of the daemon that add metrics (the posture checks).
    pub sources: Vec<Arc<dyn AdminSource>>,
    /// The status page at `/` (404 without one).
    pub page: Option<Arc<dyn AdminPage>>,
}

/// The HTML status page of the admin listener.
#[async_trait::async_trait]
pub(crate) trait AdminPage: Send + Sync {
    async fn page(&self) -> String;
}

/// A part of the daemon that shows itself on the admin listener.
pub(crate) trait AdminSource: Send + Sync {
    /// Prometheus text appended to `/metrics`.
    fn metrics(&self) -> String;
}

/// Routes of the admin listener: Prometheus metrics and a health check.
pub(crate) fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

/// The status page: HTML that loads nothing else (the policy forbids any other source).
async fn status_page(State(state): State<AdminState>) -> Response {
    let Some(page) = &state.page else {
        return not_found().await;
    };
    let html = page.page().await;
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            ),
        ],
        html,
    )
        .into_response()
}

/// `ok` (200), or 503 with every reason the daemon cannot do its job right now.
async fn healthz(State(state): State<AdminState>) -> Response {
    let mut problems = Vec::new();
    if let Some(why) = state.intake.as_ref().and_then(|i| i.health()) {
        problems.push(why);
    }
    if let Some(zones) = &state.zones {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for z in zones.load().sorted() {
            let st = z.signing_state();
            let expires = u64::from(st.expiration);
            let due = expires.saturating_sub(state.refresh.as_secs());
            if expires < now + 86_400 || now > due + 3600 {
                problems.push(format!(
                    "zone {}: signatures expire at {expires} (unix time) and were not replaced",
                    z.origin()
                ));
            }
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let intake = match &state.intake {
        Some(intake) => intake.render_metrics().await,
        None => Ok(String::new()),
    };
    // The zones' metrics even when the report store cannot be read (that failure is logged;
    // with nothing else to show, the scrape fails).
    let others = state.zones.is_some() || !state.sources.is_empty();
    let text = match intake {
        Ok(text) => Ok(text),
        Err(e) if others => {
            tracing::error!(err = %e, "tlsrpt metrics unavailable");
            Ok(String::new())
        }
        Err(e) => Err(e),
    }
    .map(|mut text| {
        if let Some(zones) = &state.zones {
            text.push_str(&crate::dns::render_metrics(&zones.load()));
        }
        for s in &state.sources {
            text.push_str(&s.metrics());
        }
        text
    });
    match text {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(err = %e, "metrics unavailable");
            text_response(StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n")
        }
    }
}

async fn not_found() -> Response {
    text_response(StatusCode::NOT_FOUND, "not found\n")
}

fn text_response(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body.into(),
    )
        .into_response()
}

/// The request's host: `:authority` (h2) or the Host header, lowercase, without port.
fn request_host(req_uri: &axum::http::Uri, headers: &HeaderMap) -> Option<String> {
    let raw = req_uri.host().map(str::to_string).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_string())
    })?;
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

async fn policy(State(served): State<Arc<Served>>, req: Request<Body>) -> Response {
    let sni = req.extensions().get::<Sni>().and_then(|s| s.0.clone());
    // An HTTP/1.0 request may come without Host: the TLS server name says which host it is.
    let host = request_host(req.uri(), req.headers()).or_else(|| {
        sni.as_deref()
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
    });
    let Some(host) = host else {
        return not_found().await;
    };
    // The certificate was chosen by SNI: serve only the policy of that same host.
    if sni.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(host.as_str()) {
        return not_found().await;
    }
    let policies = served.policies.load();
    match policies.get(&host) {
        Some(text) => {
            let mut resp = text_response(StatusCode::OK, text.to_string());
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        None => not_found().await,
    }
}

async fn challenge(State(served): State<Arc<Served>>, Path(token): Path<String>) -> Response {
    match served.challenges.load().get(&token) {
        Some(ka) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            ka.to_string(),
        )
            .into_response(),
        None => not_found().await,
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets open connections
/// finish for up to `drain` before returning. With `tls`, every connection is TLS (h2 or
/// HTTP/1.1 by ALPN); without, plain HTTP/1.1 and h2c.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_source: crate::conn_limit::PerSource = Arc::default();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    if let Some(suppressed) = crate::logfield::throttle("https accept failed") {
                        tracing::warn!(err = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(source_slot) =
            crate::conn_limit::SourceSlot::take(&per_source, peer.ip(), limits.max_per_source)
        else {
            tracing::debug!(%peer, max = limits.max_per_source, "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let stream = ActivityIo::new(stream, activity.clone());
        let router = router.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let _source_slot = source_slot;
            match tls {
                Some(acceptor) => {
                    let tls_stream = match tokio::time::timeout(
                        limits.handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, err = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "tls handshake timed out");
                            return;
                        }
                    };
                    if tls_stream.get_ref().1.alpn_protocol()
                        == Some(crate::acme::tls::ACME_TLS_ALPN)
                    {
                        // tls-alpn-01 validation ends with the handshake (RFC 8737 §3).
                        return;
                    }
                    let sni = Sni(tls_stream.get_ref().1.server_name().map(str::to_string));
                    let seen = activity.clone();
                    let svc = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
                        seen.request();
                        req.extensions_mut().insert(sni.clone());
                        req
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(tls_stream), TowerToHyperService::new(svc))
                        .into_owned();
                    run_connection(watcher.watch(conn), peer, limits, activity).await;
                }
                None => {
                    let seen = activity.clone();
                    let svc = router.map_request(move |req: Request<hyper::body::Incoming>| {
                        seen.request();
                        req
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                        .into_owned();
                    run_connection(watcher.watch(conn), peer, limits, activity).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after drain deadline; closing them");
    }
}

async fn run_connection<F, E>(conn: F, peer: SocketAddr, limits: Limits, activity: Activity)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::select! {
        r = tokio::time::timeout(limits.connection_lifetime, conn) => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%peer, err = %e, "connection ended with error"),
            Err(_) => tracing::debug!(%peer, "connection lifetime reached"),
        },
        why = activity.watch(limits.first_request_timeout, limits.idle_timeout) => {
            tracing::debug!(%peer, why, "connection closed");
        }
    }
}

/// What a connection has done: when it last read or wrote, and whether a request started.
#[derive(Clone)]
struct Activity(Arc<ActivityInner>);

struct ActivityInner {
    start: tokio::time::Instant,
    /// Milliseconds after `start` of the last read or write of at least one byte.
    last: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(ActivityInner {
            start: tokio::time::Instant::now(),
            last: Default::default(),
            requests: Default::default(),
        }))
    }

    fn touch(&self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn request(&self) {
        self.0
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves when the connection must be closed: no request within `first_request`, or
    /// no bytes moved for `idle`. Says which.
    async fn watch(&self, first_request: Duration, idle: Duration) -> &'static str {
        use std::sync::atomic::Ordering::Relaxed;
        loop {
            let now = tokio::time::Instant::now();
            let last = self.0.start + Duration::from_millis(self.0.last.load(Relaxed));
            let no_request = self.0.requests.load(Relaxed) == 0;
            if no_request && now >= self.0.start + first_request {
                return "no request within the first-request deadline";
            }
            if now >= last + idle {
                return "idle";
            }
            let mut next = last + idle;
            if no_request {
                next = next.min(self.0.start + first_request);
            }
            tokio::time::sleep_until(next).await;
        }
    }
}

/// An I/O stream that records its activity.
struct ActivityIo<T> {
    inner: T,
    activity: Activity,
}

impl<T> ActivityIo<T> {
    fn new(inner: T, activity: Activity) -> Self {
        ActivityIo { inner, activity }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn connections_without_a_request_or_any_traffic_are_closed() {
        let (first, idle) = (Duration::from_secs(10), Duration::from_secs(20));
        // No request at all: closed at the first-request deadline, traffic or not.
        let a = Activity::new();
        let t0 = tokio::time::Instant::now();
        let keep_busy = {
            let a = a.clone();
            tokio::spawn(async move {
                loop {
                    a.touch();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        assert_eq!(
            a.watch(first, idle).await,
            "no request within the first-request deadline"
        );
        assert_eq!(t0.elapsed(), first);
        keep_busy.abort();
        // A request, then silence: closed after the idle time.
        let a = Activity::new();
        a.request();
        tokio::time::sleep(Duration::from_secs(5)).await;
        a.touch();
        let t1 = tokio::time::Instant::now();
        assert_eq!(a.watch(first, idle).await, "idle");
        assert_eq!(t1.elapsed(), idle);
    }

    fn served() -> Arc<Served> {
        let s = Served::default();
        let texts =
            super::super::texts::PolicyTexts::new([("mta-sts.example.com", "version: STSv1\r\n")])
                .unwrap();
        s.policies.store(Arc::new(texts));
        Arc::new(s)
    }

    async fn get_policy(host: &str, sni: Option<&str>) -> StatusCode {
        let mut req = Request::builder()
            .uri("/.well-known/mta-sts.txt")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(Sni(sni.map(String::from)));
        https_router(served()).oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn policy_needs_matching_sni_and_host() {
        assert_eq!(
            get_policy("mta-sts.example.com:443", Some("mta-sts.example.com")).await,
            StatusCode::OK
        );
        assert_eq!(
            get_policy("mta-sts.example.com", Some("mta-sts.other.example")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get_policy("mta-sts.unknown.example", Some("mta-sts.unknown.example")).await,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn a_request_without_host_is_answered_for_its_tls_server_name() {
        let mut req = Request::builder()
            .version(axum::http::Version::HTTP_10)
            .uri("/.well-known/mta-sts.txt")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(Sni(Some("mta-sts.example.com".into())));
        let resp = https_router(served()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Without SNI either, there is nothing to answer for.
        let req = Request::builder()
            .uri("/.well-known/mta-sts.txt")
            .body(Body::empty())
            .unwrap();
        let resp = https_router(served()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn healthz_names_a_zone_whose_signatures_were_not_replaced() {
        use crate::zone::{DnssecSettings, ZoneData, ZoneKey, Zones, keys};
        let zone_at = |origin: &str, signed_at: u64| {
            let name = hickory_proto::rr::Name::from_ascii(origin).unwrap();
            let text = format!(
                "$ORIGIN {origin}\n@ 300 IN SOA ns1 h 1 2 3 4 5\n@ 300 IN NS ns1\nns1 300 IN A 192.0.2.1\n"
            );
            let data = ZoneData::parse(&text, std::path::Path::new("z"), &name).unwrap();
            let s = DnssecSettings::default();
            let der = keys::generate_pkcs8(s.algorithm).unwrap();
            let key = ZoneKey::from_pkcs8(s.algorithm, &der, std::path::Path::new("k")).unwrap();
            crate::zone::build_signed_zone(&data, &key.into(), None, signed_at, &s)
                .unwrap()
                .0
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let get = |zones: Zones| async move {
            let state = AdminState {
                intake: None,
                zones: Some(Arc::new(ArcSwap::from_pointee(zones))),
                refresh: DnssecSettings::default().refresh,
                sources: Vec::new(),
                page: None,
            };
            let req = Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .unwrap();
            let resp = admin_router(state).oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        let (status, body) = get(Zones::new().with(zone_at("fresh.example.", now))).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        // Signed 10 days ago with 14 days of validity: due for replacement 3 days ago.
        let stale = Zones::new()
            .with(zone_at("fresh.example.", now))
            .with(zone_at("stale.example.", now - 10 * 86_400));
        let (status, body) = get(stale).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("zone stale.example.") && !body.contains("fresh"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn plain_http_never_serves_policy() {
        let req = Request::builder()
            .uri("/.well-known/mta-sts.txt")
            .header(header::HOST, "mta-sts.example.com")
            .body(Body::empty())
            .unwrap();
        let resp = http_router(served()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
