//! Reading a policy document into statements, and matching a statement's
//! Principal, Action and Resource against a request.
//!
//! Every field is checked by name and shape; anything unknown is an error
//! rather than ignored, since an ignored element would silently widen or
//! narrow what the author meant.

use super::condition::{self, Condition};
use super::json::{invalid, string_or_array, Json};
use super::matcher::{NoVars, Resolver, Template};
use super::{PolicyError, Principal};

const VERSION_2012: &str = "2012-10-17";
const VERSION_2008: &str = "2008-10-17";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
pub(super) struct Statement {
    pub(super) sid: Option<String>,
    pub(super) effect: Effect,
    /// Principal or NotPrincipal, if the statement names one.
    pub(super) principal: Option<Principals>,
    pub(super) actions: Actions,
    pub(super) resources: Resources,
    pub(super) conditions: Vec<Condition>,
    /// Every policy variable used in Resource and Condition (lowercased,
    /// sorted, deduplicated). AWS treats a statement whose variable cannot be
    /// resolved as not applying, so these are checked before matching.
    pub(super) vars: Vec<String>,
}

/// Parses and validates a whole document.
pub(super) fn parse(text: &str) -> Result<Vec<Statement>, PolicyError> {
    let root = Json::parse(text)?;
    let Json::Obj(fields) = &root else {
        return Err(invalid(format!(
            "a policy must be a JSON object, found {}",
            root.kind()
        )));
    };
    let mut version = None;
    let mut statement = None;
    for (name, v) in fields {
        match name.as_str() {
            "Version" => match v {
                Json::Str(s) if s == VERSION_2012 || s == VERSION_2008 => {
                    version = Some(s.as_str())
                }
                Json::Str(s) => {
                    return Err(invalid(format!(
                        "Version must be \"{VERSION_2012}\" or \"{VERSION_2008}\", found \"{s}\""
                    )))
                }
                other => {
                    return Err(invalid(format!(
                        "Version must be a string, found {}",
                        other.kind()
                    )))
                }
            },
            "Id" => {
                if !matches!(v, Json::Str(_)) {
                    return Err(invalid(format!("Id must be a string, found {}", v.kind())));
                }
            }
            "Statement" => statement = Some(v),
            other => return Err(invalid(format!("unknown field \"{other}\" in policy"))),
        }
    }
    let statement = statement.ok_or_else(|| invalid("missing required field Statement"))?;
    // Before 2012-10-17 (and without a Version) AWS reads `${...}` literally.
    let variables = version == Some(VERSION_2012);
    let list: Vec<&Json> = match statement {
        Json::Obj(_) => vec![statement],
        Json::Arr(items) if items.is_empty() => {
            return Err(invalid("Statement must not be an empty list"))
        }
        Json::Arr(items) => items.iter().collect(),
        other => {
            return Err(invalid(format!(
                "Statement must be an object or a list of objects, found {}",
                other.kind()
            )))
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, s)| parse_statement(s, &format!("Statement[{i}]"), variables))
        .collect()
}

