//! What a POST form upload can fail with, and the S3 XML answer to each,
//! as AWS gives it. Mapped here, once: s3s never sees these requests.

use http::StatusCode;

use crate::error::{code_and_message, xml_error_response, GwError};

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    /// What any other operation could fail with (bucket, key, quota,
    /// data path, metadata...).
    #[error(transparent)]
    Gw(#[from] GwError),
    #[error("the body is not well-formed multipart/form-data: {0}")]
    Malformed(String),
    /// The fields before the file part are over AWS's 20 KiB.
    #[error("the fields before the file are too large")]
    PreDataTooLarge,
    /// A field the form needs is missing (or came after the file part).
    #[error("the form has no field {0:?}")]
    MissingField(&'static str),
    /// No file part at all.
    #[error("the form has no file part")]
    NoFile,
    #[error("invalid field: {0}")]
    InvalidArgument(String),
    #[error("the signature does not match")]
    SignatureDoesNotMatch,
    /// SigV4 credential scoped to another region.
    #[error("credential scoped to region {sent:?}")]
    WrongRegion { sent: String, expected: String },
    /// The policy document does not parse.
    #[error("invalid policy document: {0}")]
    InvalidPolicy(String),
    /// The policy expired, a condition failed, or a field is not covered.
    #[error("invalid according to policy: {0}")]
    Policy(String),
    /// An option Kura does not implement for forms.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

pub type FormResult<T> = Result<T, FormError>;

impl FormError {
    pub fn response(&self) -> http::Response<s3s::Body> {
        let (status, code, message) = match self {
            FormError::Gw(e) => return gw_response(e),
            FormError::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "MalformedPOSTRequest",
                "The body of your POST request is not well-formed multipart/form-data.".into(),
            ),
            FormError::PreDataTooLarge => (
                StatusCode::BAD_REQUEST,
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceding the upload file were too large.".into(),
            ),
            FormError::MissingField(name) => (
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!(
                    "Bucket POST must contain a field named '{name}'.  If it is specified, please check the order of the fields."
                ),
            ),
            FormError::NoFile => (
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "POST requires exactly one file upload per request.".into(),
            ),
            FormError::InvalidArgument(why) => {
                (StatusCode::BAD_REQUEST, "InvalidArgument", why.clone())
            }
            FormError::SignatureDoesNotMatch => (
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.".into(),
            ),
            FormError::WrongRegion { sent, expected } => {
                return crate::error::wrong_region_response(sent, expected)
            }
            FormError::InvalidPolicy(why) => (
                StatusCode::BAD_REQUEST,
                "InvalidPolicyDocument",
                format!("Invalid Policy: {why}"),
            ),
            FormError::Policy(why) => (
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!("Invalid according to Policy: {why}"),
            ),
            FormError::NotImplemented(what) => {
                (StatusCode::NOT_IMPLEMENTED, "NotImplemented", (*what).into())
            }
        };
        xml_error_response(status, code, &message)
    }
}

fn gw_response(e: &GwError) -> http::Response<s3s::Body> {
    match e {
        GwError::Internal(why) => tracing::error!(error = %why, "POST form upload: internal error"),
        GwError::Unavailable(why) | GwError::Contention(why) => {
            tracing::warn!(error = %why, "POST form upload failed")
        }
        _ => {}
    }
    let (code, message) = code_and_message(e);
    let mut r = xml_error_response(e.status(), &code, &message);
    if let GwError::RateLimited {
        retry_after_secs, ..
    } = e
    {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(*retry_after_secs),
        );
    }
    r
}
