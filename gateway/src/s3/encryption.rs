//! Server-side encryption on the S3 surface (docs/decisions/0029): the SSE
//! request headers of writes and reads, the keys of each object, the
//! headers echoed back, and Get/Put/DeleteBucketEncryption.
//!
//! - SSE-C (`x-amz-server-side-encryption-customer-*`): the client sends its
//!   AES256 key with every request. The key is never stored; the object
//!   keeps a random salt and HMAC-SHA256(key, label || salt), enough to tell
//!   a wrong key (403) from the right one. Each body's data key is derived
//!   from the customer key and that body's own random salt.
//! - SSE-S3 (`x-amz-server-side-encryption: AES256`, or the bucket's default
//!   encryption): each body gets a random data key, stored wrapped by the
//!   cluster master key (`kura gateway --master-key-file`) under its id.
//! - SSE-KMS (`aws:kms`, `aws:kms:dsse`): refused with 501 NotImplemented,
//!   what MinIO answers when no KMS is configured — there is none here, and
//!   accepting the header without honouring it would be silently wrong.
//!
//! The data path seals and opens the bodies (`data::crypto`); handlers call
//! `for_write` / `for_part` / `read_keys` and echo what they return.

use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use kura_proto::meta::{
    BucketEncryption, BucketRecord, MultipartUploadRecord, ObjectRecord, ObjectSse, PartRecord,
    SseAlgorithm, SseBody,
};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::data::crypto::{
    customer_body_key, customer_key_check, customer_key_matches, random_bytes, BodyCipher, NewBody,
    CHUNK_SIZE, KEY_LEN,
};
use crate::error::{GwError, GwResult};
use crate::s3::common::update_bucket;

const AES256: &str = "AES256";

/// The SSE headers of a request, as sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct SseHeaders<'a> {
    /// `x-amz-server-side-encryption`
    pub sse: Option<&'a str>,
    /// `x-amz-server-side-encryption-aws-kms-key-id`
    pub kms_key_id: Option<&'a str>,
    /// `x-amz-server-side-encryption-customer-algorithm` / `-key` / `-key-MD5`
    /// (or their `x-amz-copy-source-` forms).
    pub customer_algorithm: Option<&'a str>,
    pub customer_key: Option<&'a str>,
    pub customer_key_md5: Option<&'a str>,
}

/// The SSE headers of a write input (PutObject, CopyObject, CreateMultipartUpload).
#[macro_export]
macro_rules! sse_write_headers {
    ($input:expr) => {
        $crate::s3::encryption::SseHeaders {
            sse: $input.server_side_encryption.as_ref().map(|s| s.as_str()),
            kms_key_id: $input.ssekms_key_id.as_deref(),
            customer_algorithm: $input.sse_customer_algorithm.as_deref(),
            customer_key: $input.sse_customer_key.as_deref(),
            customer_key_md5: $input.sse_customer_key_md5.as_deref(),
        }
    };
}

/// The SSE-C headers of a request that names an existing object
/// (GetObject, HeadObject, UploadPart, UploadPartCopy's destination).
#[macro_export]
macro_rules! sse_customer_headers {
    ($input:expr) => {
        $crate::s3::encryption::SseHeaders {
            customer_algorithm: $input.sse_customer_algorithm.as_deref(),
            customer_key: $input.sse_customer_key.as_deref(),
            customer_key_md5: $input.sse_customer_key_md5.as_deref(),
            ..Default::default()
        }
    };
}

/// The `x-amz-copy-source-server-side-encryption-customer-*` headers.
#[macro_export]
macro_rules! sse_copy_source_headers {
    ($input:expr) => {
        $crate::s3::encryption::SseHeaders {
            customer_algorithm: $input.copy_source_sse_customer_algorithm.as_deref(),
            customer_key: $input.copy_source_sse_customer_key.as_deref(),
            customer_key_md5: $input.copy_source_sse_customer_key_md5.as_deref(),
            ..Default::default()
        }
    };
}

pub use crate::{sse_copy_source_headers, sse_customer_headers, sse_write_headers};

