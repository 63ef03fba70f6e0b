//! Persisted formats of a peer's local state and of the snapshot payload.
//!
//! Stored with `keys::encode_value` (format byte + prost), under the keys of
//! `keys::local`. Messages are declared here rather than in a `.proto` because
//! they never cross the wire except [`SnapshotDescriptor`], which travels
//! opaquely inside `eraftpb::Snapshot.data`. Add fields; never renumber.

use bytes::Bytes;
use kura_proto::common::Region;

/// Who this store is: the id PD gave it (0 until then) and the identity made
/// with its data dir, which proves the id to PD (docs/decisions/0024). A
/// record from before identities has no uuid; one is made at the next start.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreIdent {
    #[prost(uint64, tag = "1")]
    pub store_id: u64,
    /// 32 lower-case hex digits.
    #[prost(string, tag = "2")]
    pub uuid: String,
}

/// Region metadata as this peer knows it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegionLocalState {
    #[prost(message, optional, tag = "1")]
    pub region: Option<Region>,
    #[prost(uint64, tag = "2")]
    pub peer_id: u64,
    /// Set from a PrepareMerge's apply until the region is merged away (or
    /// the merge is rolled back): the region refuses every request meanwhile.
    #[prost(message, optional, tag = "3")]
    pub merge_state: Option<MergeState>,
}

/// A source region frozen for a merge.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeState {
    /// The region that will absorb this one (as of the PrepareMerge).
    #[prost(message, optional, tag = "1")]
    pub target: Option<Region>,
    /// Log index of the PrepareMerge entry: once applied, the data is final.
    #[prost(uint64, tag = "2")]
    pub prepare_index: u64,
}

/// Raft's durable state: `hard_state` and `conf_state` are rust-protobuf encodings
/// of `eraftpb::HardState` / `eraftpb::ConfState`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftLocalState {
    #[prost(bytes = "bytes", tag = "1")]
    pub hard_state: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub conf_state: Bytes,
    #[prost(uint64, tag = "3")]
    pub last_index: u64,
    #[prost(uint64, tag = "4")]
    pub last_term: u64,
}

/// Written atomically with every applied batch, so data and applied index never diverge.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyState {
    #[prost(uint64, tag = "1")]
    pub applied_index: u64,
    /// Entries up to and including this index are deleted from the log.
    #[prost(uint64, tag = "2")]
    pub truncated_index: u64,
    #[prost(uint64, tag = "3")]
    pub truncated_term: u64,
}

/// The payload of a raft snapshot (`eraftpb::Snapshot.data`): not the data,
/// which stays in a file of the snapshot directory (`snap::file`), but what
/// names and checks that file (decision 0018).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotDescriptor {
    /// The region as of the snapshot's index.
    #[prost(message, optional, tag = "1")]
    pub region: Option<Region>,
    /// Bytes of the file.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// CRC32C of the whole file.
    #[prost(uint32, tag = "3")]
    pub crc32c: u32,
    /// Pairs in the file (every CF).
    #[prost(uint64, tag = "4")]
    pub keys: u64,
    /// Raft index and term of the snapshot (also in the raft metadata; here
    /// so the file name can be derived from the descriptor alone).
    #[prost(uint64, tag = "5")]
    pub index: u64,
    #[prost(uint64, tag = "6")]
    pub term: u64,
}

/// A snapshot whose raft state is persisted but whose data is still being
/// written by the apply worker: redone from the received file after a crash.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotApplyState {
    #[prost(message, optional, tag = "1")]
    pub descriptor: Option<SnapshotDescriptor>,
    /// The range this peer held before the snapshot (cleared too); unset
    /// for a peer that had no data yet.
    #[prost(message, optional, tag = "2")]
    pub old_region: Option<Region>,
}
