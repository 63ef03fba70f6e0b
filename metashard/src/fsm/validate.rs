//! Checks on raft messages from the network, before they reach raft-rs.
//!
//! raft-rs trusts its caller: hostile fields make it panic (a heartbeat whose
//! commit is past the log end: "to_commit {} is out of range [last_index {}]"
//! in `commit_to`; appended entries whose indexes jump back under the commit
//! index: "entry {} conflict with committed entry {}" in `maybe_append`; an
//! empty `MsgPropose`: "stepped empty MsgProp"), or act on messages only its
//! own node may make (`MsgHup`, `MsgBeat`, `MsgPropose`, …). Every message off
//! the wire passes [`check`] first; a failed check drops the message and
//! counts it in `kura_metashard_raft_messages_dropped_total{reason}`. Raft
//! retries what a real peer sends, so dropping is always safe; what these
//! checks cannot catch (a well-formed forgery) is what mutual TLS is for
//! (docs/security.md).
//!
//! The rules (reviewed against raft-rs 0.7 `Raft::step` and its handlers):
//! - only message types peers send each other: `MsgAppend`(+`Response`),
//!   `MsgRequestVote`/`PreVote`(+`Response`), `MsgSnapshot`, `MsgHeartbeat`
//!   (+`Response`), `MsgTransferLeader`, `MsgTimeoutNow`, `MsgReadIndex`
//!   (+`Resp`); Kura never forwards proposals (only a leader proposes);
//! - `to` is the local peer, `from` is neither 0 nor the local peer;
//! - term, index, log term, commit and reject hint below [`ABSURD`] (a real
//!   cluster never gets near; raft-rs adds 1 to terms and indexes);
//! - a heartbeat's commit is at most the local last index (the leader sends
//!   min(matched, committed), and matched never passes what we have);
//! - an append's entries are numbered `index + 1, index + 2, …`, carry terms
//!   no newer than the message's, and each is at most [`MAX_ENTRY_BYTES`];
//! - an accepted append response names an index the local log has (a leader
//!   would otherwise count a match that does not exist toward commit);
//! - an append at or past the commit index has a log term no older than the
//!   committed entry's (else raft-rs's conflict search on the rejection walks
//!   into the compacted log: "term({index}) must be valid");
//! - a read index response carries exactly one entry (its request context).

use kura_proto::common::Region;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

use crate::metrics;
use crate::peer::state::SnapshotDescriptor;

/// Terms, indexes and commit indexes at or above this are forged: at a
/// million entries a second a log reaches it after 146,000 years.
pub const ABSURD: u64 = 1 << 62;

/// The largest client batch a leader proposes as one raft entry (the
/// request is refused otherwise). Raft's per-message budget is 1 MiB; one
/// entry may exceed it alone, so the cap also bounds what one message holds.
pub const MAX_PROPOSAL_BYTES: usize = 8 << 20;

/// The largest entry accepted from a peer: a proposal plus the envelope and
/// context raft and Kura add.
pub const MAX_ENTRY_BYTES: usize = MAX_PROPOSAL_BYTES + (64 << 10);

/// Why a message from the network was dropped (the metric's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Addressed to another store.
    WrongStore,
    /// For a region this store does not host and cannot create from it.
    UnknownRegion,
    /// For a peer id that is not this store's peer of the region.
    WrongPeer,
    /// From a peer id not in the region, with no newer view to explain it.
    UnknownSender,
    /// `from_store` is not the store the region places `from` on.
    SenderStoreMismatch,
    /// The raft payload does not decode.
    Undecodable,
    /// A message type only the local node makes (`MsgHup`, `MsgPropose`, …).
    LocalOnlyType,
    /// `from`/`to` of 0 or the local peer itself.
    BadPeerIds,
    /// Term, index, log term, commit or hint past [`ABSURD`].
    Absurd,
    /// A heartbeat whose commit is past the local log end.
    CommitPastLog,
    /// An accepted append response for an index the leader does not have.
    IndexPastLog,
    /// Appended entries not numbered on from the message's index, or newer
    /// than the message's term.
    EntriesNotContiguous,
    /// An entry over [`MAX_ENTRY_BYTES`].
    EntryTooLarge,
    /// An append at or past our commit index whose log term is older than
    /// the committed entry's (raft-rs would walk its conflict search into the
    /// compacted log and panic: "term({index}) must be valid").
    LogTermBelowCommit,
    /// A read index response without exactly one context entry.
    BadReadIndexResp,
    /// A tombstone that names no newer view excluding the local peer, or whose
    /// sender could not confirm it.
    TombstoneRefused,
    /// Would create an uninitialized peer while the store holds its most
    /// (`fsm::uninit::MAX_UNINITIALIZED`).
    UninitializedFull,
    /// A snapshot whose descriptor does not match its message or this peer
    /// (region id, index/term, our peer absent, conf state, range, size),
    /// or whose range overlaps another local region, or whose file was not
    /// received and verified.
    BadSnapshot,
}

