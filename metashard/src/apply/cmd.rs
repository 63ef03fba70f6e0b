//! The format of a normal raft entry's data (decision 0011).
//!
//! - empty: a new leader's no-op entry;
//! - `ADMIN_ENTRY_PREFIX ++ AdminRequest` (prost): an admin command (split);
//! - anything else: a plain prost `BatchRequest`, the format every entry had
//!   before admin commands existed, so old logs decode unchanged.
//!
//! The prefix byte 0x07 is a protobuf key with field number 0 and wire type 7,
//! both invalid, so no prost message (and no `BatchRequest`) starts with it:
//! the two formats can never be confused.

use kura_proto::metashard::{AdminRequest, BatchRequest};
use prost::Message as _;

/// First byte of an admin entry.
pub const ADMIN_ENTRY_PREFIX: u8 = 0x07;

/// A decoded entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The leader's empty entry after an election.
    Noop,
    Batch(BatchRequest),
    Admin(Box<AdminRequest>),
}

/// Entry data of a conditional batch (unchanged plain encoding).
pub fn encode_batch(req: &BatchRequest) -> Vec<u8> {
    req.encode_to_vec()
}

/// Entry data of an admin command.
pub fn encode_admin(req: &AdminRequest) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + req.encoded_len());
    v.push(ADMIN_ENTRY_PREFIX);
    req.encode(&mut v).expect("encoding into a Vec cannot fail");
    v
}

/// Whether a normal entry's data is an admin command (without decoding it).
pub fn is_admin(data: &[u8]) -> bool {
    data.first() == Some(&ADMIN_ENTRY_PREFIX)
}

/// Decodes a normal entry's data.
pub fn decode(data: &[u8]) -> Result<Command, prost::DecodeError> {
    match data.first() {
        None => Ok(Command::Noop),
        Some(&ADMIN_ENTRY_PREFIX) => {
            Ok(Command::Admin(Box::new(AdminRequest::decode(&data[1..])?)))
        }
        Some(_) => Ok(Command::Batch(BatchRequest::decode(data)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::common::RegionEpoch;
    use kura_proto::metashard::{mutation, Cf, Mutation, RequestHeader, SplitRequest};

    fn batch() -> BatchRequest {
        BatchRequest {
            header: Some(RequestHeader {
                region_id: 1,
                epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
            }),
            conditions: vec![],
            mutations: vec![Mutation {
                op: mutation::Op::Put as i32,
                cf: Cf::Meta as i32,
                key: b"k".to_vec().into(),
                value: b"v".to_vec().into(),
            }],
        }
    }

    #[test]
    fn old_plain_batch_entries_still_decode() {
        // Exactly what every entry held before admin commands existed.
        let legacy = prost::Message::encode_to_vec(&batch());
        assert_eq!(decode(&legacy).unwrap(), Command::Batch(batch()));
        assert_eq!(encode_batch(&batch()), legacy, "batches stay plain");
        assert_eq!(decode(&[]).unwrap(), Command::Noop);
    }

    #[test]
    fn admin_entries_round_trip_and_never_parse_as_batches() {
        let admin = AdminRequest {
            header: batch().header,
            split: Some(SplitRequest {
                split_key: b"m".to_vec().into(),
                new_region_id: 9,
                new_peer_ids: vec![10, 11, 12],
            }),
            ..Default::default()
        };
        let data = encode_admin(&admin);
        assert_eq!(decode(&data).unwrap(), Command::Admin(Box::new(admin)));
        assert!(
            BatchRequest::decode(data.as_slice()).is_err(),
            "an old binary rejects an admin entry instead of misreading it"
        );
    }
}
