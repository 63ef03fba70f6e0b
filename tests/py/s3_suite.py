"""boto3 conformance checks against a running Kura cluster.

Run by tests/s3_boto3.rs with KURA_S3, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY set. Each check uses its own bucket. Exits non-zero on
the first failure, printing what was expected and what came back.
"""
import hashlib
import io
import os
import sys
import urllib.request
import urllib.error
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KURA_S3"]
MiB = 1024 * 1024


def client(**cfg):
    cfg.setdefault("retries", {"max_attempts": 1})
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, **cfg),
    )


s3 = client()


def new_bucket():
    name = "t-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


def expect_error(code, status, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        got_code = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert got_code == code and got_status == status, f"expected {code}/{status}, got {got_code}/{got_status}: {e}"
        return e
    raise AssertionError(f"expected {code}/{status}, call succeeded")


def body(n, seed=1):
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def buckets():
    b = new_bucket()
    names = [x["Name"] for x in s3.list_buckets()["Buckets"]]
    assert b in names, names
    s3.head_bucket(Bucket=b)
    expect_error("404", 404, s3.head_bucket, Bucket="nope-" + uuid.uuid4().hex[:8])
    expect_error("InvalidBucketName", 400, s3.create_bucket, Bucket="Bad_Name")
    s3.put_object(Bucket=b, Key="x", Body=b"1")
    expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket=b)
    s3.delete_object(Bucket=b, Key="x")
    s3.delete_bucket(Bucket=b)
    expect_error("NoSuchBucket", 404, s3.delete_bucket, Bucket=b)
    expect_error("NoSuchBucket", 404, s3.put_object, Bucket=b, Key="x", Body=b"1")


@check
def put_get_head_metadata():
    b = new_bucket()
    for size in [0, 1, 4096, 4097, 3 * MiB + 17]:
        data = body(size, size)
        r = s3.put_object(
            Bucket=b, Key=f"obj/{size}", Body=data, ContentType="application/x-test",
            Metadata={"color": "blue", "n": str(size)}, CacheControl="max-age=60",
            ContentDisposition="attachment", ContentLanguage="en",
        )
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        assert r["ETag"] == etag, (r["ETag"], etag)
        g = s3.get_object(Bucket=b, Key=f"obj/{size}")
        got = g["Body"].read()
        assert got == data, f"size {size}: body differs (got {len(got)} bytes)"
        assert g["ETag"] == etag
        assert g["ContentLength"] == size
        assert g["ContentType"] == "application/x-test"
        assert g["Metadata"] == {"color": "blue", "n": str(size)}, g["Metadata"]
        assert g["CacheControl"] == "max-age=60"
        assert g["ContentDisposition"] == "attachment"
        assert g["ContentLanguage"] == "en"
        h = s3.head_object(Bucket=b, Key=f"obj/{size}")
        assert h["ContentLength"] == size and h["ETag"] == etag
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=b, Key="missing")
    expect_error("404", 404, s3.head_object, Bucket=b, Key="missing")
    # Overwrite replaces.
    s3.put_object(Bucket=b, Key="obj/1", Body=b"new")
    assert s3.get_object(Bucket=b, Key="obj/1")["Body"].read() == b"new"
    # Odd keys.
    for key in ["a b/c+d", "ünïcödé/ключ", "x" * 1024, "dots/../..", "q?x=1&y"]:
        s3.put_object(Bucket=b, Key=key, Body=key.encode())
        assert s3.get_object(Bucket=b, Key=key)["Body"].read() == key.encode(), key
    expect_error("KeyTooLongError", 400, s3.put_object, Bucket=b, Key="x" * 1025, Body=b"1")


