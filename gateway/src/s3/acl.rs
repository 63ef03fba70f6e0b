//! GetBucketAcl, PutBucketAcl, GetObjectAcl, PutObjectAcl,
//! Get/Put/DeleteBucketOwnershipControls, Get/Put/DeletePublicAccessBlock,
//! and the ACL each write stores (CreateBucket, PutObject, CopyObject,
//! CreateMultipartUpload).
//!
//! A bucket's ACL, object ownership and public access block live in its
//! record (so the access check reads them with the bucket), replaced by
//! compare-and-set like its policy; an object's ACL lives in its record.
//! A record without an ACL is private to its owner; what is stored is only
//! what differs from that. The model and the evaluation are `authz::acl`.

use std::sync::Arc;

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{self as pb, BucketRecord, ObjectOwnership as Ownership};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::acl::{self, Acl, AclHeaders};
use crate::authz::policy::Policy;
use crate::authz::{acls_enabled, owner_id, Authorized};
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::meta::RMW_ATTEMPTS;
use crate::s3::common::{check_key, owner, update_bucket};

/// The ACL headers of a request whose input has the usual `acl` and
/// `grant_*` fields (`grant_write` only where the operation has it).
macro_rules! acl_headers {
    ($input:expr) => {
        $crate::s3::acl::acl_headers!($input, None)
    };
    ($input:expr, $write:expr) => {
        $crate::authz::acl::AclHeaders {
            canned: $input.acl.as_ref().map(|a| a.as_str()),
            read: $input.grant_read.as_deref(),
            write: $write,
            read_acp: $input.grant_read_acp.as_deref(),
            write_acp: $input.grant_write_acp.as_deref(),
            full_control: $input.grant_full_control.as_deref(),
        }
    };
}
pub(crate) use acl_headers;

/// What a record stores for `acl`: nothing when it is the private ACL of
/// `default_owner` (the meaning of an absent ACL).
fn stored(acl: &Acl, default_owner: &str) -> Option<pb::Acl> {
    (*acl != Acl::private(default_owner)).then(|| acl.to_record())
}

/// AccessDenied for a public ACL on a bucket that blocks them.
fn check_public_acl(bucket: &BucketRecord, acl: &Acl) -> GwResult<()> {
    let blocked = bucket
        .public_access_block
        .as_ref()
        .is_some_and(|b| b.block_public_acls);
    if blocked && acl.is_public() {
        tracing::debug!(bucket = %bucket.name, "public ACL refused: BlockPublicAcls");
        return Err(GwError::AccessDenied);
    }
    Ok(())
}

/// AccessDenied for a public bucket policy on a bucket that blocks them
/// (PutBucketPolicy).
pub fn check_public_policy(bucket: &BucketRecord, policy: &Policy) -> GwResult<()> {
    let blocked = bucket
        .public_access_block
        .as_ref()
        .is_some_and(|b| b.block_public_policy);
    if blocked && policy.grants_anonymous() {
        tracing::debug!(bucket = %bucket.name, "public policy refused: BlockPublicPolicy");
        return Err(GwError::AccessDenied);
    }
    Ok(())
}

/// The ACL an object write stores (PutObject, CopyObject — never the
/// source's —, CreateMultipartUpload): what its headers ask for, else
/// private. Its owner is the writer, or the bucket owner with
/// BucketOwnerEnforced (then only `bucket-owner-full-control` or no ACL is
/// accepted) or with BucketOwnerPreferred and `bucket-owner-full-control`.
pub fn object_write_acl(
    ctx: &Ctx,
    auth: &Authorized,
    bucket: &BucketRecord,
    headers: &AclHeaders<'_>,
) -> GwResult<Option<pb::Acl>> {
    let bucket_owner = owner_id(ctx, bucket);
    let ownership = bucket.object_ownership();
    if ownership == Ownership::BucketOwnerEnforced {
        if !headers.is_none_or_bucket_owner_full_control() {
            return Err(GwError::AccessControlListNotSupported);
        }
        return Ok(None);
    }
    // Anonymous writers (a public-read-write bucket) leave their objects to the bucket owner.
    let writer = match auth.caller.user_id() {
        "" => bucket_owner,
        id => id,
    };
    let owner = if ownership == Ownership::BucketOwnerPreferred
        && headers.canned == Some("bucket-owner-full-control")
        && !headers.has_grants()
    {
        bucket_owner
    } else {
        writer
    };
    let acl = headers
        .to_acl(owner, bucket_owner)?
        .unwrap_or_else(|| Acl::private(owner));
    check_public_acl(bucket, &acl)?;
    Ok(stored(&acl, bucket_owner))
}

