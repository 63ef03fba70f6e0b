//! Root credentials of a dev cluster: from `KURA_ROOT_ACCESS_KEY` /
//! `KURA_ROOT_SECRET_KEY` when set, else generated once and kept in
//! `DIR/credentials.json` (mode 0600) so a restart keeps them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

fn generate() -> Credentials {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    Credentials {
        access_key: format!("KURA{}", random_string(16, UPPER)),
        secret_key: random_string(40, MIXED),
    }
}

/// Reads `path` if it holds credentials.
pub fn load(path: &Path) -> std::io::Result<Option<Credentials>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The credentials to use: environment first, then the saved file, else new ones.
/// Whatever is chosen is saved to `path`, so the gateway and later runs see it.
pub fn resolve(path: &Path) -> std::io::Result<(Credentials, &'static str)> {
    let env = (
        std::env::var("KURA_ROOT_ACCESS_KEY"),
        std::env::var("KURA_ROOT_SECRET_KEY"),
    );
    let (creds, source) = match env {
        (Ok(a), Ok(s)) if !a.is_empty() && !s.is_empty() => (
            Credentials {
                access_key: a,
                secret_key: s,
            },
            "environment",
        ),
        _ => match load(path)? {
            Some(c) => (c, "saved"),
            None => (generate(), "generated"),
        },
    };
    if load(path)?.as_ref() != Some(&creds) {
        save(path, &creds)?;
    }
    Ok((creds, source))
}

/// The cluster key sealing access-key secrets (`DIR/cluster.key`, 64 hex
/// characters, mode 0600): made once, kept across restarts.
pub fn resolve_cluster_key(path: &Path) -> std::io::Result<()> {
    resolve_secret(path, || {
        let key: [u8; 32] = rand::thread_rng().gen();
        hex::encode(key)
    })
}

/// The SSE-S3 master key (`DIR/master.key`, 32 random bytes in base64,
/// mode 0600): made once, kept across restarts — a new one would make every
/// SSE-S3 object written before unreadable.
pub fn resolve_master_key(path: &Path) -> std::io::Result<()> {
    resolve_secret(path, kura_gateway::data::crypto::MasterKey::new_key_file)
}

/// A file holding a secret (`DIR/pd-admin.token`): made once with `make`,
/// kept across restarts.
pub fn resolve_secret(path: &Path, make: impl FnOnce() -> String) -> std::io::Result<()> {
    match std::fs::read_to_string(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_secret_file(path, &make()),
        Err(e) => Err(e),
    }
}

/// A random bearer token: 40 letters and digits (238 bits).
pub fn random_token() -> String {
    random_string(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    )
}

/// Writes `contents` to `path` readable by the owner only, atomically (a
/// crash leaves the old file or the new one) and durably.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn save(path: &Path, creds: &Credentials) -> std::io::Result<()> {
    write_secret_file(
        path,
        &serde_json::to_string_pretty(creds).map_err(std::io::Error::other)?,
    )
}
