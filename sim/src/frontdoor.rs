//! What both simulators share in front of their handlers: the request log, the fault plan, the
//! API-key check, a listener whose connections a fault can sever, and the handle methods that
//! read the log and set the faults.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

use crate::faults::{self, Fault, FaultKind, FaultPlan};

/// Largest request body a simulator reads; both APIs take small bodies.
const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// How long [`SimServer::shutdown`] waits for the server to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// One request as a simulator received it, before any fault or handler saw it.
#[derive(Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RecordedRequest {
    /// A header's value, if present and readable as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body decoded as a form, brackets and all (`line_items[0][price]`), in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// Redacts `Authorization`, so a failed assertion never prints an API key.
impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, Cow<'_, str>)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if name == header::AUTHORIZATION {
                    Cow::Borrowed("[redacted]")
                } else {
                    String::from_utf8_lossy(value.as_bytes())
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("body", &self.body_text())
            .finish()
    }
}

/// What every request passes through before it reaches a simulator's handlers: the request log
/// and the fault plan. Also owns the shutdown signal that hanging faults and background tasks
/// watch.
pub(crate) struct Frontdoor {
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<FaultPlan>,
    /// Requests under this path prefix are "API requests", the ones random failures hit.
    api_prefix: &'static str,
    shutdown: watch::Sender<bool>,
}

impl Frontdoor {
    pub(crate) fn new(api_prefix: &'static str) -> Arc<Frontdoor> {
        Arc::new(Frontdoor {
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(FaultPlan::default()),
            api_prefix,
            shutdown: watch::Sender::new(false),
        })
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn request_count(&self) -> usize {
        lock(&self.requests).len()
    }

    pub(crate) fn add_fault(&self, fault: Fault) {
        lock(&self.faults).add(fault);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn set_random_failures(&self, rate: f64, kinds: Vec<FaultKind>, seed: u64) {
        lock(&self.faults).set_random(rate, kinds, seed);
    }

    /// Resolves once the simulator is shutting down.
    pub(crate) async fn stopping(&self) {
        let mut receiver = self.shutdown.subscribe();
        // An error means the sender is gone, which also means the simulator is gone.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }

    fn stop(&self) {
        self.shutdown.send_replace(true);
    }
}

/// Locks a simulator mutex. A panic while holding it (only possible in a test assertion) does not
/// make the state unreadable for the rest of the test.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A bound, not yet serving, simulator: its URL is known before its routes are built, so handlers
/// can put it in their answers (a payment link's checkout URL).
pub(crate) struct BoundListener {
    listener: TcpListener,
    pub(crate) base_url: Url,
}

impl BoundListener {
    pub(crate) async fn bind() -> io::Result<BoundListener> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let base_url = Url::parse(&format!("http://{address}/"))
            .map_err(|error| io::Error::other(format!("bad loopback url: {error}")))?;
        Ok(BoundListener { listener, base_url })
    }

    /// Serves `routes` behind the front door until the front door says stop.
    pub(crate) fn serve(self, routes: Router, frontdoor: Arc<Frontdoor>) -> SimServer {
        let app = routes
            .layer(axum::middleware::from_fn_with_state(frontdoor.clone(), frontdoor_layer))
            .into_make_service_with_connect_info::<Severance>();
        let listener = SimListener { inner: self.listener };
        let stopping = frontdoor.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { stopping.stopping().await }).await
        });
        SimServer { base_url: self.base_url, frontdoor, task: Mutex::new(Some(task)) }
    }
}

/// A running simulator server; stops when dropped.
pub(crate) struct SimServer {
    pub(crate) base_url: Url,
    pub(crate) frontdoor: Arc<Frontdoor>,
    task: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl SimServer {
    /// Stops accepting requests and waits (a few seconds at most) for the server to finish.
    pub(crate) async fn shutdown(&self) {
        self.frontdoor.stop();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, task).await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.frontdoor.stop();
    }
}

/// The methods both simulator handles share, over their `server: SimServer` field: the request
/// log and fault injection. `$api` is the path prefix of the API requests random failures hit.
macro_rules! handle_methods {
    ($api:literal) => {
        /// Every request received, oldest first (including refused and faulted ones).
        pub fn requests(&self) -> Vec<$crate::RecordedRequest> {
            self.server.frontdoor.requests()
        }

        pub fn request_count(&self) -> usize {
            self.server.frontdoor.request_count()
        }

        pub fn add_fault(&self, fault: $crate::Fault) {
            self.server.frontdoor.add_fault(fault);
        }

        /// Removes every fault rule and turns random failures off.
        pub fn clear_faults(&self) {
            self.server.frontdoor.clear_faults();
        }

        #[doc = concat!("Fails `rate` (0.0 to 1.0) of the requests under `", $api, "` with one of `kinds`,")]
        /// before they change anything; `seed` makes the sequence repeatable.
        pub fn set_random_failures(&self, rate: f64, kinds: Vec<$crate::FaultKind>, seed: u64) {
            self.server.frontdoor.set_random_failures(rate, kinds, seed);
        }
    };
}
pub(crate) use handle_methods;

/// An API's key check.
pub(crate) trait KeyCheck: Send + Sync + 'static {
    /// What a request with this `Authorization` header (if any, and if text) is answered instead
    /// of the handler's answer; `None` lets it through.
    fn refusal(&self, authorization: Option<&str>) -> Option<Response>;
}

/// Guards every route of `routes` (not the fallback) with `state`'s key check.
pub(crate) fn require_api_key<S: KeyCheck>(routes: Router<Arc<S>>, state: Arc<S>) -> Router<Arc<S>> {
    routes.route_layer(axum::middleware::from_fn_with_state(state, check_api_key::<S>))
}

async fn check_api_key<S: KeyCheck>(State(state): State<Arc<S>>, request: Request, next: Next) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    match state.refusal(authorization) {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

/// Records the request, then lets a matching fault answer instead of (or after) the handler.
async fn frontdoor_layer(
    State(frontdoor): State<Arc<Frontdoor>>,
    ConnectInfo(severance): ConnectInfo<Severance>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    lock(&frontdoor.requests).push(RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let is_api = parts.uri.path().starts_with(frontdoor.api_prefix);
    let fault = lock(&frontdoor.faults).take_matching(&parts.method, parts.uri.path(), is_api);
    let request = Request::from_parts(parts, Body::from(body));
    match fault {
        None => next.run(request).await,
        Some(fault) => faults::apply(fault, &frontdoor, &severance, request, next).await,
    }
}

/// A way to cut the connection a request came on, without answering: what
/// [`FaultKind::Close`] uses. Made for each connection by [`SimListener`].
#[derive(Clone)]
pub(crate) struct Severance(Arc<AtomicBool>);

impl Severance {
    /// After this, every read and write on the connection fails, so the HTTP server drops it
    /// before any byte of an answer is written.
    pub(crate) fn sever(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, SimListener>> for Severance {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        Severance(stream.io().severed.clone())
    }
}

/// A TCP listener whose connections can be severed from inside a request.
struct SimListener {
    inner: TcpListener,
}

impl Listener for SimListener {
    type Io = SeverableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (SeverableStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    let severed = Arc::new(AtomicBool::new(false));
                    return (SeverableStream { inner: stream, severed }, address);
                }
                // Out of file descriptors and the like: wait a little, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct SeverableStream {
    inner: TcpStream,
    severed: Arc<AtomicBool>,
}

impl SeverableStream {
    fn check(&self) -> io::Result<()> {
        if self.severed.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "severed by a simulated fault"))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for SeverableStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SeverableStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
