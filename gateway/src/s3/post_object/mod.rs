//! PostObject: browser form uploads (`POST /bucket`, `multipart/form-data`),
//! handled here entirely; s3s never sees them (it would gather the whole
//! file part in memory before any access check). Decision 0028.
//!
//! One pass over the body:
//! 1. the fields before the file part are read, at most 20 KiB as AWS
//!    (`fields.rs`);
//! 2. the form's signature is checked (SigV4 or SigV2 over the base64
//!    policy, the secret from the identity store) and its policy document
//!    (expiration, `eq` / `starts-with` / object conditions, every field
//!    covered) — `policy.rs`;
//! 3. the caller is authorized as for PutObject (`authz::decide`,
//!    `s3:PutObject` on the key; anonymous forms only where the bucket's
//!    policy or ACL lets anonymous users write), then counted against rate
//!    limits. A refused form is answered here, before a byte of its file is
//!    read, and the connection closed;
//! 4. the file part streams through PutObject's writer (`data::writer`) and
//!    commit (`s3::put`), with the policy's `content-length-range` maximum
//!    as the writer's size cap, so a body that passes it is cut there and
//!    its fragments deleted; a body under the minimum is discarded;
//! 5. fields after the file part are skipped, as AWS ignores them.
//!
//! Memory per form: the fields (≤ 20 KiB), the parser's buffer (≤ one read
//! chunk, `fields::Paced`) and what any PUT holds in flight (a few stripes).

mod error;
mod fields;
mod policy;

pub use error::FormError;

use std::collections::HashMap;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use kura_metashard::client::Cf;
use kura_proto::meta::BucketRecord;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use s3s::dto::StreamingBlob;
use s3s::host::S3Host;
use s3s::Body;

use crate::authz::acl::AclHeaders;
use crate::authz::{
    self, Authorized, BucketName, Caller, ObjectGate, RemoteAddr, SecureTransport, Verdict,
};
use crate::context::{Ctx, MAX_SINGLE_PUT};
use crate::data::checksum::ChecksumPlan;
use crate::data::gc;
use crate::data::writer::{write_body_sealed, BodyOwner, WriteSpec, Written};
use crate::error::GwError;
use crate::front::form::FormLimit;
use crate::meta::now_ms;
use crate::s3::common::{
    check_key, check_user_metadata, format_http_date, parse_http_date, stored_content_encoding,
    url_encode, write_class,
};
use crate::s3::encryption;
use crate::s3::put::WritePrecondition;
use crate::s3::put::{commit_in_task, object_for_body};
use crate::usage::{quota, Scope};
use error::FormResult;
use fields::{Fields, FileStream, Paced, Progress};
use policy::{LengthRange, Policy, Signing};

/// A form POST addressed to a bucket: a PostObject.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub bucket: String,
    /// Addressed as `bucket.<domain>` rather than `/bucket`.
    pub virtual_hosted: bool,
}

/// The bucket a request posts a form to, when it is a PostObject;
/// `None` leaves the request to s3s (which answers form POSTs to objects
/// with MethodNotAllowed before reading a file part).
pub fn target<B>(req: &Request<B>, host: &dyn S3Host) -> Option<Target> {
    if !crate::front::form::is_form(req) {
        return None;
    }
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8()
        .ok()?;
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let vh_bucket = host_header.as_deref().and_then(|h| {
        host.parse_host_header(h)
            .ok()
            .and_then(|vh| vh.bucket().map(str::to_string))
    });
    match vh_bucket {
        Some(bucket) => (path == "/").then_some(Target {
            bucket,
            virtual_hosted: true,
        }),
        None => {
            let rest = path.strip_prefix('/')?;
            let bucket = rest.strip_suffix('/').unwrap_or(rest);
            (!bucket.is_empty() && !bucket.contains('/')).then(|| Target {
                bucket: bucket.to_string(),
                virtual_hosted: false,
            })
        }
    }
}