@check
def ranges():
    b = new_bucket()
    for size in [100, 3 * MiB + 5]:
        data = body(size, 7)
        s3.put_object(Bucket=b, Key="r", Body=data)
        cases = [("bytes=0-0", 0, 0), ("bytes=0-9", 0, 9), (f"bytes=5-", 5, size - 1),
                 ("bytes=-10", size - 10, size - 1), (f"bytes=10-{size + 100}", 10, size - 1),
                 (f"bytes={size - 1}-", size - 1, size - 1)]
        if size > MiB:
            cases += [(f"bytes={MiB - 3}-{MiB + 3}", MiB - 3, MiB + 3), (f"bytes={2 * MiB}-{3 * MiB}", 2 * MiB, 3 * MiB)]
        for rng, a, z in cases:
            g = s3.get_object(Bucket=b, Key="r", Range=rng)
            got = g["Body"].read()
            assert g["ResponseMetadata"]["HTTPStatusCode"] == 206, rng
            assert got == data[a:z + 1], f"{rng}: wrong bytes ({len(got)} vs {z - a + 1})"
            assert g["ContentRange"] == f"bytes {a}-{z}/{size}", (rng, g["ContentRange"])
        expect_error("InvalidRange", 416, s3.get_object, Bucket=b, Key="r", Range=f"bytes={size}-")


@check
def conditional():
    b = new_bucket()
    r = s3.put_object(Bucket=b, Key="c", Body=b"hello")
    etag = r["ETag"]
    assert s3.get_object(Bucket=b, Key="c", IfMatch=etag)["Body"].read() == b"hello"
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket=b, Key="c", IfMatch='"0000"')
    try:
        s3.get_object(Bucket=b, Key="c", IfNoneMatch=etag)
        raise AssertionError("expected 304")
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 304, e


@check
def listing():
    b = new_bucket()
    keys = sorted([f"a/{i:03d}" for i in range(25)] + [f"b/x/{i}" for i in range(5)] + ["c", "d/", "e\u00e9"])
    for k in keys:
        s3.put_object(Bucket=b, Key=k, Body=b"")
    # v2 pagination
    got, token = [], None
    while True:
        kw = {"Bucket": b, "MaxKeys": 7}
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        got += [o["Key"] for o in r.get("Contents", [])]
        assert r["KeyCount"] == len(r.get("Contents", [])) + len(r.get("CommonPrefixes", []))
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert got == keys, (got, keys)
    # delimiter
    r = s3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "b/", "d/"], r.get("CommonPrefixes")
    assert [o["Key"] for o in r["Contents"]] == ["c", "e\u00e9"], r["Contents"]
    r = s3.list_objects_v2(Bucket=b, Prefix="b/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/x/"]
    # delimiter + pagination counts prefixes as one entry each
    seen, token = [], None
    while True:
        kw = {"Bucket": b, "Delimiter": "/", "MaxKeys": 2}
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert sorted(seen) == ["a/", "b/", "c", "d/", "e\u00e9"], seen
    # start-after, prefix
    r = s3.list_objects_v2(Bucket=b, StartAfter="a/020", Prefix="a/")
    assert [o["Key"] for o in r["Contents"]] == [f"a/{i:03d}" for i in range(21, 25)]
    # v1 with marker
    r = s3.list_objects(Bucket=b, Marker="b/x/3", MaxKeys=3)
    assert [o["Key"] for o in r["Contents"]] == ["b/x/4", "c", "d/"], r["Contents"]
    assert r["IsTruncated"]
    r = s3.list_objects(Bucket=b, Delimiter="/", MaxKeys=2)
    assert r["IsTruncated"] and r["NextMarker"] == "b/", r
    r = s3.list_objects_v2(Bucket=b, MaxKeys=0)
    assert r["KeyCount"] == 0 and not r.get("Contents")
    expect_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket="nope-" + uuid.uuid4().hex[:8])


@check
def delete_objects():
    b = new_bucket()
    for i in range(10):
        s3.put_object(Bucket=b, Key=f"k{i}", Body=b"x" * (i * 1000))
    r = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": f"k{i}"} for i in range(5)] + [{"Key": "nope"}]})
    assert len(r["Deleted"]) == 6, r
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]]
    assert left == [f"k{i}" for i in range(5, 10)], left
    s3.delete_object(Bucket=b, Key="never-existed")