impl DropReason {
    pub fn reason(self) -> &'static str {
        match self {
            DropReason::WrongStore => "wrong_store",
            DropReason::UnknownRegion => "unknown_region",
            DropReason::WrongPeer => "wrong_peer",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::SenderStoreMismatch => "sender_store_mismatch",
            DropReason::Undecodable => "undecodable",
            DropReason::LocalOnlyType => "local_only_type",
            DropReason::BadPeerIds => "bad_peer_ids",
            DropReason::Absurd => "absurd_value",
            DropReason::CommitPastLog => "commit_past_log",
            DropReason::IndexPastLog => "index_past_log",
            DropReason::EntriesNotContiguous => "entries_not_contiguous",
            DropReason::EntryTooLarge => "entry_too_large",
            DropReason::LogTermBelowCommit => "log_term_below_commit",
            DropReason::BadReadIndexResp => "bad_read_index_resp",
            DropReason::TombstoneRefused => "tombstone_refused",
            DropReason::UninitializedFull => "uninitialized_peers_full",
            DropReason::BadSnapshot => "bad_snapshot",
        }
    }

    /// Counts the drop (and logs it at debug: a flood must not flood the log).
    pub fn count(self, region_id: u64) {
        metrics::RAFT_MESSAGES_DROPPED
            .with_label_values(&[self.reason()])
            .inc();
        tracing::debug!(region_id, reason = self.reason(), "raft message dropped");
    }
}

/// What the checks need of the local peer's raft state.
#[derive(Clone, Copy, Debug)]
pub struct LocalLog {
    pub peer_id: u64,
    pub last_index: u64,
    pub committed: u64,
    /// The term of the entry at `committed`.
    pub committed_term: u64,
}

/// Decodes the raft payload of a wire message.
pub fn decode(bytes: &[u8]) -> Result<Message, DropReason> {
    Message::parse_from_bytes(bytes).map_err(|_| DropReason::Undecodable)
}

/// The checks that need no local state (done before a peer is created).
pub fn check_shape(msg: &Message) -> Result<(), DropReason> {
    use MessageType::*;
    match msg.get_msg_type() {
        MsgAppend
        | MsgAppendResponse
        | MsgRequestVote
        | MsgRequestVoteResponse
        | MsgRequestPreVote
        | MsgRequestPreVoteResponse
        | MsgSnapshot
        | MsgHeartbeat
        | MsgHeartbeatResponse
        | MsgTransferLeader
        | MsgTimeoutNow
        | MsgReadIndex
        | MsgReadIndexResp => {}
        MsgHup | MsgBeat | MsgPropose | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
            return Err(DropReason::LocalOnlyType)
        }
    }
    if msg.from == 0 || msg.to == 0 || msg.from == msg.to {
        return Err(DropReason::BadPeerIds);
    }
    let snap = msg.get_snapshot().get_metadata();
    if [
        msg.term,
        msg.log_term,
        msg.index,
        msg.commit,
        msg.reject_hint,
        msg.request_snapshot,
        snap.index,
        snap.term,
    ]
    .iter()
    .any(|v| *v >= ABSURD)
    {
        return Err(DropReason::Absurd);
    }
    if msg
        .entries
        .iter()
        .any(|e| e.index >= ABSURD || e.term >= ABSURD)
    {
        return Err(DropReason::Absurd);
    }
    if msg
        .entries
        .iter()
        .any(|e| e.data.len().saturating_add(e.context.len()) > MAX_ENTRY_BYTES)
    {
        return Err(DropReason::EntryTooLarge);
    }
    match msg.get_msg_type() {
        MsgAppend => {
            // Indexes below ABSURD, so `index + 1 + i` cannot overflow.
            let contiguous = msg
                .entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == msg.index + 1 + i as u64 && e.term <= msg.term);
            if !contiguous {
                return Err(DropReason::EntriesNotContiguous);
            }
        }
        MsgReadIndexResp if msg.entries.len() != 1 => return Err(DropReason::BadReadIndexResp),
        _ => {}
    }
    Ok(())
}