/// A customer key from SSE-C headers, checked against its MD5.
#[derive(Clone)]
pub struct CustomerKey {
    key: [u8; KEY_LEN],
    /// Base64 MD5 of the key, echoed in responses.
    md5: String,
}

fn invalid(msg: &str) -> GwError {
    GwError::InvalidArgument(msg.to_string())
}

/// Parses the SSE-C headers: none → None; some but not all, a wrong
/// algorithm, a key that is not 32 bytes of base64, or an MD5 that does
/// not match → 400, with AWS's messages.
pub fn customer_key(h: &SseHeaders<'_>) -> GwResult<Option<CustomerKey>> {
    let (alg, key, md5) = (h.customer_algorithm, h.customer_key, h.customer_key_md5);
    if alg.is_none() && key.is_none() && md5.is_none() {
        return Ok(None);
    }
    let Some(alg) = alg else {
        return Err(invalid("Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm."));
    };
    if alg != AES256 {
        return Err(GwError::InvalidEncryptionAlgorithm(
            "The encryption request you specified is not valid. The valid value is AES256.".into(),
        ));
    }
    let Some(key) = key else {
        return Err(invalid("Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key."));
    };
    let Some(md5) = md5 else {
        return Err(invalid("Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key."));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64
        .decode(key.trim())
        .ok()
        .and_then(|k| <[u8; KEY_LEN]>::try_from(k.as_slice()).ok())
        .ok_or_else(|| invalid("The secret key was invalid for the specified algorithm."))?;
    let sent_md5 = b64.decode(md5.trim()).map_err(|_| {
        invalid("The calculated MD5 hash of the key did not match the hash that was provided.")
    })?;
    let actual: [u8; 16] = Md5::digest(raw).into();
    if sent_md5 != actual {
        return Err(invalid(
            "The calculated MD5 hash of the key did not match the hash that was provided.",
        ));
    }
    Ok(Some(CustomerKey {
        key: raw,
        md5: b64.encode(actual),
    }))
}

/// The request headers that carry an SSE-C key: the object's own, and a
/// copy source's.
const CUSTOMER_KEY_HEADERS: [&str; 6] = [
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
];

/// Whether `headers` carry any SSE-C header (of the object or a copy source).
pub fn carries_customer_key(headers: &HeaderMap) -> bool {
    CUSTOMER_KEY_HEADERS
        .iter()
        .any(|h| headers.contains_key(*h))
}

/// Whether a connection may carry an SSE-C key: over TLS, or plain HTTP
/// from a loopback peer. AWS refuses SSE-C over plain HTTP (the key would
/// cross the network in the clear); on loopback the key never leaves the
/// host, as browsers treat localhost as a secure context, so `kura dev`
/// without `--tls` stays usable. An unknown peer is not loopback.
pub fn customer_key_transport_ok(secure: bool, peer: Option<std::net::SocketAddr>) -> bool {
    secure
        || peer.is_some_and(|p| match p.ip() {
            std::net::IpAddr::V4(ip) => ip.is_loopback(),
            std::net::IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        })
}

/// AWS's refusal of SSE-C over an insecure connection.
pub fn insecure_customer_key() -> GwError {
    GwError::InvalidRequest(
        "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.".into(),
    )
}

/// Refuses a request carrying SSE-C headers over an insecure connection
/// (see [`customer_key_transport_ok`]). Called once for every request s3s
/// serves (the access hook), so no operation can forget it; PostObject
/// checks its form fields itself.
pub fn check_customer_key_transport(
    headers: &HeaderMap,
    secure: bool,
    peer: Option<std::net::SocketAddr>,
) -> GwResult<()> {
    if carries_customer_key(headers) && !customer_key_transport_ok(secure, peer) {
        return Err(insecure_customer_key());
    }
    Ok(())
}

/// The error for SSE-KMS: there is no KMS (see the module docs).
fn kms_refused() -> GwError {
    GwError::NotImplemented(
        "Server side encryption with AWS KMS (aws:kms, aws:kms:dsse) is not supported: this cluster has no KMS. Use AES256 (SSE-S3) or SSE-C.",
    )
}

fn no_master_key() -> GwError {
    GwError::NotImplemented(
        "Server side encryption with AES256 (SSE-S3) needs a cluster master key: start the gateways with --master-key-file.",
    )
}

/// What the response says about an object's encryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Echo {
    S3,
    /// SSE-C with the key's base64 MD5.
    Customer(String),
}