@check
def multipart():
    b = new_bucket()
    parts_data = [body(5 * MiB, 1), body(5 * MiB + 3, 2), body(1234, 3)]
    up = s3.create_multipart_upload(Bucket=b, Key="mp", ContentType="video/x", Metadata={"m": "1"})
    uid = up["UploadId"]
    etags = []
    for i, d in enumerate(parts_data, start=1):
        etags.append(s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=i, Body=d)["ETag"])
    lp = s3.list_parts(Bucket=b, Key="mp", UploadId=uid)
    assert [p["PartNumber"] for p in lp["Parts"]] == [1, 2, 3]
    assert [p["Size"] for p in lp["Parts"]] == [len(d) for d in parts_data]
    lu = s3.list_multipart_uploads(Bucket=b)
    assert [u["UploadId"] for u in lu["Uploads"]] == [uid]
    expect_error("InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket=b, Key="mp", UploadId=uid,
                 MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]})
    expect_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=b, Key="mp", UploadId=uid,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"ffff"'}]})
    r = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    md5s = b"".join(hashlib.md5(d).digest() for d in parts_data)
    want = '"' + hashlib.md5(md5s).hexdigest() + '-3"'
    assert r["ETag"] == want, (r["ETag"], want)
    full = b"".join(parts_data)
    g = s3.get_object(Bucket=b, Key="mp")
    assert g["Body"].read() == full
    assert g["ContentType"] == "video/x" and g["Metadata"] == {"m": "1"}
    assert g["ETag"] == want
    rng = s3.get_object(Bucket=b, Key="mp", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 10}")["Body"].read()
    assert rng == full[5 * MiB - 10:5 * MiB + 11]
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket=b, Key="mp", UploadId=uid)
    assert not s3.list_multipart_uploads(Bucket=b).get("Uploads")
    # too small parts
    up2 = s3.create_multipart_upload(Bucket=b, Key="small")["UploadId"]
    e1 = s3.upload_part(Bucket=b, Key="small", UploadId=up2, PartNumber=1, Body=b"a" * 100)["ETag"]
    e2 = s3.upload_part(Bucket=b, Key="small", UploadId=up2, PartNumber=2, Body=b"b" * 100)["ETag"]
    expect_error("EntityTooSmall", 400, s3.complete_multipart_upload, Bucket=b, Key="small", UploadId=up2,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    s3.abort_multipart_upload(Bucket=b, Key="small", UploadId=up2)
    expect_error("NoSuchUpload", 404, s3.abort_multipart_upload, Bucket=b, Key="small", UploadId=up2)
    expect_error("NoSuchUpload", 404, s3.upload_part, Bucket=b, Key="x", UploadId="0" * 32, PartNumber=1, Body=b"1")
    up3 = s3.create_multipart_upload(Bucket=b, Key="n")["UploadId"]
    expect_error("InvalidArgument", 400, s3.upload_part, Bucket=b, Key="n", UploadId=up3, PartNumber=10001, Body=b"1")


@check
def presigned_and_auth():
    b = new_bucket()
    s3.put_object(Bucket=b, Key="p", Body=b"presigned!")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=300)
    assert urllib.request.urlopen(url).read() == b"presigned!"
    # Presigned PUT, both SigV2-style (botocore's default for us-east-1) and SigV4.
    # http.client sends no Content-Type (urllib would add one, which SigV2 signs).
    import http.client
    from urllib.parse import urlparse
    for signer, key in [(s3, "p2"), (client(signature_version="s3v4"), "p4")]:
        put_url = signer.generate_presigned_url("put_object", Params={"Bucket": b, "Key": key}, ExpiresIn=300)
        u = urlparse(put_url)
        conn = (http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection)(
            u.hostname, u.port, timeout=10)
        conn.request("PUT", u.path + "?" + u.query, body=b"via presigned put")
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read())
        resp.read()
        assert s3.get_object(Bucket=b, Key=key)["Body"].read() == b"via presigned put"
    v4_get = client(signature_version="s3v4").generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=300)
    assert "X-Amz-Signature=" in v4_get
    assert urllib.request.urlopen(v4_get).read() == b"presigned!"
    sig = v4_get.split("X-Amz-Signature=")[1][:64]
    bad = v4_get.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    try:
        urllib.request.urlopen(bad)
        raise AssertionError("tampered presigned URL accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
    wrong = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key="wrong" * 8, config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    expect_error("SignatureDoesNotMatch", 403, wrong.get_object, Bucket=b, Key="p")
    unknown = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id="AKIAUNKNOWN000000000",
                           aws_secret_access_key="x" * 40, config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    expect_error("InvalidAccessKeyId", 403, unknown.list_buckets)
    # Anonymous request
    try:
        urllib.request.urlopen(f"{ENDPOINT}/{b}/p")
        raise AssertionError("anonymous GET accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code


@check
def sigv2_and_unsigned_payload():
    b = new_bucket()
    v2 = client(signature_version="s3")
    v2.put_object(Bucket=b, Key="v2", Body=b"sigv2 body" * 1000)
    assert v2.get_object(Bucket=b, Key="v2")["Body"].read() == b"sigv2 body" * 1000
    # Streaming upload with trailing checksum (botocore default for put_object with a file-like body).
    data = body(2 * MiB + 11, 99)
    s3.put_object(Bucket=b, Key="stream", Body=io.BytesIO(data), ChecksumAlgorithm="CRC32")
    assert s3.get_object(Bucket=b, Key="stream")["Body"].read() == data
    s3.put_object(Bucket=b, Key="sha", Body=data[:100000], ChecksumAlgorithm="SHA256")
    assert s3.get_object(Bucket=b, Key="sha")["Body"].read() == data[:100000]


@check
def empty_put_keeps_connection_usable():
    # boto3 sends "Expect: 100-continue" even for 0-byte PUTs; a server that
    # answers without a 100 must not leave the kept-alive connection hanging
    # the next request (it did: 60 s stalls until botocore's read timeout).
    b = new_bucket()
    quick = client(read_timeout=5, retries={"total_max_attempts": 1})
    import time
    for i in range(3):
        t = time.time()
        quick.put_object(Bucket=b, Key=f"empty{i}", Body=b"")
        quick.put_object(Bucket=b, Key=f"small{i}", Body=b"s" * 100)
        assert time.time() - t < 3, f"round {i} took {time.time() - t:.1f}s"
    assert quick.get_object(Bucket=b, Key="empty2")["Body"].read() == b""


@check
def bad_input():
    b = new_bucket()
    import http.client
    from urllib.parse import urlparse
    u = urlparse(ENDPOINT)
    for method, path, hdrs in [("GET", f"/{b}/x", {"Range": "bytes=zzz"}), ("PUT", f"/{b}/x", {"Content-Length": "abc"}),
                               ("POST", f"/{b}?delete", {}), ("GET", "/%ff%fe", {})]:
        c = (http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection)(
            u.hostname, u.port, timeout=10)
        c.request(method, path, headers=hdrs)
        r = c.getresponse()
        r.read()
        assert r.status < 500, f"{method} {path} {hdrs}: {r.status}"


@check
def user_metadata_at_most_2_kib():
    b = new_bucket()
    s3.put_object(Bucket=b, Key="fits", Body=b"x", Metadata={"k": "v" * 2047})
    assert s3.head_object(Bucket=b, Key="fits")["Metadata"]["k"] == "v" * 2047
    expect_error("MetadataTooLarge", 400, s3.put_object, Bucket=b, Key="big", Body=b"x", Metadata={"k": "v" * 2048})
    expect_error("MetadataTooLarge", 400, s3.create_multipart_upload, Bucket=b, Key="big", Metadata={"a" * 1000: "b" * 1049})
    expect_error("MetadataTooLarge", 400, s3.copy_object, Bucket=b, Key="big", CopySource=f"{b}/fits",
                 MetadataDirective="REPLACE", Metadata={"k": "v" * 2048})
    expect_error("404", 404, s3.head_object, Bucket=b, Key="big")


def main():
    only = sys.argv[1:]
    for fn in CHECKS:
        if only and fn.__name__ not in only:
            continue
        print(f"check {fn.__name__} ...", flush=True)
        fn()
        print(f"check {fn.__name__} ok", flush=True)
    print("all checks passed")


if __name__ == "__main__":
    main()