/// Answers a PostObject. Never fails: every refusal is an S3 XML error.
pub async fn serve(ctx: &Arc<Ctx>, req: Request<Body>, target: Target) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let progress = Arc::new(Progress::default());
    let boundary = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        let mut r = FormError::Malformed("no multipart boundary".into()).response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    };
    let mut parser = multer::Multipart::new(Paced::new(body, progress.clone()), boundary);
    let mut resp = match handle(ctx, &mut parts, &mut parser, &target, &progress).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, bucket = %target.bucket, "POST form upload refused");
            // A little more of a small form is read, so its client sees the
            // answer rather than a reset while still sending; never much.
            fields::skip_rest(&mut parser, &progress, fields::REFUSED_BUDGET).await;
            e.response()
        }
    };
    // Whatever of the body is still on the wire is never read.
    if !progress.body_fully_read() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn handle(
    ctx: &Arc<Ctx>,
    parts: &mut http::request::Parts,
    parser: &mut fields::Parser,
    target: &Target,
    progress: &Arc<Progress>,
) -> FormResult<Response<Body>> {
    let max_file = parts
        .extensions
        .get::<FormLimit>()
        .map_or(MAX_SINGLE_PUT, |l| l.0);
    let (fields, file) = fields::read_fields(parser, progress).await?;
    let remote = parts.extensions.get::<RemoteAddr>().copied();
    let secure = parts.extensions.get::<SecureTransport>().is_some();
    // An SSE-C key only over TLS or from loopback, as every other request
    // (the access hook checks those): refused before anything else.
    check_customer_key_transport(&fields, &parts.headers, secure, remote)?;

    // Who signed it, and what the policy allows.
    let signing = Signing::of(&fields)?;
    if let Signing::V4 { region, .. } = &signing {
        if *region != ctx.region {
            return Err(FormError::WrongRegion {
                sent: region.to_string(),
                expected: ctx.region.clone(),
            });
        }
    }
    let principal = match signing.access_key() {
        None => None,
        Some(access_key) => {
            let entry = ctx
                .identity
                .lookup(access_key)
                .await?
                .ok_or(GwError::InvalidAccessKeyId)?;
            signing.verify(&entry.secret)?;
            Some(entry.principal.clone())
        }
    };
    let key = fields
        .get("key")
        .ok_or(FormError::MissingField("key"))?
        .replace("${filename}", &file.file_name);
    check_key(&key)?;
    let range = match signing.policy() {
        Some(p) => Policy::parse(p)?.check(
            time::OffsetDateTime::now_utc(),
            &fields,
            &target.bucket,
            &key,
        )?,
        None => LengthRange::default(),
    };
    refuse_unsupported(&fields)?;

    // May the caller write this key? The same rules as PutObject.
    let mut context = authz::condition_context(
        principal.as_deref(),
        remote,
        secure,
        &parts.uri,
        &parts.headers,
    );
    if let Some(acl) = fields.get("acl") {
        context.set("s3:x-amz-acl", acl);
    }
    if principal.is_some() {
        context.set("s3:authType", "POST");
        context.set("s3:signatureversion", signing.version_name());
    }
    let caller = Arc::new(Caller::new(principal, context));
    let name = BucketName::resolve(&target.bucket, caller.tenant());
    let Some(bucket) = ctx
        .meta
        .get_shared::<BucketRecord>(Cf::Meta, &name.key())
        .await?
    else {
        // An anonymous caller learns nothing about which names exist.
        return Err(if caller.principal.is_none() {
            GwError::AccessDenied
        } else {
            GwError::NoSuchBucket
        }
        .into());
    };
    match authz::decide(
        ctx,
        &caller,
        "s3:PutObject",
        &name,
        &bucket.record,
        Some(&key),
    )? {
        Verdict::Allow(_) => {}
        Verdict::Deny(why) | Verdict::Defer(why) => {
            tracing::debug!(bucket = %name.qualified(), reason = %why, "POST form upload denied");
            return Err(GwError::AccessDenied.into());
        }
    }
    let declared = crate::ratelimit::declared_body_len(&parts.headers);
    crate::ratelimit::admit_op(
        ctx,
        "PostObject",
        declared,
        &mut parts.extensions,
        &caller,
        Some(&name),
        Some(&bucket.record),
    )
    .await?;
    crate::usage::traffic::note_in(&mut parts.extensions, &caller, Some(&name));

    // What the object will be, all checked before the body is read.
    let class = write_class(
        ctx,
        fields
            .get("x-amz-storage-class")
            .map(|s| s3s::dto::StorageClass::from(s.to_string()))
            .as_ref(),
        &bucket.record,
    )?;
    let authorized = Authorized {
        caller: caller.clone(),
        bucket_name: Some(name.clone()),
        bucket: Some(bucket.clone()),
        object_gate: ObjectGate::default(),
    };
    let acl = crate::s3::acl::object_write_acl(
        ctx,
        &authorized,
        &bucket.record,
        &AclHeaders {
            canned: fields.get("acl"),
            read: None,
            write: None,
            read_acp: None,
            write_acp: None,
            full_control: None,
        },
    )?;
    let metadata: HashMap<String, String> = fields
        .iter()
        .filter_map(|(n, v)| {
            n.strip_prefix("x-amz-meta-")
                .map(|k| (k.to_string(), v.to_string()))
        })
        .collect();
    check_user_metadata(Some(&metadata))?;
    let tags = form_tags(fields.get("tagging"))?;
    // Object lock fields as PutObject's headers, with the same checks (a
    // locked version, by the fields or the bucket default, needs a
    // Content-MD5 or checksum field).
    let lock_fields = LockFields::of(&fields)?;
    let lock = crate::s3::object_lock::explicit(
        ctx,
        &authorized,
        &bucket.record,
        &key,
        &lock_fields.headers(),
    )?;
    crate::s3::object_lock::check_put_integrity(
        crate::s3::object_lock::with_default(lock, &bucket.record, now_ms()).as_ref(),
        &integrity_fields(&fields)?,
    )?;
    let expires = match fields.get("expires") {
        None => String::new(),
        Some(v) => parse_http_date(v)
            .as_ref()
            .and_then(format_http_date)
            .ok_or_else(|| FormError::InvalidArgument(format!("Invalid Expires: {v:?}")))?,
    };
    let checksums = ChecksumPlan::from_headers(&checksum_fields(&fields)?, None)?;
    // SSE fields as PutObject's headers (a bucket default applies too).
    let sse = encryption::for_write(
        ctx,
        &bucket.record,
        &encryption::SseHeaders {
            sse: fields.get("x-amz-server-side-encryption"),
            kms_key_id: fields.get("x-amz-server-side-encryption-aws-kms-key-id"),
            customer_algorithm: fields.get("x-amz-server-side-encryption-customer-algorithm"),
            customer_key: fields.get("x-amz-server-side-encryption-customer-key"),
            customer_key_md5: fields.get("x-amz-server-side-encryption-customer-key-md5"),
        },
    )?;
    let seal = sse.as_ref().map(|s| s.new_body()).transpose()?;
    // Held until the commit is over; checked again once the size is known.
    let admission = quota::check_write(ctx, &bucket.record, &key, 0).await?;

    // The file, streamed; cut as soon as it passes the policy's maximum.
    let spec = WriteSpec {
        owner: BodyOwner {
            bucket_id: bucket.record.id,
            key: key.clone(),
            upload_id: String::new(),
            part_number: 0,
        },
        content_length: None,
        max_size: range
            .max
            .unwrap_or(u64::MAX)
            .min(max_file)
            .min(MAX_SINGLE_PUT),
        content_md5: fields.get("content-md5"),
        checksums,
        class,
    };
    let written =
        write_body_sealed(ctx, spec, StreamingBlob::new(FileStream(file.field)), seal).await?;
    if written.size < range.min {
        discard(ctx, &written);
        return Err(GwError::EntityTooSmall.into());
    }
    drop(admission);
    let admission = match quota::check_write(ctx, &bucket.record, &key, written.size).await {
        Ok(a) => a,
        Err(e) => {
            discard(ctx, &written);
            return Err(e.into());
        }
    };

    let etag_value = written.etag();
    let mut rec = object_for_body(bucket.record.id, &key, &written, class);
    let field = |n: &str| fields.get(n).unwrap_or_default().to_string();
    rec.content_type = field("content-type");
    rec.content_encoding = stored_content_encoding(fields.get("content-encoding"));
    rec.content_disposition = field("content-disposition");
    rec.content_language = field("content-language");
    rec.cache_control = field("cache-control");
    rec.expires = expires;
    rec.user_metadata = metadata;
    rec.acl = acl;
    rec.sse = sse.as_ref().and_then(|s| s.object(written.sse.as_ref()));
    rec.tags = tags;
    // The form's lock fields, or the bucket's default retention (decision 0031).
    rec.object_lock =
        crate::s3::object_lock::with_default(lock, &bucket.record, rec.last_modified_unix_ms);
    let scope = Scope::of(&bucket.record);
    let delta_id = admission.delta_id;
    let commit_key = key.clone();
    let outcome = commit_in_task(ctx, written.stored(), move |ctx| async move {
        crate::s3::versioning::commit(
            &ctx,
            &scope,
            &commit_key,
            &rec,
            &WritePrecondition::default(),
            &delta_id,
            Vec::new(),
            Vec::new(),
        )
        .await
    })
    .await?;
    admission.committed();
    let version_id = outcome.version_id();
    fields::skip_rest(parser, progress, fields::TRAILING_BUDGET).await;

    let mut resp = success(
        &fields,
        parts,
        target,
        &key,
        &etag_value,
        version_id.as_deref(),
        secure,
    );
    encryption::echo(resp.headers_mut(), sse.map(|s| s.echo()).as_ref());
    Ok(resp)
}

