"""PostObject (browser form uploads) end to end (tests/post_object.rs):

- SigV4 forms from boto3's generate_presigned_post with conditions, posted
  as multipart/form-data with http.client: 201 PostResponse, 200, 204,
  303 redirect, ${filename}, metadata, Cache-Control / Content-Type /
  Content-Disposition, canned ACL, storage class, a checksum field; the GET
  back byte-identical with the checksum; the tagging, object lock and SSE
  fields (decision 0036);
- a SigV2 form signed by hand (base64 HMAC-SHA1 of the policy);
- every refusal: bad signature, unknown key, expired policy, failed
  condition, field not covered, missing key / file / signature fields,
  malformed body, metadata over 2 KiB, content-length-range over (cut while
  streaming: answered before the body is sent, nothing stored) and under;
- anonymous forms: refused on a private bucket, stored where the bucket
  policy lets anonymous users write;
- a 256 MiB form with the gateway's RSS sampled (stays bounded), GET back
  byte-identical;
- an unsigned 1 GiB form to a private bucket refused after the fields,
  fast, without its file being read.

Prints figures and ends with "all post_object checks passed".
"""
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import selectors
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
import zlib
import xml.etree.ElementTree as ET

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KURA_S3"]
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
DIR = os.environ["KURA_DIR"]
URL = urllib.parse.urlparse(ENDPOINT)
HOST, PORT, TLS = URL.hostname, URL.port, URL.scheme == "https"
MiB = 1 << 20


def client():
    return boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name="us-east-1",
        aws_access_key_id=AK, aws_secret_access_key=SK,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      retries={"max_attempts": 1}, read_timeout=120),
    )


S3 = client()


def gateway_pid():
    with open(os.path.join(DIR, "cluster.json")) as f:
        comps = json.load(f)["components"]
    return next(c["pid"] for c in comps if c["id"] == "gateway-1")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# ------------------------------------------------------------------ forms

BOUNDARY = "----kuraFormBoundary7MA4YWxkTrZu0gW"


def form_parts(fields, filename="f.bin", after=()):
    """(head, tail): the fields and the file part's header; the end."""
    head = b""
    for k, v in fields:
        head += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n").encode() + \
            (v if isinstance(v, bytes) else str(v).encode()) + b"\r\n"
    head += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = b"\r\n"
    for k, v in after:
        tail += f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
    tail += f"--{BOUNDARY}--\r\n".encode()
    return head, tail


def connection():
    if TLS:
        return http.client.HTTPSConnection(HOST, PORT, timeout=120, context=ssl.create_default_context())
    return http.client.HTTPConnection(HOST, PORT, timeout=120)


