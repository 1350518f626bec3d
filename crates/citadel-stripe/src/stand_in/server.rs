//! The stand-in's HTTP side: the axum routes, and a listener whose
//! connections a handler can close without sending a response.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::serve::{IncomingStream, Listener};
use chrono::Utc;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::state::{IncomingRequest, Reply, State};

/// The state every handler shares.
pub(super) type Shared = Arc<Mutex<State>>;

/// Locks the state, recovering it if a thread panicked while holding it: the
/// state is plain data, left consistent by every step that changes it.
pub(super) fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds the routes: `POST /v1/invoices/{invoice}/pay`,
/// `POST /v1/invoices/{invoice}/mark_uncollectible`,
/// `DELETE /v1/subscriptions/{subscription}`, and Stripe's 404 for
/// everything else.
pub(super) fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/v1/invoices/{invoice}/pay",
            post(pay).fallback(unknown_route),
        )
        .route(
            "/v1/invoices/{invoice}/mark_uncollectible",
            post(mark_uncollectible).fallback(unknown_route),
        )
        .route(
            "/v1/subscriptions/{subscription}",
            delete(cancel_subscription).fallback(unknown_route),
        )
        .fallback(unknown_route)
        .with_state(shared)
}

async fn pay(
    AxumState(shared): AxumState<Shared>,
    ConnectInfo(connection): ConnectInfo<ConnectionHandle>,
    Path(invoice): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = incoming(&method, &uri, &headers, &body);
    let reply = lock(&shared).pay(&request, &invoice, Utc::now());
    log_request(&request, &reply);

    if reply.drop_connection {
        connection.close();
    }
    into_response(reply)
}

async fn mark_uncollectible(
    AxumState(shared): AxumState<Shared>,
    Path(invoice): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = incoming(&method, &uri, &headers, &body);
    let reply = lock(&shared).mark_uncollectible(&request, &invoice, Utc::now());
    log_request(&request, &reply);
    into_response(reply)
}

async fn cancel_subscription(
    AxumState(shared): AxumState<Shared>,
    Path(subscription): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = incoming(&method, &uri, &headers, &body);
    let reply = lock(&shared).cancel_subscription(&request, &subscription, Utc::now());
    log_request(&request, &reply);
    into_response(reply)
}

async fn unknown_route(
    AxumState(shared): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = incoming(&method, &uri, &headers, &body);
    let reply = lock(&shared).unknown_route(&request, Utc::now());
    log_request(&request, &reply);
    into_response(reply)
}

fn incoming(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> IncomingRequest {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let authorized = header_text(header::AUTHORIZATION.as_str())
        .and_then(|value| value.strip_prefix("Bearer ").map(str::to_owned))
        .is_some_and(|key| !key.trim().is_empty());

    IncomingRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        stripe_account: header_text("stripe-account"),
        idempotency_key: header_text("idempotency-key"),
        authorized,
        params: String::from_utf8_lossy(body).into_owned(),
    }
}

fn log_request(request: &IncomingRequest, reply: &Reply) {
    tracing::debug!(
        http.method = %request.method,
        http.path = %request.path,
        http.status = reply.status,
        stripe.account = request.stripe_account.as_deref(),
        idempotency.key = request.idempotency_key.as_deref(),
        dropped = reply.drop_connection,
        "Stripe stand-in handled a request"
    );
}

fn into_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(reply.body)).into_response();
    if reply.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Serves until `shutdown` completes.
pub(super) async fn serve(
    listener: StandInListener,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let service = router(shared).into_make_service_with_connect_info::<ConnectionHandle>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A TCP listener on 127.0.0.1 whose connections can be closed by a
/// handler, through the [`ConnectionHandle`] it gets as connect info.
#[derive(Debug)]
pub(super) struct StandInListener {
    inner: TcpListener,
}

impl StandInListener {
    /// Binds a free port on 127.0.0.1.
    pub(super) async fn bind() -> io::Result<Self> {
        let inner = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        Ok(Self { inner })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Listener for StandInListener {
    type Io = ClosableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => return (ClosableStream::new(stream), address),
                // Accept errors (too many open files, a connection reset
                // before accept) concern one connection: log and go on.
                Err(error) => {
                    tracing::warn!(%error, "Stripe stand-in failed to accept a connection");
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that fails every read and write once closed, so hyper drops
/// the connection without sending the response it was given.
#[derive(Debug)]
pub(super) struct ClosableStream {
    stream: TcpStream,
    closed: Arc<AtomicBool>,
}

impl ClosableStream {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn check_open(&self) -> io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the Stripe stand-in",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for ClosableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.check_open() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClosableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(error) = this.check_open() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.check_open() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A handler's way to close the connection its request came on.
#[derive(Debug, Clone)]
pub(super) struct ConnectionHandle {
    closed: Arc<AtomicBool>,
}

impl ConnectionHandle {
    /// Closes the connection: nothing more is written to it, including the
    /// response the handler returns.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, StandInListener>> for ConnectionHandle {
    fn connect_info(stream: IncomingStream<'_, StandInListener>) -> Self {
        Self {
            closed: Arc::clone(&stream.io().closed),
        }
    }
}
