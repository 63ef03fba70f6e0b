//! Authorization: may this caller do this operation on this bucket or object?
//!
//! Decided once per request in [`Access::check`] (the s3s access hook, which
//! runs after the signature is verified and before the operation's input is
//! read): the caller is resolved from its access key (or is anonymous), the
//! operation is mapped to its IAM action ([`action_of`]), the addressed
//! bucket's record is read, and [`decide`] applies the rules below. The
//! outcome, with the bucket record, travels to the handler as
//! [`Authorized`] in the request's extensions, so the handler does not read
//! the bucket again. A second resource in one request (CopyObject's source)
//! and per-key checks (DeleteObjects) go through [`Authorized::allows`] /
//! [`authorize_bucket`], the same rules.
//!
//! The rules (docs/tenancy.md), in order:
//! 1. an explicit Deny in the user's policy or the bucket's policy refuses;
//! 2. an admin user (the root key) is allowed;
//! 3. the bucket's owner is allowed;
//! 4. an Allow in the bucket policy allows (this is how another tenant, or
//!    anonymous callers, are let in);
//! 5. an Allow in the user's policy allows on buckets of the user's own tenant;
//! 6. anything else is refused (`AccessDenied`), the reason in the debug log.

pub mod policy;

use std::net::SocketAddr;
use std::sync::Arc;

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::BucketRecord;
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Error, S3Result};

use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::identity::{self, Principal};
use crate::meta::Versioned;
use policy::{ConditionContext, Decision, Policy};

/// The client's address, put into each request's extensions by the listener.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// Who is calling, and the condition keys of this request.
#[derive(Debug)]
pub struct Caller {
    /// `None`: an anonymous (unsigned) request.
    pub principal: Option<Arc<Principal>>,
    pub context: ConditionContext,
}

impl Caller {
    /// The tenant whose namespace unqualified bucket names refer to.
    pub fn tenant(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.tenant.as_str())
    }

    /// The canonical id recorded as owner of what this caller creates.
    pub fn user_id(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.user_id.as_str())
    }

    pub fn is_admin(&self) -> bool {
        self.principal.as_ref().is_some_and(|p| p.admin)
    }
}

/// A bucket as a request addresses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketName {
    /// "" = the root tenant.
    pub tenant: String,
    pub name: String,
}

impl BucketName {
    /// `bucket` is in the caller's tenant; `tenant:bucket` names another
    /// tenant's (`:bucket` the root tenant's).
    pub fn resolve(requested: &str, caller_tenant: &str) -> BucketName {
        match requested.split_once(keys::TENANT_SEPARATOR) {
            Some((tenant, name)) => BucketName {
                tenant: tenant.to_string(),
                name: name.to_string(),
            },
            None => BucketName {
                tenant: caller_tenant.to_string(),
                name: requested.to_string(),
            },
        }
    }

    pub fn key(&self) -> Vec<u8> {
        keys::tenant_bucket_key(&self.tenant, &self.name)
    }

    /// `tenant:bucket`, or `bucket` in the root tenant.
    pub fn qualified(&self) -> String {
        if self.tenant.is_empty() {
            self.name.clone()
        } else {
            format!("{}:{}", self.tenant, self.name)
        }
    }
}

/// The outcome of the access check, handed to the operation.
#[derive(Clone, Debug)]
pub struct Authorized {
    pub caller: Arc<Caller>,
    /// The addressed bucket (absent for ListBuckets).
    pub bucket_name: Option<BucketName>,
    /// Its record as read by the check; `None` when it does not exist.
    pub bucket: Option<Versioned<BucketRecord>>,
}

impl Authorized {
    /// The outcome the access check left in `ext`. Its absence is our bug
    /// (every operation passes the check first).
    pub fn of(ext: &http::Extensions) -> GwResult<&Authorized> {
        ext.get::<Authorized>()
            .ok_or_else(|| GwError::Internal("request reached an operation unchecked".into()))
    }

    /// The addressed bucket's record; NoSuchBucket when it does not exist.
    pub fn bucket(&self) -> GwResult<Versioned<BucketRecord>> {
        self.bucket.clone().ok_or(GwError::NoSuchBucket)
    }

    pub fn bucket_name(&self) -> GwResult<&BucketName> {
        self.bucket_name
            .as_ref()
            .ok_or_else(|| GwError::Internal("operation without a bucket".into()))
    }