pub fn parse_ownership(s: &str) -> GwResult<Ownership> {
    match s {
        ObjectOwnership::OBJECT_WRITER => Ok(Ownership::ObjectWriter),
        ObjectOwnership::BUCKET_OWNER_PREFERRED => Ok(Ownership::BucketOwnerPreferred),
        ObjectOwnership::BUCKET_OWNER_ENFORCED => Ok(Ownership::BucketOwnerEnforced),
        other => Err(GwError::InvalidArgument(format!(
            "Invalid x-amz-object-ownership: {other:?}"
        ))),
    }
}

fn ownership_name(o: Ownership) -> &'static str {
    match o {
        Ownership::ObjectWriter => ObjectOwnership::OBJECT_WRITER,
        Ownership::BucketOwnerPreferred => ObjectOwnership::BUCKET_OWNER_PREFERRED,
        Ownership::BucketOwnerEnforced => ObjectOwnership::BUCKET_OWNER_ENFORCED,
    }
}

/// The ACL and object ownership of a new bucket (CreateBucket's
/// `x-amz-acl`, `x-amz-grant-*`, `x-amz-object-ownership`).
pub fn new_bucket_acl(
    owner: &str,
    headers: &AclHeaders<'_>,
    ownership: Option<&ObjectOwnership>,
) -> GwResult<(Option<pb::Acl>, Ownership)> {
    let ownership = match ownership {
        Some(o) => parse_ownership(o.as_str())?,
        None => Ownership::ObjectWriter,
    };
    let acl = headers.to_acl(owner, owner)?;
    if ownership == Ownership::BucketOwnerEnforced
        && acl.as_ref().is_some_and(|a| a.grants_to_others())
    {
        return Err(GwError::InvalidBucketAclWithObjectOwnership);
    }
    Ok((acl.and_then(|a| stored(&a, owner)), ownership))
}

/// The ACL a PutBucketAcl / PutObjectAcl asks for: from its headers or
/// from its AccessControlPolicy body (one of the two).
fn requested_acl(
    headers: &AclHeaders<'_>,
    body: Option<&AccessControlPolicy>,
    owner: &str,
    bucket_owner: &str,
) -> GwResult<Acl> {
    match body {
        Some(_) if !headers.is_empty() => Err(GwError::InvalidRequest(
            "Specifying both an ACL body and ACL headers is not allowed".into(),
        )),
        Some(policy) => from_dto(policy, owner),
        None => headers.to_acl(owner, bucket_owner)?.ok_or_else(|| {
            GwError::MalformedAcl(
                "The request has no ACL: send x-amz-acl, x-amz-grant-* or an AccessControlPolicy"
                    .into(),
            )
        }),
    }
}

/// An AccessControlPolicy body as an ACL of `owner` (its Owner, if given,
/// must be that owner: an ACL does not change owners).
fn from_dto(policy: &AccessControlPolicy, owner: &str) -> GwResult<Acl> {
    if let Some(id) = policy.owner.as_ref().and_then(|o| o.id.as_deref()) {
        if id != owner {
            tracing::debug!("ACL body names another owner");
            return Err(GwError::AccessDenied);
        }
    }
    let mut grants = Vec::new();
    for g in policy.grants.iter().flatten() {
        let grantee = g
            .grantee
            .as_ref()
            .ok_or_else(|| GwError::MalformedAcl("a Grant has no Grantee".into()))?;
        let permission = g
            .permission
            .as_ref()
            .and_then(|p| acl::Permission::parse(p.as_str()))
            .ok_or_else(|| GwError::MalformedAcl("a Grant has no valid Permission".into()))?;
        let grantee = if grantee.email_address.is_some() {
            return Err(GwError::UnresolvableGrantByEmailAddress);
        } else if let Some(id) = grantee.id.as_deref().filter(|s| !s.is_empty()) {
            acl::Grantee::User(id.to_string())
        } else if let Some(uri) = grantee.uri.as_deref() {
            acl::Grantee::group(uri)?
        } else {
            return Err(GwError::MalformedAcl(
                "a Grantee has neither ID nor URI".into(),
            ));
        };
        grants.push(acl::Grant {
            grantee,
            permission,
        });
    }
    Ok(Acl {
        owner: owner.to_string(),
        grants,
    })
}

