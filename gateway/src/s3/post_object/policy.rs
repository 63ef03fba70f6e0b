//! Who signed a form (SigV4 or SigV2 over its base64 policy, or nobody) and
//! what its policy document allows.

use base64::Engine;
use ring::hmac;
use s3s::post_policy::{PostPolicy, PostPolicyCondition};

use super::error::{FormError, FormResult};
use super::fields::Fields;

/// How a form is signed, from its fields.
#[derive(Debug, PartialEq, Eq)]
pub enum Signing<'a> {
    Anonymous,
    V4 {
        access_key: &'a str,
        /// `yyyymmdd`, region and service of the credential scope.
        date: &'a str,
        region: &'a str,
        service: &'a str,
        signature: &'a str,
        policy: &'a str,
    },
    V2 {
        access_key: &'a str,
        signature: &'a str,
        policy: &'a str,
    },
}

impl<'a> Signing<'a> {
    /// Reads the signing fields (names lowercased).
    pub fn of(f: &'a Fields) -> FormResult<Self> {
        let need = |name: &'static str| f.get(name).ok_or(FormError::MissingField(name));
        let v4 = ["x-amz-signature", "x-amz-algorithm", "x-amz-credential"]
            .iter()
            .any(|n| f.get(n).is_some());
        if v4 {
            let algorithm = need("x-amz-algorithm")?;
            if algorithm != "AWS4-HMAC-SHA256" {
                return Err(FormError::InvalidArgument(format!(
                    "Unsupported x-amz-algorithm {algorithm:?}: only AWS4-HMAC-SHA256 is supported"
                )));
            }
            let credential = need("x-amz-credential")?;
            need("x-amz-date")?;
            let signature = need("x-amz-signature")?;
            let policy = need("policy")?;
            let mut parts = credential.split('/');
            let (
                Some(access_key),
                Some(date),
                Some(region),
                Some(service),
                Some("aws4_request"),
                None,
            ) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            )
            else {
                return Err(FormError::InvalidArgument(format!(
                    "Invalid x-amz-credential {credential:?}: expected AKID/yyyymmdd/region/s3/aws4_request"
                )));
            };
            if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) || service != "s3" {
                return Err(FormError::InvalidArgument(format!(
                    "Invalid x-amz-credential {credential:?}: expected AKID/yyyymmdd/region/s3/aws4_request"
                )));
            }
            return Ok(Signing::V4 {
                access_key,
                date,
                region,
                service,
                signature,
                policy,
            });
        }
        if f.get("awsaccesskeyid").is_some() || f.get("signature").is_some() {
            return Ok(Signing::V2 {
                access_key: need("awsaccesskeyid")?,
                signature: need("signature")?,
                policy: need("policy")?,
            });
        }
        if f.get("policy").is_some() {
            // A policy nobody signed means nothing: AWS asks for the key.
            return Err(FormError::MissingField("AWSAccessKeyId"));
        }
        Ok(Signing::Anonymous)
    }

    pub fn access_key(&self) -> Option<&'a str> {
        match self {
            Signing::Anonymous => None,
            Signing::V4 { access_key, .. } | Signing::V2 { access_key, .. } => Some(access_key),
        }
    }

    pub fn policy(&self) -> Option<&'a str> {
        match self {
            Signing::Anonymous => None,
            Signing::V4 { policy, .. } | Signing::V2 { policy, .. } => Some(policy),
        }
    }

    /// `s3:signatureversion` for policies.
    pub fn version_name(&self) -> &'static str {
        match self {
            Signing::V2 { .. } => "AWS",
            _ => "AWS4-HMAC-SHA256",
        }
    }

    /// Checks the signature with the key's secret (constant-time compare).
    pub fn verify(&self, secret: &str) -> FormResult<()> {
        let ok = match self {
            Signing::Anonymous => true,
            Signing::V4 {
                date,
                region,
                service,
                signature,
                policy,
                ..
            } => {
                let key = crate::sigv4::signing_key(secret, date, region, service);
                match hex::decode(signature) {
                    Ok(sig) => hmac::verify(&key, policy.as_bytes(), &sig).is_ok(),
                    Err(_) => false,
                }
            }
            Signing::V2 {
                signature, policy, ..
            } => match base64::engine::general_purpose::STANDARD.decode(signature) {
                Ok(sig) => hmac::verify(
                    &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes()),
                    policy.as_bytes(),
                    &sig,
                )
                .is_ok(),
                Err(_) => false,
            },
        };
        if ok {
            Ok(())
        } else {
            Err(FormError::SignatureDoesNotMatch)
        }
    }
}