/// Refuses a form carrying an SSE-C key (as fields, or as headers of the
/// POST itself) over an insecure connection (`encryption::customer_key_transport_ok`).
fn check_customer_key_transport(
    fields: &Fields,
    headers: &http::HeaderMap,
    secure: bool,
    remote: Option<RemoteAddr>,
) -> FormResult<()> {
    let carries_key = encryption::carries_customer_key(headers)
        || fields
            .iter()
            .any(|(n, _)| n.starts_with("x-amz-server-side-encryption-customer-"));
    if carries_key && !encryption::customer_key_transport_ok(secure, remote.map(|r| r.0)) {
        return Err(encryption::insecure_customer_key().into());
    }
    Ok(())
}

/// The tags of a `tagging` field: a `<Tagging>` document, checked as
/// PutObjectTagging checks its body.
fn form_tags(xml: Option<&str>) -> FormResult<Vec<kura_proto::meta::Tag>> {
    use s3s::xml::Deserialize;
    let Some(xml) = xml else {
        return Ok(Vec::new());
    };
    let mut d = s3s::xml::Deserializer::new(xml.as_bytes());
    let tagging = s3s::dto::Tagging::deserialize(&mut d)
        .and_then(|t| d.expect_eof().map(|()| t))
        .map_err(|_| {
            GwError::MalformedXml(
                "The XML you provided was not well-formed or did not validate against our published schema".into(),
            )
        })?;
    Ok(crate::s3::tagging::from_dto(
        &tagging,
        crate::s3::tagging::Target::Object,
    )?)
}

