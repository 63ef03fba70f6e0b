//! The s3s access hook ([`Access`]): one decision per request, before its
//! input is read; the IAM action of each operation ([`action_of`]) and the
//! condition keys of a request.

use super::decide::check_resource;
use super::*;

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
        "PutBucketVersioning" => ("s3:PutBucketVersioning", Bucket),
        "ListObjectVersions" => ("s3:ListBucketVersions", Bucket),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads", Bucket),
        "GetBucketPolicy" => ("s3:GetBucketPolicy", Bucket),
        "PutBucketPolicy" => ("s3:PutBucketPolicy", Bucket),
        "DeleteBucketPolicy" => ("s3:DeleteBucketPolicy", Bucket),
        "GetBucketPolicyStatus" => ("s3:GetBucketPolicyStatus", Bucket),
        "GetBucketAcl" => ("s3:GetBucketAcl", Bucket),
        "PutBucketAcl" => ("s3:PutBucketAcl", Bucket),
        "GetBucketOwnershipControls" => ("s3:GetBucketOwnershipControls", Bucket),
        "PutBucketOwnershipControls" | "DeleteBucketOwnershipControls" => {
            ("s3:PutBucketOwnershipControls", Bucket)
        }
        "GetPublicAccessBlock" => ("s3:GetBucketPublicAccessBlock", Bucket),
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => {
            ("s3:PutBucketPublicAccessBlock", Bucket)
        }
        "GetBucketEncryption" => ("s3:GetEncryptionConfiguration", Bucket),
        // AWS has no s3:DeleteEncryptionConfiguration action.
        "PutBucketEncryption" | "DeleteBucketEncryption" => {
            ("s3:PutEncryptionConfiguration", Bucket)
        }
        "GetObjectAcl" => ("s3:GetObjectAcl", Object),
        "PutObjectAcl" => ("s3:PutObjectAcl", Object),
        "GetObjectTagging" => ("s3:GetObjectTagging", Object),
        "PutObjectTagging" => ("s3:PutObjectTagging", Object),
        "DeleteObjectTagging" => ("s3:DeleteObjectTagging", Object),
        "GetBucketTagging" => ("s3:GetBucketTagging", Bucket),
        // AWS has no s3:DeleteBucketTagging / s3:DeleteBucketCORS actions.
        "PutBucketTagging" | "DeleteBucketTagging" => ("s3:PutBucketTagging", Bucket),
        "GetBucketCors" => ("s3:GetBucketCORS", Bucket),
        "PutBucketCors" | "DeleteBucketCors" => ("s3:PutBucketCORS", Bucket),
        "GetBucketLifecycleConfiguration" => ("s3:GetLifecycleConfiguration", Bucket),
        // AWS has no s3:DeleteLifecycleConfiguration action.
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            ("s3:PutLifecycleConfiguration", Bucket)
        }
        "GetObjectLockConfiguration" => ("s3:GetBucketObjectLockConfiguration", Bucket),
        "PutObjectLockConfiguration" => ("s3:PutBucketObjectLockConfiguration", Bucket),
        "GetObjectRetention" => ("s3:GetObjectRetention", Object),
        "PutObjectRetention" => ("s3:PutObjectRetention", Object),
        "GetObjectLegalHold" => ("s3:GetObjectLegalHold", Object),
        "PutObjectLegalHold" => ("s3:PutObjectLegalHold", Object),
        // DeleteObjects is decided key by key in the handler.
        "DeleteObjects" => ("s3:DeleteObject", Bucket),
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => ("s3:PutObject", Object),
        "GetObject" | "HeadObject" => ("s3:GetObject", Object),
        "GetObjectAttributes" => ("s3:GetObjectAttributes", Object),
        "DeleteObject" => ("s3:DeleteObject", Object),
        "AbortMultipartUpload" => ("s3:AbortMultipartUpload", Object),
        "ListParts" => ("s3:ListMultipartUploadParts", Object),
        _ => return None,
    })
}

/// Reading or deleting a named version (`?versionId=`) needs the action's
/// `*Version` form, as S3 (s3:GetObjectVersion, s3:DeleteObjectVersion).
fn version_action(action: &'static str, uri: &http::Uri) -> &'static str {
    let named = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "versionId" || p.starts_with("versionId="))
    });
    match action {
        "s3:GetObject" if named => "s3:GetObjectVersion",
        "s3:GetObjectAttributes" if named => "s3:GetObjectVersionAttributes",
        "s3:DeleteObject" if named => "s3:DeleteObjectVersion",
        "s3:GetObjectTagging" if named => "s3:GetObjectVersionTagging",
        "s3:PutObjectTagging" if named => "s3:PutObjectVersionTagging",
        "s3:DeleteObjectTagging" if named => "s3:DeleteObjectVersionTagging",
        "s3:GetObjectAcl" if named => "s3:GetObjectVersionAcl",
        "s3:PutObjectAcl" if named => "s3:PutObjectVersionAcl",
        other => other,
    }
}

