//! Request signing details the gateway reads before s3s does. Who the
//! caller is lives in `identity`, what it may do in `authz`.

/// The region in a SigV4 credential scope (`AK/DATE/REGION/s3/aws4_request`),
/// from the Authorization header or a presigned URL's `X-Amz-Credential`.
pub fn credential_region<B>(req: &http::Request<B>) -> Option<String> {
    let scope = if let Some(auth) = req.headers().get(http::header::AUTHORIZATION) {
        let auth = auth.to_str().ok()?;
        let rest = auth.strip_prefix("AWS4-HMAC-SHA256")?;
        let cred = rest
            .split(',')
            .find_map(|p| p.trim().strip_prefix("Credential="))?;
        cred.to_string()
    } else {
        let query = req.uri().query()?;
        let raw = query
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-Credential="))?;
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()?
            .into_owned()
    };
    let mut parts = scope.split('/');
    let (_key, _date, region) = (parts.next()?, parts.next()?, parts.next()?);
    Some(region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_region_in_header_and_query() {
        let req = http::Request::builder()
            .uri("/b/k")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AK/20260101/US/s3/aws4_request, SignedHeaders=host, Signature=00")
            .body(())
            .unwrap();
        assert_eq!(credential_region(&req).as_deref(), Some("US"));
        let req = http::Request::builder()
            .uri("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature=0")
            .body(())
            .unwrap();
        assert_eq!(credential_region(&req).as_deref(), Some("eu-west-1"));
        let v2 = http::Request::builder()
            .uri("/b/k")
            .header("authorization", "AWS AK:sig")
            .body(())
            .unwrap();
        assert_eq!(credential_region(&v2), None);
    }
}