    /// Whether `action` on `key` of the addressed bucket is allowed (for
    /// per-key decisions inside one request, e.g. DeleteObjects).
    pub fn allows(&self, ctx: &Ctx, action: &str, key: Option<&str>) -> GwResult<bool> {
        let (Some(name), Some(bucket)) = (&self.bucket_name, &self.bucket) else {
            return Ok(false);
        };
        let verdict = decide(ctx, &self.caller, action, name, &bucket.record, key)?;
        Ok(verdict.allowed(action, name, key))
    }
}

/// What [`decide`] concluded, and why (for the debug log).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
}

impl Verdict {
    fn allowed(&self, action: &str, bucket: &BucketName, key: Option<&str>) -> bool {
        match self {
            Verdict::Allow(_) => true,
            Verdict::Deny(why) => {
                tracing::debug!(
                    action,
                    tenant = %bucket.tenant,
                    bucket = %bucket.name,
                    key = key.is_some(),
                    reason = %why,
                    "access denied"
                );
                false
            }
        }
    }
}

/// Whether `principal` owns `bucket`. Buckets made before tenancy record
/// the root access key as owner.
pub fn owns(ctx: &Ctx, principal: &Principal, bucket: &BucketRecord) -> bool {
    bucket.owner == principal.user_id
        || (principal.user_id == identity::ROOT_USER_ID
            && bucket.owner == ctx.identity.root_access_key())
}

/// The owner's canonical id as shown to clients.
pub fn owner_id<'a>(ctx: &'a Ctx, bucket: &'a BucketRecord) -> &'a str {
    if bucket.owner == ctx.identity.root_access_key() {
        identity::ROOT_USER_ID
    } else {
        &bucket.owner
    }
}

/// The rules of the module doc, for `action` on `bucket` (and `key`).
pub fn decide(
    ctx: &Ctx,
    caller: &Caller,
    action: &str,
    name: &BucketName,
    bucket: &BucketRecord,
    key: Option<&str>,
) -> GwResult<Verdict> {
    let bucket_policy = ctx.policies.get(&bucket.policy)?;
    Ok(decide_with(
        caller,
        action,
        name,
        key,
        caller
            .principal
            .as_ref()
            .is_some_and(|p| owns(ctx, p, bucket)),
        bucket_policy.as_deref(),
    ))
}

/// [`decide`] once the bucket's owner and policy are known (pure).
pub fn decide_with(
    caller: &Caller,
    action: &str,
    name: &BucketName,
    key: Option<&str>,
    is_owner: bool,
    bucket_policy: Option<&Policy>,
) -> Verdict {
    let principal = match &caller.principal {
        Some(p) => policy::Principal::User {
            tenant: &p.tenant,
            name: &p.name,
            id: &p.user_id,
        },
        None => policy::Principal::Anonymous,
    };
    let request = |principal_required| policy::Request {
        principal: match &principal {
            policy::Principal::User { tenant, name, id } => {
                policy::Principal::User { tenant, name, id }
            }
            policy::Principal::Anonymous => policy::Principal::Anonymous,
        },
        action,
        tenant: &name.tenant,
        bucket: &name.name,
        key,
        context: &caller.context,
        principal_required,
    };
    let user_decision = caller
        .principal
        .as_ref()
        .and_then(|p| p.policy.as_ref())
        .map_or(Decision::NotApplicable, |p| p.evaluate(&request(false)));
    if let Decision::ExplicitDeny { reason } = &user_decision {
        return Verdict::Deny(format!("user policy denies: {reason}"));
    }
    let bucket_decision =
        bucket_policy.map_or(Decision::NotApplicable, |p| p.evaluate(&request(true)));
    if let Decision::ExplicitDeny { reason } = &bucket_decision {
        return Verdict::Deny(format!("bucket policy denies: {reason}"));
    }
    if caller.is_admin() {
        return Verdict::Allow("admin".into());
    }
    if is_owner {
        return Verdict::Allow("bucket owner".into());
    }
    if let Decision::Allow { reason } = bucket_decision {
        return Verdict::Allow(format!("bucket policy allows: {reason}"));
    }
    if let Decision::Allow { reason } = user_decision {
        if caller.tenant() == name.tenant {
            return Verdict::Allow(format!("user policy allows: {reason}"));
        }
    }
    Verdict::Deny(match &caller.principal {
        Some(_) => "neither ownership nor a policy grants it".into(),
        None => "anonymous, and no policy grants it".into(),
    })
}

/// Where an operation acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The service (ListBuckets).
    Service,
    Bucket,
    Object,
}

