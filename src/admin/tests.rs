//! `kura admin` from the command line to the wire: clap parsing through
//! `kura`'s own `Cli`, the route each command maps to, and requests sent to
//! a throwaway in-process HTTP server that checks their SigV4 signature the
//! way a server does (from the request as received).

use std::io::Cursor;
use std::path::Path;

use clap::Parser;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;
use crate::bench::sigv4::{canonical_query, uri_encode};

const AK: &str = "KURATESTTESTTEST0001";
const SK: &str = "testsecrettestsecrettestsecret0123456789";

fn parse(argv: &[&str]) -> Result<AdminArgs, clap::Error> {
    let mut full = vec!["kura", "admin"];
    full.extend_from_slice(argv);
    match crate::Cli::try_parse_from(full)?.command {
        crate::Command::Admin(a) => Ok(a),
        _ => panic!("`kura admin` parsed as another command"),
    }
}

fn args(argv: &[&str]) -> AdminArgs {
    parse(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn call(argv: &[&str]) -> (Call, Shape) {
    call_for(&args(argv).command, &mut Cursor::new(Vec::new()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn global_flags_go_before_or_after_the_command() {
    for argv in [
        &["--table", "--region", "eu-1", "tenant", "list"][..],
        &["tenant", "list", "--table", "--region", "eu-1"][..],
        &["tenant", "--table", "list", "--region=eu-1"][..],
    ] {
        let a = args(argv);
        assert!(a.table, "{argv:?}");
        assert_eq!(a.region, "eu-1", "{argv:?}");
    }
    let a = args(&["tenant", "list"]);
    assert!(!a.table);
    assert_eq!(a.region, "us-east-1");
    let a = args(&["user", "list", "--endpoint", "http://gw:9000"]);
    assert_eq!(a.endpoint.as_deref(), Some("http://gw:9000"));
    assert!(parse(&[
        "--cluster",
        "c.json",
        "--endpoint",
        "http://gw",
        "tenant",
        "list"
    ])
    .is_err());
}

#[test]
fn usage_errors_are_caught_by_the_parser() {
    for argv in [
        &["user", "info"][..],
        &["user", "info", "--id", "a", "--access-key", "b"][..],
        &["user", "create", "--tenant", "acme"][..],
        &["key", "create", "--user", "u", "--access-key", "AK"][..],
        &["key", "create", "--user", "u", "--secret-key", "SK"][..],
        &["key", "enable"][..],
        &["bucket", "info"][..],
        &["tenant", "rename", "a"][..],
        // Quotas and rate limits: a scope, its name, and at least one limit.
        &["quota", "get"][..],
        &["quota", "get", "--scope", "tenants"][..],
        &["quota", "get", "--scope", "user", "--tenant", "acme"][..],
        &["quota", "get", "--scope", "bucket", "--tenant", "acme"][..],
        &[
            "quota", "get", "--scope", "user", "--user", "a", "--bucket", "b",
        ][..],
        &[
            "quota", "get", "--scope", "bucket", "--user", "a", "--bucket", "b",
        ][..],
        &["quota", "set", "--scope", "tenant", "--tenant", "acme"][..],
        &["quota", "set", "--scope", "tenant", "--max-read-ops", "5"][..],
        &["quota", "set", "--scope", "tenant", "--max-objects", "10G"][..],
        &["quota", "set", "--scope", "tenant", "--max-bytes", "1.5G"][..],
        &["quota", "set", "--scope", "tenant", "--max-bytes", "-2"][..],
        &["quota", "set", "--scope", "tenant", "--max-bytes", "10GB"][..],
        &["quota", "set", "--scope", "tenant", "--max-bytes", ""][..],
        &["quota", "get", "--scope", "tenant", "--max-bytes", "1"][..],
        &["ratelimit", "set", "--scope", "user", "--user", "alice"][..],
        &["ratelimit", "set", "--scope", "tenant", "--max-bytes", "1"][..],
        &[
            "ratelimit",
            "set",
            "--scope",
            "tenant",
            "--max-read-ops",
            "1K",
        ][..],
        &["ratelimit", "get", "--scope", "bucket"][..],
        &["usage", "--user", "alice"][..],
        &["usage", "acme"][..],
    ] {
        assert!(parse(argv).is_err(), "{argv:?} should not parse");
    }
}

#[test]
fn help_lists_the_command_groups() {
    let err = parse(&["--help"]).expect_err("--help stops parsing");
    let help = err.to_string();
    for group in [
        "tenant",
        "user",
        "key",
        "bucket",
        "quota",
        "ratelimit",
        "usage",
        "--cluster",
        "--endpoint",
        "--table",
    ] {
        assert!(help.contains(group), "{group} missing from:\n{help}");
    }
}

/// argv after `kura admin`, method, path below the API prefix, query, JSON body, shape.
type Route = (
    Vec<&'static str>,
    &'static str,
    &'static str,
    &'static str,
    Option<Value>,
    Shape,
);

#[test]
fn every_command_maps_to_its_route() {
    let body = |c: &Call| -> Option<Value> {
        c.body
            .as_ref()
            .map(|b| serde_json::from_slice(b).expect("a JSON body"))
    };
    let cases: Vec<Route> = vec![
        (
            vec!["tenant", "create", "acme"],
            "POST",
            "/tenants",
            "",
            Some(json!({"name": "acme"})),
            Shape::Tenant,
        ),
        (
            vec!["tenant", "list"],
            "GET",
            "/tenants",
            "",
            None,
            Shape::Tenants,
        ),
        (
            vec!["tenant", "delete", "acme"],
            "DELETE",
            "/tenants/acme",
            "",
            None,
            Shape::Empty,
        ),
        (
            vec![
                "user",
                "create",
                "--tenant",
                "acme",
                "--name",
                "alice",
                "--id",
                "alice-1",
                "--display-name",
                "Alice A",
                "--email",
                "a@example.com",
            ],
            "POST",
            "/users",
            "",
            Some(json!({"tenant": "acme", "name": "alice", "id": "alice-1",
                        "display_name": "Alice A", "email": "a@example.com"})),
            Shape::User,
        ),
        (
            vec!["user", "create", "--name", "bob"],
            "POST",
            "/users",
            "",
            Some(json!({"name": "bob"})),
            Shape::User,
        ),
        (
            vec!["user", "info", "--id", "3f2a"],
            "GET",
            "/user",
            "id=3f2a",
            None,
            Shape::User,
        ),
        (
            vec!["user", "info", "--access-key", "KURAX"],
            "GET",
            "/user",
            "access_key=KURAX",
            None,
            Shape::User,
        ),
        (
            vec!["user", "list"],
            "GET",
            "/users",
            "",
            None,
            Shape::Users,
        ),
        (
            vec!["user", "list", "--tenant", "acme"],
            "GET",
            "/users",
            "tenant=acme",
            None,
            Shape::Users,
        ),
        (
            vec!["user", "list", "--tenant", ""],
            "GET",
            "/users",
            "tenant=",
            None,
            Shape::Users,
        ),
        (
            vec!["user", "delete", "--id", "3f2a"],
            "DELETE",
            "/users/3f2a",
            "",
            None,
            Shape::Empty,
        ),
        (
            vec!["user", "policy", "get", "--id", "3f2a"],
            "GET",
            "/users/3f2a/policy",
            "",
            None,
            Shape::Policy,
        ),
        (
            vec!["user", "policy", "delete", "--id", "3f2a"],
            "DELETE",
            "/users/3f2a/policy",
            "",
            None,
            Shape::Empty,
        ),
        (
            vec![
                "key",
                "create",
                "--user",
                "3f2a",
                "--access-key",
                "AKAKAKAKAKAKAKAK",
                "--secret-key",
                "SKSKSKSKSKSKSKSK",
                "--expires",
                "2027-01-01T00:00:00Z",
            ],
            "POST",
            "/keys",
            "",
            Some(json!({"user": "3f2a", "access_key": "AKAKAKAKAKAKAKAK",
                        "secret_key": "SKSKSKSKSKSKSKSK", "expires": "2027-01-01T00:00:00Z"})),
            Shape::Key,
        ),
        (
            vec!["key", "create", "--user", "3f2a"],
            "POST",
            "/keys",
            "",
            Some(json!({"user": "3f2a"})),
            Shape::Key,
        ),
        (vec!["key", "list"], "GET", "/keys", "", None, Shape::Keys),
        (
            vec!["key", "list", "--user", "3f2a"],
            "GET",
            "/keys",
            "user=3f2a",
            None,
            Shape::Keys,
        ),
        (
            vec!["key", "enable", "--access-key", "KURAX"],
            "POST",
            "/keys/KURAX/enable",
            "",
            None,
            Shape::Key,
        ),
        (
            vec!["key", "disable", "--access-key", "KURAX"],
            "POST",
            "/keys/KURAX/disable",
            "",
            None,
            Shape::Key,
        ),
        (
            vec!["key", "delete", "--access-key", "KURAX"],
            "DELETE",
            "/keys/KURAX",
            "",
            None,
            Shape::Empty,
        ),
        (
            vec!["bucket", "info", "photos"],
            "GET",
            "/buckets/photos",
            "",
            None,
            Shape::Bucket,
        ),
        (
            vec!["bucket", "info", "acme:photos"],
            "GET",
            "/buckets/acme:photos",
            "",
            None,
            Shape::Bucket,
        ),
        (
            vec!["quota", "get", "--scope", "tenant", "--tenant", "acme"],
            "GET",
            "/quota",
            "scope=tenant&tenant=acme",
            None,
            Shape::Quota,
        ),
        // No --tenant: the root tenant, sent as an empty name.
        (
            vec!["quota", "get", "--scope", "user", "--user", "root-admin"],
            "GET",
            "/quota",
            "scope=user&tenant=&user=root-admin",
            None,
            Shape::Quota,
        ),
        (
            vec![
                "quota",
                "set",
                "--scope",
                "user",
                "--tenant",
                "acme",
                "--user",
                "alice",
                "--max-bytes",
                "10G",
                "--max-objects",
                "none",
            ],
            "PUT",
            "/quota",
            "scope=user&tenant=acme&user=alice",
            Some(json!({"max_bytes": 10u64 << 30, "max_objects": null})),
            Shape::Quota,
        ),
        (
            vec![
                "quota",
                "set",
                "--scope",
                "tenant",
                "--tenant",
                "acme",
                "--max-buckets",
                "0",
            ],
            "PUT",
            "/quota",
            "scope=tenant&tenant=acme",
            Some(json!({"max_buckets": 0})),
            Shape::Quota,
        ),
        (
            vec![
                "quota",
                "set",
                "--scope",
                "bucket",
                "--tenant",
                "acme",
                "--bucket",
                "photos",
                "--max-objects",
                "1000000",
                "--max-bytes",
                "-1",
            ],
            "PUT",
            "/quota",
            "bucket=photos&scope=bucket&tenant=acme",
            Some(json!({"max_bytes": null, "max_objects": 1_000_000})),
            Shape::Quota,
        ),
        (
            vec![
                "ratelimit",
                "get",
                "--scope",
                "bucket",
                "--bucket",
                "photos",
            ],
            "GET",
            "/ratelimit",
            "bucket=photos&scope=bucket&tenant=",
            None,
            Shape::RateLimits,
        ),
        (
            vec![
                "ratelimit",
                "set",
                "--scope",
                "tenant",
                "--tenant",
                "acme",
                "--max-read-ops",
                "100",
                "--max-write-ops",
                "none",
                "--max-list-ops",
                "5",
                "--max-delete-ops",
                "0",
                "--max-read-bytes",
                "512",
                "--max-write-bytes",
                "10M",
            ],
            "PUT",
            "/ratelimit",
            "scope=tenant&tenant=acme",
            Some(
                json!({"max_read_ops": 100, "max_write_ops": null, "max_list_ops": 5,
                        "max_delete_ops": 0, "max_read_bytes": 512,
                        "max_write_bytes": 10 << 20}),
            ),
            Shape::RateLimits,
        ),
        (
            vec![
                "ratelimit",
                "set",
                "--scope",
                "user",
                "--tenant",
                "acme",
                "--user",
                "alice",
                "--max-write-bytes=none",
            ],
            "PUT",
            "/ratelimit",
            "scope=user&tenant=acme&user=alice",
            Some(json!({"max_write_bytes": null})),
            Shape::RateLimits,
        ),
        (vec!["usage"], "GET", "/usage", "", None, Shape::Usage),
        (
            vec!["usage", "--tenant", "acme"],
            "GET",
            "/usage",
            "tenant=acme",
            None,
            Shape::Usage,
        ),
        (
            vec!["usage", "--tenant", ""],
            "GET",
            "/usage",
            "tenant=",
            None,
            Shape::Usage,
        ),
    ];
    for (argv, method, path, query, want_body, want_shape) in cases {
        let (c, shape) = call(&argv);
        assert_eq!(c.method.as_str(), method, "{argv:?}");
        assert_eq!(
            c.wire_path(),
            format!("{}{path}", client::API_PREFIX),
            "{argv:?}"
        );
        assert_eq!(c.query_string(), query, "{argv:?}");
        assert_eq!(body(&c), want_body, "{argv:?}");
        assert_eq!(shape, want_shape, "{argv:?}");
    }
}

#[test]
fn policy_files_are_sent_unchanged() {
    let text = b"{ \"Version\": \"2012-10-17\",\n  \"Statement\": [] }\n";
    let a = args(&["user", "policy", "set", "--id", "3f2a", "--file", "-"]);
    let (c, shape) = call_for(&a.command, &mut Cursor::new(text.to_vec())).expect("stdin");
    assert_eq!(c.method.as_str(), "PUT");
    assert_eq!(c.wire_path(), "/_kura/admin/v1/users/3f2a/policy");
    assert_eq!(c.body.as_deref(), Some(&text[..]));
    assert_eq!(shape, Shape::User);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.json");
    std::fs::write(&file, text).expect("write");
    let a = args(&[
        "user",
        "policy",
        "set",
        "--id",
        "3f2a",
        "--file",
        &file.display().to_string(),
    ]);
    let (c, _) = call_for(&a.command, &mut Cursor::new(Vec::new())).expect("file");
    assert_eq!(c.body.as_deref(), Some(&text[..]));

    let a = args(&[
        "user",
        "policy",
        "set",
        "--id",
        "3f2a",
        "--file",
        "/nonexistent/p.json",
    ]);
    let e = call_for(&a.command, &mut Cursor::new(Vec::new())).expect_err("missing file");
    assert!(e.to_string().contains("/nonexistent/p.json"), "{e}");
}

#[test]
fn unusable_input_fails_before_any_request() {
    for argv in [
        &["tenant", "delete", ""][..],
        &["tenant", "delete", ".."][..],
        &["user", "delete", "--id", "."][..],
        &["key", "create", "--user", "u", "--expires", "tomorrow"][..],
    ] {
        let a = args(argv);
        assert!(
            call_for(&a.command, &mut Cursor::new(Vec::new())).is_err(),
            "{argv:?}"
        );
    }
}

#[test]
fn limits_are_counts_sizes_or_none() {
    for (text, want) in [
        ("0", Limit::Set(0)),
        ("42", Limit::Set(42)),
        ("18446744073709551615", Limit::Set(u64::MAX)),
        ("none", Limit::Remove),
        ("NONE", Limit::Remove),
        ("-1", Limit::Remove),
    ] {
        assert_eq!(count_limit(text), Ok(want), "{text}");
        assert_eq!(size_limit(text), Ok(want), "{text}");
    }
    for (text, want) in [
        ("512B", 512),
        ("1K", 1 << 10),
        ("1k", 1 << 10),
        ("5M", 5 << 20),
        ("10G", 10 << 30),
        ("10GiB", 10 << 30),
        ("10 GiB", 10 << 30),
        ("2T", 2 << 40),
        ("16777215T", 16777215 << 40),
    ] {
        assert_eq!(size_limit(text), Ok(Limit::Set(want)), "{text}");
        assert!(count_limit(text).is_err(), "{text} is not a count");
    }
    for bad in [
        "",
        "-",
        "-2",
        "+1",
        "1.5",
        "1.5G",
        "10GB",
        "10Gi",
        "1P",
        "G",
        "1 2",
        "nil",
        "16777216T",
        "18446744073709551616",
    ] {
        assert!(size_limit(bad).is_err(), "{bad:?}");
        assert!(count_limit(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        size_limit("16777216T"),
        Err("too large: at most 18446744073709551615 bytes".to_string())
    );
    // `-1` is a value, not a flag, with or without `=`.
    for argv in [
        &["quota", "set", "--scope", "tenant", "--max-objects", "-1"][..],
        &["quota", "set", "--scope", "tenant", "--max-objects=-1"][..],
    ] {
        let (c, _) = call(argv);
        assert_eq!(c.body.as_deref(), Some(&b"{\"max_objects\":null}"[..]));
    }
}

#[test]
fn scope_flags_clap_cannot_check_are_usage_errors() {
    for argv in [
        &["quota", "get", "--scope", "tenant", "--user", "alice"][..],
        &[
            "quota", "get", "--scope", "tenant", "--tenant", "a", "--bucket", "b",
        ][..],
        &[
            "ratelimit",
            "get",
            "--scope",
            "tenant",
            "--bucket",
            "photos",
        ][..],
        &[
            "ratelimit",
            "set",
            "--scope",
            "tenant",
            "--user",
            "alice",
            "--max-list-ops",
            "1",
        ][..],
        &[
            "quota",
            "set",
            "--scope",
            "bucket",
            "--bucket",
            "b",
            "--max-buckets",
            "3",
        ][..],
    ] {
        let a = args(argv);
        match call_for(&a.command, &mut Cursor::new(Vec::new())) {
            Err(AdminError::Usage(msg)) => assert!(msg.starts_with("--"), "{argv:?}: {msg}"),
            other => panic!("{argv:?}: {other:?}"),
        }
    }
    let a = args(&[
        "quota",
        "set",
        "--scope",
        "bucket",
        "--bucket",
        "b",
        "--max-buckets",
        "3",
    ]);
    let e = call_for(&a.command, &mut Cursor::new(Vec::new())).expect_err("usage");
    assert_eq!(
        e.to_string(),
        "--max-buckets applies to tenants and users, not to --scope bucket"
    );
    // --max-buckets is fine where it applies.
    for scope in [
        &["--scope", "tenant"][..],
        &["--scope", "user", "--user", "u"][..],
    ] {
        let mut argv = vec!["quota", "set", "--max-buckets", "3"];
        argv.extend_from_slice(scope);
        let (c, _) = call(&argv);
        assert_eq!(c.body.as_deref(), Some(&b"{\"max_buckets\":3}"[..]));
    }
}

#[test]
fn endpoint_credentials_come_from_admin_then_root_variables() {
    let env_of = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let admin_and_root = env_of(&[
        ("KURA_ADMIN_ACCESS_KEY", "ADMINAK"),
        ("KURA_ADMIN_SECRET_KEY", "ADMINSK"),
        ("KURA_ROOT_ACCESS_KEY", "ROOTAK"),
        ("KURA_ROOT_SECRET_KEY", "ROOTSK"),
    ]);
    let c = env_credentials(&admin_and_root).expect("admin pair");
    assert_eq!(
        (c.access_key.as_str(), c.secret_key.as_str()),
        ("ADMINAK", "ADMINSK")
    );
    let root = env_of(&[
        ("KURA_ROOT_ACCESS_KEY", "ROOTAK"),
        ("KURA_ROOT_SECRET_KEY", "ROOTSK"),
    ]);
    assert_eq!(
        env_credentials(&root).expect("root pair").access_key,
        "ROOTAK"
    );
    let half = env_of(&[
        ("KURA_ADMIN_ACCESS_KEY", "ADMINAK"),
        ("KURA_ROOT_ACCESS_KEY", "ROOTAK"),
        ("KURA_ROOT_SECRET_KEY", "ROOTSK"),
    ]);
    let e = env_credentials(&half).expect_err("half a pair");
    assert_eq!(
        e.to_string(),
        "KURA_ADMIN_ACCESS_KEY is set but KURA_ADMIN_SECRET_KEY is not"
    );
    let e = env_credentials(&no_env).expect_err("nothing set");
    assert!(e.to_string().contains("KURA_ADMIN_ACCESS_KEY"), "{e}");
}

/// A cluster.json in `dir` for `endpoint`, its credentials file beside it.
fn write_cluster(dir: &Path, endpoint: &str, secret: &str) -> String {
    let creds = dir.join("credentials.json");
    std::fs::write(
        &creds,
        json!({"access_key": AK, "secret_key": secret}).to_string(),
    )
    .expect("write credentials");
    let cluster = dir.join("cluster.json");
    std::fs::write(
        &cluster,
        json!({"s3": endpoint, "pd_http": "http://127.0.0.1:1", "credentials_file": creds,
               "components": []})
        .to_string(),
    )
    .expect("write cluster.json");
    cluster.display().to_string()
}

#[test]
fn cluster_files_give_endpoint_and_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = write_cluster(dir.path(), "http://127.0.0.1:9000", SK);
    for flag in [cluster.clone(), dir.path().display().to_string()] {
        let (endpoint, creds) = target(&args(&["--cluster", &flag, "tenant", "list"]), &no_env)
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
        assert_eq!(endpoint.base, "http://127.0.0.1:9000");
        assert_eq!(creds.access_key, AK);
    }
    // A broken credentials file is reported without its contents.
    std::fs::write(
        dir.path().join("credentials.json"),
        format!("{{\"access_key\": \"{AK}\", \"secret_key\": 12345678901234567}}"),
    )
    .expect("write");
    let e = target(&args(&["--cluster", &cluster, "tenant", "list"]), &no_env)
        .expect_err("bad credentials");
    assert!(e.to_string().contains("not a credentials file"), "{e}");
    assert!(!e.to_string().contains("12345678901234567"), "{e}");
    let e = target(
        &args(&["--cluster", "/nonexistent/cluster.json", "tenant", "list"]),
        &no_env,
    )
    .expect_err("missing");
    assert!(e.to_string().contains("/nonexistent/cluster.json"), "{e}");
    let e = from_cluster(Path::new("/nonexistent/kura-data/cluster.json"), true)
        .expect_err("missing default");
    assert!(
        e.to_string()
            .contains("./kura-data/cluster.json does not exist"),
        "{e}"
    );
    assert!(e.to_string().contains("make dev"), "{e}");
}

// The throwaway server: it verifies each request's signature from what it
// received, then echoes the request as JSON (or answers an API error).

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Why the request's signature is wrong, if it is: the canonical request is
/// rebuilt from the decoded path and query and the signed headers as
/// received, as s3s does.
fn check_signature(parts: &http::request::Parts, body: &[u8], secret: &str) -> Result<(), String> {
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(format!("no {n} header"))
    };
    let auth = header("authorization")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or("not SigV4")?;
    let mut it = rest.split(", ");
    let credential = it.next().ok_or("no credential")?;
    let signed = it
        .next()
        .and_then(|s| s.strip_prefix("SignedHeaders="))
        .ok_or("no SignedHeaders")?;
    let signature = it
        .next()
        .and_then(|s| s.strip_prefix("Signature="))
        .ok_or("no Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != AK || scope[3] != "s3" {
        return Err(format!("bad credential scope {credential}"));
    }
    let payload = header("x-amz-content-sha256")?;
    if payload != hex::encode(Sha256::digest(body)) {
        return Err("x-amz-content-sha256 is not the body's hash".into());
    }
    for must in ["host", "x-amz-date", "x-amz-content-sha256"] {
        if !signed.split(';').any(|h| h == must) {
            return Err(format!("{must} is not signed"));
        }
    }
    let path = uri_encode(&percent_decode(parts.uri.path()), false);
    let decoded: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let pairs: Vec<(&str, &str)> = decoded
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut headers = String::new();
    for name in signed.split(';') {
        headers.push_str(&format!("{name}:{}\n", header(name)?.trim()));
    }
    let canonical = format!(
        "{}\n{path}\n{}\n{headers}\n{signed}\n{payload}",
        parts.method,
        canonical_query(&pairs)
    );
    let date = header("x-amz-date")?;
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{}\n{}",
        scope[1..].join("/"),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = mac(format!("AWS4{secret}").as_bytes(), scope[1]);
    for part in [scope[2], scope[3], scope[4]] {
        key = mac(&key, part);
    }
    if hex::encode(mac(&key, &to_sign)) != signature {
        return Err(format!(
            "signature mismatch; canonical request:\n{canonical}"
        ));
    }
    Ok(())
}

async fn serve(req: axum::extract::Request, secret: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .expect("a small body");
    let reply = |status: u16, v: Value| {
        (
            http::StatusCode::from_u16(status).expect("valid status"),
            [(http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    let error = |status: u16, code: &str, message: &str| {
        reply(status, json!({"error": {"code": code, "message": message}}))
    };
    if let Err(why) = check_signature(&parts, &body, secret) {
        return error(403, "SignatureDoesNotMatch", &why);
    }
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    if body.is_empty() != content_type.is_none() {
        return error(400, "InvalidArgument", "content-type iff a body");
    }
    if parts.uri.query() == Some("id=nobody") {
        return error(404, "NoSuchUser", "user 'nobody' does not exist");
    }
    if parts.uri.path() == "/_kura/admin/v1/tenants" && parts.method == http::Method::GET {
        // Raw text in the contract's field order (a `json!` value would sort it).
        let text = r#"{"count":1,"tenants":[{"name":"acme","created":"2026-12-05T08:00:00Z"}]}"#;
        return (
            http::StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response();
    }
    reply(
        200,
        json!({"method": parts.method.as_str(), "path": parts.uri.path(),
               "query": parts.uri.query(), "body": String::from_utf8_lossy(&body)}),
    )
}

/// Starts the server; its endpoint URL.
async fn start_server(secret: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| serve(req, secret));
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

/// Runs `argv` against the cluster file `cluster`: stdout or the error line.
async fn run_against(cluster: &str, argv: &[&str], stdin: &[u8]) -> Result<String, String> {
    let mut full = vec!["--cluster", cluster];
    full.extend_from_slice(argv);
    let a = args(&full);
    let (client, call, shape) =
        prepare(&a, &no_env, &mut Cursor::new(stdin.to_vec())).map_err(|e| e.to_string())?;
    execute(&client, &call, shape, a.table)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn signed_requests_reach_the_server_as_built() {
    let endpoint = start_server(SK).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = write_cluster(dir.path(), &endpoint, SK);
    let echo = |out: Result<String, String>| -> Value {
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&out).expect("pretty JSON out")
    };

    let v = echo(run_against(&cluster, &["tenant", "create", "acme"], b"").await);
    assert_eq!(
        v,
        json!({"method": "POST", "path": "/_kura/admin/v1/tenants", "query": null,
               "body": "{\"name\":\"acme\"}"})
    );
    // ':' arrives as typed; the signature covers the path as s3s would.
    let v = echo(run_against(&cluster, &["bucket", "info", "acme:my.photos"], b"").await);
    assert_eq!(v["path"], "/_kura/admin/v1/buckets/acme:my.photos");
    let v = echo(run_against(&cluster, &["bucket", "info", "a b:c/d%"], b"").await);
    assert_eq!(v["path"], "/_kura/admin/v1/buckets/a%20b:c%2Fd%25");
    let v = echo(run_against(&cluster, &["user", "list", "--tenant", ""], b"").await);
    assert_eq!(v["query"], "tenant=");
    let v = echo(run_against(&cluster, &["key", "list", "--user", "a b"], b"").await);
    assert_eq!(v["query"], "user=a%20b");
    let v = echo(run_against(&cluster, &["key", "disable", "--access-key", "KURAX"], b"").await);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body"], "");
    let policy = "{\"Version\": \"2012-10-17\",\n \"Statement\": []}\n";
    let v = echo(
        run_against(
            &cluster,
            &["user", "policy", "set", "--id", "3f2a", "--file", "-"],
            policy.as_bytes(),
        )
        .await,
    );
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["body"], policy);
    // A root-tenant scope (empty `tenant=`) and a null in the signed body.
    let v = echo(
        run_against(
            &cluster,
            &[
                "quota",
                "set",
                "--scope",
                "user",
                "--user",
                "a b",
                "--max-bytes",
                "1K",
                "--max-objects",
                "none",
            ],
            b"",
        )
        .await,
    );
    assert_eq!(
        v,
        json!({"method": "PUT", "path": "/_kura/admin/v1/quota",
               "query": "scope=user&tenant=&user=a%20b",
               "body": "{\"max_bytes\":1024,\"max_objects\":null}"})
    );
    let v = echo(run_against(&cluster, &["usage", "--tenant", "acme"], b"").await);
    assert_eq!(
        (&v["method"], &v["path"], &v["query"]),
        (
            &json!("GET"),
            &json!("/_kura/admin/v1/usage"),
            &json!("tenant=acme")
        )
    );

    let out = run_against(&cluster, &["tenant", "list"], b"").await;
    assert_eq!(
        out,
        Ok(
            "{\n  \"count\": 1,\n  \"tenants\": [\n    {\n      \"name\": \"acme\",\n      \
            \"created\": \"2026-12-05T08:00:00Z\"\n    }\n  ]\n}"
                .to_string()
        )
    );
    let out = run_against(&cluster, &["--table", "tenant", "list"], b"").await;
    assert_eq!(
        out,
        Ok("NAME  CREATED\nacme  2026-12-05T08:00:00Z".to_string())
    );

    let out = run_against(&cluster, &["user", "info", "--id", "nobody"], b"").await;
    assert_eq!(
        out,
        Err("NoSuchUser: user 'nobody' does not exist".to_string())
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_never_printed() {
    let endpoint = start_server(SK).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = "wrongsecretwrongsecretwrongsecret0123456";
    let cluster = write_cluster(dir.path(), &endpoint, wrong);
    let e = run_against(&cluster, &["tenant", "list"], b"")
        .await
        .expect_err("refused");
    assert!(
        e.starts_with("SignatureDoesNotMatch: signature mismatch"),
        "{e}"
    );
    assert!(!e.contains(wrong), "{e}");
}

#[tokio::test]
async fn an_unreachable_gateway_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = write_cluster(dir.path(), &format!("http://{addr}"), SK);
    let e = run_against(&cluster, &["tenant", "list"], b"")
        .await
        .expect_err("nothing listens");
    assert!(
        e.starts_with(&format!("cannot reach the admin API at http://{addr}: ")),
        "{e}"
    );
    assert!(!e.contains(SK), "{e}");
}