fn grants_dto(acl: &Acl) -> Vec<Grant> {
    acl.grants
        .iter()
        .map(|g| {
            let grantee = match &g.grantee {
                acl::Grantee::User(id) => Grantee {
                    display_name: Some(id.clone()),
                    email_address: None,
                    id: Some(id.clone()),
                    type_: Type::from_static(Type::CANONICAL_USER),
                    uri: None,
                },
                group => Grantee {
                    display_name: None,
                    email_address: None,
                    id: None,
                    type_: Type::from_static(Type::GROUP),
                    uri: group.uri().map(str::to_string),
                },
            };
            Grant {
                grantee: Some(grantee),
                permission: Some(Permission::from_static(g.permission.as_str())),
            }
        })
        .collect()
}

fn no_content<T>(out: T) -> S3Response<T> {
    let mut resp = S3Response::new(out);
    resp.status = Some(http::StatusCode::NO_CONTENT);
    resp
}

pub async fn get_bucket_acl(
    ctx: &Arc<Ctx>,
    req: S3Request<GetBucketAclInput>,
) -> GwResult<S3Response<GetBucketAclOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?.record;
    let owner_id = owner_id(ctx, &bucket);
    let mut acl = if acls_enabled(&bucket) {
        Acl::of_record(bucket.acl.as_ref(), owner_id)
    } else {
        Acl::private(owner_id)
    };
    acl.owner = owner_id.to_string();
    Ok(S3Response::new(GetBucketAclOutput {
        grants: Some(grants_dto(&acl)),
        owner: Some(owner(&acl.owner)),
    }))
}

pub async fn put_bucket_acl(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketAclInput>,
) -> GwResult<S3Response<PutBucketAclOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?.record;
    if !acls_enabled(&bucket) {
        return Err(GwError::AccessControlListNotSupported);
    }
    let input = &req.input;
    let owner_id = owner_id(ctx, &bucket).to_string();
    let headers = acl_headers!(input, input.grant_write.as_deref());
    let acl = requested_acl(
        &headers,
        input.access_control_policy.as_ref(),
        &owner_id,
        &owner_id,
    )?;
    update_bucket(ctx, &req.extensions, |rec| {
        if !acls_enabled(rec) {
            return Err(GwError::AccessControlListNotSupported);
        }
        check_public_acl(rec, &acl)?;
        rec.acl = stored(&acl, &owner_id);
        Ok(())
    })
    .await?;
    tracing::info!(bucket = %bucket.name, public = acl.is_public(), "bucket ACL set");
    Ok(S3Response::new(PutBucketAclOutput {}))
}

pub async fn get_object_acl(
    ctx: &Arc<Ctx>,
    req: S3Request<GetObjectAclInput>,
) -> GwResult<S3Response<GetObjectAclOutput>> {
    let input = &req.input;
    let bucket = Authorized::of(&req.extensions)?.bucket()?.record;
    let (stored, _) = crate::s3::versioning::load_addressed(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
    )
    .await?;
    let rec = stored.record;
    let bucket_owner = owner_id(ctx, &bucket);
    let acl = if acls_enabled(&bucket) {
        Acl::of_record(rec.acl.as_ref(), bucket_owner)
    } else {
        Acl::private(bucket_owner)
    };
    Ok(S3Response::new(GetObjectAclOutput {
        grants: Some(grants_dto(&acl)),
        owner: Some(owner(&acl.owner)),
        request_charged: None,
    }))
}

