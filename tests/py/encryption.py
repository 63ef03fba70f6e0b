"""Server-side encryption end to end (docs/decisions/0029): SSE-C put, get,
range get, head, copy and multipart with boto3 (and the aws CLI), wrong and
missing keys, SSE-S3 and bucket default encryption, SSE-KMS refused — and
the bytes on disk: a recognizable plaintext marker written with SSE-C and
SSE-S3 is found in no file under the data nodes' and metashards' data
dirs, while the same marker written without encryption is (so the search
can fail).

Run by tests/encryption.rs against `kura dev` with KURA_S3, KURA_DIR and the
root key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from botocore.exceptions import ClientError

from kura_kit import DIR, check, client, expect_error

s3 = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])

KEY = os.urandom(32)
OTHER = os.urandom(32)
MARKER = b"KURA-PLAINTEXT-MARKER-" + os.urandom(8).hex().encode() + b"|"


def ssec(key=KEY):
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def copy_ssec(key=KEY):
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


def body(n):
    """n bytes of the marker repeated (so every stripe and chunk holds it)."""
    return (MARKER * (n // len(MARKER) + 1))[:n]


def status_of(fn, *a, **kw):
    """The HTTP status and error code of a call expected to fail."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} succeeded")


def get(bucket, key, **kw):
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


B = "sse"
s3.create_bucket(Bucket=B)

BIG = body(5 * 1024 * 1024 + 333_333)  # stored on data nodes, crosses many 64 KiB chunks
SMALL = body(1000)  # inline in the metadata record


def ssec_put_get_range_head():
    r = s3.put_object(Bucket=B, Key="c/big", Body=BIG, **ssec())
    assert r["SSECustomerAlgorithm"] == "AES256", r
    assert r["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(KEY).digest()).decode()
    # AWS's SSE-C ETag is not the plaintext's MD5.
    assert r["ETag"].strip('"') != hashlib.md5(BIG).hexdigest()
    assert get(B, "c/big", **ssec()) == BIG
    n = len(BIG)
    for a, b in [(0, 0), (0, 99), (65535, 65536), (65530, 200_000), (1 << 20, (1 << 20) + 5), (n - 10, n - 1), (123_457, 4_000_000)]:
        got = s3.get_object(Bucket=B, Key="c/big", Range=f"bytes={a}-{b}", **ssec())
        assert got["Body"].read() == BIG[a : b + 1], (a, b)
        assert got["ContentRange"] == f"bytes {a}-{b}/{n}"
    assert s3.get_object(Bucket=B, Key="c/big", Range="bytes=-7", **ssec())["Body"].read() == BIG[-7:]
    h = s3.head_object(Bucket=B, Key="c/big", **ssec())
    assert h["ContentLength"] == n, h
    assert h["SSECustomerAlgorithm"] == "AES256"
    assert h["ETag"] == r["ETag"]
    # Listing shows the plaintext size.
    listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket=B, Prefix="c/")["Contents"]}
    assert listed["c/big"]["Size"] == n

    s3.put_object(Bucket=B, Key="c/small", Body=SMALL, **ssec())
    assert get(B, "c/small", **ssec()) == SMALL
    got = s3.get_object(Bucket=B, Key="c/small", Range="bytes=10-19", **ssec())["Body"].read()
    assert got == SMALL[10:20]
    s3.put_object(Bucket=B, Key="c/empty", Body=b"", **ssec())
    assert get(B, "c/empty", **ssec()) == b""