/// The checks against the local peer's log, right before `step`.
pub fn check_against(msg: &Message, local: LocalLog) -> Result<(), DropReason> {
    if msg.to != local.peer_id {
        return Err(DropReason::WrongPeer);
    }
    match msg.get_msg_type() {
        MessageType::MsgHeartbeat if msg.commit > local.last_index => {
            Err(DropReason::CommitPastLog)
        }
        MessageType::MsgAppendResponse if !msg.reject && msg.index > local.last_index => {
            Err(DropReason::IndexPastLog)
        }
        // A real leader holds our committed entries with their terms, and
        // terms never fall along a log: its term at any index at or past our
        // commit is at least the committed entry's.
        MessageType::MsgAppend
            if msg.index >= local.committed && msg.log_term < local.committed_term =>
        {
            Err(DropReason::LogTermBelowCommit)
        }
        // An append below our commit index is answered by raft-rs without
        // touching the log; above it, `check_shape` made the entries
        // contiguous, so none can conflict with a committed one.
        _ => Ok(()),
    }
}

/// Whether `r`'s range is well formed: empty end (+inf) or above the start.
pub fn range_ok(r: &Region) -> bool {
    r.end_key.is_empty() || r.start_key < r.end_key
}

/// The checks of a MsgSnapshot's descriptor (the region it installs, the file
/// it names) against the message and this store, before the file is
/// received and before raft-rs sees the message: the snapshot apply clears
/// and writes the descriptor's range, so a region of another id, without our
/// peer, or a conf state that disagrees with its members must never get
/// there. `max_bytes`: the store's snapshot size cap.
pub fn check_snapshot(
    msg: &Message,
    desc: &SnapshotDescriptor,
    region_id: u64,
    store_id: u64,
    max_bytes: u64,
) -> Result<(), DropReason> {
    let Some(r) = desc.region.as_ref() else {
        return Err(DropReason::BadSnapshot);
    };
    let meta = msg.get_snapshot().get_metadata();
    let cs = meta.get_conf_state();
    // Ids only: learner flags are raft's business (and a promotion
    // updates them separately).
    let mut members: Vec<u64> = r.peers.iter().map(|p| p.id).collect();
    let mut conf: Vec<u64> = cs
        .voters
        .iter()
        .chain(cs.learners.iter())
        .copied()
        .collect();
    members.sort_unstable();
    conf.sort_unstable();
    let ok = r.id == region_id
        && desc.index == meta.index
        && desc.term == meta.term
        && meta.index > 0
        && desc.size <= max_bytes
        && range_ok(r)
        && r.peers
            .iter()
            .any(|p| p.id == msg.to && p.store_id == store_id)
        && members == conf
        && cs.voters_outgoing.is_empty()
        && cs.learners_next.is_empty();
    if ok {
        Ok(())
    } else {
        Err(DropReason::BadSnapshot)
    }
}

#[cfg(test)]
mod tests {
    use raft::prelude::Entry;

    use super::*;