pub async fn put_object_acl(
    ctx: &Arc<Ctx>,
    req: S3Request<PutObjectAclInput>,
) -> GwResult<S3Response<PutObjectAclOutput>> {
    let input = &req.input;
    check_key(&input.key)?;
    let auth = Authorized::of(&req.extensions)?;
    let bucket = auth.bucket()?.record;
    if !acls_enabled(&bucket) {
        return Err(GwError::AccessControlListNotSupported);
    }
    let bucket_owner = owner_id(ctx, &bucket);
    let headers = acl_headers!(input, input.grant_write.as_deref());
    for _ in 0..RMW_ATTEMPTS {
        // The addressed version (`versionId`'s, else the latest), each try.
        let (current, _) = crate::s3::versioning::load_addressed(
            ctx,
            &req.extensions,
            &input.key,
            input.version_id.as_deref(),
        )
        .await?;
        let okey = current.meta_key();
        // The object keeps its owner; only its grants change.
        let object_owner = Acl::of_record(current.record.acl.as_ref(), bucket_owner).owner;
        let acl = requested_acl(
            &headers,
            input.access_control_policy.as_ref(),
            &object_owner,
            bucket_owner,
        )?;
        check_public_acl(&bucket, &acl)?;
        let mut rec = current.record.clone();
        rec.acl = stored(&acl, bucket_owner);
        let value = keys::encode_value(&rec);
        if ctx
            .meta
            .swap(Cf::Meta, &okey, Some(&current.raw), &value)
            .await?
        {
            return Ok(S3Response::new(PutObjectAclOutput {
                request_charged: None,
            }));
        }
        tracing::debug!("object changed during its ACL update; retrying");
    }
    Err(GwError::Contention(
        "object changed during its ACL update".into(),
    ))
}

pub async fn get_bucket_ownership_controls(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetBucketOwnershipControlsInput>,
) -> GwResult<S3Response<GetBucketOwnershipControlsOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?.record;
    let name = ownership_name(bucket.object_ownership());
    Ok(S3Response::new(GetBucketOwnershipControlsOutput {
        ownership_controls: Some(OwnershipControls {
            rules: vec![OwnershipControlsRule {
                object_ownership: ObjectOwnership::from_static(name),
            }],
        }),
    }))
}

pub async fn put_bucket_ownership_controls(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketOwnershipControlsInput>,
) -> GwResult<S3Response<PutBucketOwnershipControlsOutput>> {
    let rules = &req.input.ownership_controls.rules;
    let [rule] = rules.as_slice() else {
        return Err(GwError::MalformedXml(
            "OwnershipControls must hold exactly one Rule".into(),
        ));
    };
    let ownership = parse_ownership(rule.object_ownership.as_str())?;
    update_bucket(ctx, &req.extensions, |rec| {
        let owner = owner_id(ctx, rec).to_string();
        if ownership == Ownership::BucketOwnerEnforced
            && Acl::of_record(rec.acl.as_ref(), &owner).grants_to_others()
        {
            return Err(GwError::InvalidBucketAclWithObjectOwnership);
        }
        rec.set_object_ownership(ownership);
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutBucketOwnershipControlsOutput {}))
}

pub async fn delete_bucket_ownership_controls(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketOwnershipControlsInput>,
) -> GwResult<S3Response<DeleteBucketOwnershipControlsOutput>> {
    update_bucket(ctx, &req.extensions, |rec| {
        rec.set_object_ownership(Ownership::ObjectWriter);
        Ok(())
    })
    .await?;
    Ok(no_content(DeleteBucketOwnershipControlsOutput {}))
}

pub async fn get_public_access_block(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetPublicAccessBlockInput>,
) -> GwResult<S3Response<GetPublicAccessBlockOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?.record;
    let b = bucket
        .public_access_block
        .ok_or(GwError::NoSuchPublicAccessBlockConfiguration)?;
    Ok(S3Response::new(GetPublicAccessBlockOutput {
        public_access_block_configuration: Some(PublicAccessBlockConfiguration {
            block_public_acls: Some(b.block_public_acls),
            block_public_policy: Some(b.block_public_policy),
            ignore_public_acls: Some(b.ignore_public_acls),
            restrict_public_buckets: Some(b.restrict_public_buckets),
        }),
    }))
}

pub async fn put_public_access_block(
    ctx: &Arc<Ctx>,
    req: S3Request<PutPublicAccessBlockInput>,
) -> GwResult<S3Response<PutPublicAccessBlockOutput>> {
    let c = &req.input.public_access_block_configuration;
    let block = pb::PublicAccessBlock {
        block_public_acls: c.block_public_acls.unwrap_or(false),
        ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
        block_public_policy: c.block_public_policy.unwrap_or(false),
        restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
    };
    update_bucket(ctx, &req.extensions, |rec| {
        rec.public_access_block = Some(block);
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutPublicAccessBlockOutput {}))
}