/// The object lock fields of a form, parsed as s3s parses PutObject's headers.
#[derive(Default)]
struct LockFields {
    mode: Option<s3s::dto::ObjectLockMode>,
    retain_until: Option<s3s::dto::Timestamp>,
    legal_hold: Option<s3s::dto::ObjectLockLegalHoldStatus>,
}

impl LockFields {
    fn of(fields: &Fields) -> FormResult<LockFields> {
        let retain_until = fields
            .get("x-amz-object-lock-retain-until-date")
            .map(|v| {
                s3s::dto::Timestamp::parse(s3s::dto::TimestampFormat::DateTime, v).map_err(|_| {
                    FormError::InvalidArgument(format!(
                        "Invalid x-amz-object-lock-retain-until-date: {v:?}"
                    ))
                })
            })
            .transpose()?;
        Ok(LockFields {
            mode: fields
                .get("x-amz-object-lock-mode")
                .map(|v| s3s::dto::ObjectLockMode::from(v.to_string())),
            retain_until,
            legal_hold: fields
                .get("x-amz-object-lock-legal-hold")
                .map(|v| s3s::dto::ObjectLockLegalHoldStatus::from(v.to_string())),
        })
    }

    fn headers(&self) -> crate::s3::object_lock::WriteHeaders<'_> {
        crate::s3::object_lock::WriteHeaders {
            mode: self.mode.as_ref(),
            retain_until: self.retain_until.as_ref(),
            legal_hold: self.legal_hold.as_ref(),
        }
    }
}

/// The fields that protect the file, as the headers object lock's
/// integrity rule reads (`content-md5`, `x-amz-checksum-*`); the writer
/// verifies their values against the file.
fn integrity_fields(fields: &Fields) -> FormResult<http::HeaderMap> {
    let mut h = checksum_fields(fields)?;
    if let Some(v) = fields.get("content-md5") {
        let v = HeaderValue::from_str(v)
            .map_err(|_| FormError::InvalidArgument("Invalid content-md5".into()))?;
        h.insert("content-md5", v);
    }
    Ok(h)
}

