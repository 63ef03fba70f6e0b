//! gRPC channels as every Kura client opens them: TCP_NODELAY on, bounded
//! connect time, lazy connection so a down peer does not block startup, and
//! mutual TLS when the process has a cluster certificate (`crate::tls`).

use std::time::Duration;
use tonic::transport::Endpoint;

/// What every internal client speaks over: a tonic channel that stamps the
/// cluster id on each request (`crate::cluster_id`).
pub use crate::cluster_id::Channel;

/// HTTP/2 flow-control windows of a channel.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    /// Bytes one stream may have in flight unread.
    pub stream: u32,
    /// Bytes all streams of the connection together may have in flight.
    pub connection: u32,
}

impl Windows {
    /// Control traffic: Raft, metadata, PD.
    pub const DEFAULT: Windows = Windows {
        stream: 4 << 20,
        connection: 16 << 20,
    };
    /// Fragment streams to data nodes. A GET reads k fragment streams in
    /// lockstep; if their unread data could fill a shared connection window,
    /// GETs waiting on different nodes would starve each other (a flow-control
    /// deadlock seen at 32 concurrent 64 MiB EC GETs). So the connection
    /// window is effectively unlimited and each stream's window is what bounds
    /// memory: four blocks of read-ahead.
    ///
    /// Four blocks *with their 12-byte headers* (`BULK_BLOCK`), not 1 MiB: h2
    /// grants window back as the gateway consumes whole frames, so with a
    /// window that is a whole number of blocks the node always has room for
    /// a whole block. With 1 MiB it had 36 bytes too few at the fourth, cut
    /// every later block across two frames, and the gateway copied each one
    /// to join it (7% of its CPU on 64 MiB GETs).
    pub const BULK: Windows = Windows {
        stream: 4 * BULK_BLOCK,
        connection: (1 << 31) - 1,
    };
}

/// A fragment block on the wire, as raw reads send it (`kura_datanode::
/// raw_read`): the default 256 KiB block (a 1 MiB stripe over 4 data
/// shards) and its 12-byte header. Other block sizes work the same, with the
/// occasional block cut across frames.
pub const BULK_BLOCK: u32 = (256 << 10) + 12;

/// Largest HTTP/2 frame a peer may send us (the default is 16 KiB). Fragment
/// blocks are 256 KiB: in 16 KiB frames each block costs 16 frame headers, 16
/// wake-ups of the connection task and 16 copies into the decoder's buffer;
/// profiled, that was half of a data node's CPU on 64 MiB PUTs.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;

/// Opens a lazily connecting channel to `addr` (`host:port` or a URL).
pub fn lazy_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    lazy_channel_with(addr, Windows::DEFAULT)
}

/// [`lazy_channel`] with explicit flow-control windows.
pub fn lazy_channel_with(addr: &str, w: Windows) -> Result<Channel, tonic::transport::Error> {
    let tls = crate::tls::installed();
    // With cluster TLS every internal address is dialled over TLS, whatever
    // scheme it was written with: plaintext is never tried.
    let host = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    // With TLS our connector does the handshake (with the material current
    // at each connect), so tonic sees a plain http:// endpoint.
    let endpoint = Endpoint::from_shared(format!("http://{host}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(w.stream))
        .initial_connection_window_size(Some(w.connection))
        .max_frame_size(Some(MAX_FRAME_SIZE));
    let channel = match tls {
        None => endpoint.connect_lazy(),
        Some(t) => endpoint.connect_with_connector_lazy(t.connector()),
    };
    Ok(crate::cluster_id::stamped(channel))
}
