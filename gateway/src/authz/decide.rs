//! The rules: who may do what to a bucket or object ([`decide`]), and the
//! object reads left to the object's ACL ([`ObjectGate`]).

use super::*;

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
    let bucket_acl = Acl::of_record(bucket.acl.as_ref(), owner_id(ctx, bucket));
    let block = bucket.public_access_block.unwrap_or_default();
    Ok(decide_with(
        caller,
        action,
        name,
        key,
        &BucketFacts {
            is_owner: caller
                .principal
                .as_ref()
                .is_some_and(|p| owns(ctx, p, bucket)),
            policy: bucket_policy.as_deref(),
            acl: acls_enabled(bucket).then_some(&bucket_acl),
            ignore_public_acls: block.ignore_public_acls,
            restrict_public_buckets: block.restrict_public_buckets,
        },
    ))
}

/// Whether ACLs count on this bucket (not with BucketOwnerEnforced).
pub fn acls_enabled(bucket: &BucketRecord) -> bool {
    bucket.object_ownership() != ObjectOwnership::BucketOwnerEnforced
}

/// What [`decide_with`] needs to know of the addressed bucket.
#[derive(Default)]
pub struct BucketFacts<'a> {
    pub is_owner: bool,
    pub policy: Option<&'a Policy>,
    /// The bucket's ACL; `None` when ACLs are disabled (BucketOwnerEnforced).
    pub acl: Option<&'a Acl>,
    /// PublicAccessBlock: public ACL grants count for nothing.
    pub ignore_public_acls: bool,
    /// PublicAccessBlock: a public policy allows only the bucket's tenant.
    pub restrict_public_buckets: bool,
}

/// [`decide`] once the bucket's owner, policy and ACL are known (pure).
pub fn decide_with(
    caller: &Caller,
    action: &str,
    name: &BucketName,
    key: Option<&str>,
    facts: &BucketFacts<'_>,
) -> Verdict {
    let (is_owner, bucket_policy) = (facts.is_owner, facts.policy);
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
        context: caller.context(),
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
    let mut restricted = "";
    if let Decision::Allow { reason } = bucket_decision {
        let own_tenant = caller.principal.is_some() && caller.tenant() == name.tenant;
        if facts.restrict_public_buckets
            && bucket_policy.is_some_and(|p| p.grants_anonymous())
            && !own_tenant
        {
            restricted = " (RestrictPublicBuckets: the public bucket policy serves only the bucket's tenant)";
        } else {
            return Verdict::Allow(format!("bucket policy allows: {reason}"));
        }
    }
    if let Decision::Allow { reason } = user_decision {
        if caller.tenant() == name.tenant {
            return Verdict::Allow(format!("user policy allows: {reason}"));
        }
    }
    let caller_id = caller.principal.as_ref().map(|p| p.user_id.as_str());
    if let Some(bucket_acl) = facts.acl {
        if let Some(needed) = acl::bucket_permission(action) {
            if bucket_acl.allows(caller_id, needed, facts.ignore_public_acls) {
                return Verdict::Allow(format!("bucket ACL grants {}", needed.as_str()));
            }
        }
    }
    let why = match &caller.principal {
        Some(_) => format!("neither ownership, a policy nor the bucket ACL grants it{restricted}"),
        None => format!("anonymous, and no policy or bucket ACL grants it{restricted}"),
    };
    if facts.acl.is_some() && key.is_some() && acl::object_permission(action).is_some() {
        return Verdict::Defer(why);
    }
    Verdict::Deny(why)
}

/// The part of an object read the access check leaves to the object's ACL
/// (empty: nothing left, the bucket level allowed it).
#[derive(Clone, Debug, Default)]
pub struct ObjectGate(Option<Arc<Deferred>>);

#[derive(Debug)]
pub struct Deferred {
    action: String,
    permission: acl::Permission,
    name: BucketName,
    /// Owner of objects stored without an ACL.
    bucket_owner: String,
    ignore_public_acls: bool,
    /// The caller may list the bucket: a missing object is NoSuchKey to it.
    may_list: bool,
    /// Why the bucket level did not allow it.
    reason: String,
}

