//! Put/Get/DeleteBucketLifecycleConfiguration (docs/decisions/0032). The
//! rules live in the bucket record (`BucketRecord.lifecycle`); the worker
//! that applies them is `crate::lifecycle`.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::lifecycle::config;
use crate::s3::common::{load_bucket, update_bucket};

pub async fn put_bucket_lifecycle_configuration(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> GwResult<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let cfg = config::from_dto(req.input.lifecycle_configuration.as_ref())?;
    update_bucket(ctx, &req.extensions, |rec| {
        rec.lifecycle = Some(cfg.clone());
        Ok(())
    })
    .await?;
    Ok(S3Response::new(
        PutBucketLifecycleConfigurationOutput::default(),
    ))
}

pub async fn get_bucket_lifecycle_configuration(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> GwResult<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let bucket = load_bucket(&req.extensions)?.record;
    let cfg = bucket
        .lifecycle
        .filter(|c| !c.rules.is_empty())
        .ok_or(GwError::NoSuchLifecycleConfiguration)?;
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(config::to_dto(&cfg)),
        ..Default::default()
    }))
}

pub async fn delete_bucket_lifecycle(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> GwResult<S3Response<DeleteBucketLifecycleOutput>> {
    update_bucket(ctx, &req.extensions, |rec| {
        rec.lifecycle = None;
        Ok(())
    })
    .await?;
    let mut resp = S3Response::new(DeleteBucketLifecycleOutput::default());
    resp.status = Some(http::StatusCode::NO_CONTENT);
    Ok(resp)
}
