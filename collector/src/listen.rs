//! The accept loop: hyper's HTTP/1 connections with limits set before any work.
//!
//! - At most `max_connections` connections are open (and never more than the
//!   open-files limit leaves room for); past it the loop stops accepting, so new
//!   clients wait in the kernel's queue until a connection closes. Reaching the cap is
//!   logged once per episode and counted.
//! - A request's headers must arrive within `header_timeout`; an idle keep-alive
//!   connection is closed after the same time, and so is one that never sends a byte.
//! - A TLS handshake must finish within `header_timeout` too.
//! - `accept` errors (EMFILE…) are logged, counted, and retried after a short pause.
//!
//! Body timeouts and in-flight limits are per route (`ingest.rs`, `report/http.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::tls::Reloadable;

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// File descriptors kept for the database, logs, Chromium and the like.
const RESERVED_FDS: u64 = 64;
/// The largest read buffer of a connection (headers and body chunks).
pub const MAX_BUF_BYTES: usize = 32 * 1024;
/// How long graceful shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// `wanted`, lowered so that the connections fit under the open-files limit.
pub fn effective_max_connections(wanted: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let room = soft.saturating_sub(RESERVED_FDS).max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Serves `app` on `listener` (through TLS when `tls` is set) until `shutdown` resolves,
/// then lets requests in flight finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Reloadable>>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = effective_max_connections(limits.max_connections);
    if cap < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            serving = cap,
            "limits.max_connections is above what the open-files limit allows (ulimit -n); serving fewer connections at once"
        );
    }
    metrics.set_connection_limit(cap);
    let slots = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut saturated = false;
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                saturated = false;
                p
            }
            Err(_) => {
                if !saturated {
                    saturated = true;
                    metrics.saturated("connections");
                    tracing::warn!(
                        limit = cap,
                        "connection limit reached: new clients wait until a connection closes (limits.max_connections, limits.header_timeout)"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    drop(permit);
                    if is_per_connection(&e) {
                        continue;
                    }
                    metrics.accept_error();
                    tracing::warn!(error = %e, "cannot accept a connection (open files: ulimit -n); retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        metrics.connection_opened();
        let watcher = graceful.watcher();
        let app = app.clone();
        let tls = tls.as_ref().map(|t| t.current());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let reason = match tls {
                None => serve_one(stream, app, limits, watcher).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => serve_one(tls_stream, app, limits, watcher).await,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            "tls_handshake"
                        }
                        Err(_) => "tls_handshake",
                    }
                }
            };
            metrics.connection_closed(reason);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("requests still in flight after 10 s; closing");
        }
    }
    Ok(())
}

async fn serve_one<IO>(
    io: IO,
    app: Router,
    limits: ConnectionLimits,
    watcher: hyper_util::server::graceful::Watcher,
) -> &'static str
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    match watcher.watch(conn).await {
        Ok(()) => "done",
        Err(e) if e.is_timeout() => "header_timeout",
        Err(e) if e.is_incomplete_message() || e.is_closed() || e.is_canceled() => "done",
        Err(e) => {
            tracing::debug!(error = %e, "connection ended with an error");
            "error"
        }
    }
}

/// Errors that concern one connection, not the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