def ssec_refusals():
    # Wrong key: 403, on GET and HEAD (big and inline).
    for k in ("c/big", "c/small"):
        expect_error("AccessDenied", s3.get_object, Bucket=B, Key=k, status=403, **ssec(OTHER))
        assert status_of(s3.head_object, Bucket=B, Key=k, **ssec(OTHER))[0] == 403
    # No key: 400 InvalidRequest.
    expect_error("InvalidRequest", s3.get_object, Bucket=B, Key="c/big", status=400)
    assert status_of(s3.head_object, Bucket=B, Key="c/big")[0] == 400
    assert status_of(s3.get_object, Bucket=B, Key="c/big", Range="bytes=0-1")[0] == 400
    # A key for an object that has none: 400.
    s3.put_object(Bucket=B, Key="plain", Body=b"clear")
    expect_error("InvalidRequest", s3.get_object, Bucket=B, Key="plain", status=400, **ssec())
    # Malformed headers: sent raw so botocore does not fix them up.
    k64 = base64.b64encode(KEY).decode()
    md5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
    bad_md5 = base64.b64encode(hashlib.md5(OTHER).digest()).decode()
    short = base64.b64encode(os.urandom(16)).decode()
    for headers, code in [
        ({"alg": "AES256", "key": k64, "md5": bad_md5}, "InvalidArgument"),
        ({"alg": "AES256", "key": short, "md5": base64.b64encode(hashlib.md5(base64.b64decode(short)).digest()).decode()}, "InvalidArgument"),
        ({"alg": "AES256", "key": k64}, "InvalidArgument"),
        ({"alg": "AES128", "key": k64, "md5": md5}, "InvalidEncryptionAlgorithmError"),
    ]:
        expect_error(code, raw_put, "c/bad", headers, status=400)
    assert status_of(s3.head_object, Bucket=B, Key="c/bad")[0] == 404, "a refused PUT stored nothing"


def raw_put(key, h):
    """PutObject with SSE-C headers exactly as given (botocore would compute them)."""
    def add(request, **_):
        for name, header in (("alg", "algorithm"), ("key", "key"), ("md5", "key-MD5")):
            field = f"x-amz-server-side-encryption-customer-{header}"
            if field in request.headers:
                del request.headers[field]
            if name in h:
                request.headers[field] = h[name]
    s3.meta.events.register("before-sign.s3.PutObject", add)
    try:
        s3.put_object(Bucket=B, Key=key, Body=b"x")
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", add)


def ssec_copy():
    # SSE-C → SSE-C with a new key.
    r = s3.copy_object(Bucket=B, Key="c/copy", CopySource={"Bucket": B, "Key": "c/big"}, **copy_ssec(), **ssec(OTHER))
    assert r["SSECustomerAlgorithm"] == "AES256", r
    assert get(B, "c/copy", **ssec(OTHER)) == BIG
    expect_error("AccessDenied", s3.get_object, Bucket=B, Key="c/copy", status=403, **ssec())
    # The source key is required, and must be right.
    expect_error("InvalidRequest", s3.copy_object, Bucket=B, Key="c/copy2", CopySource={"Bucket": B, "Key": "c/big"}, status=400)
    expect_error("AccessDenied", s3.copy_object, Bucket=B, Key="c/copy2", CopySource={"Bucket": B, "Key": "c/big"}, status=403, **copy_ssec(OTHER))
    # SSE-C → in the clear, and in the clear → SSE-C.
    s3.copy_object(Bucket=B, Key="c/decrypted", CopySource={"Bucket": B, "Key": "c/small"}, **copy_ssec())
    assert get(B, "c/decrypted") == SMALL
    s3.copy_object(Bucket=B, Key="c/encrypted", CopySource={"Bucket": B, "Key": "plain"}, **ssec())
    assert get(B, "c/encrypted", **ssec()) == b"clear"
    # A copy onto itself that changes the encryption is allowed (as AWS).
    s3.copy_object(Bucket=B, Key="c/encrypted", CopySource={"Bucket": B, "Key": "c/encrypted"}, **copy_ssec(), **ssec(OTHER))
    assert get(B, "c/encrypted", **ssec(OTHER)) == b"clear"


PART = 5 * 1024 * 1024


