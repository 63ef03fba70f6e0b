"""Server-side encryption end to end (docs/decisions/0029): SSE-C put, get,
range get, head, copy and multipart with boto3 (and the aws CLI), wrong and
missing keys, SSE-S3 and bucket default encryption, SSE-KMS refused, SSE-C
refused over plain HTTP from a non-loopback address (a second gateway on
0.0.0.0, port KURA_OPEN_PORT, reached at this host's own address) on every
operation and on POST forms, accepted there over HTTPS — and
the bytes on disk: a recognizable plaintext marker written with SSE-C and
SSE-S3 is found in no file under the data nodes' and metashards' data
dirs, while the same marker written without encryption is (so the search
can fail).

Run by tests/encryption.rs against `kura dev` with KURA_S3, KURA_DIR and the
root key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""
import base64
import hashlib
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import uuid
import zlib

import boto3
from botocore.config import Config

from botocore.exceptions import ClientError

from kura_kit import DIR, ENDPOINT, check, client, expect_error

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


# ------------------------------------------------ SSE-C needs a secure transport

INSECURE = "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection."


def own_address():
    """This host's non-loopback IPv4 address (the source of a route out), or None."""
    for target in ("10.255.255.255", "192.0.2.1", "8.8.8.8"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 1))
                ip = s.getsockname()[0]
        except OSError:
            continue
        if not ipaddress.ip_address(ip).is_loopback and ip != "0.0.0.0":
            return ip
    return None