/// The IAM action an S3 operation needs, and where it acts. `None` for
/// operations Kura does not implement (they answer 501 to whoever may ask).
pub fn action_of(op: &str) -> Option<(&'static str, Level)> {
    use Level::*;
    Some(match op {
        "ListBuckets" => ("s3:ListAllMyBuckets", Service),
        "CreateBucket" => ("s3:CreateBucket", Bucket),
        "DeleteBucket" => ("s3:DeleteBucket", Bucket),
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => ("s3:ListBucket", Bucket),
        "GetBucketLocation" => ("s3:GetBucketLocation", Bucket),
        "GetBucketVersioning" => ("s3:GetBucketVersioning", Bucket),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads", Bucket),
        "GetBucketPolicy" => ("s3:GetBucketPolicy", Bucket),
        "PutBucketPolicy" => ("s3:PutBucketPolicy", Bucket),
        "DeleteBucketPolicy" => ("s3:DeleteBucketPolicy", Bucket),
        "GetBucketPolicyStatus" => ("s3:GetBucketPolicyStatus", Bucket),
        // DeleteObjects is decided key by key in the handler.
        "DeleteObjects" => ("s3:DeleteObject", Bucket),
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => ("s3:PutObject", Object),
        "GetObject" | "HeadObject" => ("s3:GetObject", Object),
        "DeleteObject" => ("s3:DeleteObject", Object),
        "AbortMultipartUpload" => ("s3:AbortMultipartUpload", Object),
        "ListParts" => ("s3:ListMultipartUploadParts", Object),
        _ => return None,
    })
}

/// The condition keys of a request (aws:* and the s3:* ones Kura knows).
fn condition_context(
    principal: Option<&Principal>,
    remote: Option<RemoteAddr>,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> ConditionContext {
    let mut c = ConditionContext::new();
    let now = time::OffsetDateTime::now_utc();
    if let Ok(t) = now.format(&time::format_description::well_known::Rfc3339) {
        c.set("aws:CurrentTime", t);
    }
    c.set("aws:EpochTime", now.unix_timestamp().to_string());
    // Plain HTTP until the S3 port speaks TLS.
    c.set("aws:SecureTransport", "false");
    if let Some(RemoteAddr(addr)) = remote {
        c.set("aws:SourceIp", addr.ip().to_string());
    }
    match principal {
        Some(p) => {
            c.set("aws:username", p.name.clone());
            c.set("aws:userid", p.user_id.clone());
            c.set("aws:PrincipalType", "User");
        }
        None => c.set("aws:PrincipalType", "Anonymous"),
    }
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = match k {
                "prefix" => "s3:prefix",
                "delimiter" => "s3:delimiter",
                "max-keys" => "s3:max-keys",
                _ => continue,
            };
            let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            c.set(key, v);
        }
    }
    if let Some(acl) = headers.get("x-amz-acl").and_then(|v| v.to_str().ok()) {
        c.set("s3:x-amz-acl", acl.to_string());
    }
    let signed_v4 = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|a| a.starts_with("AWS4-"));
    let (version, auth_type) = match signed_v4 {
        Some(true) => ("AWS4-HMAC-SHA256", "REST-HEADER"),
        Some(false) => ("AWS", "REST-HEADER"),
        None if uri.query().is_some_and(|q| q.contains("X-Amz-Signature=")) => {
            ("AWS4-HMAC-SHA256", "REST-QUERY-STRING")
        }
        None => ("AWS", "REST-QUERY-STRING"),
    };
    if principal.is_some() {
        c.set("s3:signatureversion", version);
        c.set("s3:authType", auth_type);
    }
    c
}

/// Reads a bucket and decides `action` on it for `caller` (a resource other
/// than the one the request addresses, e.g. CopyObject's source).
pub async fn authorize_bucket(
    ctx: &Ctx,
    caller: &Caller,
    requested: &str,
    action: &str,
    key: Option<&str>,
) -> GwResult<Versioned<BucketRecord>> {
    let name = BucketName::resolve(requested, caller.tenant());
    let bucket = ctx
        .meta
        .get::<BucketRecord>(Cf::Meta, &name.key())
        .await?
        .ok_or(GwError::NoSuchBucket)?;
    if decide(ctx, caller, action, &name, &bucket.record, key)?.allowed(action, &name, key) {
        Ok(bucket)
    } else {
        Err(GwError::AccessDenied)
    }
}

/// The s3s access hook.
pub struct Access {
    ctx: Arc<Ctx>,
}

