//! PD as a replicated service: the members (`kura pd --peers`) form one
//! raft-rs group and every durable PD state change goes through its log.
//!
//! The replicated state machine is the PD state document itself: each
//! [`Storage::save`] proposes the whole [`StateFile`] as one entry and returns
//! once it is committed and applied here; every member applies an entry by
//! keeping its state as the latest. So ids (their high-water mark), store and
//! data node records, the region records, the placement maps and the
//! decommission / slot-movement records are replicated exactly as the
//! single-process PD persists them, and a snapshot is just the latest state
//! (docs/decisions/0014-pd-raft-replication.md says why this and not
//! metashard's engine).
//!
//! Only a leader that has applied every entry before its own term serves
//! ([`RoleStatus::serving`]); `PdCore` reloads its model from the applied
//! state when it starts to serve a new term. Membership is static (the
//! `--peers` list); no conf change.

mod log;
pub mod transport;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kura_proto::pd::pd_peer_server::PdPeerServer;
use raft::prelude::{EntryType, Message};
use raft::{RawNode, SnapshotStatus, StateRole};

use self::log::{RaftLog, COMPACT_EVERY};
use self::transport::{PeerService, Transport, MAX_MESSAGE};
use crate::storage::{StateFile, Storage, StorageError};

/// One member of a replicated PD, from `--peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub id: u64,
    /// gRPC address (`host:port`) clients and the other members dial.
    pub grpc: String,
    /// HTTP admin API address (`host:port`); empty when not given.
    pub http: String,
}

/// Parses `ID=GRPC_ADDR[@HTTP_ADDR]` items (the `--peers` list).
pub fn parse_peers(items: &[String]) -> Result<Vec<PeerSpec>, String> {
    let mut out: Vec<PeerSpec> = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (id, addrs) = item
            .split_once('=')
            .ok_or_else(|| format!("peer {item:?} is not ID=GRPC_ADDR[@HTTP_ADDR]"))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| format!("peer {item:?}: the id must be a number above 0"))?;
        let (grpc, http) = addrs.split_once('@').unwrap_or((addrs, ""));
        if grpc.is_empty() {
            return Err(format!("peer {item:?} has no gRPC address"));
        }
        if out.iter().any(|p| p.id == id) {
            return Err(format!("peer id {id} appears twice"));
        }
        out.push(PeerSpec {
            id,
            grpc: grpc.to_string(),
            http: http.to_string(),
        });
    }
    out.sort_by_key(|p| p.id);
    Ok(out)
}

/// Settings of one member.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This member's id (one of `peers`).
    pub id: u64,
    pub peers: Vec<PeerSpec>,
    /// Where the Raft log lives (`<pd data dir>/raft`).
    pub dir: PathBuf,
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns.
    pub election_ticks: usize,
    /// Longest a save waits for its entry to commit.
    pub proposal_timeout: Duration,
}

impl ReplicaConfig {
    pub fn new(id: u64, peers: Vec<PeerSpec>, dir: PathBuf) -> Self {
        ReplicaConfig {
            id,
            peers,
            dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            proposal_timeout: Duration::from_secs(5),
        }
    }
}

/// What this member knows of the group right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleStatus {
    pub term: u64,
    /// 0 while no leader is known.
    pub leader_id: u64,
    /// This member leads and has applied everything before its term.
    pub serving: bool,
    /// Members the leader heard from recently (only on the leader).
    pub active: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("this PD member is not the leader")]
    NotLeader,
    #[error("the Raft proposal was dropped: {0}")]
    Dropped(String),
    #[error("the change did not commit within {0:?}")]
    Timeout(Duration),
    #[error("this PD member's Raft loop has stopped")]
    Stopped,
    #[error("invalid replication setup: {0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] log::LogError),
}