fn parse_statement(v: &Json, loc: &str, variables: bool) -> Result<Statement, PolicyError> {
    let Json::Obj(fields) = v else {
        return Err(invalid(format!(
            "{loc} must be an object, found {}",
            v.kind()
        )));
    };
    let mut sid = None;
    let mut effect = None;
    // (negated, value) of the element pairs that exclude each other.
    let mut principal: Option<(bool, &Json)> = None;
    let mut action: Option<(bool, &Json)> = None;
    let mut resource: Option<(bool, &Json)> = None;
    let mut conditions = Vec::new();
    for (name, value) in fields {
        let (slot, negated, pair) = match name.as_str() {
            "Sid" => {
                let Json::Str(s) = value else {
                    return Err(invalid(format!(
                        "{loc}.Sid must be a string, found {}",
                        value.kind()
                    )));
                };
                sid = Some(s.clone());
                continue;
            }
            "Effect" => {
                effect = Some(match value {
                    Json::Str(s) if s == "Allow" => Effect::Allow,
                    Json::Str(s) if s == "Deny" => Effect::Deny,
                    Json::Str(s) => {
                        return Err(invalid(format!(
                            "{loc}.Effect must be \"Allow\" or \"Deny\", found \"{s}\""
                        )))
                    }
                    other => {
                        return Err(invalid(format!(
                            "{loc}.Effect must be \"Allow\" or \"Deny\", found {}",
                            other.kind()
                        )))
                    }
                });
                continue;
            }
            "Condition" => {
                conditions = condition::parse_block(value, &format!("{loc}.Condition"), variables)?;
                continue;
            }
            "Principal" => (&mut principal, false, "Principal and NotPrincipal"),
            "NotPrincipal" => (&mut principal, true, "Principal and NotPrincipal"),
            "Action" => (&mut action, false, "Action and NotAction"),
            "NotAction" => (&mut action, true, "Action and NotAction"),
            "Resource" => (&mut resource, false, "Resource and NotResource"),
            "NotResource" => (&mut resource, true, "Resource and NotResource"),
            other => return Err(invalid(format!("{loc}: unknown field \"{other}\""))),
        };
        if slot.is_some() {
            return Err(invalid(format!("{loc}: {pair} cannot both be present")));
        }
        *slot = Some((negated, value));
    }
    let effect = effect.ok_or_else(|| invalid(format!("{loc}: missing required field Effect")))?;
    let (not_action, action) = action.ok_or_else(|| {
        invalid(format!(
            "{loc}: missing required field Action (or NotAction)"
        ))
    })?;
    let (not_resource, resource) = resource.ok_or_else(|| {
        invalid(format!(
            "{loc}: missing required field Resource (or NotResource)"
        ))
    })?;
    let principal = match principal {
        Some((negated, v)) => Some(Principals::parse(v, negated, loc)?),
        None => None,
    };
    let actions = Actions::parse(action, not_action, loc)?;
    let resources = Resources::parse(resource, not_resource, loc, variables)?;
    let mut vars: Vec<String> = resources
        .vars()
        .chain(conditions.iter().flat_map(|c| c.vars()))
        .map(str::to_owned)
        .collect();
    vars.sort();
    vars.dedup();
    Ok(Statement {
        sid,
        effect,
        principal,
        actions,
        resources,
        conditions,
        vars,
    })
}

// --- Principal

#[derive(Debug, Clone)]
pub(super) struct Principals {
    /// NotPrincipal: applies to every principal the entries do not match.
    negated: bool,
    entries: Vec<PrincipalEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalEntry {
    /// `"*"`: everyone, anonymous callers included.
    Everyone,
    /// `arn:aws:iam::TENANT:user/NAME`
    User { tenant: String, name: String },
    /// `arn:aws:iam::TENANT:root`: every user of the tenant.
    Tenant(String),
    /// A user's canonical id.
    Id(String),
    /// `Service` / `Federated` principals: valid, but no Kura caller is one.
    Unmatchable,
}

impl Principals {
    fn parse(v: &Json, negated: bool, loc: &str) -> Result<Principals, PolicyError> {
        let field = if negated { "NotPrincipal" } else { "Principal" };
        let loc = format!("{loc}.{field}");
        let mut entries = Vec::new();
        match v {
            Json::Str(s) if s == "*" => entries.push(PrincipalEntry::Everyone),
            Json::Str(s) => {
                return Err(invalid(format!(
                    "Invalid principal in policy: \"{s}\" in {loc} (a bare string must be \"*\"; \
                     name users as {{\"AWS\": \"arn:aws:iam::TENANT:user/NAME\"}})"
                )))
            }
            Json::Obj(kinds) if kinds.is_empty() => {
                return Err(invalid(format!(
                    "Invalid principal in policy: {loc} is empty"
                )))
            }
            Json::Obj(kinds) => {
                for (kind, values) in kinds {
                    let loc = format!("{loc}.{kind}");
                    let values = string_or_array(values, &loc)?;
                    for s in values {
                        entries.push(match kind.as_str() {
                            "AWS" => parse_aws_principal(s, &loc)?,
                            "CanonicalUser" => PrincipalEntry::Id(plain_id(s, &loc)?),
                            "Service" | "Federated" => {
                                plain_id(s, &loc)?;
                                PrincipalEntry::Unmatchable
                            }
                            other => {
                                return Err(invalid(format!(
                                    "Invalid principal in policy: unknown principal type \"{other}\" in {loc} \
                                     (expected AWS or CanonicalUser)"
                                )))
                            }
                        });
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "Invalid principal in policy: {loc} must be \"*\" or an object, found {}",
                    other.kind()
                )))
            }
        }
        Ok(Principals { negated, entries })
    }