/// The condition keys of a request (aws:* and the s3:* ones Kura knows).
/// Also used by PostObject (`s3::post_object`), which s3s never sees.
pub fn condition_context(
    principal: Option<&Principal>,
    remote: Option<RemoteAddr>,
    secure: bool,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> ConditionContext {
    RequestFacts::of(remote, secure, uri, headers).context(principal)
}

/// What a request's condition keys are made of, taken as it arrives (cheap:
/// no formatting, nothing copied for a request without a query or ACL
/// header); [`Caller::context`] builds the keys only when a policy asks.
#[derive(Debug)]
pub struct RequestFacts {
    now: time::OffsetDateTime,
    remote: Option<RemoteAddr>,
    secure: bool,
    query: Option<String>,
    acl: Option<String>,
    /// Signature version and auth type, for a signed request.
    auth: (&'static str, &'static str),
}

impl RequestFacts {
    pub fn of(
        remote: Option<RemoteAddr>,
        secure: bool,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Self {
        let signed_v4 = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|a| a.starts_with("AWS4-"));
        let auth = match signed_v4 {
            Some(true) => ("AWS4-HMAC-SHA256", "REST-HEADER"),
            Some(false) => ("AWS", "REST-HEADER"),
            None if uri.query().is_some_and(|q| q.contains("X-Amz-Signature=")) => {
                ("AWS4-HMAC-SHA256", "REST-QUERY-STRING")
            }
            None => ("AWS", "REST-QUERY-STRING"),
        };
        RequestFacts {
            now: time::OffsetDateTime::now_utc(),
            remote,
            secure,
            query: uri.query().map(str::to_string),
            acl: headers
                .get("x-amz-acl")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            auth,
        }
    }

    /// The condition keys, for `principal` (None: anonymous).
    pub fn context(&self, principal: Option<&Principal>) -> ConditionContext {
        let mut c = ConditionContext::new();
        if let Ok(t) = self
            .now
            .format(&time::format_description::well_known::Rfc3339)
        {
            c.set("aws:CurrentTime", t);
        }
        c.set("aws:EpochTime", self.now.unix_timestamp().to_string());
        c.set(
            "aws:SecureTransport",
            if self.secure { "true" } else { "false" },
        );
        if let Some(RemoteAddr(addr)) = self.remote {
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
        if let Some(q) = &self.query {
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
        if let Some(acl) = &self.acl {
            c.set("s3:x-amz-acl", acl.clone());
        }
        if principal.is_some() {
            c.set("s3:signatureversion", self.auth.0);
            c.set("s3:authType", self.auth.1);
        }
        c
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
        let secure = cx.extensions_mut().get::<SecureTransport>().is_some();
        // SSE-C keys only over TLS (or loopback), on every operation.
        crate::s3::encryption::check_customer_key_transport(
            cx.headers(),
            secure,
            remote.map(|r| r.0),
        )?;
        let facts = RequestFacts::of(remote, secure, cx.uri(), cx.headers());
        let caller = Arc::new(Caller::of_request(principal, facts));
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
            crate::ratelimit::admit(ctx, cx, &caller, None, None).await?;
            crate::usage::traffic::note(cx, &caller, None);
            cx.extensions_mut().insert(Authorized {
                caller,
                bucket_name: None,
                bucket: None,
                object_gate: ObjectGate::default(),
            });
            return Ok(());
        };
        let name = BucketName::resolve(&requested, caller.tenant());
        let Some((action, level)) = action_of(op).map(|(a, l)| (version_action(a, cx.uri()), l))
        else {
            // Not implemented: 501 for callers who could ask, 403 for anonymous ones.
            if caller.principal.is_none() {
                return Err(GwError::AccessDenied);
            }
            cx.extensions_mut().insert(Authorized {
                caller,
                bucket_name: Some(name),
                bucket: None,
                object_gate: ObjectGate::default(),
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
            crate::ratelimit::admit(ctx, cx, &caller, Some(&name), None).await?;
            crate::usage::traffic::note(cx, &caller, Some(&name));
            cx.extensions_mut().insert(Authorized {
                caller,
                bucket_name: Some(name),
                bucket: None,
                object_gate: ObjectGate::default(),
            });
            return Ok(());
        }
        let bucket = ctx
            .meta
            .get_shared::<BucketRecord>(Cf::Meta, &name.key())
            .await?;
        let mut object_gate = ObjectGate::default();
        if let Some(b) = &bucket {
            // DeleteObjects is decided per key by its handler.
            if op != "DeleteObjects" {
                match check_resource(ctx, &caller, action, &name, &b.record, key)? {
                    Some(gate) => object_gate = gate,
                    None => return Err(GwError::AccessDenied),
                }
            }
        } else if caller.principal.is_none() {
            // An anonymous caller learns nothing about which names exist.
            return Err(GwError::AccessDenied);
        }
        // Rate limits count allowed requests only (crate::ratelimit).
        let record = bucket.as_ref().map(|b| &b.record);
        crate::ratelimit::admit(ctx, cx, &caller, Some(&name), record).await?;
        crate::usage::traffic::note(cx, &caller, Some(&name));
        cx.extensions_mut().insert(Authorized {
            caller,
            bucket_name: Some(name),
            bucket,
            object_gate,
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
                    context: caller.context(),
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
