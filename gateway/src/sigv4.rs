//! The pieces of AWS Signature Version 4 that Kura computes itself, in one
//! place: the gateway signs a request again without its `Range`
//! (`front/signed_range.rs`) and checks POST policy signatures
//! (`s3/post_object/policy.rs`); `kura bench` and `kura admin` sign their
//! own requests. s3s verifies ordinary requests with its own code.

use ring::hmac;
use sha2::{Digest, Sha256};

/// The signing key of `secret` for one day (`YYYYMMDD`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k = step(format!("AWS4{secret}").as_bytes(), date);
    let k = step(k.as_ref(), region);
    let k = step(k.as_ref(), service);
    let k = step(k.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

/// The hex signature of a canonical request made at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`) for `scope` (`DATE/REGION/SERVICE/aws4_request`).
pub fn signature(key: &hmac::Key, amz_date: &str, scope: &str, canonical: &str) -> String {
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    hex::encode(hmac::sign(key, to_sign.as_bytes()).as_ref())
}

/// SigV4's URI encoding: every byte but `A-Za-z0-9-_.~` becomes `%XX`
/// (uppercase hex); `/` stays unless `encode_slash` (query names and values).
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `t` as SigV4 writes times: `YYYYMMDDTHHMMSSZ`, UTC.
pub fn amz_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_dates_as_sigv4_wants() {
        assert_eq!(uri_encode("a b/c~d*", false), "a%20b/c~d%2A");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        let t = time::OffsetDateTime::from_unix_timestamp(1_369_353_600).unwrap();
        assert_eq!(amz_date(t), "20130524T000000Z");
    }

    /// AWS's "GET Object" example: string to sign and signature.
    #[test]
    fn signs_aws_example() {
        let canonical = "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
                         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
                         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
                         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        );
        assert_eq!(
            signature(
                &key,
                "20130524T000000Z",
                "20130524/us-east-1/s3/aws4_request",
                canonical
            ),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }
}