/// A form's policy document, parsed.
pub struct Policy(PostPolicy);

/// What the policy leaves to be checked while the file streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LengthRange {
    pub min: u64,
    pub max: Option<u64>,
}

/// Fields every policy may leave out (AWS: the signature fields, the file,
/// the policy itself and `x-ignore-*`).
fn exempt(name: &str) -> bool {
    matches!(
        name,
        "x-amz-signature" | "signature" | "awsaccesskeyid" | "file" | "policy"
    ) || name.starts_with("x-ignore-")
}

impl Policy {
    pub fn parse(b64: &str) -> FormResult<Policy> {
        PostPolicy::from_base64(b64.trim())
            .map(Policy)
            .map_err(|e| FormError::InvalidPolicy(e.to_string()))
    }

    /// Checks the expiration and every condition against the fields, with
    /// `bucket` the addressed bucket and `key` the key after `${filename}`;
    /// returns the content-length range, checked while the file streams.
    pub fn check(
        &self,
        now: time::OffsetDateTime,
        fields: &Fields,
        bucket: &str,
        key: &str,
    ) -> FormResult<LengthRange> {
        let expiration: time::OffsetDateTime = self.0.expiration.clone().into();
        if now >= expiration {
            return Err(FormError::Policy("Policy expired.".into()));
        }
        let value = |field: &str| -> String {
            match field {
                "bucket" => bucket.to_string(),
                "key" => key.to_string(),
                f => fields.get(f).unwrap_or_default().to_string(),
            }
        };
        let mut range = LengthRange::default();
        for c in &self.0.conditions {
            match c {
                PostPolicyCondition::Eq { field, value: want } => {
                    if value(field) != *want {
                        return Err(failed("eq", field, want));
                    }
                }
                PostPolicyCondition::StartsWith { field, prefix } => {
                    if !starts_with(field, &value(field), prefix) {
                        return Err(failed("starts-with", field, prefix));
                    }
                }
                PostPolicyCondition::ContentLengthRange { min, max } => {
                    range.min = range.min.max(*min);
                    range.max = Some(range.max.map_or(*max, |m| m.min(*max)));
                }
            }
        }
        let covered = |name: &str| {
            self.0.conditions.iter().any(|c| match c {
                PostPolicyCondition::Eq { field, .. }
                | PostPolicyCondition::StartsWith { field, .. } => field == name,
                PostPolicyCondition::ContentLengthRange { .. } => false,
            })
        };
        let extra: Vec<&str> = fields
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !exempt(n) && !covered(n))
            .collect();
        if !extra.is_empty() {
            return Err(FormError::Policy(format!(
                "Extra input fields: {}",
                extra.join(", ")
            )));
        }
        Ok(range)
    }
}

/// `starts-with`; for Content-Type, AWS accepts a comma-separated list of
/// values that must each start with the prefix.
fn starts_with(field: &str, value: &str, prefix: &str) -> bool {
    if field == "content-type" && value.contains(',') {
        return value.split(',').all(|v| v.trim().starts_with(prefix));
    }
    value.starts_with(prefix)
}

