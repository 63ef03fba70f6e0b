//! The aws CLI, rclone and s3cmd against a real cluster.
mod common;
use common::{pattern, Cluster};
use std::process::Command;

fn md5_file(path: &std::path::Path) -> String {
    use md5::{Digest, Md5};
    let data = std::fs::read(path).expect("read");
    hex::encode(Md5::digest(&data))
}

#[test]
fn aws_cli_s3_and_s3api() {
    let c = Cluster::must_start();
    let tmp = tempfile::tempdir().expect("tmp");
    c.must_aws(&["s3", "mb", "s3://cli-bucket"]);
    assert!(c.must_aws(&["s3", "ls"]).contains("cli-bucket"));

    // 100 MiB through `aws s3 cp`: the CLI switches to multipart (8 MiB parts).
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, pattern(100 << 20, 1)).expect("write");
    c.must_aws(&[
        "s3",
        "cp",
        big.to_str().unwrap(),
        "s3://cli-bucket/dir/big.bin",
    ]);
    let head = c.must_aws(&[
        "s3api",
        "head-object",
        "--bucket",
        "cli-bucket",
        "--key",
        "dir/big.bin",
    ]);
    let v: serde_json::Value = serde_json::from_str(&head).expect("json");
    assert_eq!(v["ContentLength"], 100 << 20);
    assert!(
        v["ETag"].as_str().unwrap().ends_with("-13\""),
        "multipart ETag expected: {}",
        v["ETag"]
    );
    let back = tmp.path().join("back.bin");
    c.must_aws(&[
        "s3",
        "cp",
        "s3://cli-bucket/dir/big.bin",
        back.to_str().unwrap(),
    ]);
    assert_eq!(
        md5_file(&big),
        md5_file(&back),
        "100 MiB round trip differs"
    );

    // s3api put/get with metadata and a range.
    let small = tmp.path().join("small.txt");
    std::fs::write(&small, b"hello kura, hello s3").expect("write");
    c.must_aws(&[
        "s3api",
        "put-object",
        "--bucket",
        "cli-bucket",
        "--key",
        "small.txt",
        "--body",
        small.to_str().unwrap(),
        "--metadata",
        "team=storage",
        "--content-type",
        "text/plain",
    ]);
    let out = tmp.path().join("range.txt");
    let meta = c.must_aws(&[
        "s3api",
        "get-object",
        "--bucket",
        "cli-bucket",
        "--key",
        "small.txt",
        "--range",
        "bytes=6-9",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"kura");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["Metadata"]["team"], "storage");
    assert_eq!(v["ContentRange"], "bytes 6-9/20");

    let ls = c.must_aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "cli-bucket",
        "--delimiter",
        "/",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ls).expect("json");
    assert_eq!(v["CommonPrefixes"][0]["Prefix"], "dir/");
    assert_eq!(v["Contents"][0]["Key"], "small.txt");

    // Errors come back as S3 errors.
    let r = c.aws(&[
        "s3api",
        "get-object",
        "--bucket",
        "cli-bucket",
        "--key",
        "nope",
        "/dev/null",
    ]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("NoSuchKey"));
    let r = c.aws(&["s3", "rb", "s3://cli-bucket"]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("BucketNotEmpty"));
    c.must_aws(&["s3", "rm", "--recursive", "s3://cli-bucket"]);
    c.must_aws(&["s3", "rb", "s3://cli-bucket"]);
}

#[test]
fn rclone_and_s3cmd() {
    let c = Cluster::must_start();
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for (i, size) in [0usize, 10, 4096, 4097, 1 << 20, (6 << 20) + 3]
        .iter()
        .enumerate()
    {
        std::fs::write(src.join(format!("f{i}")), pattern(*size, i as u64)).unwrap();
    }
    std::fs::write(src.join("sub/nested.txt"), b"nested").unwrap();

    // In TLS mode (KURA_TEST_TLS=1) both trust the cluster CA explicitly.
    let ca = c.ca().display().to_string();
    let rclone = |args: &[&str]| {
        let mut cmd = Command::new("rclone");
        if c.tls {
            cmd.args(["--ca-cert", &ca]);
        }
        let out = cmd
            .args(args)
            .env("RCLONE_CONFIG_KURA_TYPE", "s3")
            .env("RCLONE_CONFIG_KURA_PROVIDER", "Other")
            .env("RCLONE_CONFIG_KURA_ENDPOINT", &c.s3)
            .env("RCLONE_CONFIG_KURA_ACCESS_KEY_ID", &c.access_key)
            .env("RCLONE_CONFIG_KURA_SECRET_ACCESS_KEY", &c.secret_key)
            .env("RCLONE_CONFIG_KURA_FORCE_PATH_STYLE", "true")
            .env("RCLONE_CONFIG", "/dev/null")
            // rclone 1.60 fails on AWS_CA_BUNDLE with its custom HTTP transport (--ca-cert works).
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .expect("run rclone");
        assert!(
            out.status.success(),
            "rclone {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.logs_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    rclone(&["mkdir", "kura:rc-bucket"]);
    rclone(&[
        "copy",
        src.to_str().unwrap(),
        "kura:rc-bucket/data",
        "--s3-upload-cutoff",
        "5M",
        "--s3-chunk-size",
        "5M",
    ]);
    rclone(&["check", src.to_str().unwrap(), "kura:rc-bucket/data"]);
    let dst = tmp.path().join("dst");
    rclone(&["copy", "kura:rc-bucket/data", dst.to_str().unwrap()]);
    for name in ["f0", "f1", "f2", "f3", "f4", "f5", "sub/nested.txt"] {
        assert_eq!(
            std::fs::read(src.join(name)).unwrap(),
            std::fs::read(dst.join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(rclone(&["lsf", "kura:rc-bucket/data"]).contains("sub/"));

    let cfg = tmp.path().join("s3cfg");
    let host =
        c.s3.trim_start_matches("http://")
            .trim_start_matches("https://");
    let https = if c.tls {
        format!("use_https = True\nca_certs_file = {ca}\n")
    } else {
        "use_https = False\n".to_string()
    };
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {host}\nhost_bucket = {host}\n{https}signature_v2 = False\n",
            c.access_key, c.secret_key
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| {
        let out = Command::new("s3cmd")
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .output()
            .expect("run s3cmd");
        assert!(
            out.status.success(),
            "s3cmd {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.logs_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // s3cmd's default region is "US": the gateway answers AuthorizationHeaderMalformed
    // with <Region>us-east-1</Region> and s3cmd re-signs, as against AWS.
    s3cmd(&["mb", "s3://cmd-bucket"]);
    s3cmd(&[
        "put",
        src.join("f5").to_str().unwrap(),
        "s3://cmd-bucket/f5",
        "--multipart-chunk-size-mb=5",
    ]);
    s3cmd(&[
        "put",
        src.join("f2").to_str().unwrap(),
        "s3://cmd-bucket/f2",
    ]);
    let got = tmp.path().join("f5.back");
    s3cmd(&["get", "s3://cmd-bucket/f5", got.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(src.join("f5")).unwrap()
    );
    let ls = s3cmd(&["ls", "s3://cmd-bucket"]);
    assert!(
        ls.contains("s3://cmd-bucket/f5") && ls.contains("s3://cmd-bucket/f2"),
        "{ls}"
    );
    s3cmd(&["del", "s3://cmd-bucket/f5", "s3://cmd-bucket/f2"]);
    s3cmd(&["rb", "s3://cmd-bucket"]);
}