def unverified():
    """The open gateway's certificate names 127.0.0.1, not this address."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(endpoint):
    u = urllib.parse.urlparse(endpoint)
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=30, context=unverified())
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def wait_ready(endpoint):
    deadline = time.time() + 60
    while True:
        try:
            c = connect(endpoint)
            c.request("GET", "/_kura/health")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        assert time.time() < deadline, f"the open gateway at {endpoint} never became ready"
        time.sleep(0.5)


def post_form(endpoint, client_, key, fields, data):
    """A SigV4 POST form signed by boto3, every field an exact condition: (status, body)."""
    conditions = [{k: v} for k, v in fields.items()]
    signed = client_.generate_presigned_post(B, key, Fields=dict(fields), Conditions=conditions, ExpiresIn=300)
    boundary = "kura" + uuid.uuid4().hex
    out = b""
    for k, v in signed["fields"].items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    c = connect(endpoint)
    c.request("POST", f"/{B}", body=out, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    r = c.getresponse()
    return r.status, r.read()


def refused_insecure(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        code = e.response["Error"]["Code"]
        assert status == 400, f"{fn.__name__}: {status} {code}"
        # HEAD answers carry no body.
        if fn.__name__ != "head_object":
            assert code == "InvalidRequest", f"{fn.__name__}: {code}"
            assert e.response["Error"]["Message"] == INSECURE, e.response["Error"]
        return
    raise AssertionError(f"{fn.__name__} with an SSE-C key over plain HTTP succeeded")


def ssec_needs_secure_transport():
    port = os.environ.get("KURA_OPEN_PORT")
    ip = own_address()
    if not port or not ip:
        print(f"SKIPPED SSE-C over a non-loopback address: port {port}, address {ip}")
        return
    tls = ENDPOINT.startswith("https")
    far_endpoint = f"{'https' if tls else 'http'}://{ip}:{port}"
    wait_ready(far_endpoint)
    far = boto3.client(
        "s3", endpoint_url=far_endpoint, region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        verify=False if tls else None,
    )
    # Without a customer key everything works from afar (so a refusal below
    # is about the key, not a broken gateway).
    far.put_object(Bucket=B, Key="far/plain", Body=b"over the network")
    assert far.get_object(Bucket=B, Key="far/plain")["Body"].read() == b"over the network"
    far.put_object(Bucket=B, Key="far/sse-s3", Body=b"s3 key", ServerSideEncryption="AES256")
    assert far.get_object(Bucket=B, Key="far/sse-s3")["Body"].read() == b"s3 key"
    form_fields = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(KEY).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(KEY).digest()).decode(),
    }
    if tls:
        # HTTPS: the key may come from anywhere.
        far.put_object(Bucket=B, Key="far/ssec", Body=SMALL, **ssec())
        assert far.get_object(Bucket=B, Key="far/ssec", **ssec())["Body"].read() == SMALL
        status, resp = post_form(far_endpoint, far, "far/form", form_fields, b"form over https")
        assert status == 204, (status, resp)
        assert get(B, "far/form", **ssec()) == b"form over https"
        print("     (TLS: SSE-C accepted from a non-loopback address over HTTPS)")
        return
    # Plain HTTP from a non-loopback address: every operation with a key is refused.
    refused_insecure(far.put_object, Bucket=B, Key="far/ssec", Body=SMALL, **ssec())
    expect_error("404", s3.head_object, Bucket=B, Key="far/ssec")
    refused_insecure(far.get_object, Bucket=B, Key="c/small", **ssec())
    refused_insecure(far.head_object, Bucket=B, Key="c/small", **ssec())
    # Only the copy source's key: refused too.
    refused_insecure(far.copy_object, Bucket=B, Key="far/copy", CopySource={"Bucket": B, "Key": "c/small"}, **copy_ssec())
    refused_insecure(far.copy_object, Bucket=B, Key="far/copy", CopySource={"Bucket": B, "Key": "plain"}, **ssec())
    refused_insecure(far.create_multipart_upload, Bucket=B, Key="far/mp", **ssec())
    uid = s3.create_multipart_upload(Bucket=B, Key="far/mp", **ssec())["UploadId"]
    refused_insecure(far.upload_part, Bucket=B, Key="far/mp", UploadId=uid, PartNumber=1, Body=b"p", **ssec())
    refused_insecure(far.upload_part_copy, Bucket=B, Key="far/mp", UploadId=uid, PartNumber=1,
                     CopySource={"Bucket": B, "Key": "c/small"}, **copy_ssec(), **ssec())
    assert s3.list_parts(Bucket=B, Key="far/mp", UploadId=uid).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=B, Key="far/mp", UploadId=uid)
    # A POST form with SSE-C fields: refused from afar, stored over loopback.
    status, resp = post_form(far_endpoint, far, "far/form", form_fields, b"form")
    assert status == 400 and b"<Code>InvalidRequest</Code>" in resp and INSECURE.encode() in resp, (status, resp)
    expect_error("404", s3.head_object, Bucket=B, Key="far/form")
    status, resp = post_form(ENDPOINT, s3, "near/form", form_fields, b"form over loopback")
    assert status == 204, (status, resp)
    assert get(B, "near/form", **ssec()) == b"form over loopback"
    expect_error("InvalidRequest", s3.get_object, Bucket=B, Key="near/form", status=400)


# ------------------------------------------------ UploadPartCopy checksums

def b64(raw):
    return base64.b64encode(raw).decode()


def digest(algo, data):
    if algo == "CRC32":
        return (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")
    return hashlib.sha256(data).digest()


def upload_part_copy_checksums():
    """Copied parts get the upload's checksum, computed over the copied
    plaintext (plain and SSE-C sources, whole and ranged), so Complete
    derives the object's FULL_OBJECT or COMPOSITE value from every part."""
    src = body(PART + 4321)
    s3.put_object(Bucket=B, Key="pc/src", Body=src)
    s3.put_object(Bucket=B, Key="pc/src-c", Body=src, **ssec())
    uploaded = bytes(reversed(body(PART)))
    plain = {"Bucket": B, "Key": "pc/src"}
    secret = {"Bucket": B, "Key": "pc/src-c"}
    cases = [
        # (algorithm, type, parts: ("copy", source, range, extra) or ("put", bytes))
        ("CRC32", "FULL_OBJECT", [("copy", plain, (0, PART), {}), ("put", b"tail bytes")]),
        ("SHA256", "COMPOSITE", [("put", uploaded), ("copy", secret, (PART, len(src)), copy_ssec())]),
        ("CRC32", "COMPOSITE", [("copy", secret, None, copy_ssec()), ("copy", plain, (1000, 3000), {})]),
    ]
    for algo, kind, parts in cases:
        key = f"pc/{algo}-{kind}"
        up = s3.create_multipart_upload(Bucket=B, Key=key, ChecksumAlgorithm=algo, ChecksumType=kind)
        uid = up["UploadId"]
        listed, datas = [], []
        for n, p in enumerate(parts, 1):
            if p[0] == "put":
                data = p[1]
                r = s3.upload_part(Bucket=B, Key=key, UploadId=uid, PartNumber=n, Body=data, ChecksumAlgorithm=algo)
                etag, value = r["ETag"], r[f"Checksum{algo}"]
            else:
                _, source, rng, extra = p
                kw = {"CopySourceRange": f"bytes={rng[0]}-{rng[1] - 1}"} if rng else {}
                data = src[rng[0]:rng[1]] if rng else src
                r = s3.upload_part_copy(Bucket=B, Key=key, UploadId=uid, PartNumber=n, CopySource=source, **kw, **extra)
                result = r["CopyPartResult"]
                etag, value = result["ETag"], result.get(f"Checksum{algo}")
            assert value == b64(digest(algo, data)), (key, n, value)
            listed.append({"PartNumber": n, "ETag": etag, f"Checksum{algo}": value})
            datas.append(data)
        lp = s3.list_parts(Bucket=B, Key=key, UploadId=uid)["Parts"]
        assert [p.get(f"Checksum{algo}") for p in lp] == [p[f"Checksum{algo}"] for p in listed], lp
        done = s3.complete_multipart_upload(Bucket=B, Key=key, UploadId=uid, MultipartUpload={"Parts": listed})
        whole = b"".join(datas)
        if kind == "FULL_OBJECT":
            want = b64(digest(algo, whole))
        else:
            want = b64(digest(algo, b"".join(digest(algo, d) for d in datas))) + f"-{len(datas)}"
        assert done[f"Checksum{algo}"] == want, (key, done.get(f"Checksum{algo}"), want)
        h = s3.head_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
        assert h[f"Checksum{algo}"] == want and h["ChecksumType"] == kind, h
        assert get(B, key) == whole
    # A wrong checksum listed for a copied part is refused at Complete.
    up = s3.create_multipart_upload(Bucket=B, Key="pc/wrong", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    uid = up["UploadId"]
    r = s3.upload_part_copy(Bucket=B, Key="pc/wrong", UploadId=uid, PartNumber=1, CopySource=plain)
    bad = b64(digest("CRC32", b"something else"))
    expect_error("InvalidPart", s3.complete_multipart_upload, Bucket=B, Key="pc/wrong", UploadId=uid, status=400,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"], "ChecksumCRC32": bad}]})
    s3.abort_multipart_upload(Bucket=B, Key="pc/wrong", UploadId=uid)


check("SSE-C put, get, range get, head, inline and empty bodies", ssec_put_get_range_head)
check("SSE-C wrong key 403, missing key 400, malformed headers 400", ssec_refusals)
check("SSE-C copy (source key, new key, to and from the clear, onto itself)", ssec_copy)
check("SSE-C multipart and UploadPartCopy (same key on every part)", ssec_multipart)
check("SSE-S3 put, get, range, multipart, copy", sse_s3)
check("UploadPartCopy parts carry the upload's checksum; Complete derives the object's", upload_part_copy_checksums)
check("SSE-KMS refused with 501 NotImplemented", kms_refused)
check("SSE-C only over TLS or loopback: refused over HTTP from afar, forms too", ssec_needs_secure_transport)
check("bucket default encryption", bucket_default)
check("aws CLI --sse-c / --sse", aws_cli)
check("only ciphertext on disk (and the search finds plaintext)", ciphertext_on_disk)
print("all encryption checks passed")
