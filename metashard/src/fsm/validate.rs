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

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

use crate::metrics;

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
}