impl Echo {
    /// Adds the response headers AWS sends for this encryption.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            Echo::S3 => {
                headers.insert(
                    "x-amz-server-side-encryption",
                    HeaderValue::from_static(AES256),
                );
            }
            Echo::Customer(md5) => {
                headers.insert(
                    "x-amz-server-side-encryption-customer-algorithm",
                    HeaderValue::from_static(AES256),
                );
                if let Ok(v) = HeaderValue::from_str(md5) {
                    headers.insert("x-amz-server-side-encryption-customer-key-MD5", v);
                }
            }
        }
    }
}

/// `x-amz-server-side-encryption` of an output struct.
pub fn sse_field(w: Option<&WriteSse>) -> Option<ServerSideEncryption> {
    match w.map(|w| w.echo()) {
        Some(Echo::S3) => Some(ServerSideEncryption::from_static(
            ServerSideEncryption::AES256,
        )),
        _ => None,
    }
}

/// `x-amz-server-side-encryption-customer-algorithm` of an output struct.
pub fn customer_algorithm_field(w: Option<&WriteSse>) -> Option<String> {
    match w.map(|w| w.echo()) {
        Some(Echo::Customer(_)) => Some(AES256.to_string()),
        _ => None,
    }
}

/// `x-amz-server-side-encryption-customer-key-MD5` of an output struct.
pub fn customer_key_md5_field(w: Option<&WriteSse>) -> Option<String> {
    match w.map(|w| w.echo()) {
        Some(Echo::Customer(md5)) => Some(md5),
        _ => None,
    }
}

/// `resp` with the encryption headers of `echo`, if any.
pub fn with_echo<T>(mut resp: S3Response<T>, e: Option<Echo>) -> S3Response<T> {
    echo(&mut resp.headers, e.as_ref());
    resp
}

/// Adds the encryption headers of `echo`, if any.
pub fn echo(headers: &mut HeaderMap, echo: Option<&Echo>) {
    if let Some(e) = echo {
        e.apply(headers);
    }
}

/// How a new object (or upload, or part) is encrypted.
pub struct WriteSse {
    mode: Mode,
    /// SSE-C: the object's key salt and check (new for an object, the
    /// upload's for a part).
    key_salt: Vec<u8>,
    key_check: Vec<u8>,
    /// The request asked for encryption itself (not the bucket default).
    pub explicit: bool,
}

enum Mode {
    Customer(CustomerKey),
    S3(Arc<crate::data::crypto::MasterKey>),
}

impl WriteSse {
    fn customer(key: CustomerKey) -> GwResult<WriteSse> {
        let salt: [u8; 32] = random_bytes()?;
        Ok(WriteSse {
            key_check: customer_key_check(&key.key, &salt),
            key_salt: salt.to_vec(),
            mode: Mode::Customer(key),
            explicit: true,
        })
    }

    fn s3(ctx: &Ctx, explicit: bool) -> GwResult<WriteSse> {
        let master = ctx.master_key.clone().ok_or_else(no_master_key)?;
        Ok(WriteSse {
            mode: Mode::S3(master),
            key_salt: Vec::new(),
            key_check: Vec::new(),
            explicit,
        })
    }

    /// A fresh key for one body (a PUT's, a part's, a copy's).
    pub fn new_body(&self) -> GwResult<NewBody> {
        match &self.mode {
            Mode::Customer(k) => {
                let salt: [u8; 32] = random_bytes()?;
                let key = customer_body_key(&k.key, &salt);
                Ok(NewBody {
                    cipher: Arc::new(BodyCipher::new(&key, CHUNK_SIZE)?),
                    record: SseBody {
                        chunk_size: CHUNK_SIZE,
                        salt: salt.to_vec().into(),
                        ..Default::default()
                    },
                    opaque_etag: true,
                })
            }
            Mode::S3(master) => {
                let key: [u8; KEY_LEN] = random_bytes()?;
                Ok(NewBody {
                    cipher: Arc::new(BodyCipher::new(&key, CHUNK_SIZE)?),
                    record: SseBody {
                        chunk_size: CHUNK_SIZE,
                        wrapped_key: master.wrap(&key)?.into(),
                        master_key_id: master.id().to_string(),
                        ..Default::default()
                    },
                    opaque_etag: false,
                })
            }
        }
    }