    pub(super) fn matches(&self, who: &Principal<'_>) -> bool {
        self.entries.iter().any(|e| e.matches(who)) != self.negated
    }
}

impl PrincipalEntry {
    fn matches(&self, who: &Principal<'_>) -> bool {
        match (self, who) {
            (PrincipalEntry::Everyone, _) => true,
            (_, Principal::Anonymous) => false,
            (
                PrincipalEntry::User { tenant, name },
                Principal::User {
                    tenant: t, name: n, ..
                },
            ) => tenant == t && name == n,
            (PrincipalEntry::Tenant(tenant), Principal::User { tenant: t, .. }) => tenant == t,
            (PrincipalEntry::Id(id), Principal::User { id: i, .. }) => id == i,
            (PrincipalEntry::Unmatchable, _) => false,
        }
    }
}

/// One value of `{"AWS": ...}`.
fn parse_aws_principal(s: &str, loc: &str) -> Result<PrincipalEntry, PolicyError> {
    if s == "*" {
        return Ok(PrincipalEntry::Everyone);
    }
    if !s.starts_with("arn:") {
        return Ok(PrincipalEntry::Id(plain_id(s, loc)?));
    }
    let bad = || {
        invalid(format!(
            "Invalid principal in policy: \"{s}\" in {loc} (expected \"*\", a canonical user id, \
             arn:aws:iam::TENANT:user/NAME or arn:aws:iam::TENANT:root)"
        ))
    };
    let (tenant, what) = s
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.split_once(':'))
        .ok_or_else(bad)?;
    // AWS allows no wildcard inside a principal ARN: only "*" alone.
    if s.contains(['*', '?']) {
        return Err(bad());
    }
    if what == "root" {
        return Ok(PrincipalEntry::Tenant(tenant.to_owned()));
    }
    match what.strip_prefix("user/") {
        Some(name) if !name.is_empty() => Ok(PrincipalEntry::User {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        }),
        _ => Err(bad()),
    }
}

/// A principal value that must be taken literally: non-empty, no wildcard.
fn plain_id(s: &str, loc: &str) -> Result<String, PolicyError> {
    if s.is_empty() || s.contains(['*', '?']) {
        return Err(invalid(format!(
            "Invalid principal in policy: \"{s}\" in {loc} (must be non-empty, without wildcards)"
        )));
    }
    Ok(s.to_owned())
}

// --- Action

#[derive(Debug, Clone)]
pub(super) struct Actions {
    negated: bool,
    patterns: Vec<Template>,
}

impl Actions {
    fn parse(v: &Json, negated: bool, loc: &str) -> Result<Actions, PolicyError> {
        let field = if negated { "NotAction" } else { "Action" };
        let loc = format!("{loc}.{field}");
        let patterns = string_or_array(v, &loc)?
            .into_iter()
            .map(|s| {
                let well_formed = s == "*"
                    || s.split_once(':').is_some_and(|(service, action)| {
                        !service.is_empty()
                            && service.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                            && !action.is_empty()
                            && action
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '?' | '-' | '_'))
                    });
                if well_formed {
                    Ok(Template::parse(s, false))
                } else {
                    Err(invalid(format!(
                        "Policy has invalid action: \"{s}\" in {loc} (expected service:Action, e.g. \
                         s3:GetObject or s3:Get*, or \"*\")"
                    )))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Actions { negated, patterns })
    }