impl Access {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Access { ctx }
    }

    async fn check_request(&self, cx: &mut S3AccessContext<'_>) -> GwResult<()> {
        let ctx = &self.ctx;
        let principal = match cx.credentials() {
            Some(c) => Some(
                ctx.identity
                    .lookup(&c.access_key)
                    .await?
                    // Deleted between the signature check and now.
                    .ok_or(GwError::InvalidAccessKeyId)?
                    .principal
                    .clone(),
            ),
            None => None,
        };
        let remote = cx.extensions_mut().get::<RemoteAddr>().copied();
        let caller = Arc::new(Caller {
            context: condition_context(principal.as_deref(), remote, cx.uri(), cx.headers()),
            principal,
        });
        let op = cx.s3_op().name();
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let Some(requested) = bucket else {
            // The service: ListBuckets shows a caller its own buckets.
            if caller.principal.is_none() {
                return Err(GwError::AccessDenied);
            }
            cx.extensions_mut().insert(Authorized {
                caller,
                bucket_name: None,
                bucket: None,
            });
            return Ok(());
        };
        let name = BucketName::resolve(&requested, caller.tenant());
        let Some((action, level)) = action_of(op) else {
            // Not implemented: 501 for callers who could ask, 403 for anonymous ones.
            if caller.principal.is_none() {
                return Err(GwError::AccessDenied);
            }
            cx.extensions_mut().insert(Authorized {
                caller,
                bucket_name: Some(name),
                bucket: None,
            });
            return Ok(());
        };
        let key = if level == Level::Object {
            key.as_deref()
        } else {
            None
        };
        if op == "CreateBucket" {
            check_create_bucket(&caller, &name)?;
            cx.extensions_mut().insert(Authorized {
                caller,
                bucket_name: Some(name),
                bucket: None,
            });
            return Ok(());
        }
        let bucket = ctx.meta.get::<BucketRecord>(Cf::Meta, &name.key()).await?;
        if let Some(b) = &bucket {
            // DeleteObjects is decided per key by its handler.
            if op != "DeleteObjects"
                && !decide(ctx, &caller, action, &name, &b.record, key)?.allowed(action, &name, key)
            {
                return Err(GwError::AccessDenied);
            }
        } else if caller.principal.is_none() {
            // An anonymous caller learns nothing about which names exist.
            return Err(GwError::AccessDenied);
        }
        cx.extensions_mut().insert(Authorized {
            caller,
            bucket_name: Some(name),
            bucket,
        });
        Ok(())
    }
}

/// Anyone signed in may create buckets in their own tenant; admins in any.
fn check_create_bucket(caller: &Caller, name: &BucketName) -> GwResult<()> {
    let Some(p) = &caller.principal else {
        return Err(GwError::AccessDenied);
    };
    if p.admin || p.tenant == name.tenant {
        let denied = p.policy.as_ref().is_some_and(|pol| {
            matches!(
                pol.evaluate(&policy::Request {
                    principal: policy::Principal::User {
                        tenant: &p.tenant,
                        name: &p.name,
                        id: &p.user_id,
                    },
                    action: "s3:CreateBucket",
                    tenant: &name.tenant,
                    bucket: &name.name,
                    key: None,
                    context: &caller.context,
                    principal_required: false,
                }),
                Decision::ExplicitDeny { .. }
            )
        });
        if !denied {
            return Ok(());
        }
    }
    tracing::debug!(tenant = %name.tenant, "CreateBucket denied");
    Err(GwError::AccessDenied)
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        self.check_request(cx).await.map_err(S3Error::from)
    }
}

/// Parsed bucket policies by their text, so a request does not parse the
/// policy of the bucket it addresses again.
#[derive(Default)]
pub struct PolicyCache {
    parsed: dashmap::DashMap<String, Arc<Policy>>,
}

/// Distinct policies kept parsed at most.
const POLICY_CACHE_MAX: usize = 10_000;

impl PolicyCache {
    /// The parsed form of a stored policy ("" = none).
    pub fn get(&self, text: &str) -> GwResult<Option<Arc<Policy>>> {
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(p) = self.parsed.get(text) {
            return Ok(Some(p.clone()));
        }
        let p = identity::parse_stored_policy(text, "bucket policy")?
            .ok_or_else(|| GwError::Internal("empty policy".into()))?;
        if self.parsed.len() >= POLICY_CACHE_MAX {
            self.parsed.clear();
        }
        self.parsed.insert(text.to_string(), p.clone());
        Ok(Some(p))
    }
}