    fn algorithm(&self) -> SseAlgorithm {
        match self.mode {
            Mode::Customer(_) => SseAlgorithm::Customer,
            Mode::S3(_) => SseAlgorithm::S3,
        }
    }

    /// The record of an object (or, with no bodies, an upload).
    pub fn record(&self, bodies: Vec<SseBody>) -> ObjectSse {
        ObjectSse {
            algorithm: self.algorithm() as i32,
            key_salt: self.key_salt.clone().into(),
            key_check: self.key_check.clone().into(),
            bodies,
        }
    }

    /// The record of an object whose single body is described by `body`.
    pub fn object(&self, body: Option<&SseBody>) -> Option<ObjectSse> {
        Some(self.record(body.cloned().into_iter().collect()))
    }

    pub fn echo(&self) -> Echo {
        match &self.mode {
            Mode::Customer(k) => Echo::Customer(k.md5.clone()),
            Mode::S3(_) => Echo::S3,
        }
    }
}

/// The encryption of a new object in `bucket`: SSE-C, SSE-S3 asked for, or
/// the bucket's default; `None` stores it in the clear.
pub fn for_write(
    ctx: &Ctx,
    bucket: &BucketRecord,
    h: &SseHeaders<'_>,
) -> GwResult<Option<WriteSse>> {
    let customer = customer_key(h)?;
    match h.sse {
        Some(AES256) if customer.is_some() => {
            return Err(invalid(
                "Server Side Encryption with Customer provided key is incompatible with the encryption method specified",
            ))
        }
        Some(AES256) => {
            if h.kms_key_id.is_some() {
                return Err(invalid("Specifying an AWS KMS key id is only valid with aws:kms encryption."));
            }
            return WriteSse::s3(ctx, true).map(Some);
        }
        Some(ServerSideEncryption::AWS_KMS) | Some(ServerSideEncryption::AWS_KMS_DSSE) => {
            return Err(kms_refused())
        }
        Some(_) => {
            return Err(GwError::InvalidEncryptionAlgorithm(
                "The encryption request you specified is not valid. The valid value is AES256."
                    .into(),
            ))
        }
        None if h.kms_key_id.is_some() => return Err(kms_refused()),
        None => {}
    }
    if let Some(k) = customer {
        return WriteSse::customer(k).map(Some);
    }
    match bucket.encryption.as_ref().map(|e| e.algorithm()) {
        Some(SseAlgorithm::S3) => WriteSse::s3(ctx, false).map(Some),
        _ => Ok(None),
    }
}

/// The encryption of a part of `upload`: the upload's, with the SSE-C key
/// that must come with every part (400 without it, 403 if another key).
pub fn for_part(
    ctx: &Ctx,
    upload: &MultipartUploadRecord,
    h: &SseHeaders<'_>,
) -> GwResult<Option<WriteSse>> {
    let customer = customer_key(h)?;
    let Some(sse) = upload.sse.as_ref() else {
        return match customer {
            Some(_) => Err(GwError::InvalidRequest(
                "The encryption parameters are not applicable to this object.".into(),
            )),
            None => Ok(None),
        };
    };
    match (sse.algorithm(), customer) {
        (SseAlgorithm::Customer, None) => Err(GwError::InvalidRequest(
            "The multipart upload initiate requested encryption. Subsequent part requests must include the appropriate encryption parameters.".into(),
        )),
        (SseAlgorithm::Customer, Some(k)) => {
            if !customer_key_matches(&k.key, &sse.key_salt, &sse.key_check) {
                return Err(GwError::AccessDenied);
            }
            Ok(Some(WriteSse {
                mode: Mode::Customer(k),
                key_salt: sse.key_salt.to_vec(),
                key_check: sse.key_check.to_vec(),
                explicit: true,
            }))
        }
        (SseAlgorithm::S3, None) => WriteSse::s3(ctx, true).map(Some),
        (SseAlgorithm::S3, Some(_)) => Err(GwError::InvalidRequest(
            "The encryption parameters are not applicable to this object.".into(),
        )),
        (SseAlgorithm::None, _) => Err(GwError::Internal(
            "upload record has an encryption without an algorithm".into(),
        )),
    }
}