    fn msg(t: MessageType) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 2;
        m.to = 1;
        m.term = 5;
        m
    }

    const LOCAL: LocalLog = LocalLog {
        peer_id: 1,
        last_index: 10,
        committed: 8,
        committed_term: 4,
    };

    fn entry(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![0; len].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_heartbeat_committing_past_the_log_is_dropped() {
        let mut m = msg(MessageType::MsgHeartbeat);
        m.commit = 10;
        assert_eq!(check_shape(&m), Ok(()));
        assert_eq!(check_against(&m, LOCAL), Ok(()));
        m.commit = 11;
        assert_eq!(check_against(&m, LOCAL), Err(DropReason::CommitPastLog));
        m.commit = u64::MAX;
        assert_eq!(check_shape(&m), Err(DropReason::Absurd));
    }

    #[test]
    fn local_only_types_and_bad_ids_are_dropped() {
        for t in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgPropose,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
        ] {
            assert_eq!(
                check_shape(&msg(t)),
                Err(DropReason::LocalOnlyType),
                "{t:?}"
            );
        }
        let mut m = msg(MessageType::MsgRequestVote);
        m.from = 0;
        assert_eq!(check_shape(&m), Err(DropReason::BadPeerIds));
        m.from = 1;
        assert_eq!(check_shape(&m), Err(DropReason::BadPeerIds));
        let mut m = msg(MessageType::MsgRequestVote);
        m.to = 3;
        assert_eq!(check_against(&m, LOCAL), Err(DropReason::WrongPeer));
    }

    #[test]
    fn appends_must_number_their_entries_on_from_the_index() {
        let mut m = msg(MessageType::MsgAppend);
        m.index = 9;
        m.log_term = 5;
        m.entries = vec![entry(10, 5, 8), entry(11, 5, 8)].into();
        assert_eq!(check_shape(&m), Ok(()));
        // An entry claiming a committed index under a later message index.
        m.entries = vec![entry(10, 5, 8), entry(3, 5, 8)].into();
        assert_eq!(check_shape(&m), Err(DropReason::EntriesNotContiguous));
        m.entries = vec![entry(10, 6, 8)].into();
        assert_eq!(check_shape(&m), Err(DropReason::EntriesNotContiguous));
        assert_eq!(check_against(&m, LOCAL), Ok(()));
        m.log_term = 3;
        assert_eq!(
            check_against(&m, LOCAL),
            Err(DropReason::LogTermBelowCommit)
        );
        m.log_term = 5;
        m.entries = vec![entry(10, 5, MAX_ENTRY_BYTES + 1)].into();
        assert_eq!(check_shape(&m), Err(DropReason::EntryTooLarge));
        m.index = u64::MAX;
        m.entries = vec![entry(0, 5, 8)].into();
        assert_eq!(check_shape(&m), Err(DropReason::Absurd));
    }

    #[test]
    fn responses_and_read_index_answers_are_bounded() {
        let mut m = msg(MessageType::MsgAppendResponse);
        m.index = 11;
        assert_eq!(check_against(&m, LOCAL), Err(DropReason::IndexPastLog));
        m.reject = true;
        assert_eq!(check_against(&m, LOCAL), Ok(()));
        let m = msg(MessageType::MsgReadIndexResp);
        assert_eq!(check_shape(&m), Err(DropReason::BadReadIndexResp));
    }

    fn snapshot_msg(to: u64, index: u64, voters: &[u64], learners: &[u64]) -> Message {
        let mut m = msg(MessageType::MsgSnapshot);
        m.to = to;
        let meta = m.mut_snapshot().mut_metadata();
        meta.index = index;
        meta.term = 5;
        meta.mut_conf_state().voters = voters.to_vec();
        meta.mut_conf_state().learners = learners.to_vec();
        m
    }

    fn descriptor(region_id: u64, index: u64, peers: &[(u64, u64, bool)]) -> SnapshotDescriptor {
        use kura_proto::common::Peer;
        SnapshotDescriptor {
            region: Some(Region {
                id: region_id,
                start_key: b"a".to_vec().into(),
                end_key: b"m".to_vec().into(),
                peers: peers
                    .iter()
                    .map(|&(id, store_id, is_learner)| Peer {
                        id,
                        store_id,
                        is_learner,
                    })
                    .collect(),
                ..Default::default()
            }),
            index,
            term: 5,
            size: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_must_install_our_peer_of_this_region() {
        const MAX: u64 = 1 << 30;
        let m = snapshot_msg(3, 20, &[1, 2], &[3]);
        let d = descriptor(7, 20, &[(1, 11, false), (2, 12, false), (3, 13, true)]);
        assert_eq!(check_snapshot(&m, &d, 7, 13, MAX), Ok(()));
        let bad = |d: &SnapshotDescriptor, m: &Message, store: u64| {
            check_snapshot(m, d, 7, store, MAX) == Err(DropReason::BadSnapshot)
        };
        // Another region, another store, another index, no region at all.
        assert!(bad(&descriptor(8, 20, &[(3, 13, true)]), &m, 13));
        assert!(bad(&d, &m, 12));
        assert!(bad(
            &descriptor(7, 21, &[(1, 11, false), (2, 12, false), (3, 13, true)]),
            &m,
            13
        ));
        assert!(bad(&SnapshotDescriptor::default(), &m, 13));
        // Members that disagree with the conf state raft-rs will install.
        assert!(bad(
            &descriptor(7, 20, &[(1, 11, false), (3, 13, true)]),
            &m,
            13
        ));
        // An absurd claimed size, an inverted range.
        let mut big = d.clone();
        big.size = MAX + 1;
        assert!(bad(&big, &m, 13));
        let mut inverted = d.clone();
        inverted.region.as_mut().unwrap().end_key = b"A".to_vec().into();
        assert!(bad(&inverted, &m, 13));
        let mut open = d.clone();
        open.region.as_mut().unwrap().end_key = Default::default();
        assert_eq!(check_snapshot(&m, &open, 7, 13, MAX), Ok(()));
    }
}
