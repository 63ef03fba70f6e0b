//! Persisted formats of a peer's local state and of the snapshot payload.
//!
//! Stored with `keys::encode_value` (format byte + prost), under the keys of
//! `keys::local`. Messages are declared here rather than in a `.proto` because
//! they never cross the wire except [`SnapshotData`], which travels opaquely
//! inside `eraftpb::Snapshot.data`. Add fields; never renumber.

use bytes::Bytes;
use kura_proto::common::Region;
use kura_proto::metashard::Cf;

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreIdent {
    #[prost(uint64, tag = "1")]
    pub store_id: u64,
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

/// The payload of a raft snapshot: the region and all its data, every CF.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotData {
    #[prost(message, optional, tag = "1")]
    pub region: Option<Region>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<SnapshotKv>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotKv {
    #[prost(enumeration = "Cf", tag = "1")]
    pub cf: i32,
    #[prost(bytes = "bytes", tag = "2")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub value: Bytes,
}