pub async fn delete_public_access_block(
    ctx: &Arc<Ctx>,
    req: S3Request<DeletePublicAccessBlockInput>,
) -> GwResult<S3Response<DeletePublicAccessBlockOutput>> {
    update_bucket(ctx, &req.extensions, |rec| {
        rec.public_access_block = None;
        Ok(())
    })
    .await?;
    Ok(no_content(DeletePublicAccessBlockOutput {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(owner: Option<&str>, grants: Vec<(Grantee, &'static str)>) -> AccessControlPolicy {
        AccessControlPolicy {
            owner: owner.map(super::owner),
            grants: Some(
                grants
                    .into_iter()
                    .map(|(g, p)| Grant {
                        grantee: Some(g),
                        permission: Some(Permission::from_static(p)),
                    })
                    .collect(),
            ),
        }
    }

    fn user(id: &str) -> Grantee {
        Grantee {
            display_name: None,
            email_address: None,
            id: Some(id.into()),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }
    }

    #[test]
    fn acl_bodies() {
        let all = Grantee {
            display_name: None,
            email_address: None,
            id: None,
            type_: Type::from_static(Type::GROUP),
            uri: Some(acl::ALL_USERS.into()),
        };
        let b = body(Some("o"), vec![(user("o"), "FULL_CONTROL"), (all, "READ")]);
        let a = from_dto(&b, "o").unwrap();
        assert!(a.is_public() && a.allows(None, acl::Permission::Read, false));
        // Back and forth through the DTOs.
        let again = body(Some("o"), vec![]);
        let again = AccessControlPolicy {
            grants: Some(grants_dto(&a)),
            ..again
        };
        assert_eq!(from_dto(&again, "o").unwrap(), a);
        assert!(matches!(
            from_dto(&body(Some("x"), vec![]), "o"),
            Err(GwError::AccessDenied)
        ));
        let email = Grantee {
            email_address: Some("a@b.c".into()),
            id: None,
            ..user("")
        };
        assert!(matches!(
            from_dto(&body(None, vec![(email, "READ")]), "o"),
            Err(GwError::UnresolvableGrantByEmailAddress)
        ));
        assert!(matches!(
            from_dto(&body(None, vec![(user("x"), "BOGUS")]), "o"),
            Err(GwError::MalformedAcl(_))
        ));
    }

    #[test]
    fn requests_carry_one_acl() {
        let canned = AclHeaders {
            canned: Some("public-read"),
            ..Default::default()
        };
        let b = body(None, vec![]);
        assert!(matches!(
            requested_acl(&canned, Some(&b), "o", "o"),
            Err(GwError::InvalidRequest(_))
        ));
        assert!(matches!(
            requested_acl(&AclHeaders::default(), None, "o", "o"),
            Err(GwError::MalformedAcl(_))
        ));
        assert!(requested_acl(&canned, None, "o", "o").unwrap().is_public());
    }

    #[test]
    fn new_buckets() {
        let none = AclHeaders::default();
        assert_eq!(
            new_bucket_acl("o", &none, None).unwrap(),
            (None, Ownership::ObjectWriter)
        );
        let public = AclHeaders {
            canned: Some("public-read"),
            ..Default::default()
        };
        let (acl, _) = new_bucket_acl("o", &public, None).unwrap();
        assert!(Acl::from_record(&acl.unwrap()).is_public());
        let enforced = ObjectOwnership::from_static(ObjectOwnership::BUCKET_OWNER_ENFORCED);
        assert!(matches!(
            new_bucket_acl("o", &public, Some(&enforced)),
            Err(GwError::InvalidBucketAclWithObjectOwnership)
        ));
        let private = AclHeaders {
            canned: Some("private"),
            ..Default::default()
        };
        assert_eq!(
            new_bucket_acl("o", &private, Some(&enforced)).unwrap(),
            (None, Ownership::BucketOwnerEnforced)
        );
        assert!(parse_ownership("Nope").is_err());
    }
}