def ssec_multipart():
    up = s3.create_multipart_upload(Bucket=B, Key="c/mp", **ssec())
    assert up["SSECustomerAlgorithm"] == "AES256", up
    uid = up["UploadId"]
    p1 = body(PART)
    p2 = MARKER * 3 + b"tail"
    # Every part must carry the upload's key.
    expect_error("InvalidRequest", s3.upload_part, Bucket=B, Key="c/mp", UploadId=uid, PartNumber=1, Body=p1, status=400)
    expect_error("AccessDenied", s3.upload_part, Bucket=B, Key="c/mp", UploadId=uid, PartNumber=1, Body=p1, status=403, **ssec(OTHER))
    e1 = s3.upload_part(Bucket=B, Key="c/mp", UploadId=uid, PartNumber=1, Body=p1, **ssec())
    assert e1["SSECustomerAlgorithm"] == "AES256"
    e2 = s3.upload_part(Bucket=B, Key="c/mp", UploadId=uid, PartNumber=2, Body=p2, **ssec())
    s3.complete_multipart_upload(
        Bucket=B,
        Key="c/mp",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1["ETag"]}, {"PartNumber": 2, "ETag": e2["ETag"]}]},
    )
    whole = p1 + p2
    assert get(B, "c/mp", **ssec()) == whole
    a, b = PART - 100, PART + 20
    assert s3.get_object(Bucket=B, Key="c/mp", Range=f"bytes={a}-{b}", **ssec())["Body"].read() == whole[a : b + 1]
    assert s3.get_object(Bucket=B, Key="c/mp", PartNumber=2, **ssec())["Body"].read() == p2
    expect_error("AccessDenied", s3.get_object, Bucket=B, Key="c/mp", status=403, **ssec(OTHER))
    expect_error("InvalidRequest", s3.get_object, Bucket=B, Key="c/mp", status=400)

    # UploadPartCopy from an SSE-C source into an SSE-C upload with another key.
    up = s3.create_multipart_upload(Bucket=B, Key="c/mpcopy", **ssec(OTHER))
    uid = up["UploadId"]
    r = s3.upload_part_copy(
        Bucket=B, Key="c/mpcopy", UploadId=uid, PartNumber=1,
        CopySource={"Bucket": B, "Key": "c/big"}, CopySourceRange="bytes=0-5242879",
        **copy_ssec(), **ssec(OTHER),
    )
    s3.complete_multipart_upload(
        Bucket=B, Key="c/mpcopy", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]},
    )
    assert get(B, "c/mpcopy", **ssec(OTHER)) == BIG[:PART]


def sse_s3():
    r = s3.put_object(Bucket=B, Key="s/big", Body=BIG, ServerSideEncryption="AES256")
    assert r["ServerSideEncryption"] == "AES256", r
    # SSE-S3 keeps the plaintext's MD5 as ETag (as AWS).
    assert r["ETag"].strip('"') == hashlib.md5(BIG).hexdigest()
    g = s3.get_object(Bucket=B, Key="s/big")
    assert g["ServerSideEncryption"] == "AES256"
    assert g["Body"].read() == BIG
    assert s3.get_object(Bucket=B, Key="s/big", Range="bytes=70000-70100")["Body"].read() == BIG[70000:70101]
    assert s3.head_object(Bucket=B, Key="s/big")["ServerSideEncryption"] == "AES256"
    s3.put_object(Bucket=B, Key="s/small", Body=SMALL, ServerSideEncryption="AES256")
    assert get(B, "s/small") == SMALL
    # An SSE-C key for an SSE-S3 object is refused.
    expect_error("InvalidRequest", s3.get_object, Bucket=B, Key="s/big", status=400, **ssec())
    # Multipart SSE-S3, and a copy of it in the clear.
    up = s3.create_multipart_upload(Bucket=B, Key="s/mp", ServerSideEncryption="AES256")
    assert up["ServerSideEncryption"] == "AES256"
    e1 = s3.upload_part(Bucket=B, Key="s/mp", UploadId=up["UploadId"], PartNumber=1, Body=body(PART))
    e2 = s3.upload_part(Bucket=B, Key="s/mp", UploadId=up["UploadId"], PartNumber=2, Body=b"end")
    c = s3.complete_multipart_upload(
        Bucket=B, Key="s/mp", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1["ETag"]}, {"PartNumber": 2, "ETag": e2["ETag"]}]},
    )
    assert c["ServerSideEncryption"] == "AES256", c
    assert get(B, "s/mp") == body(PART) + b"end"
    s3.copy_object(Bucket=B, Key="s/copy", CopySource={"Bucket": B, "Key": "s/mp"})
    assert "ServerSideEncryption" not in s3.head_object(Bucket=B, Key="s/copy")
    assert get(B, "s/copy") == body(PART) + b"end"
    # Both at once, and unknown algorithms.
    expect_error("InvalidArgument", s3.put_object, Bucket=B, Key="s/x", Body=b"x", ServerSideEncryption="AES256", status=400, **ssec())
    expect_error("InvalidEncryptionAlgorithmError", s3.put_object, Bucket=B, Key="s/x", Body=b"x", ServerSideEncryption="AES512", status=400)