fn failed(op: &str, field: &str, want: &str) -> FormError {
    FormError::Policy(format!(
        "Policy Condition failed: [\"{op}\", \"${field}\", \"{want}\"]"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn signing_fields_are_read() {
        let f = Fields::of(&[("key", "k")]);
        assert_eq!(Signing::of(&f).unwrap(), Signing::Anonymous);
        let f = Fields::of(&[("key", "k"), ("policy", "e30=")]);
        assert!(matches!(
            Signing::of(&f),
            Err(FormError::MissingField("AWSAccessKeyId"))
        ));
        let f = Fields::of(&[("AWSAccessKeyId", "AK"), ("signature", "x")]);
        assert!(matches!(
            Signing::of(&f),
            Err(FormError::MissingField("policy"))
        ));
        let f = Fields::of(&[
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("x-amz-credential", "AK/20260101/us-east-1/s3/aws4_request"),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-signature", "00"),
            ("policy", "e30="),
        ]);
        match Signing::of(&f).unwrap() {
            Signing::V4 {
                access_key, region, ..
            } => assert_eq!((access_key, region), ("AK", "us-east-1")),
            other => panic!("{other:?}"),
        }
        let f = Fields::of(&[
            ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
            ("x-amz-credential", "AK/2026/us-east-1/s3"),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-signature", "00"),
            ("policy", "e30="),
        ]);
        assert!(matches!(
            Signing::of(&f),
            Err(FormError::InvalidArgument(_))
        ));
    }

    #[test]
    fn signatures_verify() {
        // SigV2: base64(HMAC-SHA1(secret, policy)).
        let policy = b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[]}"#);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"secret");
        let sig = base64::engine::general_purpose::STANDARD
            .encode(hmac::sign(&key, policy.as_bytes()).as_ref());
        let v2 = Signing::V2 {
            access_key: "AK",
            signature: &sig,
            policy: &policy,
        };
        assert!(v2.verify("secret").is_ok());
        assert!(matches!(
            v2.verify("other"),
            Err(FormError::SignatureDoesNotMatch)
        ));
        // SigV4: the signing key and HMAC of AWS's documented GetObject
        // example (the POST signature is the same HMAC over the policy).
        let v4 = |sig: &'static str| {
            Signing::V4 {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            date: "20130524",
            region: "us-east-1",
            service: "s3",
            signature: sig,
            policy: "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
        }
        };
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert!(
            v4("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
                .verify(secret)
                .is_ok()
        );
        assert!(
            v4("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb42")
                .verify(secret)
                .is_err()
        );
        assert!(v4("not hex").verify(secret).is_err());
    }

    #[test]
    fn conditions_and_coverage() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let p = Policy::parse(&b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[
                {"bucket":"b"},["starts-with","$key","up/"],{"acl":"private"},
                ["starts-with","$Content-Type",""],["content-length-range",10,100],
                ["eq","$x-amz-meta-a","1"]]}"#))
        .unwrap();
        let ok = Fields::of(&[
            ("key", "up/${filename}"),
            ("acl", "private"),
            ("Content-Type", "text/plain"),
            ("x-amz-meta-a", "1"),
            ("policy", "..."),
            ("x-ignore-me", "1"),
        ]);
        assert_eq!(
            p.check(now, &ok, "b", "up/f.txt").unwrap(),
            LengthRange {
                min: 10,
                max: Some(100)
            }
        );
        let err = |f: &Fields, bucket: &str, key: &str| match p.check(now, f, bucket, key) {
            Err(FormError::Policy(m)) => m,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert!(err(&ok, "other", "up/f").contains(r#"["eq", "$bucket", "b"]"#));
        assert!(err(&ok, "b", "down/f").contains("starts-with"));
        let extra = Fields::of(&[
            ("key", "up/x"),
            ("acl", "private"),
            ("x-amz-meta-a", "1"),
            ("x-amz-meta-b", "2"),
        ]);
        assert_eq!(err(&extra, "b", "up/x"), "Extra input fields: x-amz-meta-b");
        let wrong_meta = Fields::of(&[("key", "up/x"), ("acl", "private"), ("x-amz-meta-a", "2")]);
        assert!(err(&wrong_meta, "b", "up/x").contains("x-amz-meta-a"));
        let late = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        assert!(
            matches!(p.check(late, &ok, "b", "up/f"), Err(FormError::Policy(m)) if m == "Policy expired.")
        );
        assert!(matches!(
            Policy::parse("not base64!"),
            Err(FormError::InvalidPolicy(_))
        ));
        assert!(matches!(
            Policy::parse(&b64("{}")),
            Err(FormError::InvalidPolicy(_))
        ));
    }
}
