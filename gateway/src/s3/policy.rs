//! GetBucketPolicy, PutBucketPolicy, DeleteBucketPolicy, GetBucketPolicyStatus.
//!
//! The policy is stored as sent inside the bucket's record (one read gives
//! a request its bucket, owner and policy), replaced by compare-and-set. It
//! is validated as AWS does (`authz::policy`): well-formed, every statement
//! names a Principal, every Resource is this bucket or its objects.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::policy::Policy;
use crate::authz::Authorized;
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::s3::common::update_bucket;

/// Replaces the addressed bucket's policy ("" removes it).
async fn set_policy(ctx: &Ctx, ext: &http::Extensions, text: &str) -> GwResult<()> {
    update_bucket(ctx, ext, |rec| {
        rec.policy = text.to_string();
        Ok(())
    })
    .await
}

pub async fn put_bucket_policy(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketPolicyInput>,
) -> GwResult<S3Response<PutBucketPolicyOutput>> {
    let name = Authorized::of(&req.extensions)?.bucket_name()?.clone();
    let text = req.input.policy;
    let policy = Policy::parse(&text).map_err(|e| GwError::MalformedPolicy(e.to_string()))?;
    if !policy.has_principals() {
        return Err(GwError::MalformedPolicy(
            "Missing required field Principal".into(),
        ));
    }
    policy
        .check_resources_in_bucket(&name.tenant, &name.name)
        .map_err(|e| GwError::MalformedPolicy(e.to_string()))?;
    // PublicAccessBlock's BlockPublicPolicy.
    crate::s3::acl::check_public_policy(
        &Authorized::of(&req.extensions)?.bucket()?.record,
        &policy,
    )?;
    set_policy(ctx, &req.extensions, &text).await?;
    tracing::info!(tenant = %name.tenant, bucket = %name.name, "bucket policy set");
    let mut resp = S3Response::new(PutBucketPolicyOutput::default());
    resp.status = Some(http::StatusCode::NO_CONTENT);
    Ok(resp)
}

pub async fn get_bucket_policy(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetBucketPolicyInput>,
) -> GwResult<S3Response<GetBucketPolicyOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?;
    if bucket.record.policy.is_empty() {
        return Err(GwError::NoSuchBucketPolicy);
    }
    Ok(S3Response::new(GetBucketPolicyOutput {
        policy: Some(bucket.record.policy),
    }))
}

pub async fn delete_bucket_policy(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketPolicyInput>,
) -> GwResult<S3Response<DeleteBucketPolicyOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?;
    if !bucket.record.policy.is_empty() {
        set_policy(ctx, &req.extensions, "").await?;
    }
    let mut resp = S3Response::new(DeleteBucketPolicyOutput::default());
    resp.status = Some(http::StatusCode::NO_CONTENT);
    Ok(resp)
}

pub async fn get_bucket_policy_status(
    ctx: &Arc<Ctx>,
    req: S3Request<GetBucketPolicyStatusInput>,
) -> GwResult<S3Response<GetBucketPolicyStatusOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?;
    let is_public = match ctx.policies.get(&bucket.record.policy)? {
        Some(p) => p.grants_anonymous(),
        None => false,
    };
    Ok(S3Response::new(GetBucketPolicyStatusOutput {
        policy_status: Some(PolicyStatus {
            is_public: Some(is_public),
        }),
    }))
}