impl ObjectGate {
    /// Whether `caller` may do the deferred action on `object` (`None`: it
    /// does not exist); the reason of a refusal goes to the debug log.
    pub fn check(&self, caller: &Caller, object: Option<&ObjectRecord>) -> GwResult<()> {
        let Some(d) = &self.0 else {
            return Ok(());
        };
        let caller_id = caller.principal.as_ref().map(|p| p.user_id.as_str());
        let verdict = match object {
            None if d.may_list => return Ok(()),
            None => Verdict::Deny(format!(
                "{}; the object does not exist, and the caller may not list the bucket",
                d.reason
            )),
            Some(rec) => {
                let object_acl = Acl::of_record(rec.acl.as_ref(), &d.bucket_owner);
                if object_acl.allows(caller_id, d.permission, d.ignore_public_acls) {
                    Verdict::Allow(format!("object ACL grants {}", d.permission.as_str()))
                } else {
                    Verdict::Deny(format!(
                        "{}; the object's ACL grants no {}",
                        d.reason,
                        d.permission.as_str()
                    ))
                }
            }
        };
        if verdict.allowed(&d.action, &d.name, Some("")) {
            Ok(())
        } else {
            Err(GwError::AccessDenied)
        }
    }
}

/// [`decide`] for a request's resource: `Some(gate)` when it may go on
/// (allowed, or allowed if the object's ACL grants it), `None` when it is
/// refused (the reason logged).
pub(crate) fn check_resource(
    ctx: &Ctx,
    caller: &Caller,
    action: &str,
    name: &BucketName,
    bucket: &BucketRecord,
    key: Option<&str>,
) -> GwResult<Option<ObjectGate>> {
    match decide(ctx, caller, action, name, bucket, key)? {
        Verdict::Allow(_) => Ok(Some(ObjectGate::default())),
        Verdict::Defer(reason) => {
            let Some(permission) = acl::object_permission(action) else {
                return Err(GwError::Internal(format!(
                    "{action} deferred to an object ACL"
                )));
            };
            // A missing version is news only to whoever may list versions.
            let list = if action.contains("Version") {
                "s3:ListBucketVersions"
            } else {
                "s3:ListBucket"
            };
            let may_list = matches!(
                decide(ctx, caller, list, name, bucket, None)?,
                Verdict::Allow(_)
            );
            let block = bucket.public_access_block.unwrap_or_default();
            Ok(Some(ObjectGate(Some(Arc::new(Deferred {
                action: action.to_string(),
                permission,
                name: name.clone(),
                bucket_owner: owner_id(ctx, bucket).to_string(),
                ignore_public_acls: block.ignore_public_acls,
                may_list,
                reason,
            })))))
        }
        deny @ Verdict::Deny(_) => {
            deny.allowed(action, name, key);
            Ok(None)
        }
    }
}

/// Reads a bucket and decides `action` on it for `caller` (a resource other
/// than the one the request addresses, e.g. CopyObject's source). The gate
/// is what reading the object still requires of its ACL
/// ([`ObjectGate::check`], once the caller has read the object).
pub async fn authorize_bucket(
    ctx: &Ctx,
    caller: &Caller,
    requested: &str,
    action: &str,
    key: Option<&str>,
) -> GwResult<(Versioned<BucketRecord>, ObjectGate)> {
    let name = BucketName::resolve(requested, caller.tenant());
    let bucket = ctx
        .meta
        .get_shared::<BucketRecord>(Cf::Meta, &name.key())
        .await?
        .ok_or(GwError::NoSuchBucket)?;
    match check_resource(ctx, caller, action, &name, &bucket.record, key)? {
        Some(gate) => Ok((bucket, gate)),
        None => Err(GwError::AccessDenied),
    }
}

#[cfg(test)]
mod acl_decision_tests {
    //! How ACLs combine with ownership and policies in [`decide_with`].
    use super::*;

    fn user(tenant: &str, id: &str) -> Caller {
        Caller::new(
            Some(Arc::new(Principal {
                user_id: id.into(),
                tenant: tenant.into(),
                name: id.into(),
                display_name: id.into(),
                admin: false,
                access_key: format!("AK-{id}"),
                policy: None,
            })),
            ConditionContext::new(),
        )
    }

    fn anonymous() -> Caller {
        Caller::new(None, ConditionContext::new())
    }

    fn bucket() -> BucketName {
        BucketName {
            tenant: "acme".into(),
            name: "photos".into(),
        }
    }

