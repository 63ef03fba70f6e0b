//! The gateway's one policy engine: parses and validates AWS-style policy
//! documents (bucket and user policies) and decides a request against one.
//! Pure logic: no I/O, no async, no panic on any input.
//!
//! Supported: Version 2012-10-17 / 2008-10-17; Sid, Effect; Principal/NotPrincipal
//! (`*`, `arn:aws:iam::TENANT:user/NAME` and `:root`, canonical ids);
//! Action/NotAction and Resource/NotResource with `*` `?`; policy variables
//! (`${aws:username}`, `${aws:userid}`, single-valued context keys, `${*}` `${?}`
//! `${$}`; only under 2012-10-17, as in AWS); String, Arn, Numeric, Date, Bool,
//! IpAddress and Null conditions with `IfExists`, `ForAnyValue:`, `ForAllValues:`.
//!
//! Not here: combining policies with ownership (`authz::decide_with`), Binary
//! operators, variable defaults (`${k, 'd'}`), role/STS principals (refused),
//! Service/Federated principals (accepted, never match), and knowing which
//! condition keys exist (unknown ones are just absent). Start at [`Policy::parse`].

mod condition;
mod date;
mod document;
mod json;
mod matcher;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use document::{Effect, Statement};
use matcher::Resolver;

/// AWS's limit on a bucket policy's size.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// Why a policy document was refused (S3 `MalformedPolicy`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON at all (or a duplicate key, or nested too deep).
    #[error("Policies must be valid JSON: {0}")]
    Json(String),
    /// JSON, but not a valid policy; the message names the element.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "Policy exceeds the maximum allowed size of {} bytes",
        MAX_POLICY_BYTES
    )]
    TooLarge,
}

/// A parsed, validated policy, with the text it was parsed from.
#[derive(Debug, Clone)]
pub struct Policy {
    text: String,
    statements: Vec<Statement>,
}

impl Policy {
    pub fn parse(json: &str) -> Result<Policy, PolicyError> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        Ok(Policy {
            text: json.to_owned(),
            statements: document::parse(json)?,
        })
    }

    /// The document exactly as it was sent.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every Resource / NotResource names only `bucket` of `tenant`
    /// (`arn:aws:s3:::BUCKET`, `arn:aws:s3:::BUCKET/...`, the same with
    /// `arn:aws:s3::TENANT:`, or `*`), with no wildcard or variable before
    /// the `/` that ends the bucket name. PutBucketPolicy's check.
    pub fn check_resources_in_bucket(&self, tenant: &str, bucket: &str) -> Result<(), PolicyError> {
        for (i, st) in self.statements.iter().enumerate() {
            if let Some(r) = st
                .resources
                .items
                .iter()
                .find(|r| !r.in_bucket(tenant, bucket))
            {
                return Err(PolicyError::Invalid(format!(
                    "Policy has invalid resource: \"{}\" in Statement[{i}] is not bucket \"{bucket}\" \
                     or its objects",
                    r.raw()
                )));
            }
        }
        Ok(())
    }

    /// Every statement names a Principal or NotPrincipal (bucket policies
    /// need one on each).
    pub fn has_principals(&self) -> bool {
        self.statements.iter().all(|s| s.principal.is_some())
    }

    /// Some statement names a Principal or NotPrincipal (user policies must
    /// have none: check this, not `!has_principals()`).
    pub fn names_any_principal(&self) -> bool {
        self.statements.iter().any(|s| s.principal.is_some())
    }

    /// Whether the policy is public in AWS's sense (GetBucketPolicyStatus
    /// `IsPublic`): some Allow applies to anonymous callers (Principal `*`,
    /// or a NotPrincipal that does not exclude `*`) and none of its
    /// conditions pins the caller to fixed source addresses or identities.
    pub fn grants_anonymous(&self) -> bool {
        self.statements.iter().any(|st| {
            st.effect == Effect::Allow
                && st
                    .principal
                    .as_ref()
                    .is_some_and(|p| p.matches(&Principal::Anonymous))
                && !st.conditions.iter().any(|c| c.pins_caller())
        })
    }

    /// Walks every statement: a matching Deny decides at once; otherwise the
    /// first matching Allow; otherwise nothing applies.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let path = match req.key {
            Some(key) => format!("{}/{}", req.bucket, key),
            None => req.bucket.to_owned(),
        };
        let vars = Vars {
            principal: &req.principal,
            context: req.context,
        };
        let mut allow = None;
        for (i, st) in self.statements.iter().enumerate() {
            if !applies(st, req, &path, &vars) {
                continue;
            }
            let reason = match &st.sid {
                Some(sid) if !sid.is_empty() => format!("Statement[{i}] (Sid {sid:?})"),
                _ => format!("Statement[{i}]"),
            };
            match st.effect {
                Effect::Deny => return Decision::ExplicitDeny { reason },
                Effect::Allow => {
                    allow.get_or_insert(reason);
                }
            }
        }
        match allow {
            Some(reason) => Decision::Allow { reason },
            None => Decision::NotApplicable,
        }
    }
}

