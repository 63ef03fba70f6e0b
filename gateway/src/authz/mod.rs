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
//! [`authorize_bucket`], the same rules. A request allowed is then counted
//! against its rate limits (`crate::ratelimit::admit`) before it runs.
//!
//! The rules (docs/tenancy.md), in order:
//! 1. an explicit Deny in the user's policy or the bucket's policy refuses;
//! 2. an admin user (the root key) is allowed;
//! 3. the bucket's owner is allowed;
//! 4. an Allow in the bucket policy allows (this is how another tenant, or
//!    anonymous callers, are let in);
//! 5. an Allow in the user's policy allows on buckets of the user's own tenant;
//! 6. a grant in the bucket's ACL allows (`acl::bucket_permission`);
//! 7. reading an object, or its ACL, may still be allowed by the object's
//!    ACL: the check lets such a request through with an [`ObjectGate`]
//!    that the handler applies once it has read the object
//!    ([`Authorized::check_object`]; AccessDenied, never NoSuchKey, to a
//!    caller who may not list the bucket);
//! 8. anything else is refused (`AccessDenied`), the reason in the debug log.
//!
//! With BucketOwnerEnforced object ownership, ACLs (6, 7) count for nothing;
//! the bucket's public access block can make public ACL grants count for
//! nothing (IgnorePublicAcls) and a public bucket policy serve only the
//! bucket's own tenant (RestrictPublicBuckets).
//!
//! Files: `access.rs` (the hook, operation → action, condition keys),
//! `decide.rs` (the rules above, object gates), `acl.rs` (ACLs), `policy/`
//! (the policy engine); this file holds the types they share.

mod access;
pub mod acl;
mod decide;
pub mod policy;

pub use access::{action_of, condition_context, Access, Level, RequestFacts};
pub use decide::{
    acls_enabled, authorize_bucket, decide, decide_with, owner_id, owns, BucketFacts, Deferred,
    ObjectGate,
};

use std::net::SocketAddr;
use std::sync::Arc;

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, ObjectOwnership, ObjectRecord};
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Error, S3Result};

use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::identity::{self, Principal};
use crate::meta::Versioned;
use acl::Acl;
use policy::{ConditionContext, Decision, Policy};

/// The client's address, put into each request's extensions by the listener.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// Present in a request's extensions when it came over TLS (`aws:SecureTransport`).
#[derive(Clone, Copy, Debug)]
pub struct SecureTransport;

/// Who is calling, and the condition keys of this request.
#[derive(Debug)]
pub struct Caller {
    /// `None`: an anonymous (unsigned) request.
    pub principal: Option<Arc<Principal>>,
    context: std::sync::OnceLock<ConditionContext>,
    /// What `context` is built from when a policy first asks (most requests
    /// meet no policy: building the keys for each cost 2% of the gateway's
    /// CPU on small PUTs). None when the context was given.
    facts: Option<RequestFacts>,
}

impl Caller {
    /// A caller with its condition keys already made.
    pub fn new(principal: Option<Arc<Principal>>, context: ConditionContext) -> Self {
        Caller {
            principal,
            context: context.into(),
            facts: None,
        }
    }

    /// A caller whose condition keys are made from `facts` when needed.
    pub fn of_request(principal: Option<Arc<Principal>>, facts: RequestFacts) -> Self {
        Caller {
            principal,
            context: std::sync::OnceLock::new(),
            facts: Some(facts),
        }
    }

    /// The condition keys of this request.
    pub fn context(&self) -> &ConditionContext {
        self.context.get_or_init(|| {
            self.facts
                .as_ref()
                .map(|f| f.context(self.principal.as_deref()))
                .unwrap_or_default()
        })
    }

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
    /// What reading the addressed object still requires of its ACL.
    pub object_gate: ObjectGate,
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

    /// Applies the object half of the access check to the addressed
    /// object (`None`: it does not exist); every handler that reads an
    /// object calls this once it has the record.
    pub fn check_object(&self, object: Option<&ObjectRecord>) -> GwResult<()> {
        self.object_gate.check(&self.caller, object)
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
    /// Not allowed at the bucket level, but the object's ACL may allow it
    /// (object reads only); why the bucket level did not allow it.
    Defer(String),
}

impl Verdict {
    fn allowed(&self, action: &str, bucket: &BucketName, key: Option<&str>) -> bool {
        match self {
            Verdict::Allow(_) => true,
            Verdict::Deny(why) | Verdict::Defer(why) => {
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