/// Form fields Kura does not apply to POST uploads: refused rather than
/// silently ignored.
fn refuse_unsupported(fields: &Fields) -> FormResult<()> {
    for (name, _) in fields.iter() {
        if name.starts_with("x-amz-grant-") {
            return Err(FormError::NotImplemented(
                "x-amz-grant-* on POST form uploads (use the acl field)",
            ));
        }
    }
    Ok(())
}

/// The checksum fields, as the headers the writer's checksum plan reads.
fn checksum_fields(fields: &Fields) -> FormResult<http::HeaderMap> {
    let mut h = http::HeaderMap::new();
    for (name, value) in fields.iter() {
        if name.starts_with("x-amz-checksum-") {
            let n = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FormError::InvalidArgument(format!("Invalid field {name:?}")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| FormError::InvalidArgument(format!("Invalid {name}")))?;
            h.insert(n, v);
        }
    }
    Ok(h)
}

/// Deletes a written body that will not be committed.
fn discard(ctx: &Arc<Ctx>, written: &Written) {
    gc::spawn_discard(ctx.clone(), written.location.iter().cloned().collect());
}

/// The answer to a stored form: a 303 to `success_action_redirect`, else
/// `success_action_status` (200, 201 with a PostResponse document, or 204).
fn success(
    fields: &Fields,
    parts: &http::request::Parts,
    target: &Target,
    key: &str,
    etag: &str,
    version_id: Option<&str>,
    secure: bool,
) -> Response<Body> {
    let quoted = format!("\"{etag}\"");
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let scheme = if secure { "https" } else { "http" };
    let location = if target.virtual_hosted {
        format!("{scheme}://{host}/{}", url_encode(key))
    } else {
        format!("{scheme}://{host}/{}/{}", target.bucket, url_encode(key))
    };
    let redirect = fields
        .get("success_action_redirect")
        .or_else(|| fields.get("redirect"))
        .filter(|r| {
            r.parse::<http::Uri>()
                .is_ok_and(|u| u.scheme().is_some() && u.host().is_some())
        });
    let (status, body, location_header) = if let Some(r) = redirect {
        let q = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let sep = if r.contains('?') { '&' } else { '?' };
        let to = format!(
            "{r}{sep}bucket={}&key={}&etag={}",
            q(&target.bucket),
            q(key),
            q(&quoted)
        );
        (StatusCode::SEE_OTHER, Body::empty(), to)
    } else {
        match fields.get("success_action_status") {
            Some("200") => (StatusCode::OK, Body::empty(), location.clone()),
            Some("201") => {
                let esc = |s: &str| {
                    s.replace('&', "&amp;")
                        .replace('<', "&lt;")
                        .replace('>', "&gt;")
                        .replace('"', "&quot;")
                };
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse><Location>{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></PostResponse>",
                    esc(&location),
                    esc(&target.bucket),
                    esc(key),
                    esc(&quoted)
                );
                (StatusCode::CREATED, Body::from(xml), location.clone())
            }
            _ => (StatusCode::NO_CONTENT, Body::empty(), location.clone()),
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if status == StatusCode::CREATED {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&location_header) {
        h.insert(header::LOCATION, v);
    }
    if let Some(v) = version_id.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert("x-amz-version-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::KuraHost;

    fn req(host: &str, path: &str, ct: &str) -> Request<()> {
        Request::post(path)
            .header("host", host)
            .header("content-type", ct)
            .body(())
            .unwrap()
    }

    #[test]
    fn tagging_field_is_a_checked_tagging_document() {
        let doc = |tags: &str| format!("<Tagging><TagSet>{tags}</TagSet></Tagging>");
        let tag = |k: &str, v: &str| format!("<Tag><Key>{k}</Key><Value>{v}</Value></Tag>");
        let got = form_tags(Some(&doc(&(tag("b", "2") + &tag("a", "1"))))).unwrap();
        let pairs: Vec<_> = got
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect();
        assert_eq!(pairs, [("a", "1"), ("b", "2")]);
        assert!(form_tags(None).unwrap().is_empty());
        let malformed = |x: &str| {
            matches!(
                form_tags(Some(x)),
                Err(FormError::Gw(GwError::MalformedXml(_)))
            )
        };
        assert!(malformed("<Tagging><TagSet>"));
        assert!(malformed("k=v"));
        assert!(malformed(&(doc("") + "<x/>")));
        assert!(matches!(
            form_tags(Some(&doc(&tag("aws:x", "1")))),
            Err(FormError::Gw(GwError::InvalidTag(_)))
        ));
        let eleven: String = (0..11).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(matches!(
            form_tags(Some(&doc(&eleven))),
            Err(FormError::Gw(GwError::BadRequest(_)))
        ));
    }

    #[test]
    fn lock_and_integrity_fields() {
        let f = Fields::of(&[
            ("X-Amz-Object-Lock-Mode", "GOVERNANCE"),
            (
                "x-amz-object-lock-retain-until-date",
                "2030-01-02T03:04:05Z",
            ),
            ("x-amz-object-lock-legal-hold", "ON"),
        ]);
        let l = LockFields::of(&f).unwrap();
        let h = l.headers();
        assert_eq!(h.mode.map(|m| m.as_str()), Some("GOVERNANCE"));
        assert_eq!(h.legal_hold.map(|m| m.as_str()), Some("ON"));
        assert!(h.retain_until.is_some());
        let none = LockFields::of(&Fields::of(&[])).unwrap();
        assert!(none.mode.is_none() && none.retain_until.is_none() && none.legal_hold.is_none());
        assert!(matches!(
            LockFields::of(&Fields::of(&[(
                "x-amz-object-lock-retain-until-date",
                "tomorrow"
            )])),
            Err(FormError::InvalidArgument(_))
        ));

        let protected = |pairs: &[(&str, &str)]| {
            crate::s3::object_lock::has_integrity_header(
                &integrity_fields(&Fields::of(pairs)).unwrap(),
            )
        };
        assert!(protected(&[("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==")]));
        assert!(protected(&[("x-amz-checksum-crc32", "AAAAAA==")]));
        assert!(!protected(&[("x-amz-checksum-algorithm", "CRC32")]));
        assert!(!protected(&[("key", "k")]));
    }

    #[test]
    fn customer_key_fields_need_tls_or_loopback() {
        let remote = Some(RemoteAddr("192.0.2.9:1234".parse().unwrap()));
        let local = Some(RemoteAddr("127.0.0.1:1234".parse().unwrap()));
        let plain = http::HeaderMap::new();
        let key = Fields::of(&[("x-amz-server-side-encryption-customer-key", "a")]);
        let sse_s3 = Fields::of(&[("x-amz-server-side-encryption", "AES256")]);
        assert!(matches!(
            check_customer_key_transport(&key, &plain, false, remote),
            Err(FormError::Gw(GwError::InvalidRequest(_)))
        ));
        assert!(check_customer_key_transport(&key, &plain, true, remote).is_ok());
        assert!(check_customer_key_transport(&key, &plain, false, local).is_ok());
        assert!(check_customer_key_transport(&sse_s3, &plain, false, remote).is_ok());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-amz-server-side-encryption-customer-algorithm",
            HeaderValue::from_static("AES256"),
        );
        assert!(check_customer_key_transport(&sse_s3, &headers, false, remote).is_err());
    }

    #[test]
    fn form_posts_to_buckets_are_targets() {
        let h = KuraHost::new(None);
        let form = "multipart/form-data; boundary=x";
        let t = |host: &str, path: &str| target(&req(host, path, form), &h);
        assert_eq!(
            t("127.0.0.1:9000", "/photos"),
            Some(Target {
                bucket: "photos".into(),
                virtual_hosted: false
            })
        );
        assert_eq!(
            t("127.0.0.1:9000", "/photos/").map(|t| t.bucket),
            Some("photos".into())
        );
        assert_eq!(
            t("photos.localhost:9000", "/"),
            Some(Target {
                bucket: "photos".into(),
                virtual_hosted: true
            })
        );
        // Objects and the service are not PostObject.
        assert_eq!(t("127.0.0.1:9000", "/photos/k"), None);
        assert_eq!(t("photos.localhost:9000", "/k"), None);
        assert_eq!(t("127.0.0.1:9000", "/"), None);
        assert_eq!(
            target(&req("127.0.0.1:9000", "/photos", "application/xml"), &h),
            None
        );
    }
}
