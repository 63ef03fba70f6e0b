//! Raft messages between PD members over gRPC (`PdPeer.Raft`): one sender
//! task per peer batching what the Raft loop queued, best effort (a message
//! lost to a full queue or a down peer is re-sent by Raft itself).

use std::collections::HashMap;
use std::time::Duration;

use kura_pd_client::channel::lazy_channel;
use kura_proto::pd::pd_peer_client::PdPeerClient;
use kura_proto::pd::pd_peer_server::PdPeer;
use kura_proto::pd::{PdRaftAck, PdRaftBatch};
use protobuf::Message as PbMessage;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{Event, PeerSpec};

/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 1024;
const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest gRPC message between members (a snapshot is a whole PD state).
pub const MAX_MESSAGE: usize = 256 << 20;

/// The sending side: routes each message to its peer's queue.
pub(super) struct Transport {
    queues: HashMap<u64, mpsc::Sender<Message>>,
}

impl Transport {
    /// Starts one sender task per peer on `rt`; delivery failures are
    /// reported to the Raft loop through `events`.
    pub(super) fn start(
        me: u64,
        peers: &[PeerSpec],
        rt: &tokio::runtime::Handle,
        events: std::sync::mpsc::Sender<Event>,
    ) -> Result<Self, String> {
        let mut queues = HashMap::new();
        for p in peers.iter().filter(|p| p.id != me) {
            let ch = lazy_channel(&p.grpc).map_err(|e| format!("peer {}: {e}", p.grpc))?;
            let client = PdPeerClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let (tx, rx) = mpsc::channel(QUEUE);
            rt.spawn(send_loop(me, p.id, client, rx, events.clone()));
            queues.insert(p.id, tx);
        }
        Ok(Transport { queues })
    }

    pub(super) fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            if let Some(q) = self.queues.get(&m.to) {
                // Full or closed: dropped; Raft re-sends.
                let _ = q.try_send(m);
            }
        }
    }
}

async fn send_loop(
    me: u64,
    to: u64,
    mut client: PdPeerClient<kura_pd_client::channel::Channel>,
    mut rx: mpsc::Receiver<Message>,
    events: std::sync::mpsc::Sender<Event>,
) {
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let snapshots = batch
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .count();
        let req = PdRaftBatch {
            from_member: me,
            messages: batch
                .iter()
                .map(|m| m.write_to_bytes().unwrap_or_default().into())
                .collect(),
        };
        let result = match tokio::time::timeout(SEND_TIMEOUT, client.raft(req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.message().to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        // Raft must hear how a snapshot went, or it waits for it forever.
        for _ in 0..snapshots {
            let _ = events.send(Event::SnapshotSent {
                to,
                ok: result.is_ok(),
            });
        }
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(member = to, "PD peer reachable again");
                }
                failing = false;
            }
            Err(e) => {
                let _ = events.send(Event::Unreachable(to));
                if !failing {
                    failing = true;
                    tracing::warn!(member = to, "cannot send Raft messages to PD peer: {e}");
                }
            }
        }
    }
}

/// The receiving side: hands each message to the Raft loop.
pub struct PeerService {
    pub(super) events: std::sync::mpsc::Sender<Event>,
}

#[tonic::async_trait]
impl PdPeer for PeerService {
    async fn raft(&self, req: Request<PdRaftBatch>) -> Result<Response<PdRaftAck>, Status> {
        for b in req.into_inner().messages {
            let m = Message::parse_from_bytes(&b)
                .map_err(|e| Status::invalid_argument(format!("bad Raft message: {e}")))?;
            self.events
                .send(Event::Step(m))
                .map_err(|_| Status::unavailable("PD is stopping"))?;
        }
        Ok(Response::new(PdRaftAck {}))
    }
}
