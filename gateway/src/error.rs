//! The gateway's error type and its one mapping to S3 error codes.
//!
//! This is the only module that names S3 error codes. Every handler returns
//! [`GwError`]; `From<GwError> for S3Error` turns it into the XML error s3s
//! renders, by an exhaustive match. Bad client input is always a 4xx; lost
//! quorum, unreachable peers and timeouts are 503 `ServiceUnavailable`; only
//! our own bugs and unreadable stored state become 500 `InternalError`.

use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use s3s::{S3Error, S3ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum GwError {
    // --- buckets
    #[error("the specified bucket does not exist")]
    NoSuchBucket,
    #[error("the bucket name is not valid: {0}")]
    InvalidBucketName(String),
    #[error("the bucket already exists and is owned by you")]
    BucketAlreadyOwnedByYou,
    #[error("the bucket name is taken by another owner")]
    BucketAlreadyExists,
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    /// 409 OperationAborted: a write met a DeleteBucket of its bucket and was undone.
    #[error("operation aborted: {0}")]
    OperationAborted(String),
    #[error("the location constraint {0:?} does not match this endpoint's region")]
    InvalidLocationConstraint(String),

    // --- objects
    #[error("the specified key does not exist")]
    NoSuchKey,
    #[error("the object key is longer than 1024 bytes")]
    KeyTooLong,
    #[error("user metadata of {0} bytes is over the 2 KiB limit")]
    MetadataTooLarge(usize),
    #[error("the body is larger than the maximum allowed size")]
    EntityTooLarge,
    #[error("a part other than the last is smaller than 5 MiB")]
    EntityTooSmall,
    #[error("the body does not match the digest sent: {0}")]
    BadDigest(String),
    #[error("the Content-MD5 or checksum header is not valid: {0}")]
    InvalidDigest(String),
    #[error("the body ended before Content-Length bytes")]
    IncompleteBody,
    #[error("the requested range is not satisfiable")]
    InvalidRange,
    #[error("the requested part number is not valid")]
    InvalidPartNumber,
    #[error("not modified")]
    NotModified {
        etag: String,
        last_modified: Option<String>,
    },
    #[error("a precondition failed")]
    PreconditionFailed,
    #[error("the specified version does not exist")]
    NoSuchVersion,
    /// The latest version is a delete marker: 404 NoSuchKey with `x-amz-delete-marker`.
    #[error("the latest version is a delete marker")]
    DeleteMarkerIsLatest { version_id: Option<String> },
    /// GET/HEAD of a delete marker by version id: 405 MethodNotAllowed.
    #[error("a delete marker cannot be read")]
    DeleteMarkerNotReadable { version_id: String },

    // --- multipart
    #[error("the specified multipart upload does not exist")]
    NoSuchUpload,
    #[error("a listed part is missing or its ETag does not match: {0}")]
    InvalidPart(String),
    #[error("the parts are not listed in ascending order")]
    InvalidPartOrder,

    #[error("invalid storage class: {0}")]
    InvalidStorageClass(String),

    // --- access
    #[error("access denied")]
    AccessDenied,
    #[error("the access key does not exist or is not active")]
    InvalidAccessKeyId,
    #[error("the policy is not valid: {0}")]
    MalformedPolicy(String),
    #[error("the bucket has no policy")]
    NoSuchBucketPolicy,
    /// The bucket's object ownership is BucketOwnerEnforced: ACLs are disabled.
    #[error("the bucket does not allow ACLs")]
    AccessControlListNotSupported,
    #[error("a grant names an email address")]
    UnresolvableGrantByEmailAddress,
    #[error("the ACL is not valid: {0}")]
    MalformedAcl(String),
    /// BucketOwnerEnforced asked for while the bucket ACL grants to others.
    #[error("the bucket ACL grants access to others than its owner")]
    InvalidBucketAclWithObjectOwnership,
    #[error("the bucket has no public access block configuration")]
    NoSuchPublicAccessBlockConfiguration,

    // --- server-side encryption (docs/decisions/0029)
    /// An SSE algorithm other than AES256 (KMS is refused as NotImplemented).
    #[error("invalid encryption algorithm: {0}")]
    InvalidEncryptionAlgorithm(String),
    #[error("the bucket has no default encryption configuration")]
    NoSuchEncryptionConfiguration,

    // --- tagging and CORS (docs/decisions/0030)
    /// A tag AWS refuses (length, characters, duplicate key, `aws:` prefix).
    #[error("invalid tag: {0}")]
    InvalidTag(String),
    /// What AWS answers as a bare `400 BadRequest` (more than 10 object tags).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the bucket has no tag set")]
    NoSuchTagSet,
    #[error("the bucket has no CORS configuration")]
    NoSuchCorsConfiguration,
    /// GetBucketLifecycleConfiguration of a bucket without rules (docs/decisions/0032).
    #[error("the bucket has no lifecycle configuration")]
    NoSuchLifecycleConfiguration,

    // --- object lock (docs/decisions/0031)
    /// A retained or legally held version: 403 AccessDenied, as S3.
    #[error("the object version is protected by object lock")]
    ObjectLocked,
    /// 409 InvalidBucketState (lock without versioning, Suspend with lock).
    #[error("invalid bucket state: {0}")]
    InvalidBucketState(String),
    #[error("the bucket has no object lock configuration")]
    ObjectLockConfigurationNotFound,
    #[error("the object version has no retention or legal hold")]
    NoSuchObjectLockConfiguration,
    #[error("invalid retention period: {0}")]
    InvalidRetentionPeriod(String),
    /// A storage quota would be exceeded (403 QuotaExceeded, as Ceph RGW).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// A request-rate limit is reached: 503 SlowDown with Retry-After.
    #[error("rate limit reached: {why}")]
    RateLimited { why: String, retry_after_secs: u32 },

    // --- generic client errors
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// s3s rejected the request body while we streamed it (bad chunk
    /// signature, payload hash mismatch, ...): its own S3 error goes back.
    #[error("request body rejected: {0}")]
    BodyRejected(S3Error),

    // --- server side
    /// A peer (metadata region, data node, PD) cannot serve right now, or the
    /// write quorum was lost. Retrying later may succeed.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Too many concurrent writers raced on one key; the client should retry.
    #[error("too much contention on one key: {0}")]
    Contention(String),
    /// Our bug or corrupt stored state. Never used for client input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GwError {
    /// Whether the same request may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        match self {
            GwError::NoSuchBucket
            | GwError::InvalidBucketName(_)
            | GwError::BucketAlreadyOwnedByYou
            | GwError::BucketAlreadyExists
            | GwError::BucketNotEmpty
            | GwError::OperationAborted(_)
            | GwError::InvalidLocationConstraint(_)
            | GwError::NoSuchKey
            | GwError::KeyTooLong
            | GwError::MetadataTooLarge(_)
            | GwError::EntityTooLarge
            | GwError::EntityTooSmall
            | GwError::BadDigest(_)
            | GwError::InvalidDigest(_)
            | GwError::IncompleteBody
            | GwError::InvalidRange
            | GwError::InvalidPartNumber
            | GwError::NotModified { .. }
            | GwError::PreconditionFailed
            | GwError::NoSuchVersion
            | GwError::DeleteMarkerIsLatest { .. }
            | GwError::DeleteMarkerNotReadable { .. }
            | GwError::NoSuchUpload
            | GwError::InvalidPart(_)
            | GwError::InvalidPartOrder
            | GwError::InvalidStorageClass(_)
            | GwError::AccessDenied
            | GwError::InvalidAccessKeyId
            | GwError::MalformedPolicy(_)
            | GwError::NoSuchBucketPolicy
            | GwError::AccessControlListNotSupported
            | GwError::UnresolvableGrantByEmailAddress
            | GwError::MalformedAcl(_)
            | GwError::InvalidBucketAclWithObjectOwnership
            | GwError::NoSuchPublicAccessBlockConfiguration
            | GwError::InvalidEncryptionAlgorithm(_)
            | GwError::NoSuchEncryptionConfiguration
            | GwError::InvalidTag(_)
            | GwError::BadRequest(_)
            | GwError::NoSuchTagSet
            | GwError::NoSuchCorsConfiguration
            | GwError::NoSuchLifecycleConfiguration
            | GwError::ObjectLocked
            | GwError::InvalidBucketState(_)
            | GwError::ObjectLockConfigurationNotFound
            | GwError::NoSuchObjectLockConfiguration
            | GwError::InvalidRetentionPeriod(_)
            | GwError::QuotaExceeded(_)
            | GwError::InvalidArgument(_)
            | GwError::InvalidRequest(_)
            | GwError::MalformedXml(_)
            | GwError::NotImplemented(_)
            | GwError::BodyRejected(_) => false,
            GwError::Unavailable(_) | GwError::Contention(_) | GwError::RateLimited { .. } => true,
            GwError::Internal(_) => false,
        }
    }

    /// The HTTP status class this error produces, for metrics.
    pub fn status(&self) -> StatusCode {
        let e: S3Error = self.to_s3();
        e.status_code().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn to_s3(&self) -> S3Error {
        use S3ErrorCode as C;
        match self {
            GwError::NoSuchBucket => S3Error::with_message(C::NoSuchBucket, "The specified bucket does not exist"),
            GwError::InvalidBucketName(why) => S3Error::with_message(C::InvalidBucketName, why.clone()),
            GwError::BucketAlreadyOwnedByYou => S3Error::with_message(
                C::BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it.",
            ),
            GwError::BucketAlreadyExists => S3Error::with_message(
                C::BucketAlreadyExists,
                "The requested bucket name is not available. Please select a different name and try again.",
            ),
            GwError::BucketNotEmpty => {
                S3Error::with_message(C::BucketNotEmpty, "The bucket you tried to delete is not empty")
            }
            GwError::OperationAborted(why) => S3Error::with_message(C::OperationAborted, why.clone()),
            GwError::InvalidLocationConstraint(_) => {
                S3Error::with_message(C::InvalidLocationConstraint, "The specified location constraint is not valid")
            }
            GwError::NoSuchKey => S3Error::with_message(C::NoSuchKey, "The specified key does not exist."),
            GwError::KeyTooLong => S3Error::with_message(C::KeyTooLongError, "Your key is too long"),
            GwError::MetadataTooLarge(_) => S3Error::with_message(
                C::MetadataTooLarge,
                "Your metadata headers exceed the maximum allowed metadata size.",
            ),
            GwError::EntityTooLarge => {
                S3Error::with_message(C::EntityTooLarge, "Your proposed upload exceeds the maximum allowed size")
            }
            GwError::EntityTooSmall => {
                S3Error::with_message(C::EntityTooSmall, "Your proposed upload is smaller than the minimum allowed size")
            }
            GwError::BadDigest(why) => S3Error::with_message(C::BadDigest, why.clone()),
            GwError::InvalidDigest(why) => S3Error::with_message(C::InvalidDigest, why.clone()),
            GwError::IncompleteBody => S3Error::with_message(
                C::IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            ),
            GwError::InvalidRange => S3Error::with_message(C::InvalidRange, "The requested range is not satisfiable"),
            GwError::InvalidPartNumber => {
                let code = S3ErrorCode::from_bytes(b"InvalidPartNumber").unwrap_or(C::InvalidArgument);
                let mut e = S3Error::with_message(code, "The requested partnumber is not satisfiable");
                e.set_status_code(StatusCode::RANGE_NOT_SATISFIABLE);
                e
            }
            GwError::NotModified { etag, last_modified } => {
                let mut e = S3Error::new(C::NotModified);
                let mut h = http::HeaderMap::new();
                if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
                    h.insert(http::header::ETAG, v);
                }
                if let Some(v) = last_modified.as_deref().and_then(|s| http::HeaderValue::from_str(s).ok()) {
                    h.insert(http::header::LAST_MODIFIED, v);
                }
                e.set_headers(h);
                e
            }
            GwError::PreconditionFailed => {
                S3Error::with_message(C::PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
            }
            GwError::NoSuchVersion => {
                S3Error::with_message(C::NoSuchVersion, "The specified version does not exist.")
            }
            GwError::DeleteMarkerIsLatest { version_id } => {
                let mut e = S3Error::with_message(C::NoSuchKey, "The specified key does not exist.");
                e.set_headers(delete_marker_headers(version_id.as_deref(), false));
                e
            }
            GwError::DeleteMarkerNotReadable { version_id } => {
                let mut e = S3Error::with_message(
                    C::MethodNotAllowed,
                    "The specified method is not allowed against this resource.",
                );
                e.set_headers(delete_marker_headers(Some(version_id), true));
                e
            }
            GwError::NoSuchUpload => S3Error::with_message(
                C::NoSuchUpload,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
            ),
            GwError::InvalidPart(why) => S3Error::with_message(C::InvalidPart, why.clone()),
            GwError::InvalidPartOrder => {
                S3Error::with_message(C::InvalidPartOrder, "The list of parts was not in ascending order.")
            }
            GwError::InvalidStorageClass(why) => {
                S3Error::with_message(C::InvalidStorageClass, why.clone())
            }
            GwError::AccessDenied => S3Error::with_message(C::AccessDenied, "Access Denied"),
            GwError::InvalidAccessKeyId => S3Error::with_message(
                C::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            ),
            GwError::MalformedPolicy(why) => S3Error::with_message(C::MalformedPolicy, why.clone()),
            GwError::NoSuchBucketPolicy => {
                S3Error::with_message(C::NoSuchBucketPolicy, "The bucket policy does not exist")
            }
            GwError::AccessControlListNotSupported => {
                S3Error::with_message(C::AccessControlListNotSupported, "The bucket does not allow ACLs")
            }
            GwError::UnresolvableGrantByEmailAddress => S3Error::with_message(
                C::UnresolvableGrantByEmailAddress,
                "The email address you provided does not match any account on record.",
            ),
            GwError::MalformedAcl(why) => S3Error::with_message(C::MalformedACLError, why.clone()),
            GwError::InvalidBucketAclWithObjectOwnership => S3Error::with_message(
                C::InvalidBucketAclWithObjectOwnership,
                "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
            ),
            GwError::NoSuchPublicAccessBlockConfiguration => {
                let code = S3ErrorCode::from_bytes(b"NoSuchPublicAccessBlockConfiguration")
                    .unwrap_or(C::NoSuchBucketPolicy);
                let mut e = S3Error::with_message(code, "The public access block configuration was not found");
                e.set_status_code(StatusCode::NOT_FOUND);
                e
            }
            GwError::InvalidEncryptionAlgorithm(why) => {
                let mut e = S3Error::with_message(C::InvalidEncryptionAlgorithmError, why.clone());
                e.set_status_code(StatusCode::BAD_REQUEST);
                e
            }
            GwError::NoSuchEncryptionConfiguration => {
                let mut e = S3Error::with_message(
                    C::ServerSideEncryptionConfigurationNotFoundError,
                    "The server side encryption configuration was not found",
                );
                e.set_status_code(StatusCode::NOT_FOUND);
                e
            }
            GwError::InvalidTag(why) => S3Error::with_message(C::InvalidTag, why.clone()),
            GwError::BadRequest(why) => {
                let code = S3ErrorCode::from_bytes(b"BadRequest").unwrap_or(C::InvalidRequest);
                let mut e = S3Error::with_message(code, why.clone());
                e.set_status_code(StatusCode::BAD_REQUEST);
                e
            }
            GwError::NoSuchTagSet => S3Error::with_message(C::NoSuchTagSet, "The TagSet does not exist"),
            GwError::NoSuchCorsConfiguration => {
                S3Error::with_message(C::NoSuchCORSConfiguration, "The CORS configuration does not exist")
            }
            GwError::NoSuchLifecycleConfiguration => S3Error::with_message(
                C::NoSuchLifecycleConfiguration,
                "The lifecycle configuration does not exist",
            ),
            GwError::ObjectLocked => {
                S3Error::with_message(C::AccessDenied, "Access Denied because object protected by object lock.")
            }
            GwError::InvalidBucketState(why) => S3Error::with_message(C::InvalidBucketState, why.clone()),
            GwError::ObjectLockConfigurationNotFound => S3Error::with_message(
                C::ObjectLockConfigurationNotFoundError,
                "Object Lock configuration does not exist for this bucket",
            ),
            GwError::NoSuchObjectLockConfiguration => S3Error::with_message(
                C::NoSuchObjectLockConfiguration,
                "The specified object does not have a ObjectLock configuration",
            ),
            GwError::InvalidRetentionPeriod(why) => {
                let code = S3ErrorCode::from_bytes(b"InvalidRetentionPeriod").unwrap_or(C::InvalidArgument);
                let mut e = S3Error::with_message(code, why.clone());
                e.set_status_code(StatusCode::BAD_REQUEST);
                e
            }
            GwError::QuotaExceeded(why) => {
                let code = S3ErrorCode::from_bytes(b"QuotaExceeded").unwrap_or(C::AccessDenied);
                let mut e = S3Error::with_message(code, why.clone());
                e.set_status_code(StatusCode::FORBIDDEN);
                e
            }
            GwError::RateLimited { retry_after_secs, .. } => {
                let mut e = S3Error::with_message(C::SlowDown, "Please reduce your request rate.");
                let mut h = http::HeaderMap::new();
                h.insert(http::header::RETRY_AFTER, http::HeaderValue::from(*retry_after_secs));
                e.set_headers(h);
                e
            }
            GwError::InvalidArgument(why) => S3Error::with_message(C::InvalidArgument, why.clone()),
            GwError::InvalidRequest(why) => S3Error::with_message(C::InvalidRequest, why.clone()),
            GwError::MalformedXml(why) => S3Error::with_message(C::MalformedXML, why.clone()),
            GwError::NotImplemented(what) => S3Error::with_message(C::NotImplemented, *what),
            GwError::BodyRejected(e) => {
                let mut out = S3Error::new(e.code().clone());
                if let Some(m) = e.message() {
                    out.set_message(m.to_string());
                }
                if let Some(s) = e.status_code() {
                    out.set_status_code(s);
                }
                out
            }
            GwError::Unavailable(_) => {
                S3Error::with_message(C::ServiceUnavailable, "Please reduce your request rate or retry later.")
            }
            GwError::Contention(_) => S3Error::with_message(C::SlowDown, "Please reduce your request rate."),
            GwError::Internal(_) => {
                S3Error::with_message(C::InternalError, "We encountered an internal error. Please try again.")
            }
        }
    }
}