def kms_refused():
    # No KMS: refused as MinIO does without one (501), never silently ignored.
    expect_error("NotImplemented", s3.put_object, Bucket=B, Key="k", Body=b"x", ServerSideEncryption="aws:kms", status=501)
    expect_error("NotImplemented", s3.put_object, Bucket=B, Key="k", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/x", status=501)
    expect_error("NotImplemented", s3.create_multipart_upload, Bucket=B, Key="k", ServerSideEncryption="aws:kms:dsse", status=501)
    expect_error("NotImplemented", s3.copy_object, Bucket=B, Key="k", CopySource={"Bucket": B, "Key": "plain"}, ServerSideEncryption="aws:kms", status=501)
    assert status_of(s3.head_object, Bucket=B, Key="k")[0] == 404


def bucket_default():
    D = "sse-default"
    s3.create_bucket(Bucket=D)
    expect_error("ServerSideEncryptionConfigurationNotFoundError", s3.get_bucket_encryption, Bucket=D, status=404)
    for alg in ("aws:kms", "aws:kms:dsse"):
        expect_error(
            "NotImplemented", s3.put_bucket_encryption, Bucket=D, status=501,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": alg}}]},
        )
    s3.put_bucket_encryption(
        Bucket=D,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    rules = s3.get_bucket_encryption(Bucket=D)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", rules
    r = s3.put_object(Bucket=D, Key="d/big", Body=BIG)
    assert r["ServerSideEncryption"] == "AES256", r
    assert s3.head_object(Bucket=D, Key="d/big")["ServerSideEncryption"] == "AES256"
    assert get(D, "d/big") == BIG
    s3.put_object(Bucket=D, Key="d/small", Body=SMALL)
    assert get(D, "d/small") == SMALL
    # SSE-C wins over the default.
    s3.put_object(Bucket=D, Key="d/ssec", Body=SMALL, **ssec())
    assert "ServerSideEncryption" not in s3.head_object(Bucket=D, Key="d/ssec", **ssec())
    # A copy into the bucket gets the default too.
    s3.copy_object(Bucket=D, Key="d/copied", CopySource={"Bucket": B, "Key": "plain"})
    assert s3.head_object(Bucket=D, Key="d/copied")["ServerSideEncryption"] == "AES256"
    s3.delete_bucket_encryption(Bucket=D)
    expect_error("ServerSideEncryptionConfigurationNotFoundError", s3.get_bucket_encryption, Bucket=D, status=404)
    s3.put_object(Bucket=D, Key="d/after", Body=b"x")
    assert "ServerSideEncryption" not in s3.head_object(Bucket=D, Key="d/after")
    # Objects written under the default stay readable.
    assert get(D, "d/small") == SMALL


def aws_cli():
    if shutil.which("aws") is None:
        print("SKIPPED aws CLI: not installed")
        return
    with tempfile.TemporaryDirectory() as t:
        src = os.path.join(t, "in")
        with open(src, "wb") as f:
            f.write(SMALL * 7)
        key = "k" * 32  # the CLI takes the raw key and encodes it itself
        run = lambda *a: subprocess.run(["aws", "--endpoint-url", os.environ["KURA_S3"], *a], check=True, capture_output=True)
        run("s3", "cp", src, f"s3://{B}/cli", "--sse-c", "AES256", "--sse-c-key", key)
        run("s3", "cp", f"s3://{B}/cli", os.path.join(t, "out"), "--sse-c", "AES256", "--sse-c-key", key)
        with open(os.path.join(t, "out"), "rb") as f:
            assert f.read() == SMALL * 7
        p = subprocess.run(["aws", "--endpoint-url", os.environ["KURA_S3"], "s3", "cp", f"s3://{B}/cli", os.path.join(t, "x")], capture_output=True)
        assert p.returncode != 0, "a GET without the key must fail"
        run("s3", "cp", src, f"s3://{B}/cli-s3", "--sse", "AES256")
        h = json.loads(run("s3api", "head-object", "--bucket", B, "--key", "cli-s3").stdout)
        assert h["ServerSideEncryption"] == "AES256", h


def data_dirs(roles):
    with open(os.path.join(DIR, "cluster.json")) as f:
        cluster = json.load(f)
    comps = cluster["components"] if isinstance(cluster, dict) else cluster
    return [c["data_dir"] for c in comps if c["role"] in roles]


def files_with_marker(dirs):
    hits = []
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in names:
                p = os.path.join(root, n)
                try:
                    with open(p, "rb") as f:
                        if MARKER in f.read():
                            hits.append(p)
                except OSError:
                    pass
    return hits


def ciphertext_on_disk():
    """Earlier checks wrote MARKER in the clear on purpose (copies out of
    encryption); this one writes a fresh marker every encrypted way."""
    global MARKER
    MARKER = b"KURA-ONDISK-MARKER-" + os.urandom(8).hex().encode() + b"|"
    big, small = body(5 * 1024 * 1024 + 4321), body(1500)
    G = "sse-grep"
    s3.create_bucket(Bucket=G)
    s3.put_object(Bucket=G, Key="ssec/big", Body=big, **ssec())
    s3.put_object(Bucket=G, Key="ssec/small", Body=small, **ssec())
    s3.put_object(Bucket=G, Key="s3/big", Body=big, ServerSideEncryption="AES256")
    s3.put_object(Bucket=G, Key="s3/small", Body=small, ServerSideEncryption="AES256")
    s3.copy_object(Bucket=G, Key="ssec/copy", CopySource={"Bucket": G, "Key": "ssec/big"}, **copy_ssec(), **ssec(OTHER))
    up = s3.create_multipart_upload(Bucket=G, Key="ssec/mp", **ssec())
    parts = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket=G, Key="ssec/mp", UploadId=up["UploadId"], PartNumber=n, Body=b, **ssec())["ETag"]}
        for n, b in ((1, body(PART)), (2, small))
    ]
    s3.complete_multipart_upload(Bucket=G, Key="ssec/mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    s3.put_bucket_encryption(
        Bucket=G,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    s3.put_object(Bucket=G, Key="default/big", Body=big)
    s3.put_object(Bucket=G, Key="default/small", Body=small)
    assert get(G, "default/big") == big and get(G, "ssec/mp", **ssec()) == body(PART) + small

    dirs = data_dirs({"datanode", "metashard"})
    assert len(dirs) >= 6, dirs
    hits = files_with_marker(dirs)
    assert not hits, f"plaintext marker found on disk: {hits}"
    # The same marker unencrypted (a stored and an inline body) is found,
    # on the data nodes and in the metadata, so the search can fail.
    s3.delete_bucket_encryption(Bucket=G)
    s3.put_object(Bucket=G, Key="clear/big", Body=big)
    s3.put_object(Bucket=G, Key="clear/small", Body=small)
    hits = files_with_marker(dirs)
    data = data_dirs({"datanode"})
    meta = data_dirs({"metashard"})
    assert any(h.startswith(tuple(data)) for h in hits), f"unencrypted body not found on data nodes: {hits}"
    assert any(h.startswith(tuple(meta)) for h in hits), f"unencrypted inline body not found in metadata: {hits}"


check("SSE-C put, get, range get, head, inline and empty bodies", ssec_put_get_range_head)
check("SSE-C wrong key 403, missing key 400, malformed headers 400", ssec_refusals)
check("SSE-C copy (source key, new key, to and from the clear, onto itself)", ssec_copy)
check("SSE-C multipart and UploadPartCopy (same key on every part)", ssec_multipart)
check("SSE-S3 put, get, range, multipart, copy", sse_s3)
check("SSE-KMS refused with 501 NotImplemented", kms_refused)
check("bucket default encryption", bucket_default)
check("aws CLI --sse-c / --sse", aws_cli)
check("only ciphertext on disk (and the search finds plaintext)", ciphertext_on_disk)
print("all encryption checks passed")