/// The encryption of a completed multipart object: the upload's, with each
/// chosen part's body key in order.
pub fn completed<'a>(
    upload: &MultipartUploadRecord,
    parts: impl Iterator<Item = &'a PartRecord>,
) -> Option<ObjectSse> {
    let sse = upload.sse.as_ref()?;
    Some(ObjectSse {
        bodies: parts.map(|p| p.sse.clone().unwrap_or_default()).collect(),
        ..sse.clone()
    })
}

/// `x-amz-server-side-encryption` of CompleteMultipartUpload (SSE-S3
/// only: AWS echoes nothing there for SSE-C).
pub fn upload_echo(upload: &MultipartUploadRecord) -> Option<ServerSideEncryption> {
    upload
        .sse
        .as_ref()
        .filter(|s| s.algorithm() == SseAlgorithm::S3)
        .map(|_| ServerSideEncryption::from_static(ServerSideEncryption::AES256))
}

/// What reading an encrypted object needs: one cipher per body.
pub struct ReadKeys {
    ciphers: Vec<Arc<BodyCipher>>,
    pub echo: Echo,
}

/// The body ciphers of `keys`, for `reader::bodies`.
pub fn ciphers(keys: &Option<ReadKeys>) -> Option<&[Arc<BodyCipher>]> {
    keys.as_ref().map(|k| k.ciphers.as_slice())
}

/// The echo of `keys`, if the object is encrypted.
pub fn echo_of(keys: &Option<ReadKeys>) -> Option<&Echo> {
    keys.as_ref().map(|k| &k.echo)
}

/// Checks the SSE-C headers of a read (GET, HEAD, a copy's source) against
/// the object and returns its keys: an SSE-C object needs its key (400
/// without, 403 with another one); SSE-C headers for an object that is not
/// SSE-C are a 400, as AWS.
pub fn read_keys(ctx: &Ctx, rec: &ObjectRecord, h: &SseHeaders<'_>) -> GwResult<Option<ReadKeys>> {
    let customer = customer_key(h)?;
    let not_applicable = || {
        GwError::InvalidRequest(
            "The encryption parameters are not applicable to this object.".into(),
        )
    };
    let Some(sse) = rec.sse.as_ref() else {
        return match customer {
            Some(_) => Err(not_applicable()),
            None => Ok(None),
        };
    };
    match sse.algorithm() {
        SseAlgorithm::Customer => {
            let Some(k) = customer else {
                return Err(GwError::InvalidRequest(
                    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.".into(),
                ));
            };
            if !customer_key_matches(&k.key, &sse.key_salt, &sse.key_check) {
                return Err(GwError::AccessDenied);
            }
            let ciphers = sse
                .bodies
                .iter()
                .map(|b| {
                    BodyCipher::new(&customer_body_key(&k.key, &b.salt), b.chunk_size).map(Arc::new)
                })
                .collect::<GwResult<_>>()?;
            Ok(Some(ReadKeys {
                ciphers,
                echo: Echo::Customer(k.md5),
            }))
        }
        SseAlgorithm::S3 => {
            if customer.is_some() {
                return Err(not_applicable());
            }
            let master = ctx.master_key.as_ref().ok_or_else(|| {
                GwError::Unavailable(
                    "an SSE-S3 object was read on a gateway without --master-key-file".into(),
                )
            })?;
            let ciphers = sse
                .bodies
                .iter()
                .map(|b| {
                    if b.master_key_id != master.id() {
                        return Err(GwError::Unavailable(format!(
                            "an SSE-S3 data key is wrapped by master key {}, this gateway has {}",
                            b.master_key_id,
                            master.id()
                        )));
                    }
                    BodyCipher::new(&master.unwrap(&b.wrapped_key)?, b.chunk_size).map(Arc::new)
                })
                .collect::<GwResult<_>>()?;
            Ok(Some(ReadKeys {
                ciphers,
                echo: Echo::S3,
            }))
        }
        SseAlgorithm::None => Err(GwError::Internal(
            "object record has an encryption without an algorithm".into(),
        )),
    }
}