/// What S3 sends with an answer about a delete marker.
fn delete_marker_headers(version_id: Option<&str>, allow_delete: bool) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        "x-amz-delete-marker",
        http::HeaderValue::from_static("true"),
    );
    if let Some(v) = version_id.and_then(|v| http::HeaderValue::from_str(v).ok()) {
        h.insert("x-amz-version-id", v);
    }
    if allow_delete {
        h.insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("DELETE"),
        );
    }
    h
}

/// At most one log line a second for a failure that can repeat with every
/// request; `admit` says how many were skipped since the last line.
pub struct LogThrottle {
    /// Unix milliseconds before which lines are skipped.
    next_ms: AtomicU64,
    skipped: AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> Self {
        LogThrottle {
            next_ms: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Some(lines skipped since the last one) if a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl From<GwError> for S3Error {
    fn from(e: GwError) -> S3Error {
        match &e {
            GwError::Internal(why) => tracing::error!(error = %why, "internal error"),
            GwError::Unavailable(why) | GwError::Contention(why) => {
                // Each refused request of a full or broken cluster fails the
                // same way, at the request rate: one line a second says it.
                static FAILED: LogThrottle = LogThrottle::new();
                if let Some(skipped) = FAILED.admit() {
                    tracing::warn!(error = %why, skipped, "request failed")
                }
            }
            _ => {}
        }
        e.to_s3()
    }
}

impl From<kura_metashard::client::ClientError> for GwError {
    fn from(e: kura_metashard::client::ClientError) -> GwError {
        use kura_metashard::client::ClientError as E;
        match e {
            E::Unavailable(m) => GwError::Unavailable(format!("metadata: {m}")),
            // We build every metadata request ourselves, so a rejected one is our bug.
            E::InvalidRequest(m) => GwError::Internal(format!("metadata rejected request: {m}")),
            E::Internal(m) => GwError::Internal(format!("metadata: {m}")),
        }
    }
}

impl From<kura_metashard::keys::ValueError> for GwError {
    fn from(e: kura_metashard::keys::ValueError) -> GwError {
        GwError::Internal(format!("stored record unreadable: {e}"))
    }
}

impl From<kura_pd_client::PdError> for GwError {
    fn from(e: kura_pd_client::PdError) -> GwError {
        if e.is_retryable() {
            GwError::Unavailable(format!("pd: {e}"))
        } else {
            GwError::Internal(format!("pd: {e}"))
        }
    }
}

/// Maps a request-body stream error: s3s's own errors (signature, payload
/// hash) pass through; anything else means the body was cut short.
pub fn body_error(e: s3s::StdError) -> GwError {
    match e.downcast::<S3Error>() {
        Ok(s3) => GwError::BodyRejected(*s3),
        Err(other) if is_chunk_signature_mismatch(other.as_ref()) => {
            GwError::BodyRejected(S3Error::with_message(
                S3ErrorCode::SignatureDoesNotMatch,
                "The request signature we calculated does not match the signature you provided.",
            ))
        }
        Err(other) => {
            tracing::debug!(error = %other, "request body ended with an error");
            GwError::IncompleteBody
        }
    }
}

/// s3s 0.14.1 reports a bad aws-chunked chunk or trailer signature with its
/// private `AwsChunkedStreamError::SignatureMismatch`, not an `S3Error`, so it
/// is recognised by its message (s3s is pinned; the unit test below breaks if
/// an upgrade changes the text).
fn is_chunk_signature_mismatch(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.to_string() == "AwsChunkedStreamError: SignatureMismatch" {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The S3 error code and message of `e`, for per-key results (DeleteObjects).
pub fn code_and_message(e: &GwError) -> (String, String) {
    let s3 = e.to_s3();
    (
        s3.code().as_str().to_string(),
        s3.message().unwrap_or_default().to_string(),
    )
}

pub type GwResult<T> = Result<T, GwError>;

/// What S3 answers when a SigV4 request is signed for another region: clients
/// such as s3cmd (whose default region is "US") read `<Region>` and re-sign.
/// Answered before s3s sees the request, since s3s rejects such scopes as
/// malformed without the hint.
pub fn wrong_region_response(sent: &str, expected: &str) -> http::Response<s3s::Body> {
    xml_response(
        StatusCode::BAD_REQUEST,
        "AuthorizationHeaderMalformed",
        &format!("The authorization header is malformed; the region '{sent}' is wrong; expecting '{expected}'"),
        &[("Region", expected)],
    )
}

/// An S3 XML error answered before s3s sees the request.
pub fn xml_error_response(
    status: StatusCode,
    code: &str,
    message: &str,
) -> http::Response<s3s::Body> {
    xml_response(status, code, message, &[])
}

/// What the S3 port's front door (`front/`) answers itself, before s3s
/// sees a request: overload, and input AWS refuses before any operation.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Too many requests in flight, or too many connections (503, retried
    /// with backoff by every AWS SDK).
    #[error("the gateway is at its in-flight request or connection cap")]
    SlowDown,
    /// An HTTP method S3 has no operation for.
    #[error("method {method} is not allowed")]
    MethodNotAllowed {
        method: String,
        resource: &'static str,
    },
    /// The request's header fields add up to more than AWS's 8 KiB.
    #[error("the request header section is over {max} bytes")]
    HeaderSectionTooLarge { max: usize },
    /// An `Authorization: AWS4-HMAC-SHA256 ...` header that does not parse.
    #[error("malformed AWS4 authorization header: {0}")]
    AuthorizationHeaderMalformed(&'static str),
    /// A POST form upload declared larger than the gateway takes.
    #[error("POST form upload larger than {max} bytes")]
    FormTooLarge { max: u64 },
    /// A CORS preflight (OPTIONS) missing what it must carry (400 BadRequest).
    #[error("CORS preflight: {0}")]
    CorsBadRequest(String),
    /// A CORS preflight no rule allows (403 AccessForbidden, `CORSResponse: ...`).
    #[error("CORS preflight refused: {message}")]
    CorsForbidden {
        message: &'static str,
        method: String,
        resource: &'static str,
    },
}

impl Refusal {
    pub fn response(&self) -> http::Response<s3s::Body> {
        match self {
            Refusal::SlowDown => {
                let mut r = xml_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "Please reduce your request rate.",
                    &[],
                );
                r.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
                r
            }
            Refusal::MethodNotAllowed { method, resource } => {
                let mut r = xml_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "The specified method is not allowed against this resource.",
                    &[("Method", method), ("ResourceType", resource)],
                );
                r.headers_mut().insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE"),
                );
                r
            }
            Refusal::HeaderSectionTooLarge { max } => xml_response(
                StatusCode::BAD_REQUEST,
                "RequestHeaderSectionTooLarge",
                "Your request header section exceeds the maximum allowed size.",
                &[("MaxSizeAllowed", &max.to_string())],
            ),
            Refusal::AuthorizationHeaderMalformed(why) => xml_response(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                &format!("The authorization header is malformed; {why}"),
                &[],
            ),
            Refusal::FormTooLarge { max } => xml_response(
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                &[("MaxSizeAllowed", &max.to_string())],
            ),
            Refusal::CorsBadRequest(why) => {
                xml_response(StatusCode::BAD_REQUEST, "BadRequest", why, &[])
            }
            Refusal::CorsForbidden {
                message,
                method,
                resource,
            } => xml_response(
                StatusCode::FORBIDDEN,
                "AccessForbidden",
                message,
                &[("Method", method), ("ResourceType", resource)],
            ),
        }
    }
}

/// The error a request body yields after sending nothing for the idle
/// timeout; handlers pass it through (`body_error`), so the client reads
/// AWS's 400 RequestTimeout.
pub fn request_timeout() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::RequestTimeout,
        "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
    )
}

