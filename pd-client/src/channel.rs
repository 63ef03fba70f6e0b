//! gRPC channels as every Kura client opens them: TCP_NODELAY on, bounded
//! connect time, lazy connection so a down peer does not block startup.

use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Opens a lazily connecting channel to `addr` (`host:port` or a URL).
pub fn lazy_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let url = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect_lazy())
}