    fn verdict(caller: &Caller, action: &str, key: Option<&str>, facts: &BucketFacts) -> Verdict {
        decide_with(caller, action, &bucket(), key, facts)
    }

    #[test]
    fn bucket_acl_grants_and_object_reads_defer() {
        let public = acl::canned("public-read", "alice", "alice").unwrap();
        let facts = BucketFacts {
            acl: Some(&public),
            ..Default::default()
        };
        let anon = anonymous();
        assert!(matches!(
            verdict(&anon, "s3:ListBucket", None, &facts),
            Verdict::Allow(_)
        ));
        assert!(matches!(
            verdict(&anon, "s3:PutObject", Some("k"), &facts),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            verdict(&anon, "s3:GetBucketAcl", None, &facts),
            Verdict::Deny(_)
        ));
        // An object read is left to the object's ACL.
        assert!(matches!(
            verdict(&anon, "s3:GetObject", Some("k"), &facts),
            Verdict::Defer(_)
        ));
        assert!(matches!(
            verdict(&anon, "s3:PutObjectAcl", Some("k"), &facts),
            Verdict::Defer(_)
        ));
        // IgnorePublicAcls: the public grant counts for nothing.
        let ignoring = BucketFacts {
            acl: Some(&public),
            ignore_public_acls: true,
            ..Default::default()
        };
        assert!(matches!(
            verdict(&anon, "s3:ListBucket", None, &ignoring),
            Verdict::Deny(_)
        ));
        // BucketOwnerEnforced: no ACL counts, nothing is deferred.
        let disabled = BucketFacts::default();
        assert!(matches!(
            verdict(&anon, "s3:ListBucket", None, &disabled),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            verdict(&anon, "s3:GetObject", Some("k"), &disabled),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn grants_to_users_and_explicit_deny_wins() {
        let grants = acl::AclHeaders {
            write: Some(r#"id="carol""#),
            read_acp: Some(r#"id="carol""#),
            ..Default::default()
        }
        .to_acl("alice", "alice")
        .unwrap()
        .unwrap();
        let deny = Policy::parse(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::photos/*"}]}"#,
        )
        .unwrap();
        let facts = BucketFacts {
            acl: Some(&grants),
            policy: Some(&deny),
            ..Default::default()
        };
        let carol = user("globex", "carol");
        assert!(matches!(
            verdict(&carol, "s3:PutObject", Some("k"), &facts),
            Verdict::Allow(_)
        ));
        assert!(matches!(
            verdict(&carol, "s3:GetBucketAcl", None, &facts),
            Verdict::Allow(_)
        ));
        assert!(matches!(
            verdict(&carol, "s3:PutBucketAcl", None, &facts),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            verdict(&carol, "s3:ListBucket", None, &facts),
            Verdict::Deny(_)
        ));
        // WRITE would allow it; the policy's Deny wins.
        assert!(matches!(
            verdict(&carol, "s3:DeleteObject", Some("k"), &facts),
            Verdict::Deny(_)
        ));
        let bob = user("acme", "bob");
        assert!(matches!(
            verdict(&bob, "s3:PutObject", Some("k"), &facts),
            Verdict::Deny(_)
        ));
        // Ownership still allows what ACLs do not mention.
        let owner = BucketFacts {
            is_owner: true,
            ..facts
        };
        assert!(matches!(
            verdict(&user("acme", "alice"), "s3:PutBucketAcl", None, &owner),
            Verdict::Allow(_)
        ));
    }

    #[test]
    fn restrict_public_buckets() {
        let public = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}]}"#,
        )
        .unwrap();
        let open = BucketFacts {
            policy: Some(&public),
            ..Default::default()
        };
        let restricted = BucketFacts {
            policy: Some(&public),
            restrict_public_buckets: true,
            ..Default::default()
        };
        let get = |c: &Caller, f: &BucketFacts| verdict(c, "s3:GetObject", Some("k"), f);
        assert!(matches!(get(&anonymous(), &open), Verdict::Allow(_)));
        assert!(matches!(get(&anonymous(), &restricted), Verdict::Deny(_)));
        assert!(matches!(
            get(&user("globex", "carol"), &restricted),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            get(&user("acme", "bob"), &restricted),
            Verdict::Allow(_)
        ));
    }
}