def post_raw(path, body_chunks, length, host=None, content_type=None):
    """POSTs a body (iterable of bytes) of `length`: (status, headers, body)."""
    conn = connection()
    conn.putrequest("POST", path, skip_host=host is not None, skip_accept_encoding=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.putheader("Content-Type", content_type or f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    try:
        for c in body_chunks:
            conn.send(c)
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered before the whole body was sent: read the answer
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return out


def post(bucket, fields, data, filename="f.bin", after=(), host=None):
    head, tail = form_parts(fields, filename, after)
    path = "/" if host else f"/{bucket}"
    return post_raw(path, [head, data, tail], len(head) + len(data) + len(tail), host=host)


def error_code(body):
    try:
        return ET.fromstring(body).findtext("Code"), ET.fromstring(body).findtext("Message")
    except ET.ParseError:
        return None, body


def expect(resp, status, code=None, message_part=None):
    st, _, body = resp
    got, msg = error_code(body) if body else (None, "")
    assert st == status and (code is None or got == code), f"expected {status} {code}, got {st} {got}: {body[:400]}"
    if message_part is not None:
        assert message_part in (msg or ""), f"expected {message_part!r} in {msg!r}"


def presigned(bucket, key, fields=None, conditions=None, expires=300):
    p = S3.generate_presigned_post(bucket, key, Fields=fields or {}, Conditions=conditions or [], ExpiresIn=expires)
    return list(p["fields"].items())


def v2_form(bucket, key, conditions, ak=AK, sk=SK, extra=()):
    exp = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    policy = base64.b64encode(json.dumps({"expiration": exp, "conditions": conditions}).encode()).decode()
    sig = base64.b64encode(hmac.new(sk.encode(), policy.encode(), hashlib.sha1).digest()).decode()
    return [("key", key), ("AWSAccessKeyId", ak), ("policy", policy), ("signature", sig), *extra]


def head_missing(bucket, key):
    try:
        S3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, e
        return
    raise AssertionError(f"{key} exists")


def check(name, fn):
    try:
        fn()
    except Exception:
        print(f"FAIL {name}")
        raise
    print(f"ok   {name}")


def new_bucket(prefix):
    b = f"{prefix}-{uuid.uuid4().hex[:8]}"
    S3.create_bucket(Bucket=b)
    return b


# ------------------------------------------------------------------ checks

def sigv4_201_with_checksum(b):
    data = os.urandom(3 * MiB + 17)
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    fields = {"acl": "private", "Content-Type": "text/plain", "x-amz-meta-color": "blue",
              "Cache-Control": "max-age=60", "Content-Disposition": "attachment",
              "success_action_status": "201", "x-amz-checksum-sha256": sha}
    conds = [{"acl": "private"}, ["starts-with", "$Content-Type", "text/"], {"x-amz-meta-color": "blue"},
             ["starts-with", "$Cache-Control", ""], ["eq", "$Content-Disposition", "attachment"],
             {"success_action_status": "201"}, {"x-amz-checksum-sha256": sha},
             ["content-length-range", 1, 10 * MiB]]
    f = presigned(b, "up/${filename}", fields, conds)
    st, h, body = post(b, f, data, filename="hello.txt")
    assert st == 201, (st, body)
    doc = ET.fromstring(body)
    assert doc.tag == "PostResponse", body
    assert doc.findtext("Key") == "up/hello.txt" and doc.findtext("Bucket") == b, body
    md5 = hashlib.md5(data).hexdigest()
    assert doc.findtext("ETag") == f'"{md5}"' and h["etag"] == f'"{md5}"', (body, h)
    assert h["location"].endswith(f"/{b}/up/hello.txt"), h
    got = S3.get_object(Bucket=b, Key="up/hello.txt", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ChecksumSHA256"] == sha, got.get("ChecksumSHA256")
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"color": "blue"}, got
    assert got["CacheControl"] == "max-age=60" and got["ContentDisposition"] == "attachment", got
    # A checksum that does not match the file: refused, nothing stored.
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    f = presigned(b, "up/bad", {"x-amz-checksum-sha256": bad}, [{"x-amz-checksum-sha256": bad}])
    st, _, body = post(b, f, data)
    assert st == 400, (st, body)
    head_missing(b, "up/bad")


def statuses_and_redirect(b):
    f = presigned(b, "s/204")
    st, h, body = post(b, f, b"x" * 10)
    assert st == 204 and body == b"" and h["etag"] == f'"{hashlib.md5(b"x" * 10).hexdigest()}"', (st, h, body)
    f = presigned(b, "s/200", {"success_action_status": "200"}, [{"success_action_status": "200"}])
    st, h, body = post(b, f, b"y")
    assert st == 200 and body == b"", (st, body)
    # An unknown status falls back to 204, as AWS.
    f = presigned(b, "s/999", {"success_action_status": "999"}, [{"success_action_status": "999"}])
    assert post(b, f, b"z")[0] == 204
    redirect = "https://app.example.com/done?x=1"
    f = presigned(b, "s/redir", {"success_action_redirect": redirect},
                  [["starts-with", "$success_action_redirect", "https://app.example.com/"]])
    st, h, _ = post(b, f, b"r")
    assert st == 303, st
    loc = urllib.parse.urlparse(h["location"])
    q = urllib.parse.parse_qs(loc.query)
    assert loc.netloc == "app.example.com" and q["x"] == ["1"] and q["bucket"] == [b] and q["key"] == ["s/redir"], h
    assert q["etag"] == [f'"{hashlib.md5(b"r").hexdigest()}"'], q
    for k, want in [("s/204", b"x" * 10), ("s/200", b"y"), ("s/redir", b"r")]:
        assert S3.get_object(Bucket=b, Key=k)["Body"].read() == want
    # Fields after the file part are ignored, as AWS does.
    f = presigned(b, "s/after")
    st, _, _ = post(b, f, b"a", after=[("x-amz-meta-late", "1")])
    assert st == 204 and S3.head_object(Bucket=b, Key="s/after")["Metadata"] == {}
    # Virtual-hosted style: Host bucket.localhost, POST /.
    f = presigned(b, "s/vhost")
    st, h, _ = post(b, f, b"v", host=f"{b}.localhost:{PORT}")
    assert st == 204 and h["location"].endswith(f"{b}.localhost:{PORT}/s/vhost"), (st, h)
    assert S3.get_object(Bucket=b, Key="s/vhost")["Body"].read() == b"v"


def acl_and_class(b):
    f = presigned(b, "pub/obj", {"acl": "public-read", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
                  [{"acl": "public-read"}, {"x-amz-storage-class": "REDUCED_REDUNDANCY"}])
    assert post(b, f, b"public")[0] == 204
    with urllib.request.urlopen(f"{ENDPOINT}/{b}/pub/obj") as r:
        assert r.status == 200 and r.read() == b"public"
    assert S3.head_object(Bucket=b, Key="pub/obj")["StorageClass"] == "REDUCED_REDUNDANCY"
    f = presigned(b, "pub/bad", {"x-amz-storage-class": "GLACIERISH"}, [{"x-amz-storage-class": "GLACIERISH"}])
    expect(post(b, f, b"x"), 400, "InvalidStorageClass")
    f = presigned(b, "pub/badacl", {"acl": "no-such-acl"}, [{"acl": "no-such-acl"}])
    assert post(b, f, b"x")[0] == 400
    head_missing(b, "pub/badacl")


def sigv2(b):
    conds = [{"bucket": b}, ["starts-with", "$key", "v2/"], ["content-length-range", 0, 1024]]
    st, _, body = post(b, v2_form(b, "v2/x.txt", conds), b"signed with v2")
    assert st == 204, (st, body)
    assert S3.get_object(Bucket=b, Key="v2/x.txt")["Body"].read() == b"signed with v2"
    expect(post(b, v2_form(b, "v2/y", conds, sk="wrong-secret"), b"x"), 403, "SignatureDoesNotMatch")
    expect(post(b, v2_form(b, "v2/y", conds, ak="NOSUCHKEY0000000"), b"x"), 403, "InvalidAccessKeyId")
    # The bucket condition names another bucket.
    other = [{"bucket": "someone-else"}, ["starts-with", "$key", ""]]
    expect(post(b, v2_form(b, "v2/z", other), b"x"), 403, "AccessDenied", "Invalid according to Policy")
    head_missing(b, "v2/y")
    head_missing(b, "v2/z")


def refusals(b):
    base = presigned(b, "r/k")
    sig = dict(base)["x-amz-signature"]
    tampered = [(k, ("0" if sig[0] != "0" else "1") + sig[1:]) if k == "x-amz-signature" else (k, v) for k, v in base]
    expect(post(b, tampered, b"x"), 403, "SignatureDoesNotMatch")
    # A field the policy does not cover.
    expect(post(b, base + [("x-amz-meta-extra", "1")], b"x"), 403, "AccessDenied", "Extra input fields: x-amz-meta-extra")
    # Expired.
    expect(post(b, presigned(b, "r/k", expires=-60), b"x"), 403, "AccessDenied", "Policy expired")
    # A failed condition: the key is not under the allowed prefix.
    f = presigned(b, "r/${filename}")
    expect(post(b, [(k, "elsewhere/x" if k == "key" else v) for k, v in f], b"x"), 403, "AccessDenied",
           "Policy Condition failed")
    # Missing fields.
    expect(post(b, [(k, v) for k, v in base if k != "key"], b"x"), 400, "InvalidArgument", "key")
    expect(post(b, [(k, v) for k, v in base if k != "policy"], b"x"), 400, "InvalidArgument", "policy")
    expect(post(b, [(k, v) for k, v in base if k != "x-amz-date"], b"x"), 400, "InvalidArgument", "x-amz-date")
    expect(post(b, [("key", "r/k"), ("policy", dict(base)["policy"])], b"x"), 400, "InvalidArgument", "AWSAccessKeyId")
    body = "".join(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n" for k, v in base)
    body = (body + f"--{BOUNDARY}--\r\n").encode()
    expect(post_raw(f"/{b}", [body], len(body)), 400, "InvalidArgument", "exactly one file")
    # Not multipart at all.
    junk = b"this is not a multipart body"
    expect(post_raw(f"/{b}", [junk], len(junk)), 400, "MalformedPOSTRequest")
    # Fields before the file over 20 KiB.
    f = presigned(b, "r/big", {"x-amz-meta-pad": "p" * (24 << 10)}, [["starts-with", "$x-amz-meta-pad", ""]])
    expect(post(b, f, b"x"), 400, "MaxPostPreDataLengthExceeded")
    # User metadata over 2 KiB, as PutObject.
    f = presigned(b, "r/meta", {"x-amz-meta-big": "m" * 2100}, [["starts-with", "$x-amz-meta-big", ""]])
    expect(post(b, f, b"x"), 400, "MetadataTooLarge")
    # A bad policy document.
    f = [(k, base64.b64encode(b"{not json").decode() if k == "policy" else v) for k, v in v2_form(b, "r/j", [])]
    st, _, body = post(b, f, b"x")
    assert st in (400, 403), (st, body)  # the signature no longer matches either
    for k in ["r/k", "r/big", "r/meta", "r/j", "elsewhere/x"]:
        head_missing(b, k)


def length_range(b):
    f = presigned(b, "len/small", conditions=[["content-length-range", 100, 1000]])
    expect(post(b, f, b"x" * 10), 400, "EntityTooSmall")
    head_missing(b, "len/small")
    f = presigned(b, "len/ok", conditions=[["content-length-range", 100, 1000]])
    assert post(b, f, b"x" * 1000)[0] == 204
    # Over the maximum: cut while streaming. Sent over a raw socket so the
    # answer is read while the client is still sending.
    if TLS:
        print("     (content-length-range cut mid-stream: raw-socket part skipped over TLS)")
        f = presigned(b, "len/big", conditions=[["content-length-range", 0, 1 * MiB]])
        expect(post(b, f, os.urandom(2 * MiB)), 400, "EntityTooLarge")
        head_missing(b, "len/big")
        return
    f = presigned(b, "len/big", conditions=[["content-length-range", 0, 4 * MiB]])
    head, tail = form_parts(f)
    total = 256 * MiB
    t0 = time.time()
    sent, resp = send_until_answered(f"/{b}", head, total, len(head) + total + len(tail))
    took = time.time() - t0
    assert resp is not None and resp[0] == 400 and b"EntityTooLarge" in resp[2], resp
    assert sent < 64 * MiB, f"{sent >> 20} MiB taken of a form whose policy allows 4 MiB"
    head_missing(b, "len/big")
    print(f"     content-length-range 4 MiB, 256 MiB sent: 400 EntityTooLarge after {sent >> 20} MiB, {took:.2f} s")


def send_until_answered(path, head, file_len, length, chunk=MiB):
    """Raw plaintext POST: sends the head then zeros until the server answers
    or closes. (bytes sent, (status, headers, body) or None)."""
    s = socket.create_connection((HOST, PORT), timeout=30)
    req = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
           f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n").encode()
    s.sendall(req + head)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    block = b"\0" * chunk
    sent, left, pending = 0, file_len, b""
    deadline = time.time() + 120
    try:
        while left > 0 or pending:
            assert time.time() < deadline, f"no answer after {sent} bytes"
            if not pending:
                pending = block[:min(chunk, left)]
                left -= len(pending)
            for _, ev in sel.select(timeout=1):
                if ev & selectors.EVENT_READ:
                    return sent, read_response(s)
                if ev & selectors.EVENT_WRITE:
                    try:
                        n = s.send(pending)
                    except (BrokenPipeError, ConnectionResetError):
                        return sent, read_response(s)
                    sent += n
                    pending = pending[n:]
        return sent, read_response(s)
    finally:
        s.close()


def read_response(s):
    s.setblocking(True)
    s.settimeout(10)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            c = s.recv(65536)
            if not c:
                break
            data += c
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head:
            return None
        lines = head.decode().split("\r\n")
        headers = dict((k.lower(), v.strip()) for k, v in (l.split(":", 1) for l in lines[1:]))
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            c = s.recv(65536)
            if not c:
                break
            rest += c
        return int(lines[0].split()[1]), headers, rest
    except (ConnectionResetError, socket.timeout):
        return None


def anonymous(b):
    anon_fields = [("key", "public/a.txt")]
    expect(post(b, anon_fields, b"anon"), 403, "AccessDenied")
    head_missing(b, "public/a.txt")
    S3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{b}/public/*"}]}))
    st, _, body = post(b, anon_fields, b"anon")
    assert st == 204, (st, body)
    assert S3.get_object(Bucket=b, Key="public/a.txt")["Body"].read() == b"anon"
    expect(post(b, [("key", "private/a.txt")], b"anon"), 403, "AccessDenied")
    head_missing(b, "private/a.txt")
    # An anonymous form to a bucket that does not exist learns nothing.
    expect(post("no-such-bucket-" + uuid.uuid4().hex[:6], anon_fields, b"x"), 403, "AccessDenied")


def large_streamed(b, pid):
    size = 256 * MiB
    seed = os.urandom(MiB)
    sha = hashlib.sha256()

    def blocks():
        for i in range(size // MiB):
            blk = i.to_bytes(8, "big") + seed[8:]
            sha.update(blk)
            yield blk

    f = presigned(b, "big/file.bin", conditions=[["content-length-range", 0, 1 << 30]])
    head, tail = form_parts(f)
    rss0 = rss_mib(pid)
    peak = [rss0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    t.start()
    t0 = time.time()
    try:
        st, h, body = post_raw(f"/{b}", [head, *blocks(), tail], len(head) + size + len(tail))
    finally:
        done.set()
        t.join()
    took = time.time() - t0
    assert st == 204, (st, body)
    got = hashlib.sha256()
    obj = S3.get_object(Bucket=b, Key="big/file.bin")
    assert obj["ContentLength"] == size
    for c in obj["Body"].iter_chunks(MiB):
        got.update(c)
    assert got.hexdigest() == sha.hexdigest(), "the 256 MiB object read back differs"
    grew = peak[0] - rss0
    print(f"     256 MiB form: {st} in {took:.1f} s ({size / MiB / took:.0f} MiB/s); gateway RSS "
          f"{rss0:.0f} MiB before, {peak[0]:.0f} MiB peak (+{grew:.0f} MiB)")
    # A form buffered whole would grow RSS by its 256 MiB and more. What a PUT really holds is
    # a few MiB (decision 0028), but freed buffers stay in glibc's heap up to the 128 MiB trim
    # threshold Kura sets (src/main.rs, decision 0040), so the peak also counts up to that much
    # of freed memory: +10-85 MiB quiet, +143 once under CI's parallel load.
    assert grew < 192, f"gateway RSS grew {grew:.0f} MiB during a 256 MiB form: buffered?"


def unsigned_gib_refused(b, pid):
    if TLS:
        print("     (unsigned 1 GiB form: raw-socket check skipped over TLS)")
        return
    rss0 = rss_mib(pid)
    head, tail = form_parts([("key", "gib.bin")])
    t0 = time.time()
    sent, resp = send_until_answered(f"/{b}", head, 1 << 30, len(head) + (1 << 30) + len(tail))
    took = time.time() - t0
    assert resp is not None and resp[0] == 403 and b"AccessDenied" in resp[2], resp
    assert resp[1].get("connection") == "close", resp[1]
    assert sent < 64 * MiB and took < 10, (sent, took)
    head_missing(b, "gib.bin")
    print(f"     unsigned 1 GiB form to a private bucket: 403 after {sent >> 20} MiB sent, {took:.2f} s; "
          f"RSS {rss0:.0f} -> {rss_mib(pid):.0f} MiB")


def tagging_doc(pairs):
    tags = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in pairs)
    return f"<Tagging><TagSet>{tags}</TagSet></Tagging>"


def exact(bucket, key, fields):
    """A SigV4 form whose policy pins every given field to its value."""
    return presigned(bucket, key, fields, [{k: v} for k, v in fields.items()])


def tagging_field(b):
    doc = tagging_doc([("team", "blue"), ("env", "dev test")])
    assert post(b, exact(b, "t/ok", {"tagging": doc}), b"tagged")[0] == 204
    tags = S3.get_object_tagging(Bucket=b, Key="t/ok")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "dev test"), ("team", "blue")], tags
    assert S3.get_object(Bucket=b, Key="t/ok")["TagCount"] == 2
    # Checked as PutObjectTagging checks its body; nothing stored.
    for bad, code in [
        ("<Tagging><TagSet>", "MalformedXML"),
        ("team=blue", "MalformedXML"),
        (tagging_doc([("aws:x", "1")]), "InvalidTag"),
        (tagging_doc([("k", "v"), ("k", "w")]), "InvalidTag"),
        (tagging_doc([(f"k{i}", "v") for i in range(11)]), "BadRequest"),
    ]:
        expect(post(b, exact(b, "t/bad", {"tagging": bad}), b"x"), 400, code)
    head_missing(b, "t/bad")
    # A tagging field the policy does not cover is refused like any other.
    f = presigned(b, "t/uncovered") + [("tagging", doc)]
    expect(post(b, f, b"x"), 403, "AccessDenied", "tagging")
    head_missing(b, "t/uncovered")


def crc32_b64(data):
    return base64.b64encode((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")).decode()


def lock_fields(b):
    lb = f"posts-lock-{uuid.uuid4().hex[:8]}"
    S3.create_bucket(Bucket=lb, ObjectLockEnabledForBucket=True)
    until = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).replace(microsecond=0)
    until_s = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    data = b"locked by a form"
    lock = {"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": until_s,
            "x-amz-object-lock-legal-hold": "ON"}
    # Lock fields need Content-MD5 or a checksum field, as PutObject's headers.
    expect(post(lb, exact(lb, "l/bare", lock), data), 400, "InvalidRequest",
           "Content-MD5 OR x-amz-checksum- HTTP header is required")
    head_missing(lb, "l/bare")
    st, h, body = post(lb, exact(lb, "l/ok", {**lock, "x-amz-checksum-crc32": crc32_b64(data)}), data)
    assert st == 204, (st, body)
    v = h["x-amz-version-id"]
    head = S3.head_object(Bucket=lb, Key="l/ok", VersionId=v)
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] == until, head
    assert head["ObjectLockLegalHoldStatus"] == "ON", head
    try:
        S3.delete_object(Bucket=lb, Key="l/ok", VersionId=v, BypassGovernanceRetention=True)
        raise AssertionError("a legally held version was deleted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", e
    # Content-MD5 works too; a wrong one fails the upload.
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    st, h, body = post(lb, exact(lb, "l/md5", {"x-amz-object-lock-legal-hold": "ON", "Content-MD5": md5}), data)
    assert st == 204, (st, body)
    assert S3.get_object_legal_hold(Bucket=lb, Key="l/md5")["LegalHold"]["Status"] == "ON"
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    expect(post(lb, exact(lb, "l/wrongmd5", {"x-amz-object-lock-legal-hold": "ON", "Content-MD5": wrong}), data),
           400, "BadDigest")
    head_missing(lb, "l/wrongmd5")
    # Bad lock fields: PutObject's checks and errors.
    past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    crc = {"x-amz-checksum-crc32": crc32_b64(data)}
    for fields, code in [
        ({"x-amz-object-lock-mode": "GOVERNANCE"}, "InvalidArgument"),
        ({"x-amz-object-lock-retain-until-date": until_s}, "InvalidArgument"),
        ({"x-amz-object-lock-mode": "FOREVER", "x-amz-object-lock-retain-until-date": until_s}, "InvalidArgument"),
        ({"x-amz-object-lock-mode": "COMPLIANCE", "x-amz-object-lock-retain-until-date": past}, "InvalidArgument"),
        ({"x-amz-object-lock-mode": "COMPLIANCE", "x-amz-object-lock-retain-until-date": "next week"}, "InvalidArgument"),
        ({"x-amz-object-lock-legal-hold": "MAYBE"}, "InvalidArgument"),
    ]:
        expect(post(lb, exact(lb, "l/bad", {**fields, **crc}), data), 400, code)
    head_missing(lb, "l/bad")
    # Outside a lock bucket: refused.
    expect(post(b, exact(b, "l/nolock", {"x-amz-object-lock-legal-hold": "ON", **crc}), data), 400, "InvalidRequest")
    head_missing(b, "l/nolock")
    # A bucket default retention applies to forms, which then need an integrity field too.
    S3.put_object_lock_configuration(Bucket=lb, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    expect(post(lb, exact(lb, "l/dflt", {}), data), 400, "InvalidRequest")
    st, h, body = post(lb, exact(lb, "l/dflt", crc), data)
    assert st == 204, (st, body)
    assert S3.head_object(Bucket=lb, Key="l/dflt")["ObjectLockMode"] == "GOVERNANCE"
    # Not covered by the policy: refused.
    f = presigned(lb, "l/uncovered", crc, [crc]) + [("x-amz-object-lock-legal-hold", "ON")]
    expect(post(lb, f, data), 403, "AccessDenied")


def sse_fields(b):
    st, h, body = post(b, exact(b, "e/s3", {"x-amz-server-side-encryption": "AES256"}), b"sse-s3 form")
    assert st == 204 and h["x-amz-server-side-encryption"] == "AES256", (st, h, body)
    got = S3.get_object(Bucket=b, Key="e/s3")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"sse-s3 form"
    key = os.urandom(32)
    ssec = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
            "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    st, h, body = post(b, exact(b, "e/c", ssec), b"sse-c form")
    assert st == 204 and h["x-amz-server-side-encryption-customer-algorithm"] == "AES256", (st, h, body)
    got = S3.get_object(Bucket=b, Key="e/c", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == b"sse-c form"
    try:
        S3.get_object(Bucket=b, Key="e/c")
        raise AssertionError("an SSE-C object was read without its key")
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e
    expect(post(b, exact(b, "e/kms", {"x-amz-server-side-encryption": "aws:kms"}), b"x"), 501, "NotImplemented")
    bad = dict(ssec, **{"x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()})
    expect(post(b, exact(b, "e/badmd5", bad), b"x"), 400, "InvalidArgument")
    head_missing(b, "e/badmd5")
    # ACL grants on forms stay unimplemented: refused, never ignored.
    expect(post(b, exact(b, "e/grant", {"x-amz-grant-read": 'id="x"'}), b"x"), 501, "NotImplemented")


def main():
    pid = gateway_pid()
    b = new_bucket("posts")
    check("SigV4 form: 201 PostResponse, ${filename}, fields stored, GET back with checksum",
          lambda: sigv4_201_with_checksum(b))
    check("success_action_status 200/204, redirect 303, late fields ignored, virtual-hosted",
          lambda: statuses_and_redirect(b))
    check("canned ACL and storage class fields", lambda: acl_and_class(b))
    check("tagging field: stored, checked as PutObjectTagging, covered by the policy", lambda: tagging_field(b))
    check("object lock fields: PutObject's checks, integrity field required, bucket default", lambda: lock_fields(b))
    check("SSE fields: AES256, SSE-C (loopback), KMS and grants refused", lambda: sse_fields(b))
    check("SigV2 form, wrong secret, unknown key, bucket condition", lambda: sigv2(b))
    check("refusals: signature, coverage, expiry, conditions, missing fields, malformed",
          lambda: refusals(b))
    check("content-length-range: under, within, over (cut mid-stream)", lambda: length_range(b))
    anon_b = new_bucket("posts-anon")
    check("anonymous forms only where the bucket policy allows", lambda: anonymous(anon_b))
    check("256 MiB form streamed, RSS bounded, read back identical", lambda: large_streamed(b, pid))
    check("unsigned 1 GiB form refused after the fields", lambda: unsigned_gib_refused(b, pid))
    # Still serving.
    S3.put_object(Bucket=b, Key="after", Body=b"x")
    print("all post_object checks passed")


if __name__ == "__main__":
    main()