impl ReplicationError {
    /// Whether the same request may succeed later (perhaps on another member).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicationError::NotLeader => true,
            ReplicationError::Dropped(_) => true,
            ReplicationError::Timeout(_) => true,
            ReplicationError::Stopped => true,
            ReplicationError::Config(_) => false,
            ReplicationError::Log(_) => false,
        }
    }
}

type Reply = SyncSender<Result<(), ReplicationError>>;

pub(crate) enum Event {
    Step(Message),
    Propose {
        data: Vec<u8>,
        reply: Reply,
    },
    /// A snapshot message to `to` was delivered (or not).
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// Messages to `to` could not be delivered.
    Unreachable(u64),
    Stop,
}

struct Shared {
    status: RwLock<RoleStatus>,
    /// The state of the last applied non-empty entry (or snapshot).
    applied: RwLock<Option<Vec<u8>>>,
}

/// A running member: the Raft loop on its own thread plus handles to it.
pub struct Replica {
    cfg: ReplicaConfig,
    events: Mutex<Sender<Event>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Replica {
    /// Opens the log and starts the Raft loop (peer traffic on the current
    /// tokio runtime).
    pub fn start(cfg: ReplicaConfig) -> Result<Arc<Replica>, ReplicationError> {
        if !cfg.peers.iter().any(|p| p.id == cfg.id) {
            return Err(ReplicationError::Config(format!(
                "member id {} is not in the peer list",
                cfg.id
            )));
        }
        let voters: Vec<u64> = cfg.peers.iter().map(|p| p.id).collect();
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| ReplicationError::Config(format!("{}: {e}", cfg.dir.display())))?;
        let (log, restored) = RaftLog::open(&cfg.dir, &voters)?;
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: 2,
            applied: restored.applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_cfg
            .validate()
            .map_err(|e| ReplicationError::Config(e.to_string()))?;
        let raw = RawNode::new(&raft_cfg, log, &kura_metashard::logger::raft_logger())
            .map_err(|e| ReplicationError::Config(e.to_string()))?;
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| ReplicationError::Config(format!("no tokio runtime: {e}")))?;
        let (tx, rx) = mpsc::channel();
        let transport = Transport::start(cfg.id, &cfg.peers, &rt, tx.clone())
            .map_err(ReplicationError::Config)?;
        tracing::info!(
            member = cfg.id,
            members = voters.len(),
            applied = restored.applied,
            has_state = restored.state.is_some(),
            "PD Raft member starting"
        );
        let shared = Arc::new(Shared {
            status: RwLock::new(RoleStatus::default()),
            applied: RwLock::new(restored.state),
        });
        let looper = RaftLoop {
            me: cfg.id,
            raw,
            transport,
            shared: shared.clone(),
            pending: HashMap::new(),
            next_proposal: rand::random::<u64>() >> 1,
        };
        let tick = cfg.tick;
        let thread = std::thread::Builder::new()
            .name(format!("pd-raft-{}", cfg.id))
            .spawn(move || looper.run(rx, tick))
            .map_err(|e| ReplicationError::Config(format!("cannot start the Raft thread: {e}")))?;
        Ok(Arc::new(Replica {
            cfg,
            events: Mutex::new(tx),
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn members(&self) -> &[PeerSpec] {
        &self.cfg.peers
    }

    pub fn member(&self, id: u64) -> Option<&PeerSpec> {
        self.cfg.peers.iter().find(|p| p.id == id)
    }

    pub fn status(&self) -> RoleStatus {
        self.shared
            .status
            .read()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The leader as this member knows it.
    pub fn leader(&self) -> Option<&PeerSpec> {
        self.member(self.status().leader_id)
    }

    fn send(&self, e: Event) -> Result<(), ReplicationError> {
        self.events
            .lock()
            .map_err(|_| ReplicationError::Stopped)?
            .send(e)
            .map_err(|_| ReplicationError::Stopped)
    }

    /// The gRPC service the other members send Raft messages to.
    pub fn peer_service(&self) -> Result<PdPeerServer<PeerService>, ReplicationError> {
        let events = self
            .events
            .lock()
            .map_err(|_| ReplicationError::Stopped)?
            .clone();
        Ok(PdPeerServer::new(PeerService { events })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Proposes `data` and waits until it is committed and applied here.
    pub fn propose(&self, data: Vec<u8>) -> Result<(), ReplicationError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Event::Propose { data, reply: tx })?;
        match rx.recv_timeout(self.cfg.proposal_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                Err(ReplicationError::Timeout(self.cfg.proposal_timeout))
            }
            Err(RecvTimeoutError::Disconnected) => Err(ReplicationError::Stopped),
        }
    }

    /// Stops the Raft loop and waits for it.
    pub fn stop(&self) {
        let _ = self.send(Event::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Storage for Replica {
    fn load(&self) -> Result<Option<StateFile>, StorageError> {
        let bytes = self
            .shared
            .applied
            .read()
            .map_err(|_| StorageError::NotReplicated("state lock poisoned".into()))?
            .clone();
        bytes
            .map(|b| StateFile::from_json(&b, std::path::Path::new("the replicated PD state")))
            .transpose()
    }

    fn save(&self, state: &StateFile) -> Result<(), StorageError> {
        let data = serde_json::to_vec(state).map_err(|e| StorageError::Corrupt {
            what: "the in-memory state".into(),
            reason: format!("cannot encode: {e}"),
        })?;
        self.propose(data)
            .map_err(|e| StorageError::NotReplicated(e.to_string()))
    }
}

struct RaftLoop {
    me: u64,
    raw: RawNode<RaftLog>,
    transport: Transport,
    shared: Arc<Shared>,
    /// Proposals of this member waiting to be applied, by proposal number.
    pending: HashMap<u64, Reply>,
    next_proposal: u64,
}

impl RaftLoop {
    fn run(mut self, rx: Receiver<Event>, tick: Duration) {
        let mut last_tick = Instant::now();
        let mut status = RoleStatus::default();
        'outer: loop {
            let wait = tick.saturating_sub(last_tick.elapsed());
            let mut next = match rx.recv_timeout(wait) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Take everything queued, then persist it all in one Ready.
            while let Some(e) = next {
                match e {
                    Event::Step(m) => {
                        let _ = self.raw.step(m);
                    }
                    Event::Propose { data, reply } => self.propose(data, reply),
                    Event::SnapshotSent { to, ok } => {
                        let status = if ok {
                            SnapshotStatus::Finish
                        } else {
                            SnapshotStatus::Failure
                        };
                        self.raw.report_snapshot(to, status);
                    }
                    Event::Unreachable(to) => self.raw.report_unreachable(to),
                    Event::Stop => break 'outer,
                }
                next = rx.try_recv().ok();
            }
            if last_tick.elapsed() >= tick {
                self.raw.tick();
                last_tick = Instant::now();
            }
            if let Err(e) = self.on_ready() {
                // The log cannot be written: this member must not go on
                // voting or acking as if it had persisted.
                tracing::error!(member = self.me, "PD Raft log failed, member stops: {e}");
                break;
            }
            let now = self.status();
            if now.term != status.term || (status.serving && !now.serving) {
                self.fail_pending();
            }
            if now != status {
                let m = crate::metrics::metrics();
                m.raft_term.set(now.term as i64);
                m.leader.set(i64::from(now.serving));
                if now.leader_id != status.leader_id && now.leader_id != 0 {
                    m.leader_changes.inc();
                }
                if now.leader_id != status.leader_id || now.serving != status.serving {
                    tracing::info!(
                        member = self.me,
                        term = now.term,
                        leader = now.leader_id,
                        serving = now.serving,
                        "PD Raft role changed"
                    );
                }
                if let Ok(mut s) = self.shared.status.write() {
                    *s = now.clone();
                }
                status = now;
            }
        }
        self.fail_pending();
        if let Ok(mut s) = self.shared.status.write() {
            *s = RoleStatus::default();
        }
    }

    fn status(&self) -> RoleStatus {
        let r = &self.raw.raft;
        let leader = r.state == StateRole::Leader;
        let applied = r.raft_log.applied;
        RoleStatus {
            term: r.term,
            leader_id: r.leader_id,
            serving: leader && r.raft_log.term(applied).unwrap_or(0) == r.term,
            active: if leader {
                let mut v: Vec<u64> = r
                    .prs()
                    .iter()
                    .filter(|(&id, p)| id == self.me || p.recent_active)
                    .map(|(&id, _)| id)
                    .collect();
                v.sort_unstable();
                v
            } else {
                Vec::new()
            },
        }
    }

    fn fail_pending(&mut self) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.try_send(Err(ReplicationError::NotLeader));
        }
    }

    fn propose(&mut self, data: Vec<u8>, reply: Reply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.try_send(Err(ReplicationError::NotLeader));
            return;
        }
        let n = self.next_proposal;
        self.next_proposal = self.next_proposal.wrapping_add(1);
        let mut context = self.me.to_be_bytes().to_vec();
        context.extend_from_slice(&n.to_be_bytes());
        match self.raw.propose(context, data) {
            Ok(()) => {
                self.pending.insert(n, reply);
            }
            Err(e) => {
                let _ = reply.try_send(Err(ReplicationError::Dropped(e.to_string())));
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), ReplicationError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // A leader may send before it persists (Raft thesis §10.2.1).
        self.transport.send(rd.take_messages());
        let snapshot = rd.snapshot().clone();
        self.raw
            .mut_store()
            .persist(&snapshot, rd.entries(), rd.hs())?;
        if snapshot.get_metadata().index > 0 {
            tracing::info!(
                member = self.me,
                index = snapshot.get_metadata().index,
                "applied a PD state snapshot from the leader"
            );
            self.set_applied(snapshot.data.to_vec());
            crate::metrics::metrics().snapshots_applied.inc();
        }
        self.apply(rd.take_committed_entries());
        self.transport.send(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    fn set_applied(&self, state: Vec<u8>) {
        if let Ok(mut a) = self.shared.applied.write() {
            *a = Some(state);
        }
    }

    fn apply(&mut self, entries: Vec<raft::prelude::Entry>) {
        for e in entries {
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue;
            }
            self.set_applied(e.data.to_vec());
            if e.context.len() == 16 && e.context[..8] == self.me.to_be_bytes() {
                let mut n = [0u8; 8];
                n.copy_from_slice(&e.context[8..]);
                if let Some(reply) = self.pending.remove(&u64::from_be_bytes(n)) {
                    let _ = reply.try_send(Ok(()));
                }
            }
        }
    }

    fn maybe_compact(&mut self) -> Result<(), ReplicationError> {
        let applied = self.raw.raft.raft_log.applied;
        if applied < self.raw.store().snapshot_index() + COMPACT_EVERY {
            return Ok(());
        }
        let state = self.shared.applied.read().ok().and_then(|a| a.clone());
        if let Some(state) = state {
            self.raw.mut_store().compact(applied, &state)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_with_and_without_http_and_bad_lists_are_refused() {
        let list = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        let peers = parse_peers(&list("2=h2:2380@h2:2379,1=h1:2380")).unwrap();
        assert_eq!(
            peers,
            vec![
                PeerSpec {
                    id: 1,
                    grpc: "h1:2380".into(),
                    http: "".into()
                },
                PeerSpec {
                    id: 2,
                    grpc: "h2:2380".into(),
                    http: "h2:2379".into()
                },
            ]
        );
        for bad in ["h1:2380", "0=h:1", "x=h:1", "1=", "1=a:1,1=b:1"] {
            assert!(parse_peers(&list(bad)).is_err(), "{bad}");
        }
    }
}