/// Cheapest checks first; conditions last.
fn applies(st: &Statement, req: &Request<'_>, path: &str, vars: &Vars<'_>) -> bool {
    if req.principal_required {
        match &st.principal {
            Some(p) if p.matches(&req.principal) => {}
            _ => return false,
        }
    }
    st.actions.matches(req.action)
        && st.vars.iter().all(|key| vars.resolve(key).is_some())
        && st.resources.matches(req.tenant, path, vars)
        && st.conditions.iter().all(|c| c.holds(req.context, vars))
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// An unsigned request: matched only by `"*"`.
    Anonymous,
    /// `tenant` "" is the root tenant; `id` the canonical user id.
    User {
        tenant: &'a str,
        name: &'a str,
        id: &'a str,
    },
}

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: Principal<'a>,
    /// "s3:GetObject" etc. (matched case-insensitively, the service prefix too).
    pub action: &'a str,
    /// The bucket's tenant ("" = root tenant).
    pub tenant: &'a str,
    /// The bucket's plain name (without tenant).
    pub bucket: &'a str,
    /// The object key for object-level actions; `None` for bucket-level ones.
    pub key: Option<&'a str>,
    pub context: &'a ConditionContext,
    /// true for bucket policies: a statement without Principal/NotPrincipal
    /// never applies. false for user policies: Principal is ignored and
    /// every statement is about the request's principal.
    pub principal_required: bool,
}

/// Condition keys with their values for one request. Key names are
/// case-insensitive (stored lowercased, tag keys in
/// `s3:ExistingObjectTag/<key>` too); values are kept as given.
#[derive(Default, Debug, Clone)]
pub struct ConditionContext {
    values: HashMap<String, Vec<String>>,
}

impl ConditionContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// A single-valued key (replaces any earlier value).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_lowercase(), vec![value.into()]);
    }

    /// A multi-valued key. An empty list counts as the key being absent.
    pub fn set_many(&mut self, key: &str, values: Vec<String>) {
        self.values.insert(key.to_lowercase(), values);
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.get_lowercase(&key.to_lowercase())
    }

    /// [`get`](Self::get) for a key already lowercased (parsed policies
    /// store them so).
    fn get_lowercase(&self, key: &str) -> Option<&[String]> {
        self.values.get(key).map(Vec::as_slice)
    }
}

/// The outcome of one policy for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A Deny statement matched: refuse whatever else allows. `reason` names
    /// the statement (index and Sid) for the debug log.
    ExplicitDeny {
        reason: String,
    },
    Allow {
        reason: String,
    },
    /// No statement applies.
    NotApplicable,
}

/// Policy variables of one request.
struct Vars<'r> {
    principal: &'r Principal<'r>,
    context: &'r ConditionContext,
}

impl Resolver for Vars<'_> {
    fn resolve(&self, key: &str) -> Option<&str> {
        match (key, self.principal) {
            // From the authenticated principal, never from anything the
            // request could carry; anonymous callers have neither.
            ("aws:username", Principal::User { name, .. }) => Some(name),
            ("aws:userid", Principal::User { id, .. }) => Some(id),
            ("aws:username" | "aws:userid", Principal::Anonymous) => None,
            // Other keys stand in only when they hold exactly one value.
            _ => match self.context.get_lowercase(key) {
                Some([value]) => Some(value),
                _ => None,
            },
        }
    }
}
