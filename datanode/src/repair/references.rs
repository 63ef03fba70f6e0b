//! Is a body still referenced by metadata? Answered from the owner recorded in
//! its fragment header with linearizable reads (ReadIndex on the region
//! leader), so a body is called unreferenced only when no acknowledged write
//! references it.
//!
//! Order matters: CompleteMultipartUpload moves a part's reference from its
//! part record into the object record in one atomic batch. Reading the part
//! record first and the object second sees the reference in at least one of
//! them whichever side of that batch the reads fall on.

use kura_metashard::client::{Cf, ClientError, MetaClient};
use kura_metashard::keys;
use kura_proto::datanode::FragmentHeader;
use kura_proto::meta::{ObjectRecord, PartRecord};

/// Whether the part record or the object named in `header` references `data_id`.
pub async fn is_referenced(
    meta: &MetaClient,
    header: &FragmentHeader,
    data_id: &[u8],
) -> Result<bool, ClientError> {
    let key = header.object_key.as_bytes();
    if !header.upload_id.is_empty() {
        let pkey = keys::part_key(header.bucket_id, key, &header.upload_id, header.part_number);
        if let Some(raw) = meta.get(Cf::Mpu, &pkey).await? {
            let part: PartRecord = decode(&raw)?;
            if part
                .location
                .as_ref()
                .is_some_and(|l| l.data_id.as_ref() == data_id)
            {
                return Ok(true);
            }
        }
    }
    let okey = keys::object_version_key(header.bucket_id, key, header.version);
    if let Some(raw) = meta.get(Cf::Meta, &okey).await? {
        if references(&decode(&raw)?, data_id) {
            return Ok(true);
        }
    }
    // A versioned bucket commits the body under a version chosen at commit
    // time (docs/decisions/0027), which the fragment header cannot name:
    // look through every version of the key. Version records never move,
    // so a committed reference is seen on whichever page it sits.
    let (mut start, end) = keys::object_versions_range(header.bucket_id, key);
    loop {
        let page = meta
            .scan(Cf::Meta, &start, &end, VERSION_PAGE, false)
            .await?;
        for kv in &page {
            if references(&decode(&kv.value)?, data_id) {
                return Ok(true);
            }
        }
        match page.last() {
            Some(last) if page.len() == VERSION_PAGE => {
                start = last.key.to_vec();
                start.push(0);
            }
            _ => return Ok(false),
        }
    }
}

/// Versions read per scan while looking for a reference.
const VERSION_PAGE: usize = 256;

fn references(obj: &ObjectRecord, data_id: &[u8]) -> bool {
    obj.parts
        .iter()
        .filter_map(|p| p.location.as_ref())
        .any(|l| l.data_id.as_ref() == data_id)
}

fn decode<M: prost::Message + Default>(raw: &[u8]) -> Result<M, ClientError> {
    // A record we cannot decode must not make its bodies look unreferenced.
    keys::decode_value(raw).map_err(|e| ClientError::Internal(format!("undecodable record: {e}")))
}
