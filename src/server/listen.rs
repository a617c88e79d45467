//! The accept loop: axum's `serve` (HTTP/1.1 only, as axum without its `http2` feature) with a
//! timer given to hyper, so that a connection that sends
//! no complete request head within [`Limits::idle`] (an idle keep-alive connection, a client
//! trickling its headers) is closed. Each request carries its client's address as axum's
//! `ConnectInfo<SocketAddr>` (the login throttle counts failures by it).
//!
//! [`Limits::idle`]: super::Limits::idle

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service as _;

/// Serves `app` on `listener` until `stop` resolves, then waits for open requests to finish (as
/// `axum::serve` does, with a watch channel each way).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(idle);
    // Dropping `stopping` asks every connection to finish; each holds a `finished` receiver.
    let (stopping, _) = watch::channel(());
    let (finished, finished_rx) = watch::channel(());
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY for {remote}: {e}");
        }
        let service = match make_service.call(remote).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stopping = stopping.subscribe();
        let finished_rx = finished_rx.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::trace!("connection from {remote} ended: {e}");
            }
            drop(finished_rx);
        });
    }
    drop(listener);
    drop(stopping);
    drop(finished_rx);
    finished.closed().await;
    Ok(())
}

/// After a failed accept: nothing for a connection the client dropped; otherwise (e.g. out of
/// file descriptors) a log line and a second's pause, as `axum::serve` does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!("cannot accept a connection: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