// --- Get/Put/DeleteBucketEncryption

pub async fn put_bucket_encryption(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketEncryptionInput>,
) -> GwResult<S3Response<PutBucketEncryptionOutput>> {
    let rules = &req.input.server_side_encryption_configuration.rules;
    let malformed = || {
        GwError::MalformedXml(
            "The XML you provided was not well-formed or did not validate against our published schema"
                .into(),
        )
    };
    // AWS takes exactly one rule, and it must set a default.
    let [rule] = rules.as_slice() else {
        return Err(malformed());
    };
    let default = rule
        .apply_server_side_encryption_by_default
        .as_ref()
        .ok_or_else(malformed)?;
    match default.sse_algorithm.as_str() {
        AES256 => {}
        ServerSideEncryption::AWS_KMS | ServerSideEncryption::AWS_KMS_DSSE => {
            return Err(kms_refused())
        }
        _ => return Err(malformed()),
    }
    if default.kms_master_key_id.is_some() {
        return Err(invalid(
            "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms",
        ));
    }
    if ctx.master_key.is_none() {
        // Else every later PUT into the bucket would fail.
        return Err(no_master_key());
    }
    let enc = BucketEncryption {
        algorithm: SseAlgorithm::S3 as i32,
        bucket_key_enabled: rule.bucket_key_enabled.unwrap_or(false),
    };
    update_bucket(ctx, &req.extensions, |rec| {
        rec.encryption = Some(enc);
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutBucketEncryptionOutput::default()))
}

pub async fn get_bucket_encryption(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetBucketEncryptionInput>,
) -> GwResult<S3Response<GetBucketEncryptionOutput>> {
    let bucket = crate::authz::Authorized::of(&req.extensions)?.bucket()?;
    let enc = bucket
        .record
        .encryption
        .as_ref()
        .filter(|e| e.algorithm() != SseAlgorithm::None)
        .ok_or(GwError::NoSuchEncryptionConfiguration)?;
    Ok(S3Response::new(GetBucketEncryptionOutput {
        server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                    kms_master_key_id: None,
                    sse_algorithm: ServerSideEncryption::from_static(ServerSideEncryption::AES256),
                }),
                bucket_key_enabled: Some(enc.bucket_key_enabled),
            }],
        }),
    }))
}

