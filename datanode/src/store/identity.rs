//! The identity file that proves a data directory belongs to this data node.
//!
//! Written at first start (format version, random uuid) and rewritten when PD assigns the
//! node id. A directory holding segments but no identity file is refused: an unmounted or
//! swapped disk must never look like an empty one (that would set off mass healing and GC).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

pub const IDENTITY_FILE: &str = "kura-datanode-identity.json";
/// Version of the identity file and of the directory layout around it.
pub const IDENTITY_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format_version: u32,
    /// 32 hex digits; also written into every segment header.
    pub uuid: String,
    /// Assigned by PD at first registration; 0 until then.
    pub node_id: u64,
    pub created_unix_ms: i64,
}

impl Identity {
    fn fresh() -> Self {
        let bytes: [u8; 16] = rand::random();
        Identity {
            format_version: IDENTITY_FORMAT_VERSION,
            uuid: to_hex(&bytes),
            node_id: 0,
            created_unix_ms: crate::now_unix_ms(),
        }
    }

    pub fn uuid_bytes(&self) -> Result<[u8; 16], StoreError> {
        from_hex(&self.uuid)
            .ok_or_else(|| StoreError::Identity(format!("bad uuid {:?}", self.uuid)))
    }
}

pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join(IDENTITY_FILE)
}

/// Loads the identity of `dir`, creating it if the directory holds no segments yet.
pub fn load_or_create(dir: &Path, has_segments: bool) -> Result<Identity, StoreError> {
    let path = identity_path(dir);
    match fs::read(&path) {
        Ok(bytes) => {
            let id: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Identity(format!("{}: {e}", path.display())))?;
            if id.format_version != IDENTITY_FORMAT_VERSION {
                return Err(StoreError::Identity(format!(
                    "{}: format version {} (this binary knows {IDENTITY_FORMAT_VERSION})",
                    path.display(),
                    id.format_version
                )));
            }
            id.uuid_bytes()?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if has_segments {
                return Err(StoreError::Identity(format!(
                    "{} holds segments but no {IDENTITY_FILE}; is the right disk mounted?",
                    dir.display()
                )));
            }
            let id = Identity::fresh();
            save(dir, &id)?;
            Ok(id)
        }
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

/// Atomically replaces the identity file (write temp, fsync, rename, fsync dir).
pub fn save(dir: &Path, id: &Identity) -> Result<(), StoreError> {
    let path = identity_path(dir);
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(id).map_err(|e| StoreError::Identity(e.to_string()))?;
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = File::create(&tmp).map_err(|e| StoreError::io(ctx("creating"), e))?;
    f.write_all(&json)
        .map_err(|e| StoreError::io(ctx("writing"), e))?;
    f.sync_all()
        .map_err(|e| StoreError::io(ctx("syncing"), e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(ctx("renaming"), e))?;
    sync_dir(dir)
}

/// Makes a directory's entries (new or renamed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), false).unwrap();
        assert_eq!(a.node_id, 0);
        let mut b = load_or_create(dir.path(), true).unwrap();
        assert_eq!(a, b);
        b.node_id = 17;
        save(dir.path(), &b).unwrap();
        assert_eq!(load_or_create(dir.path(), true).unwrap().node_id, 17);
    }

    #[test]
    fn segments_without_identity_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_or_create(dir.path(), true),
            Err(StoreError::Identity(_))
        ));
    }

    #[test]
    fn hex_roundtrip() {
        let b = [0xab; 16];
        assert_eq!(from_hex(&to_hex(&b)), Some(b));
        assert_eq!(from_hex("zz"), None);
    }
}
