//! POST form uploads (`POST /bucket`, `multipart/form-data`: browser uploads):
//! what the front bounds before the form is parsed. The form itself is read
//! as a stream by `s3::post_object` (decision 0028), which s3s never sees.
//! - a form declaring a Content-Length over `fields + max_file` bytes is
//!   refused before a byte of it is read (`400 EntityTooLarge`, connection
//!   closed);
//! - a form without a length (chunked) is cut when it passes that size;
//! - `max_file` travels with the request ([`FormLimit`]): PostObject's
//!   writer cuts the file part there (`400 EntityTooLarge`, body deleted);
//! - at most [`POST_FORMS_AT_ONCE`] forms are read at a time, beyond that
//!   503 SlowDown.
//!
//! Memory per form: its fields (≤ 20 KiB), the parser's buffer (≤ one read
//! chunk) and what a PUT holds in flight (a few stripes: ≈ 7 MiB with the
//! default 1 MiB stripe and EC 4+2), so the worst case is
//! `POST_FORMS_AT_ONCE` × that, whatever `max_file` is.

use std::sync::Arc;

use http::{Method, Request};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::admission::POST_FORMS_AT_ONCE;
use crate::error::Refusal;

/// AWS's cap on the form fields before the file part (20 KB).
pub const MAX_FIELDS_BYTES: usize = 20 * 1024;

/// The largest file part the front lets this form carry (a request
/// extension, read by `s3::post_object`).
#[derive(Clone, Copy, Debug)]
pub struct FormLimit(pub u64);

/// s3s settings for the forms it still parses (form POSTs to an object or
/// the service, which it refuses after the fields): fields as AWS, and no
/// file part gathered at all, should one ever reach its PostObject path.
pub fn s3s_config() -> s3s::config::S3Config {
    let mut c = s3s::config::S3Config::default();
    c.form_max_fields_size = MAX_FIELDS_BYTES;
    c.form_max_field_size = MAX_FIELDS_BYTES;
    c.post_object_max_file_size = 0;
    c
}

/// The most bytes a whole form body may have: fields, file, and slack for
/// the part headers and boundaries.
pub fn max_form_bytes(max_file: u64) -> u64 {
    max_file + MAX_FIELDS_BYTES as u64 + 4096
}

/// Whether s3s will treat `req` as a POST form upload.
pub fn is_form<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .get(..19)
                    .is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"))
            })
}

/// Forms being read right now.
pub struct Forms {
    at_once: Arc<Semaphore>,
}

impl Default for Forms {
    fn default() -> Self {
        Forms {
            at_once: Arc::new(Semaphore::new(POST_FORMS_AT_ONCE)),
        }
    }
}

impl Forms {
    /// A permit to read this form (held until its answer), or why not.
    pub fn admit<B>(
        &self,
        req: &Request<B>,
        max_file: u64,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        let max = max_form_bytes(max_file);
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(Refusal::FormTooLarge { max });
        }
        self.at_once
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::SlowDown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(len: u64) -> Request<()> {
        Request::post("/bucket")
            .header("content-type", "multipart/form-data; boundary=xyz")
            .header("content-length", len.to_string())
            .body(())
            .unwrap()
    }

    #[test]
    fn forms_are_recognised() {
        assert!(is_form(&form(1)));
        let upper = Request::post("/b")
            .header("content-type", "Multipart/Form-Data; boundary=a")
            .body(())
            .unwrap();
        assert!(is_form(&upper));
        let put = Request::put("/b/k")
            .header("content-type", "multipart/form-data; boundary=a")
            .body(())
            .unwrap();
        assert!(!is_form(&put));
        let xml = Request::post("/b?delete")
            .header("content-type", "application/xml")
            .body(())
            .unwrap();
        assert!(!is_form(&xml));
    }

    #[test]
    fn declared_size_and_concurrency_are_capped() {
        let forms = Forms::default();
        let max_file = 1 << 20;
        assert!(matches!(
            forms.admit(&form(1 << 30), max_file),
            Err(Refusal::FormTooLarge { .. })
        ));
        let mut held = Vec::new();
        for _ in 0..POST_FORMS_AT_ONCE {
            held.push(forms.admit(&form(100), max_file).expect("admitted"));
        }
        assert!(matches!(
            forms.admit(&form(100), max_file),
            Err(Refusal::SlowDown)
        ));
        held.pop();
        assert!(forms.admit(&form(100), max_file).is_ok());
    }
}