    /// Case-insensitive, the service prefix too.
    pub(super) fn matches(&self, action: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| p.matches(action, &NoVars, true))
            != self.negated
    }
}

// --- Resource

#[derive(Debug, Clone)]
pub(super) struct Resources {
    negated: bool,
    pub(super) items: Vec<Resource>,
}

#[derive(Debug, Clone)]
pub(super) enum Resource {
    /// `"*"`
    Any,
    /// `arn:aws:s3::TENANT:PATH`; an empty TENANT matches any tenant (the
    /// policy lives on the bucket, so it names that bucket's tenant).
    Arn {
        raw: String,
        tenant: Template,
        path: Template,
    },
}

impl Resources {
    fn parse(
        v: &Json,
        negated: bool,
        loc: &str,
        variables: bool,
    ) -> Result<Resources, PolicyError> {
        let field = if negated { "NotResource" } else { "Resource" };
        let loc = format!("{loc}.{field}");
        let items = string_or_array(v, &loc)?
            .into_iter()
            .map(|s| Resource::parse(s, &loc, variables))
            .collect::<Result<_, _>>()?;
        Ok(Resources { negated, items })
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.items.iter().flat_map(|r| {
            let (tenant, path) = match r {
                Resource::Any => (None, None),
                Resource::Arn { tenant, path, .. } => (Some(tenant), Some(path)),
            };
            tenant.into_iter().chain(path).flat_map(|t| t.vars())
        })
    }

    /// `path` is `BUCKET` or `BUCKET/KEY`; resources match case-sensitively.
    pub(super) fn matches(&self, tenant: &str, path: &str, vars: &dyn Resolver) -> bool {
        self.items.iter().any(|r| r.matches(tenant, path, vars)) != self.negated
    }
}

impl Resource {
    fn parse(s: &str, loc: &str, variables: bool) -> Result<Resource, PolicyError> {
        if s == "*" {
            return Ok(Resource::Any);
        }
        // arn:aws:s3:REGION:TENANT:PATH; S3 bucket and object ARNs have no region.
        let parts = s
            .strip_prefix("arn:aws:s3:")
            .and_then(|r| r.split_once(':'))
            .filter(|(region, _)| region.is_empty())
            .and_then(|(_, r)| r.split_once(':'))
            .filter(|(_, path)| !path.is_empty());
        let Some((tenant, path)) = parts else {
            return Err(invalid(format!(
                "Policy has invalid resource: \"{s}\" in {loc} (expected \"*\", \
                 arn:aws:s3:::BUCKET, arn:aws:s3:::BUCKET/KEY or arn:aws:s3::TENANT:BUCKET...)"
            )));
        };
        Ok(Resource::Arn {
            raw: s.to_owned(),
            tenant: Template::parse(tenant, variables),
            path: Template::parse(path, variables),
        })
    }

    fn matches(&self, tenant: &str, path: &str, vars: &dyn Resolver) -> bool {
        match self {
            Resource::Any => true,
            Resource::Arn {
                tenant: t, path: p, ..
            } => (t.is_empty() || t.matches(tenant, vars, false)) && p.matches(path, vars, false),
        }
    }

    /// Whether it names only `bucket` of `tenant` (or its objects).
    pub(super) fn in_bucket(&self, tenant: &str, bucket: &str) -> bool {
        match self {
            Resource::Any => true,
            Resource::Arn {
                tenant: t, path, ..
            } => {
                let tenant_ok = t.is_empty() || t.literal().is_some_and(|l| l == tenant);
                let path_ok = path.literal().is_some_and(|l| l == bucket)
                    || path
                        .literal_prefix()
                        .strip_prefix(bucket)
                        .is_some_and(|rest| rest.starts_with('/'));
                !bucket.is_empty() && tenant_ok && path_ok
            }
        }
    }

    pub(super) fn raw(&self) -> &str {
        match self {
            Resource::Any => "*",
            Resource::Arn { raw, .. } => raw,
        }
    }
}
