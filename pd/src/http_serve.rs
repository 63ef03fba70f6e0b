//! Serving the HTTP API: plain HTTP without cluster TLS, otherwise HTTPS that
//! requires a client certificate signed by the cluster CA, whose role
//! ([`CertRole`]) each request then carries. One task per connection, as
//! `axum::serve` does; a connection that does not finish its handshake in
//! time is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::http_auth::{cert_role, CertRole};
use crate::Error;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Some(tls) = kura_pd_client::tls::installed() else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
            .map_err(Error::Http);
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.rustls_server(true)?));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "PD HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, router, watcher) = (acceptor.clone(), router.clone(), graceful.watcher());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "PD HTTP: TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            // The verifier required a certificate; its role rides on every request.
            let role = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| cert_role(c.as_ref()))
                .unwrap_or(CertRole::Node);
            let svc = TowerToHyperService::new(router.layer(axum::Extension(role)));
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "PD HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    Ok(())
}