fn xml_response(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: &[(&str, &str)],
) -> http::Response<s3s::Body> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>",
        esc(code),
        esc(message)
    );
    for (name, value) in extra {
        body.push_str(&format!("<{name}>{}</{name}>", esc(value)));
    }
    body.push_str("</Error>");
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_throttle_admits_one_line_a_second_and_counts_the_rest() {
        let t = LogThrottle::new();
        assert_eq!(t.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.admit(), None);
        }
        // As if a second had passed.
        t.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(t.admit(), Some(5));
        assert_eq!(t.admit(), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(GwError::NoSuchKey.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            GwError::BucketAlreadyOwnedByYou.status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            GwError::Unavailable("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            GwError::Contention("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            GwError::InvalidRange.status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        assert_eq!(
            GwError::InvalidPartNumber.status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        let nm = GwError::NotModified {
            etag: "e".into(),
            last_modified: None,
        };
        assert_eq!(nm.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            GwError::PreconditionFailed.status(),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(GwError::EntityTooSmall.status(), StatusCode::BAD_REQUEST);
        assert_eq!(GwError::AccessDenied.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            GwError::MetadataTooLarge(3000).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(GwError::InvalidAccessKeyId.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            GwError::MalformedPolicy("x".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(GwError::NoSuchBucketPolicy.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            GwError::AccessControlListNotSupported.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            GwError::UnresolvableGrantByEmailAddress.status(),
            StatusCode::BAD_REQUEST
        );
        let pab = GwError::NoSuchPublicAccessBlockConfiguration;
        assert_eq!(pab.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            pab.to_s3().code().as_str(),
            "NoSuchPublicAccessBlockConfiguration"
        );
        assert_eq!(
            GwError::QuotaExceeded("x".into()).status(),
            StatusCode::FORBIDDEN
        );
        let slow = GwError::RateLimited {
            why: "x".into(),
            retry_after_secs: 1,
        };
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        let s3 = slow.to_s3();
        assert_eq!(s3.code().as_str(), "SlowDown");
        assert_eq!(
            GwError::Internal("x".into()).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn body_errors_pass_s3_errors_through() {
        let e: s3s::StdError = Box::new(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
        match body_error(e) {
            GwError::BodyRejected(e) => assert_eq!(e.code(), &S3ErrorCode::SignatureDoesNotMatch),
            other => panic!("unexpected {other:?}"),
        }
        let e: s3s::StdError = Box::new(std::io::Error::other("reset"));
        assert!(matches!(body_error(e), GwError::IncompleteBody));
        // What s3s' aws-chunked decoder yields for a tampered chunk signature.
        let e: s3s::StdError = Box::new(std::io::Error::other(
            "AwsChunkedStreamError: SignatureMismatch",
        ));
        match body_error(e) {
            GwError::BodyRejected(e) => assert_eq!(e.code(), &S3ErrorCode::SignatureDoesNotMatch),
            other => panic!("unexpected {other:?}"),
        }
    }
}
