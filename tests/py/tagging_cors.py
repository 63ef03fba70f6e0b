"""Object and bucket tagging, and CORS, end to end.

Run by tests/tagging_cors.rs against `kura dev` with KURA_S3, KURA_DIR,
KURA_BIN, the root key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and an
aws CLI config in AWS_CONFIG_FILE.

Tagging through boto3 and the aws CLI: every operation, `x-amz-tagging` on
PutObject / CreateMultipartUpload / CopyObject, `x-amz-tagging-count`, every
limit AWS enforces, and a tag update racing overwrites (never undoes one).
CORS: the configuration operations and their refusals, preflights and real
requests as raw HTTP (urllib, the headers a browser sends), and a real
browser (headless Chromium) fetching from another origin.
"""
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from kura_kit import ENDPOINT, admin, check, client, expect_error, key_of

ROOT = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
s3 = ROOT


def aws(*args, ok=True):
    """`aws s3api ARGS` with the root key: its JSON, or (ok=False) the process."""
    p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "s3api", *args], capture_output=True, text=True)
    if not ok:
        return p
    assert p.returncode == 0, f"aws {args}: {p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip() else {}


def tags_of(answer):
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


def raw(method, url, headers=None, data=None):
    """One HTTP request as a browser would send it: (status, headers, body)."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def tag_header_count(bucket, key):
    h = s3.head_object(Bucket=bucket, Key=key)["ResponseMetadata"]["HTTPHeaders"]
    return h.get("x-amz-tagging-count")


s3.create_bucket(Bucket="tags")


def object_tagging_round_trip():
    s3.put_object(Bucket="tags", Key="o", Body=b"x", Tagging="b=two%20words&a=1&empty")
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="o")) == {"a": "1", "b": "two words", "empty": ""}
    assert tag_header_count("tags", "o") == "3"
    assert s3.get_object(Bucket="tags", Key="o")["TagCount"] == 3
    s3.put_object_tagging(Bucket="tags", Key="o", Tagging={"TagSet": [
        {"Key": "k", "Value": "v"}, {"Key": "日本", "Value": "été +-=._:/@"}]})
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="o")) == {"k": "v", "日本": "été +-=._:/@"}
    assert s3.get_object(Bucket="tags", Key="o")["Body"].read() == b"x", "tagging keeps the body"
    # The null version by name.
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="o", VersionId="null")) == {"k": "v", "日本": "été +-=._:/@"}
    r = s3.delete_object_tagging(Bucket="tags", Key="o")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204, r
    assert s3.get_object_tagging(Bucket="tags", Key="o")["TagSet"] == []
    assert tag_header_count("tags", "o") is None
    assert "TagCount" not in s3.get_object(Bucket="tags", Key="o")
    # An overwrite without the header has no tags.
    s3.put_object(Bucket="tags", Key="o", Body=b"x", Tagging="a=1")
    s3.put_object(Bucket="tags", Key="o", Body=b"y")
    assert s3.get_object_tagging(Bucket="tags", Key="o")["TagSet"] == []
    expect_error("NoSuchKey", s3.get_object_tagging, Bucket="tags", Key="missing", status=404)
    expect_error("NoSuchKey", s3.put_object_tagging, Bucket="tags", Key="missing",
                 Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}, status=404)
    expect_error("NoSuchBucket", s3.get_object_tagging, Bucket="no-such-bucket", Key="o", status=404)


check("object tagging: PutObject header, Put/Get/DeleteObjectTagging, x-amz-tagging-count", object_tagging_round_trip)


def object_tag_limits():
    s3.put_object(Bucket="tags", Key="lim", Body=b"x")
    ts = lambda pairs: {"TagSet": [{"Key": k, "Value": v} for k, v in pairs]}
    put = lambda pairs: s3.put_object_tagging(Bucket="tags", Key="lim", Tagging=ts(pairs))
    put([(f"k{i}", "v") for i in range(10)])
    put([("k" * 128, "v" * 256)])
    expect_error("BadRequest", put, [(f"k{i}", "v") for i in range(11)], status=400)
    expect_error("InvalidTag", put, [("k" * 129, "v")], status=400)
    expect_error("InvalidTag", put, [("k", "v" * 257)], status=400)
    expect_error("InvalidTag", put, [("a", "1"), ("a", "2")], status=400)
    expect_error("InvalidTag", put, [("aws:cloudformation", "x")], status=400)
    expect_error("InvalidTag", put, [("k<", "v")], status=400)
    expect_error("InvalidTag", put, [("k", "v!")], status=400)
    # Nothing refused changed the tags.
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="lim")) == {"k" * 128: "v" * 256}
    # The same limits on the header, before any body is stored.
    eleven = "&".join(f"k{i}=v" for i in range(11))
    expect_error("BadRequest", s3.put_object, Bucket="tags", Key="h", Body=b"x", Tagging=eleven, status=400)
    expect_error("InvalidArgument", s3.put_object, Bucket="tags", Key="h", Body=b"x", Tagging="a=1&a=2", status=400)
    expect_error("InvalidArgument", s3.put_object, Bucket="tags", Key="h", Body=b"x",
                 Tagging="TagSet=[{Key=string,Value=string}]", status=400)
    expect_error("InvalidTag", s3.put_object, Bucket="tags", Key="h", Body=b"x",
                 Tagging="TagSet%3D%5B%7BKey%3Dstring%7D%5D", status=400)
    expect_error("InvalidTag", s3.put_object, Bucket="tags", Key="h", Body=b"x", Tagging="aws:x=1", status=400)
    assert "Contents" not in s3.list_objects_v2(Bucket="tags", Prefix="h"), "a refused PUT stored nothing"


check("object tag limits: 10 tags (BadRequest), 128/256 chars, unique keys, characters, aws: (InvalidTag)", object_tag_limits)


def multipart_and_copy_tags():
    up = s3.create_multipart_upload(Bucket="tags", Key="mp", Tagging="stage=upload&n=1")
    etag = s3.upload_part(Bucket="tags", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 100)["ETag"]
    s3.complete_multipart_upload(Bucket="tags", Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="mp")) == {"stage": "upload", "n": "1"}
    assert tag_header_count("tags", "mp") == "2"
    expect_error("BadRequest", s3.create_multipart_upload, Bucket="tags", Key="mp2",
                 Tagging="&".join(f"k{i}=v" for i in range(11)))
    # CopyObject: the source's tags by default (COPY), the request's with REPLACE.
    s3.copy_object(Bucket="tags", Key="c1", CopySource="tags/mp")
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="c1")) == {"stage": "upload", "n": "1"}
    s3.copy_object(Bucket="tags", Key="c2", CopySource="tags/mp", TaggingDirective="COPY", Tagging="ignored=1")
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="c2")) == {"stage": "upload", "n": "1"}
    s3.copy_object(Bucket="tags", Key="c3", CopySource="tags/mp", TaggingDirective="REPLACE", Tagging="copy=new")
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="c3")) == {"copy": "new"}
    s3.copy_object(Bucket="tags", Key="c4", CopySource="tags/mp", TaggingDirective="REPLACE")
    assert s3.get_object_tagging(Bucket="tags", Key="c4")["TagSet"] == []
    expect_error("InvalidTag", s3.copy_object, Bucket="tags", Key="c5", CopySource="tags/mp",
                 TaggingDirective="REPLACE", Tagging="aws:no=1")


check("tags through CreateMultipartUpload/Complete and CopyObject (COPY, REPLACE)", multipart_and_copy_tags)


def tagging_races_overwrites():
    """A tag update is a compare-and-set on the record: an overwrite that
    lands while it runs is never undone (the writer reads back its own body
    after every PUT), and the tags end up on whatever is current."""
    # SDKs retry 503 SlowDown (a compare-and-set that lost too many races in a row).
    s3 = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
                retries={"max_attempts": 10, "mode": "standard"})
    s3.put_object(Bucket="tags", Key="race", Body=b"v0")
    errors = []

    def writer():
        try:
            for i in range(1, 40):
                s3.put_object(Bucket="tags", Key="race", Body=f"v{i}".encode())
                got = s3.get_object(Bucket="tags", Key="race")["Body"].read()
                if got != f"v{i}".encode():
                    errors.append(f"after PUT v{i} the object holds {got!r}")
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(f"writer: {e}")

    def tagger():
        try:
            for i in range(60):
                s3.put_object_tagging(Bucket="tags", Key="race", Tagging={"TagSet": [{"Key": "n", "Value": str(i)}]})
        except Exception as e:  # noqa: BLE001
            errors.append(f"tagger: {e}")

    threads = [threading.Thread(target=writer), threading.Thread(target=tagger)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert s3.get_object(Bucket="tags", Key="race")["Body"].read() == b"v39"
    s3.put_object_tagging(Bucket="tags", Key="race", Tagging={"TagSet": [{"Key": "final", "Value": "1"}]})
    assert tags_of(s3.get_object_tagging(Bucket="tags", Key="race")) == {"final": "1"}
    assert s3.get_object(Bucket="tags", Key="race")["Body"].read() == b"v39"


check("tag updates racing overwrites lose no overwrite", tagging_races_overwrites)


def versioned_tagging():
    """Tags belong to one version; `versionId` names it, the latest by default."""
    s3.create_bucket(Bucket="vtags")
    s3.put_bucket_versioning(Bucket="vtags", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="vtags", Key="k", Body=b"one", Tagging="v=1")["VersionId"]
    v2 = s3.put_object(Bucket="vtags", Key="k", Body=b"two", Tagging="v=2")["VersionId"]
    assert v1 != v2
    got = s3.get_object_tagging(Bucket="vtags", Key="k")
    assert tags_of(got) == {"v": "2"} and got["VersionId"] == v2, got
    r = s3.put_object_tagging(Bucket="vtags", Key="k", VersionId=v1, Tagging={"TagSet": [{"Key": "old", "Value": "yes"}]})
    assert r["VersionId"] == v1, r
    assert tags_of(s3.get_object_tagging(Bucket="vtags", Key="k", VersionId=v1)) == {"old": "yes"}
    assert tags_of(s3.get_object_tagging(Bucket="vtags", Key="k")) == {"v": "2"}, "the latest kept its tags"
    assert s3.get_object(Bucket="vtags", Key="k", VersionId=v1)["Body"].read() == b"one"
    assert s3.head_object(Bucket="vtags", Key="k", VersionId=v1)["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "1"
    r = s3.delete_object_tagging(Bucket="vtags", Key="k", VersionId=v2)
    assert r["VersionId"] == v2, r
    assert s3.get_object_tagging(Bucket="vtags", Key="k")["TagSet"] == []
    assert tags_of(s3.get_object_tagging(Bucket="vtags", Key="k", VersionId=v1)) == {"old": "yes"}
    expect_error("NoSuchVersion", s3.get_object_tagging, Bucket="vtags", Key="k", VersionId="00000000000000ff", status=404)
    expect_error("InvalidArgument", s3.get_object_tagging, Bucket="vtags", Key="k", VersionId="nope", status=400)


check("tags per version (versionId on Put/Get/DeleteObjectTagging)", versioned_tagging)


def bucket_tagging():
    expect_error("NoSuchTagSet", s3.get_bucket_tagging, Bucket="tags", status=404)
    s3.put_bucket_tagging(Bucket="tags", Tagging={"TagSet": [{"Key": "team", "Value": "storage"},
                                                             {"Key": "cost", "Value": "42"}]})
    assert tags_of(s3.get_bucket_tagging(Bucket="tags")) == {"team": "storage", "cost": "42"}
    fifty = {"TagSet": [{"Key": f"k{i}", "Value": ""} for i in range(50)]}
    s3.put_bucket_tagging(Bucket="tags", Tagging=fifty)
    assert len(s3.get_bucket_tagging(Bucket="tags")["TagSet"]) == 50
    many = {"TagSet": [{"Key": f"k{i}", "Value": ""} for i in range(51)]}
    expect_error("InvalidTag", s3.put_bucket_tagging, Bucket="tags", Tagging=many, status=400)
    expect_error("InvalidTag", s3.put_bucket_tagging, Bucket="tags",
                 Tagging={"TagSet": [{"Key": "aws:x", "Value": "1"}]}, status=400)
    expect_error("InvalidTag", s3.put_bucket_tagging, Bucket="tags",
                 Tagging={"TagSet": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]}, status=400)
    r = s3.delete_bucket_tagging(Bucket="tags")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204, r
    expect_error("NoSuchTagSet", s3.get_bucket_tagging, Bucket="tags", status=404)
    expect_error("NoSuchBucket", s3.get_bucket_tagging, Bucket="no-such-bucket", status=404)


check("bucket tagging: Put/Get/DeleteBucketTagging, 50 tags, NoSuchTagSet", bucket_tagging)


def tagging_with_the_aws_cli():
    aws("put-bucket-tagging", "--bucket", "tags", "--tagging", "TagSet=[{Key=env,Value=prod}]")
    assert tags_of(aws("get-bucket-tagging", "--bucket", "tags")) == {"env": "prod"}
    with tempfile.NamedTemporaryFile() as body:
        body.write(b"cli")
        body.flush()
        aws("put-object", "--bucket", "tags", "--key", "cli", "--tagging", "a=b&c=d", "--body", body.name)
    assert tags_of(aws("get-object-tagging", "--bucket", "tags", "--key", "cli")) == {"a": "b", "c": "d"}
    aws("put-object-tagging", "--bucket", "tags", "--key", "cli", "--tagging", "TagSet=[{Key=x,Value=y}]")
    assert tags_of(aws("get-object-tagging", "--bucket", "tags", "--key", "cli")) == {"x": "y"}
    assert aws("head-object", "--bucket", "tags", "--key", "cli").get("TagCount", 1) == 1
    aws("delete-object-tagging", "--bucket", "tags", "--key", "cli")
    assert aws("get-object-tagging", "--bucket", "tags", "--key", "cli")["TagSet"] == []
    p = aws("put-object-tagging", "--bucket", "tags", "--key", "cli", "--tagging",
            "TagSet=[" + ",".join(f"{{Key=k{i},Value=v}}" for i in range(11)) + "]", ok=False)
    assert p.returncode != 0 and "BadRequest" in p.stderr, p.stderr
    aws("delete-bucket-tagging", "--bucket", "tags")
    p = aws("get-bucket-tagging", "--bucket", "tags", ok=False)
    assert p.returncode != 0 and "NoSuchTagSet" in p.stderr, p.stderr


check("tagging with the aws CLI (s3api)", tagging_with_the_aws_cli)


def tagging_is_authorized():
    admin("tenant", "create", "tagco")
    alice_u = admin("user", "create", "--tenant", "tagco", "--name", "alice")
    bob_u = admin("user", "create", "--tenant", "tagco", "--name", "bob")
    global ALICE
    alice, bob = client(*key_of(alice_u)), client(*key_of(bob_u))
    ALICE = alice
    alice.create_bucket(Bucket="private")
    alice.put_object(Bucket="private", Key="o", Body=b"x", Tagging="a=1")
    for fn, kw in [
        (bob.get_object_tagging, {"Key": "o"}),
        (bob.put_object_tagging, {"Key": "o", "Tagging": {"TagSet": []}}),
        (bob.delete_object_tagging, {"Key": "o"}),
        (bob.get_bucket_tagging, {}),
        (bob.put_bucket_tagging, {"Tagging": {"TagSet": []}}),
        (bob.get_bucket_cors, {}),
        (bob.put_bucket_cors, {"CORSConfiguration": {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]}}),
        (bob.delete_bucket_cors, {}),
    ]:
        expect_error("AccessDenied", fn, Bucket="private", **kw, status=403)
    # A policy naming the tagging actions lets bob in, and only for them.
    alice.put_bucket_policy(Bucket="private", Policy=json.dumps({"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::tagco:user/bob"},
        "Action": ["s3:GetObjectTagging", "s3:PutObjectTagging"], "Resource": "arn:aws:s3:::private/*"}]}))
    bob.put_object_tagging(Bucket="private", Key="o", Tagging={"TagSet": [{"Key": "by", "Value": "bob"}]})
    assert tags_of(bob.get_object_tagging(Bucket="private", Key="o")) == {"by": "bob"}
    expect_error("AccessDenied", bob.delete_object_tagging, Bucket="private", Key="o", status=403)
    expect_error("AccessDenied", bob.get_object, Bucket="private", Key="o", status=403)


check("tagging and CORS operations are authorized (s3:*Tagging, s3:*BucketCORS)", tagging_is_authorized)

# ---------------------------------------------------------------- CORS

RULES = [
    {"ID": "app", "AllowedOrigins": ["http://*.example.com"], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["x-amz-*", "Content-Type"], "ExposeHeaders": ["ETag", "x-amz-meta-color"],
     "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
]
s3.create_bucket(Bucket="web")
s3.create_bucket(Bucket="nocors")
s3.put_object(Bucket="web", Key="page.txt", Body=b"hello", Metadata={"color": "blue"})
s3.put_object(Bucket="nocors", Key="page.txt", Body=b"hello")


def cors_configuration():
    expect_error("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket="web", status=404)
    bad = lambda **rule: {"CORSRules": [dict({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}, **rule)]}
    for cfg in [
        bad(AllowedMethods=["PATCH"]),
        bad(AllowedMethods=["OPTIONS"]),
        bad(AllowedOrigins=["http://*.*.example.com"]),
        bad(AllowedHeaders=["x-*-*"]),
        bad(ExposeHeaders=["x-amz-*"]),
        {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101},
    ]:
        expect_error("InvalidRequest", s3.put_bucket_cors, Bucket="web", CORSConfiguration=cfg, status=400)
    expect_error("MalformedXML", s3.put_bucket_cors, Bucket="web", CORSConfiguration={"CORSRules": []}, status=400)
    expect_error("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket="web", status=404)
    s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": [RULES[0]] * 100})
    s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": RULES})
    assert s3.get_bucket_cors(Bucket="web")["CORSRules"] == RULES
    # The aws CLI reads back the same document.
    assert aws("get-bucket-cors", "--bucket", "web")["CORSRules"] == RULES
    aws("put-bucket-cors", "--bucket", "nocors", "--cors-configuration",
        json.dumps({"CORSRules": [{"AllowedOrigins": ["http://x"], "AllowedMethods": ["HEAD"]}]}))
    assert aws("get-bucket-cors", "--bucket", "nocors")["CORSRules"][0]["AllowedMethods"] == ["HEAD"]
    aws("delete-bucket-cors", "--bucket", "nocors")
    p = aws("get-bucket-cors", "--bucket", "nocors", ok=False)
    assert p.returncode != 0 and "NoSuchCORSConfiguration" in p.stderr, p.stderr
    # DeleteBucketCors without a configuration is 204 too.
    r = s3.delete_bucket_cors(Bucket="nocors")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204, r


check("Put/Get/DeleteBucketCors and their refusals (boto3, aws CLI)", cors_configuration)


def preflights():
    url = f"{ENDPOINT}/web/page.txt"
    o = {"Origin": "http://app.example.com"}
    st, h, body = raw("OPTIONS", url)
    assert st == 400 and b"<Code>BadRequest</Code>" in body and b"Origin request header needed" in body, (st, body)
    st, h, body = raw("OPTIONS", url, o)
    assert st == 400 and b"<Code>BadRequest</Code>" in body, (st, body)
    st, h, body = raw("OPTIONS", url, dict(o, **{"Access-Control-Request-Method": "PUT",
                                                 "Access-Control-Request-Headers": "X-Amz-Date, Content-Type"}))
    assert st == 200, (st, body)
    assert h["Access-Control-Allow-Origin"] == "http://app.example.com", h
    assert h["Access-Control-Allow-Methods"] == "GET, PUT", h
    assert h["Access-Control-Allow-Headers"] == "x-amz-date, content-type", h
    assert h["Access-Control-Allow-Credentials"] == "true", h
    assert h["Access-Control-Expose-Headers"] == "ETag, x-amz-meta-color", h
    assert h["Access-Control-Max-Age"] == "600", h
    assert "Origin" in h["Vary"] and "Access-Control-Request-Method" in h["Vary"], h
    # A method, a header or an origin no rule allows.
    for headers in [
        dict(o, **{"Access-Control-Request-Method": "DELETE"}),
        dict(o, **{"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-other"}),
        {"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "PUT"},
        {"Origin": "http://app.example.com.evil", "Access-Control-Request-Method": "PUT"},
    ]:
        st, h, body = raw("OPTIONS", url, headers)
        assert st == 403 and b"<Code>AccessForbidden</Code>" in body and b"This CORS request is not allowed" in body, (headers, st, body)
        method = headers["Access-Control-Request-Method"].encode()
        assert b"<Method>" + method + b"</Method>" in body and b"<ResourceType>OBJECT</ResourceType>" in body, body
        assert "Access-Control-Allow-Origin" not in h, h
    # The `*` rule: any origin, GET only, answered as `*` without credentials.
    st, h, _ = raw("OPTIONS", url, {"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "GET"})
    assert st == 200 and h["Access-Control-Allow-Origin"] == "*" and "Access-Control-Allow-Credentials" not in h, h
    # On the bucket itself, and virtual-hosted style.
    st, h, _ = raw("OPTIONS", f"{ENDPOINT}/web", dict(o, **{"Access-Control-Request-Method": "GET"}))
    assert st == 200 and h["Access-Control-Allow-Origin"] == "http://app.example.com", (st, h)
    port = urlsplit(ENDPOINT).port
    st, h, _ = raw("OPTIONS", f"{ENDPOINT}/page.txt", dict(o, **{"Access-Control-Request-Method": "PUT",
                                                                  "Host": f"web.localhost:{port}"}))
    assert st == 200 and h["Access-Control-Allow-Methods"] == "GET, PUT", (st, h)
    # No configuration, or no such bucket: the same 403.
    for u in [f"{ENDPOINT}/nocors/page.txt", f"{ENDPOINT}/no-such-bucket/x"]:
        st, h, body = raw("OPTIONS", u, dict(o, **{"Access-Control-Request-Method": "GET"}))
        assert st == 403 and b"CORS is not enabled for this bucket" in body, (u, st, body)


check("preflights (raw OPTIONS): allowed, refused, 400 without Origin or method", preflights)


def real_requests_carry_cors_headers():
    o = {"Origin": "http://app.example.com"}
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "page.txt"})
    st, h, body = raw("GET", url, o)
    assert st == 200 and body == b"hello", (st, body)
    assert h["Access-Control-Allow-Origin"] == "http://app.example.com", h
    assert h["Access-Control-Expose-Headers"] == "ETag, x-amz-meta-color", h
    assert h["Access-Control-Allow-Methods"] == "GET, PUT" and "Origin" in h["Vary"], h
    # An error answer carries them too.
    missing = s3.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "missing"})
    st, h, body = raw("GET", missing, o)
    assert st == 404 and b"NoSuchKey" in body, (st, body)
    assert h["Access-Control-Allow-Origin"] == "http://app.example.com", h
    # So does a refused (unsigned) one.
    st, h, _ = raw("GET", f"{ENDPOINT}/web/page.txt", o)
    assert st == 403 and h["Access-Control-Allow-Origin"] == "http://app.example.com", (st, h)
    # Origins and methods no rule allows: no CORS headers, no Vary.
    for url_, headers, method in [
        # (the `*` rule allows any origin to GET; S3 judges a real request
        # by its Access-Control-Request-Method when it carries one)
        (url, {"Origin": "http://app.example.com.evil", "Access-Control-Request-Method": "PUT"}, "GET"),
        (f"{ENDPOINT}/nocors/page.txt", o, "GET"),
        (s3.generate_presigned_url("head_object", Params={"Bucket": "web", "Key": "page.txt"}), o, "HEAD"),
    ]:
        st, h, _ = raw(method, url_, headers)
        assert "Access-Control-Allow-Origin" not in h and "Vary" not in h, (url_, st, h)
    # Without Origin, nothing changes.
    st, h, _ = raw("GET", url)
    assert st == 200 and "Access-Control-Allow-Origin" not in h, h
    # A signed boto3 request with an Origin (the bucket found through the caller's key).
    seen = {}

    def add_origin(request, **_):
        request.headers["Origin"] = "http://app.example.com"

    def keep(http_response, **_):
        seen.update(http_response.headers)

    c = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    c.meta.events.register("before-sign.s3.PutObject", add_origin)
    c.meta.events.register("after-call.s3.PutObject", lambda http_response, **kw: keep(http_response))
    c.put_object(Bucket="web", Key="signed.txt", Body=b"s")
    assert seen.get("access-control-allow-origin") == "http://app.example.com", seen
    # The `*` rule answers any origin with `*`.
    st, h, _ = raw("GET", url, {"Origin": "http://elsewhere.test"})
    assert st == 200 and h["Access-Control-Allow-Origin"] == "*", h


check("real requests from an allowed Origin carry CORS headers, errors included", real_requests_carry_cors_headers)


def tenant_buckets_cors(alice):
    """A signed request's unqualified bucket is its caller's tenant's."""
    alice.put_bucket_cors(Bucket="private", CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://tenant.test"], "AllowedMethods": ["GET"]}]})
    seen = {}
    alice.meta.events.register("before-sign.s3.GetObject",
                               lambda request, **_: request.headers.__setitem__("Origin", "http://tenant.test"))
    alice.meta.events.register("after-call.s3.GetObject", lambda http_response, **_: seen.update(http_response.headers))
    alice.get_object(Bucket="private", Key="o")["Body"].read()
    assert seen.get("access-control-allow-origin") == "http://tenant.test", seen
    # Unsigned preflights name another tenant's bucket as tenant:bucket.
    st, h, _ = raw("OPTIONS", f"{ENDPOINT}/tagco:private/o",
                   {"Origin": "http://tenant.test", "Access-Control-Request-Method": "GET"})
    assert st == 200 and h["Access-Control-Allow-Origin"] == "http://tenant.test", (st, h)


def deleted_rules_stop_at_once():
    s3.delete_bucket_cors(Bucket="web")
    st, _, body = raw("OPTIONS", f"{ENDPOINT}/web/page.txt",
                      {"Origin": "http://app.example.com", "Access-Control-Request-Method": "GET"})
    assert st == 403 and b"CORS is not enabled" in body, (st, body)
    s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": RULES})
    st, _, _ = raw("OPTIONS", f"{ENDPOINT}/web/page.txt",
                   {"Origin": "http://app.example.com", "Access-Control-Request-Method": "GET"})
    assert st == 200, st


check("CORS on another tenant's bucket (signed requests and tenant:bucket preflights)",
      lambda: tenant_buckets_cors(ALICE))
check("a changed configuration is in force at once on this gateway", deleted_rules_stop_at_once)

# ---------------------------------------------------------------- a real browser

PAGE = """<!doctype html><html><body><pre id="out">running</pre><script>
const results = {};
async function run() {
  try {
    const r = await fetch(GET_URL);
    results.get = {status: r.status, body: await r.text(), etag: r.headers.get('ETag'),
                   color: r.headers.get('x-amz-meta-color'), type: r.headers.get('Content-Type')};
  } catch (e) { results.get = {error: String(e)}; }
  try {
    const r = await fetch(PUT_URL, {method: 'PUT', body: 'from the browser',
                                    headers: {'Content-Type': 'application/x-kura-test'}});
    results.put = {status: r.status, etag: r.headers.get('ETag')};
  } catch (e) { results.put = {error: String(e)}; }
  try {
    const r = await fetch(BLOCKED_URL);
    results.blocked = {status: r.status};
  } catch (e) { results.blocked = {error: String(e)}; }
  document.getElementById('out').textContent = 'RESULTS:' + JSON.stringify(results) + ':END';
}
run();
</script></body></html>"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def browser_fetches_from_another_origin():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed: `make deps-test` (scripts/install-deps.sh test) installs it"
    s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://127.0.0.1:*"], "AllowedMethods": ["GET", "PUT"],
         "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag", "x-amz-meta-color"]}]})
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "page.txt"})
    # (a SigV2 URL signs the Content-Type the browser will send)
    put_url = s3.generate_presigned_url("put_object", Params={
        "Bucket": "web", "Key": "from-browser.txt", "ContentType": "application/x-kura-test"})
    blocked_url = s3.generate_presigned_url("get_object", Params={"Bucket": "nocors", "Key": "page.txt"})
    page = PAGE.replace("GET_URL", json.dumps(get_url)).replace("PUT_URL", json.dumps(put_url)) \
               .replace("BLOCKED_URL", json.dumps(blocked_url))
    with tempfile.TemporaryDirectory() as site, tempfile.TemporaryDirectory() as profile:
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write(page)
        handler = lambda *a, **kw: Quiet(*a, directory=site, **kw)
        with socketserver.TCPServer(("127.0.0.1", 0), handler) as httpd:
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            origin = f"http://127.0.0.1:{httpd.server_address[1]}"
            p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--ignore-certificate-errors", f"--user-data-dir={profile}",
                                "--virtual-time-budget=15000", "--dump-dom", f"{origin}/index.html"],
                               capture_output=True, text=True, timeout=120)
            httpd.shutdown()
    dom = p.stdout
    assert "RESULTS:" in dom, f"no results in the page: {dom[-2000:]}\n{p.stderr[-2000:]}"
    results = json.loads(dom.split("RESULTS:", 1)[1].split(":END", 1)[0])
    print("     browser:", json.dumps(results))
    assert results["get"].get("status") == 200 and results["get"]["body"] == "hello", results
    # Exposed headers are readable by the page; Content-Type is always safe to read.
    assert results["get"]["etag"] and results["get"]["color"] == "blue", results
    # The PUT needed a preflight (a non-simple method and Content-Type) and went through.
    assert results["put"].get("status") == 200 and results["put"]["etag"], results
    got = s3.get_object(Bucket="web", Key="from-browser.txt")
    assert got["Body"].read() == b"from the browser" and got["ContentType"] == "application/x-kura-test", got
    # A bucket without CORS: the browser blocks the answer (a network error to the page).
    assert "error" in results["blocked"], results


check("headless Chromium on another origin: GET with exposed headers, preflighted PUT, blocked bucket",
      browser_fetches_from_another_origin)
print("all tagging and cors checks passed")