pub async fn delete_bucket_encryption(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketEncryptionInput>,
) -> GwResult<S3Response<DeleteBucketEncryptionOutput>> {
    let bucket = crate::authz::Authorized::of(&req.extensions)?.bucket()?;
    if bucket.record.encryption.is_some() {
        update_bucket(ctx, &req.extensions, |rec| {
            rec.encryption = None;
            Ok(())
        })
        .await?;
    }
    let mut resp = S3Response::new(DeleteBucketEncryptionOutput::default());
    resp.status = Some(http::StatusCode::NO_CONTENT);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(
        alg: Option<&'a str>,
        key: Option<&'a str>,
        md5: Option<&'a str>,
    ) -> SseHeaders<'a> {
        SseHeaders {
            customer_algorithm: alg,
            customer_key: key,
            customer_key_md5: md5,
            ..Default::default()
        }
    }

    #[test]
    fn customer_key_headers() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = [0x11u8; 32];
        let k = b64.encode(key);
        let m = b64.encode(Md5::digest(key));
        let ok = customer_key(&headers(Some("AES256"), Some(&k), Some(&m)))
            .unwrap()
            .unwrap();
        assert_eq!(ok.key, key);
        assert_eq!(ok.md5, m);
        assert!(customer_key(&headers(None, None, None)).unwrap().is_none());
        let err = |h: SseHeaders<'_>| customer_key(&h).err().unwrap();
        assert!(matches!(
            err(headers(None, Some(&k), Some(&m))),
            GwError::InvalidArgument(_)
        ));
        assert!(matches!(
            err(headers(Some("AES256"), None, Some(&m))),
            GwError::InvalidArgument(_)
        ));
        assert!(matches!(
            err(headers(Some("AES256"), Some(&k), None)),
            GwError::InvalidArgument(_)
        ));
        assert!(matches!(
            err(headers(Some("AES128"), Some(&k), Some(&m))),
            GwError::InvalidEncryptionAlgorithm(_)
        ));
        let short = b64.encode([1u8; 16]);
        assert!(matches!(
            err(headers(Some("AES256"), Some(&short), Some(&m))),
            GwError::InvalidArgument(_)
        ));
        assert!(matches!(
            err(headers(Some("AES256"), Some("%%%"), Some(&m))),
            GwError::InvalidArgument(_)
        ));
        let other = b64.encode(Md5::digest([0x12u8; 32]));
        assert!(matches!(
            err(headers(Some("AES256"), Some(&k), Some(&other))),
            GwError::InvalidArgument(_)
        ));
    }

    #[test]
    fn customer_keys_need_tls_or_loopback() {
        let at = |a: &str| Some(a.parse::<std::net::SocketAddr>().unwrap());
        // TLS: any peer.
        assert!(customer_key_transport_ok(true, at("192.0.2.7:5000")));
        assert!(customer_key_transport_ok(true, None));
        // Plain HTTP: loopback only (IPv4, IPv6, IPv4-mapped IPv6).
        assert!(customer_key_transport_ok(false, at("127.0.0.1:5000")));
        assert!(customer_key_transport_ok(false, at("127.8.9.10:5000")));
        assert!(customer_key_transport_ok(false, at("[::1]:5000")));
        assert!(customer_key_transport_ok(
            false,
            at("[::ffff:127.0.0.1]:5000")
        ));
        assert!(!customer_key_transport_ok(false, at("192.0.2.7:5000")));
        assert!(!customer_key_transport_ok(false, at("0.0.0.0:5000")));
        assert!(!customer_key_transport_ok(
            false,
            at("[::ffff:10.0.0.1]:5000")
        ));
        assert!(!customer_key_transport_ok(false, at("[fd00::2]:5000")));
        assert!(!customer_key_transport_ok(false, None));

        let remote = at("10.1.2.3:4000");
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-server-side-encryption",
            HeaderValue::from_static("AES256"),
        );
        // SSE-S3 carries no key: fine anywhere.
        assert!(check_customer_key_transport(&h, false, remote).is_ok());
        for name in CUSTOMER_KEY_HEADERS {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            assert!(matches!(
                check_customer_key_transport(&h, false, remote),
                Err(GwError::InvalidRequest(m)) if m.contains("secure connection")
            ));
            assert!(check_customer_key_transport(&h, true, remote).is_ok());
            assert!(check_customer_key_transport(&h, false, at("127.0.0.1:1")).is_ok());
        }
    }

    #[test]
    fn echo_headers() {
        let mut h = HeaderMap::new();
        Echo::Customer("abc=".into()).apply(&mut h);
        assert_eq!(
            h["x-amz-server-side-encryption-customer-algorithm"],
            "AES256"
        );
        assert_eq!(h["x-amz-server-side-encryption-customer-key-md5"], "abc=");
        let mut h = HeaderMap::new();
        echo(&mut h, Some(&Echo::S3));
        assert_eq!(h["x-amz-server-side-encryption"], "AES256");
    }

    #[test]
    fn completed_upload_takes_part_keys_in_order() {
        let upload = MultipartUploadRecord {
            sse: Some(ObjectSse {
                algorithm: SseAlgorithm::S3 as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let part = |n: u32| PartRecord {
            part_number: n,
            sse: Some(SseBody {
                chunk_size: n,
                ..Default::default()
            }),
            ..Default::default()
        };
        let parts = [part(1), part(3)];
        let got = completed(&upload, parts.iter()).unwrap();
        assert_eq!(got.algorithm(), SseAlgorithm::S3);
        assert_eq!(
            got.bodies.iter().map(|b| b.chunk_size).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(completed(&MultipartUploadRecord::default(), parts.iter()).is_none());
    }
}
