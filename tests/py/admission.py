"""The S3 port's front door, played as an attacker and as a careless client
(tests/admission.rs starts the cluster and runs one phase per call):

  malformed            invalid Range ignored (also when SigV4 signs it: boto3,
                       aws CLI, presigned URL), garbage AWS4 Authorization,
                       unknown methods, oversized headers
  post_forms PID       unsigned 1 GiB multipart POSTs refused early, RSS bounded
  slowloris PID        2000 idle + 50 byte-per-second connections cut by the
                       header timeout while boto3 keeps working, RSS figures
  in_flight            requests beyond --max-in-flight answered 503 SlowDown
  idle_body            a body that stops sending → 400 RequestTimeout
  write_stall          a client that stops reading is dropped
  conn_cap N           connections beyond --max-connections answered 503 SlowDown
                       (an HTTP/2 one too, then closed with GOAWAY)
  header_limits PID    90 small fields served; over 100 fields and 1 MiB header
                       sections → 400 XML; 300 such clients at once, RSS
  h2 SECS              HTTP/2 connections without a request cut after the
                       header timeout, a busy one not
  https CA PID NEWCERT NEWKEY
                       boto3 and the aws CLI over HTTPS, plaintext refused,
                       aws:SecureTransport, certificate reload on SIGHUP
                       without dropping an open connection

Every phase prints `name: figures` lines and ends with "ok".
"""
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

import boto3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ENDPOINT = os.environ.get("KURA_HTTPS") or os.environ["KURA_S3"]
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
HOST, PORT = urllib.parse.urlparse(ENDPOINT).hostname, urllib.parse.urlparse(ENDPOINT).port
# KURA_TEST_TLS=1 (or the https phase): raw sockets speak TLS too, trusting
# SSL_CERT_FILE (the cluster's CA, set by tests/common) or KURA_HTTPS_CA.
TLS = ENDPOINT.startswith("https://")


def tls_context(alpn=None):
    ctx = ssl.create_default_context(cafile=os.environ.get("KURA_HTTPS_CA"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_wrap(s, alpn=None):
    """`s` wrapped in TLS when the S3 port speaks it; the session tickets a
    TLS 1.3 server sends after the handshake are read off, so that a
    readable socket means an HTTP answer."""
    if not TLS:
        return s
    t = tls_context(alpn).wrap_socket(s, server_hostname=HOST)
    if alpn:
        return t  # HTTP/2: the server speaks first (SETTINGS)
    timeout = t.gettimeout()
    t.settimeout(0.1)
    try:
        extra = t.recv(1)
        assert not extra, f"the server spoke first: {extra!r}"
    except (socket.timeout, ssl.SSLWantReadError):
        pass
    t.settimeout(timeout)
    return t


def client(signature_version=None, **kw):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=5, read_timeout=30, signature_version=signature_version),
        **kw,
    )


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def expect_error(code, status, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (got, got_status) == (code, status), f"expected {code} {status}, got {got} {got_status}: {e}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


class Unsigned(S3SigV4Auth):
    """SigV4 with UNSIGNED-PAYLOAD, so a raw socket can send the body as it likes."""

    def _should_sha256_sign_payload(self, request):
        return False


def signed_head(method, path, headers=None):
    """The bytes of a SigV4-signed HTTP/1.1 request head."""
    req = AWSRequest(method=method, url=f"{ENDPOINT}{path}", headers=dict(headers or {}))
    Unsigned(Credentials(AK, SK), "s3", "us-east-1").add_auth(req)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{PORT}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(timeout=10, alpn=None):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return tls_wrap(s, alpn)


def read_response(s, limit=1 << 16, buf=b""):
    """(status, headers text, body start) of one response, or None if closed."""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, socket.timeout, ssl.SSLError):
            return None
        if not chunk:
            return None
        buf += chunk
        if len(buf) > limit:
            raise AssertionError("response head too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    status = int(text.split()[1])
    return status, text, rest


def raw(method, path, headers=(), body=b""):
    """One unsigned raw request: (status, head, body start)."""
    s = connect()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{PORT}", *headers, f"Content-Length: {len(body)}"]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    r = read_response(s)
    s.close()
    assert r is not None, f"{method} {path}: connection closed without an answer"
    return r


def new_bucket(s3, name):
    # A gateway just restarted may answer 503 until its PD and region
    # caches are warm (an SDK would retry): allow that for a few seconds.
    deadline = time.time() + 15
    while True:
        try:
            s3.create_bucket(Bucket=name)
            return name
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if code == "BucketAlreadyOwnedByYou":
                return name
            if code != "ServiceUnavailable" or time.time() > deadline:
                raise
            time.sleep(0.5)


# --------------------------------------------------------------- malformed

def malformed():
    s3 = client()
    b = new_bucket(s3, "malformed")
    body = b"0123456789" * 10
    s3.put_object(Bucket=b, Key="k", Body=body)

    # Syntactically invalid ranges are ignored: 200 with the whole object
    # (SigV2 does not sign Range, so the gateway may drop it).
    v2 = client(signature_version="s3")
    invalid = ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=", "bytes=-", "bytes=1-2-3"]
    for r in invalid:
        got = v2.get_object(Bucket=b, Key="k", Range=r)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 200, (r, got["ResponseMetadata"])
        assert got["Body"].read() == body, r
        assert "ContentRange" not in got, r
    print("invalid ranges (SigV2): 7 ignored (200, whole object)")
    signed_ranges(s3, b, body, invalid)

    # A garbage AWS4 Authorization header.
    for auth in ["AWS4-HMAC-SHA256 garbage", "AWS4-HMAC-SHA256",
                 "AWS4-HMAC-SHA256 Credential=AK, SignedHeaders=host, Signature=00"]:
        status, head, rest = raw("GET", f"/{b}/k", [f"Authorization: {auth}",
                                                 "x-amz-date: 20260101T000000Z",
                                                 "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        assert status == 400 and b"<Code>AuthorizationHeaderMalformed</Code>" in rest, (auth, status, rest)
    print("garbage AWS4 Authorization: 400 AuthorizationHeaderMalformed")

    # Unknown methods: 405 MethodNotAllowed as S3 XML, never a 5xx.
    for m in ["FOO", "PATCH", "TRACE", "PROPFIND"]:
        status, head, rest = raw(m, f"/{b}/k")
        assert status == 405 and b"<Code>MethodNotAllowed</Code>" in rest, (m, status, rest)
        assert f"<Method>{m}</Method>".encode() in rest, rest
    print("unknown methods: 405 MethodNotAllowed")

    # Headers over AWS's 8 KiB → 400; just under it works.
    def with_header(size):
        c = client()
        c.meta.events.register("before-sign.s3.GetObject",
                               lambda request, **_: request.headers.__setitem__("x-kura-pad", "p" * size))
        return c
    e = expect_error("RequestHeaderSectionTooLarge", 400, with_header(9000).get_object, Bucket=b, Key="k")
    assert with_header(6000).get_object(Bucket=b, Key="k")["Body"].read() == body
    status, head, rest = raw("GET", f"/{b}/k", ["x-pad: " + "p" * 10000])
    assert status == 400 and b"<MaxSizeAllowed>8192</MaxSizeAllowed>" in rest, (status, rest)
    print("headers over 8 KiB: 400 RequestHeaderSectionTooLarge; 6 KiB of padding served")

    # User metadata over 2 KiB stays MetadataTooLarge (headers still fit in 8 KiB).
    expect_error("MetadataTooLarge", 400, s3.put_object, Bucket=b, Key="big", Body=b"x", Metadata={"k": "v" * 2048})
    print("ok")


def signed_ranges(s3, b, body, invalid):
    """boto3, the aws CLI and a presigned URL sign `range` (SigV4): an
    invalid one is still ignored, with the rest of the request intact."""
    sent = {}

    def signed_headers(request, **_):
        sent["auth"] = request.headers.get("Authorization", b"")
    s3.meta.events.register("before-send.s3.*", signed_headers)
    for r in invalid:
        got = s3.get_object(Bucket=b, Key="k", Range=r)
        auth = sent["auth"].decode() if isinstance(sent["auth"], bytes) else sent["auth"]
        assert "range" in auth.split("SignedHeaders=")[1].split(",")[0].split(";"), auth
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 200, (r, got["ResponseMetadata"])
        assert got["Body"].read() == body and "ContentRange" not in got, r
        head = s3.head_object(Bucket=b, Key="k", Range=r)
        assert head["ResponseMetadata"]["HTTPStatusCode"] == 200, (r, head["ResponseMetadata"])
        assert head["ContentLength"] == len(body) and "ContentRange" not in head, (r, head)
    # Valid ranges still work (HEAD too); valid but unsatisfiable ones stay 416.
    got = s3.get_object(Bucket=b, Key="k", Range="bytes=10-19")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["Body"].read() == body[10:20]
    head = s3.head_object(Bucket=b, Key="k", Range="bytes=10-19")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206 and head["ContentLength"] == 10, head
    expect_error("InvalidRange", 416, s3.get_object, Bucket=b, Key="k", Range="bytes=500-600")
    print(f"invalid ranges signed by SigV4 (boto3): {len(invalid)} ignored on GET and HEAD "
          "(200, whole object, incl. bytes=0-1,3-4); valid 206; unsatisfiable 416")

    # Nothing else of the request changes: version id, response-* overrides,
    # conditionals, SSE-C all still apply.
    vb = new_bucket(s3, "malformed-versions")
    s3.put_bucket_versioning(Bucket=vb, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=vb, Key="k", Body=b"first version")["VersionId"]
    s3.put_object(Bucket=vb, Key="k", Body=b"second")
    got = s3.get_object(Bucket=vb, Key="k", VersionId=v1, Range="bytes=5-2",
                        ResponseContentType="text/x-kura", ResponseCacheControl="no-store")
    assert got["Body"].read() == b"first version" and got["VersionId"] == v1, got
    assert got["ContentType"] == "text/x-kura" and got["CacheControl"] == "no-store", got
    etag = got["ETag"]
    e = expect_error("304", 304, s3.get_object, Bucket=vb, Key="k", VersionId=v1,
                     Range="bytes=abc", IfNoneMatch=etag)
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket=vb, Key="k", VersionId=v1,
                 Range="bytes=abc", IfMatch='"0123"')
    key = os.urandom(32)
    s3.put_object(Bucket=b, Key="ssec", Body=body, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    got = s3.get_object(Bucket=b, Key="ssec", Range="bytes=9-1", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200 and got["Body"].read() == body
    expect_error("InvalidRequest", 400, s3.get_object, Bucket=b, Key="ssec", Range="bytes=9-1")
    print("signed invalid range with versionId, response-* overrides, If-None-Match (304), "
          "If-Match (412) and SSE-C (with and without the key): all applied, range ignored")

    # The identity is the verified one: a wrong secret is refused before
    # anything (s3s checks the signature first), and a bucket policy that
    # denies presigned (query-string) reads still denies them.
    bad = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=AK,
                       aws_secret_access_key="not-the-secret",
                       config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    expect_error("SignatureDoesNotMatch", 403, bad.get_object, Bucket=b, Key="k", Range="bytes=5-2")

    # The aws CLI (signs range too).
    out_file = os.path.join(os.environ.get("KURA_DIR", "/tmp"), "range-cli.out")
    cli = ["aws", "--endpoint-url", ENDPOINT, "s3api", "get-object", "--bucket", b, "--key", "k",
           "--range", "bytes=5-2", out_file]
    p = subprocess.run(cli, capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    meta = json.loads(p.stdout)
    assert "ContentRange" not in meta and meta["ContentLength"] == len(body), meta
    assert open(out_file, "rb").read() == body
    print("aws s3api get-object --range bytes=5-2: whole object")

    # A presigned URL whose signature covers the range.
    s3 = client(signature_version="s3v4")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "k", "Range": "bytes=5-2"},
                                    ExpiresIn=300)
    signed = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["X-Amz-SignedHeaders"][0]
    assert "range" in signed.split(";"), url
    status, data = fetch(url, {"Range": "bytes=5-2"})
    assert status == 200 and data == body, (status, data[:200])
    status, data = fetch(url, {"Range": "bytes=2-5"})  # not what was signed
    assert status == 403 and b"SignatureDoesNotMatch" in data, (status, data[:200])
    valid = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "k", "Range": "bytes=1-3"})
    assert fetch(valid, {"Range": "bytes=1-3"}) == (206, body[1:4])
    # A policy that denies presigned reads sees the second pass as presigned.
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{b}/*",
        "Condition": {"StringEquals": {"s3:authType": "REST-QUERY-STRING"}}}]}
    s3.put_bucket_policy(Bucket=b, Policy=json.dumps(policy))
    deadline = time.time() + 10
    while True:
        status, data = fetch(url, {"Range": "bytes=5-2"})
        if status == 403 or time.time() > deadline:
            break
        time.sleep(0.5)  # the policy cache
    assert status == 403 and b"AccessDenied" in data, (status, data[:200])
    assert s3.get_object(Bucket=b, Key="k", Range="bytes=5-2")["Body"].read() == body
    s3.delete_bucket_policy(Bucket=b)
    print(f"presigned URL signing range ({signed}): invalid range → 200 whole object; a changed range → 403; "
          "a policy denying REST-QUERY-STRING still denies it after the re-sign")


def fetch(url, headers):
    """GET `url` with urllib: (status, body)."""
    import urllib.request
    import urllib.error
    req = urllib.request.Request(url, headers=headers)
    ctx = tls_context() if TLS else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------- POST forms

def form_head(path, boundary, length=None):
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{PORT}",
             f"Content-Type: multipart/form-data; boundary={boundary}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def form_fields(boundary, fields):
    out = b""
    for k, v in fields:
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
    out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return out


def send_until_answered(s, chunks, chunked):
    """Sends chunks until the server answers or closes: (bytes sent, response)."""
    sent = 0
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    pending = b""
    deadline = time.time() + 60
    for chunk in chunks:
        data = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
        pending = data
        while pending:
            if time.time() > deadline:
                raise AssertionError(f"no answer after sending {sent} bytes")
            for key, ev in sel.select(timeout=1):
                if ev & selectors.EVENT_READ:
                    try:
                        first = s.recv(1 << 16)
                    except ssl.SSLWantReadError:
                        first = None  # a TLS record that was no data
                    except (ConnectionResetError, ssl.SSLError, OSError):
                        first = b""
                    if first is not None:
                        s.setblocking(True)
                        s.settimeout(10)
                        return sent, (read_response(s, buf=first) if first else None)
                if ev & selectors.EVENT_WRITE:
                    try:
                        n = s.send(pending)
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        continue
                    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                        s.setblocking(True)
                        return sent, None
                    sent += n
                    pending = pending[n:]
    raise AssertionError(f"the whole body ({sent} bytes) was taken")


def gib_of_zeros(first=b""):
    yield first
    block = b"\0" * (1 << 20)
    for _ in range(1024):
        yield block


def post_forms(pid):
    s3 = client()
    b = new_bucket(s3, "forms")
    rss0 = rss_mib(pid)
    boundary = "kuraboundary"
    fields = form_fields(boundary, [("key", "big.bin")])

    # Declared 1 GiB: refused before any of the body is read.
    s = connect()
    t0 = time.time()
    s.sendall(form_head(f"/{b}", boundary, length=(1 << 30) + len(fields)))
    sent, r = send_until_answered(s, gib_of_zeros(fields), chunked=False)
    s.close()
    assert r is not None and r[0] == 400 and b"EntityTooLarge" in r[2], r
    print(f"declared 1 GiB form: {r[0]} EntityTooLarge after {sent >> 20} MiB sent, {time.time() - t0:.2f} s")

    # Chunked 1 GiB (no length declared): cut at the configured cap.
    peak = rss0
    for i in range(3):
        s = connect()
        t0 = time.time()
        s.sendall(form_head(f"/{b}", boundary))
        sent, r = send_until_answered(s, gib_of_zeros(fields), chunked=True)
        s.close()
        peak = max(peak, rss_mib(pid))
        assert sent < (256 << 20), f"the gateway took {sent >> 20} MiB of an unsigned form"
        status = r[0] if r else "closed"
        print(f"chunked 1 GiB form #{i}: {status} after {sent >> 20} MiB sent, {time.time() - t0:.2f} s")

    # Fields before the file over AWS's 20 KiB: refused as malformed.
    big = form_fields(boundary, [("key", "x"), ("x-amz-meta-pad", "p" * (30 << 10))])
    s = connect()
    s.sendall(form_head(f"/{b}", boundary, length=len(big) + 10) + big + b"0123456789")
    r = read_response(s)
    s.close()
    assert r is not None and r[0] == 400, r
    rss1 = rss_mib(pid)
    print(f"fields over 20 KiB: {r[0]}")
    print(f"gateway RSS: {rss0:.0f} MiB before, {peak:.0f} MiB peak, {rss1:.0f} MiB after")
    assert peak - rss0 < 200, f"RSS grew {peak - rss0:.0f} MiB"
    # Still serving.
    s3.put_object(Bucket=b, Key="after", Body=b"x")
    print("ok")


# --------------------------------------------------------------- slowloris

def slowloris(pid, n_idle=2000, n_drip=50, header_timeout=2.0):
    s3 = client()
    b = new_bucket(s3, "slowloris")
    s3.put_object(Bucket=b, Key="warm", Body=b"w")
    rss0 = rss_mib(pid)
    sel = selectors.DefaultSelector()
    opened = {}
    for i in range(n_idle + n_drip):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((HOST, PORT))
        # With TLS, idle attackers never start the handshake (cut by its
        # timeout, which is the header timeout); drippers (made first, as
        # the handshakes take a while) finish it first.
        drip = i < n_drip
        if drip:
            s.settimeout(10)
            s = tls_wrap(s)
        s.setblocking(False)
        opened[s] = time.time()
        sel.register(s, selectors.EVENT_READ, "drip" if drip else "idle")
    drips = [k.fileobj for k in sel.get_map().values() if k.data == "drip"]
    for s in drips:
        s.send(b"GET /slowloris/warm HTTP/1.1\r\n")
    print(f"attackers: {n_idle} idle and {n_drip} byte-per-second connections open")
    cut = {}
    # Legitimate traffic goes on meanwhile, in its own thread so that the
    # loop below sees each cut when it happens.
    traffic = {"legit": 0, "peak": rss0, "error": None}

    def legitimate():
        try:
            for i in range(30):
                key = f"k{i}"
                s3.put_object(Bucket=b, Key=key, Body=key.encode() * 100)
                assert s3.get_object(Bucket=b, Key=key)["Body"].read() == key.encode() * 100
                traffic["legit"] += 1
                traffic["peak"] = max(traffic["peak"], rss_mib(pid))
        except Exception as e:  # reported below
            traffic["error"] = e

    worker = threading.Thread(target=legitimate)
    worker.start()
    next_drip = time.time()
    deadline = time.time() + header_timeout + 20
    while len(cut) < len(opened) and time.time() < deadline:
        now = time.time()
        if now >= next_drip:
            for s in drips:
                if s not in cut:
                    try:
                        s.send(b"X")
                    except (BrokenPipeError, ConnectionResetError, BlockingIOError, ssl.SSLError):
                        pass
            next_drip = now + 0.5
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except ssl.SSLWantReadError:
                continue  # a TLS record that was no data
            except (ConnectionResetError, BlockingIOError, ssl.SSLError):
                data = b""
            if not data or data:  # any answer or EOF: the gateway ended it
                cut[s] = time.time() - opened[s]
                sel.unregister(s)
                s.close()
    worker.join(timeout=60)
    legit, peak = traffic["legit"], traffic["peak"]
    assert traffic["error"] is None, f"legitimate traffic failed: {traffic['error']!r}"
    assert len(cut) == len(opened), f"{len(opened) - len(cut)} attackers still connected"
    assert legit == 30, f"only {legit} legitimate PUT+GET pairs ran"
    worst = max(cut.values())
    rss1 = rss_mib(pid)
    print(f"legitimate boto3 PUT+GET pairs during the attack: {legit}, all succeeded")
    print(f"attackers cut after: median {sorted(cut.values())[len(cut) // 2]:.1f} s, worst {worst:.1f} s "
          f"(header timeout {header_timeout:.0f} s)")
    print(f"gateway RSS: {rss0:.0f} MiB before, {peak:.0f} MiB peak, {rss1:.0f} MiB after")
    # Every attacker was cut before the deadline above (header timeout +
    # 20 s; without the timeouts none would be). The cut is measured from
    # connect(), so it includes how long the gateway took to accept 2,050
    # connections, which grows with the machine's load: bound the median.
    median = sorted(cut.values())[len(cut) // 2]
    assert median < header_timeout + 10, median
    s3.head_object(Bucket=b, Key="k0")
    print("ok")


# --------------------------------------------------------------- in flight

def drip_put(path, length=1000):
    """A signed PUT whose body trickles: in flight until it is closed."""
    s = connect()
    s.sendall(signed_head("PUT", path, {"Content-Length": str(length)}))
    s.sendall(b"x")
    return s


def in_flight(cap=8):
    s3 = client()
    b = new_bucket(s3, "inflight")
    s3.put_object(Bucket=b, Key="k", Body=b"v")
    held = [drip_put(f"/{b}/slow{i}") for i in range(cap)]
    # Keep the bodies alive (the idle timeout is short in this test).
    time.sleep(0.3)
    refused = 0
    t_end = time.time() + 2
    while time.time() < t_end:
        for s in held:
            s.send(b"x")
        try:
            s3.get_object(Bucket=b, Key="k")
        except ClientError as e:
            code = e.response["Error"]["Code"]
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            assert (code, status) == ("SlowDown", 503), (code, status)
            assert e.response["ResponseMetadata"]["HTTPHeaders"].get("retry-after") == "1"
            refused += 1
        time.sleep(0.2)
    assert refused > 0, "no request was refused at the in-flight cap"
    for s in held:
        s.close()
    time.sleep(0.5)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"v"
    print(f"in-flight cap {cap}: {refused} requests answered 503 SlowDown (Retry-After: 1); served again once freed")
    print("ok")


def idle_body():
    s3 = client()
    b = new_bucket(s3, "idlebody")
    s = connect(timeout=20)
    t0 = time.time()
    s.sendall(signed_head("PUT", f"/{b}/stalled", {"Content-Length": "100"}))
    s.sendall(b"0123456789")
    r = read_response(s)
    took = time.time() - t0
    s.close()
    assert r is not None and r[0] == 400 and b"<Code>RequestTimeout</Code>" in r[2], r
    expect_error("404", 404, s3.head_object, Bucket=b, Key="stalled")
    # A slow but steady body is never cut: 4 s of bytes every 0.5 s (idle timeout 2 s).
    s = connect(timeout=20)
    s.sendall(signed_head("PUT", f"/{b}/steady", {"Content-Length": "8"}))
    for ch in b"01234567":
        time.sleep(0.5)
        s.send(bytes([ch]))
    r = read_response(s)
    s.close()
    assert r is not None and r[0] == 200, r
    assert s3.get_object(Bucket=b, Key="steady")["Body"].read() == b"01234567"
    print(f"stalled body: 400 RequestTimeout after {took:.1f} s, nothing stored; a steady 4 s body stored")
    print("ok")


def write_stall(size=48 << 20):
    s3 = client()
    b = new_bucket(s3, "writestall")
    s3.put_object(Bucket=b, Key="big", Body=b"z" * size)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    s.connect((HOST, PORT))
    s = tls_wrap(s)
    s.sendall(signed_head("GET", f"/{b}/big"))
    r = read_response(s)
    assert r is not None and r[0] == 200, r
    t0 = time.time()
    time.sleep(6)  # reads nothing: the gateway's writes stall
    got = len(r[2])
    s.settimeout(5)
    ended = "EOF"
    while True:
        try:
            chunk = s.recv(1 << 20)
        except (ConnectionResetError, ssl.SSLError):
            ended = "reset"
            break
        except socket.timeout:
            ended = "still open"
            break
        if not chunk:
            break
        got += len(chunk)
    s.close()
    assert got < size and ended != "still open", (got, ended)
    print(f"stalled reader: connection ended ({ended}) after {got >> 20} of {size >> 20} MiB")
    # The gateway keeps serving.
    assert len(s3.get_object(Bucket=b, Key="big", Range="bytes=0-9")["Body"].read()) == 10
    print("ok")


def conn_cap(cap):
    s3 = client()
    b = new_bucket(s3, "conncap")
    s3.put_object(Bucket=b, Key="k", Body=b"v")
    idle = []
    for _ in range(cap):
        s = socket.create_connection((HOST, PORT))
        idle.append(s)
    time.sleep(0.3)
    fresh = client()  # a new connection: over the cap
    e = expect_error("SlowDown", 503, fresh.get_object, Bucket=b, Key="k")
    headers = e.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers.get("connection") == "close", headers
    h2_over_cap(b)
    for s in idle:
        s.close()
    time.sleep(0.5)
    assert client().get_object(Bucket=b, Key="k")["Body"].read() == b"v"
    print(f"connection cap {cap}: the next connection's request got 503 SlowDown and Connection: close; served once freed")
    print("ok")


# --------------------------------------------------------------- header limits

def too_large_answer(r, what):
    assert r is not None, f"{what}: closed without an answer"
    status, head, rest = r
    assert status == 400 and b"<Code>RequestHeaderSectionTooLarge</Code>" in rest, (what, status, head, rest[:300])
    assert "connection: close" in head.lower(), (what, head)


def header_limits(pid):
    s3 = client()
    b = new_bucket(s3, "headerlimits")
    s3.put_object(Bucket=b, Key="k", Body=b"v")
    # 90 small signed fields (and the signature's own), under 8 KiB: served.
    s = connect()
    s.sendall(signed_head("GET", f"/{b}/k", {f"x-kura-f{i}": "v" for i in range(90)}))
    r = read_response(s)
    s.close()
    assert r is not None and r[0] == 200, r
    # 150 fields over 8 KiB: the front's own 400.
    r = raw("GET", f"/{b}/k", [f"x-kura-f{i}: {'p' * 60}" for i in range(150)])
    too_large_answer(r, "150 fields, 11 KiB")
    # More fields than hyper parses (100, decision 0043), under 8 KiB or
    # not: its error, rewritten to the S3 answer.
    r = raw("GET", f"/{b}/k", [f"a{i}: v" for i in range(150)])
    too_large_answer(r, "150 small fields")
    r = raw("GET", f"/{b}/k", [f"a{i}: v" for i in range(1500)])
    too_large_answer(r, "1500 fields")
    # One request head of 1 MiB, past hyper's read buffer (also rewritten).
    r = huge_heads(1, pid)
    print("90 small fields served; 150 fields over 8 KiB, 150 small fields, 1,500 fields and a 1 MiB header section: "
          "400 RequestHeaderSectionTooLarge (XML) + Connection: close")
    # Over TLS fewer: the handshakes of a debug build take long enough that
    # the first clients would reach the header timeout before the last
    # one is connected.
    huge_heads(100 if TLS else 300, pid)
    s3.head_object(Bucket=b, Key="k")
    print("ok")


def huge_heads(n, pid, size=1 << 20):
    """n clients at once each send a `size` header section; all must get
    the XML 400. Prints the gateway's RSS."""
    line = b"x-pad: " + b"p" * 1000 + b"\r\n"
    payload = b"GET /headerlimits/k HTTP/1.1\r\nHost: h\r\n" + line * (size // len(line)) + b"\r\n"
    rss0 = peak = rss_mib(pid)
    sel = selectors.DefaultSelector()
    state = {}
    for _ in range(n):
        s = connect()
        s.setblocking(False)
        state[s] = {"sent": 0, "got": b"", "cut": False}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    t0 = time.time()
    open_ = n
    while open_ and time.time() < t0 + 120:
        for key, ev in sel.select(timeout=0.2):
            s, st = key.fileobj, state[key.fileobj]
            # Reading first: once the answer is there, nothing more is sent
            # (over TLS, a failed write would leave the session unreadable).
            if ev & selectors.EVENT_READ:
                try:
                    chunk = s.recv(1 << 16)
                except (ssl.SSLWantReadError, BlockingIOError):
                    chunk = None
                except (ConnectionResetError, ssl.SSLError, OSError):
                    chunk = b""
                if chunk is not None:
                    if chunk and not st["got"]:
                        sel.modify(s, selectors.EVENT_READ)
                    st["got"] += chunk
                    if not chunk:
                        sel.unregister(s)
                        s.close()
                        open_ -= 1
                    continue
            if ev & selectors.EVENT_WRITE and not st["got"] and st["sent"] < len(payload):
                try:
                    st["sent"] += s.send(payload[st["sent"]:st["sent"] + (64 << 10)])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    st["cut"] = True  # the gateway stopped reading
                if st["cut"] or st["sent"] >= len(payload):
                    sel.modify(s, selectors.EVENT_READ)
        peak = max(peak, rss_mib(pid))
    took = time.time() - t0
    answered = 0
    for st in state.values():
        head, _, body = st["got"].partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 400") and b"RequestHeaderSectionTooLarge" in body:
            assert b"connection: close" in head.lower(), head
            answered += 1
    sent = sorted(st["sent"] for st in state.values())
    assert open_ == 0, f"{open_} connections still open after {took:.0f} s"
    # Over TLS a client whose write failed first (the gateway closed on the
    # rest of its 1 MiB) can't read the answer any more: OpenSSL ends the
    # session. The gateway still answered it; allow a few of those.
    unread = sum(1 for st in state.values() if st["cut"] and not st["got"])

    assert answered == n or (TLS and answered + unread == n and unread < n // 10), \
        f"only {answered} of {n} got the XML 400 ({unread} cut while sending)"
    rss1 = rss_mib(pid)
    print(f"{n} clients sending {size >> 20} MiB header sections at once: {answered} read the 400 XML "
          f"({unread} over TLS cut while sending) in {took:.1f} s "
          f"(median {sent[n // 2] >> 10} KiB of each taken before the answer); gateway RSS {rss0:.0f} MiB before, "
          f"{peak:.0f} MiB peak, {rss1:.0f} MiB after")
    assert peak - rss0 < 150, f"RSS grew {peak - rss0:.0f} MiB"


# --------------------------------------------------------------- HTTP/2

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack(fields):
    """Literal fields without indexing, no Huffman (RFC 7541 6.2.2)."""
    out = b""
    for name, value in fields:
        name, value = name.encode(), value.encode()
        assert len(name) < 127 and len(value) < 127
        out += b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return out


def h2_open():
    """An HTTP/2 connection: prior knowledge in plaintext, ALPN h2 over TLS."""
    s = connect(timeout=30, alpn=["h2"])
    if TLS:
        assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    s.sendall(H2_PREFACE + frame(SETTINGS, 0, 0))
    return s


def h2_request(path):
    return hpack([(":method", "GET"), (":scheme", "https" if TLS else "http"),
                  (":path", path), (":authority", f"{HOST}:{PORT}")])


def h2_until_closed(s, ack_pings=True, ping_every=None, limit=30):
    """Reads frames until the server closes: (seconds, frame types seen, data)."""
    t0 = time.time()
    buf, kinds, data = b"", [], b""
    s.settimeout(0.25)
    next_ping = t0
    while time.time() - t0 < limit:
        if ping_every and time.time() >= next_ping:
            try:
                s.sendall(frame(PING, 0, 0, b"kurapin!"))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            next_ping = time.time() + ping_every
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            kind, flags, payload = buf[3], buf[4], buf[9:9 + n]
            buf = buf[9 + n:]
            kinds.append(kind)
            if kind == DATA:
                data += payload
            if kind == PING and not flags & 1 and ack_pings:
                try:
                    s.sendall(frame(PING, 1, 0, payload))
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
    else:
        raise AssertionError(f"still open after {limit} s; frames {kinds}")
    return time.time() - t0, kinds, data


def h2(header_timeout):
    """HTTP/2 connections that open no request are cut after the header
    timeout; one busy with a long upload is not."""
    s3 = client()
    b = new_bucket(s3, "http2")
    results = {}

    def attacker(name, fn):
        try:
            results[name] = fn()
        except Exception as e:  # reported below
            results[name] = e

    def silent():
        return h2_until_closed(h2_open())

    def unfinished_headers():
        s = h2_open()
        # HEADERS without END_HEADERS: the CONTINUATION never comes.
        s.sendall(frame(HEADERS, 0x1, 1, h2_request(f"/{b}/k")))
        return h2_until_closed(s, ack_pings=False)

    def pinger():
        return h2_until_closed(h2_open(), ping_every=0.5)

    threads = [threading.Thread(target=attacker, args=(n, f))
               for n, f in [("silent", silent), ("unfinished HEADERS", unfinished_headers), ("PINGs only", pinger)]]
    for t in threads:
        t.start()

    # Meanwhile a busy h2 connection: a PUT whose body takes ~5 s (2.5x the
    # header timeout) at a steady rate through curl.
    src = os.path.join(os.environ.get("KURA_DIR", "/tmp"), "h2-slow.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(100_000))
    url = client(signature_version="s3v4").generate_presigned_url("put_object", Params={"Bucket": b, "Key": "slow"}, ExpiresIn=300)
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "-T", src,
           "--limit-rate", "20K", url]
    cmd[1:1] = ["--http2", "--cacert", os.environ.get("KURA_HTTPS_CA") or os.environ["SSL_CERT_FILE"]] \
        if TLS else ["--http2-prior-knowledge"]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    assert p.returncode == 0 and p.stdout == "200 2", (p.returncode, p.stdout, p.stderr)
    assert s3.head_object(Bucket=b, Key="slow")["ContentLength"] == 100_000
    assert took > 2 * header_timeout, took
    for t in threads:
        t.join()
    for name, r in results.items():
        assert not isinstance(r, Exception), f"{name}: {r!r}"
        took_cut, kinds, _ = r
        assert header_timeout * 0.9 <= took_cut < header_timeout + 10, (name, took_cut, kinds)
        print(f"h2 ({'TLS ALPN' if TLS else 'prior knowledge'}), {name}: cut after {took_cut:.1f} s "
              f"(GOAWAY {'sent' if GOAWAY in kinds else 'not seen'})")
    print(f"h2 upload of 100 KB at 20 KB/s through curl: 200 after {took:.1f} s on one connection, not cut")
    print("ok")


def h2_over_cap(b):
    """An h2 connection over the cap: its request answered 503, then GOAWAY and closed."""
    s = h2_open()
    s.sendall(frame(HEADERS, 0x5, 1, h2_request(f"/{b}/k")))
    took, kinds, data = h2_until_closed(s, limit=15)
    assert b"<Code>SlowDown</Code>" in data, (kinds, data[:300])
    assert GOAWAY in kinds, kinds
    print(f"h2 over the connection cap: 503 SlowDown, GOAWAY, closed after {took:.1f} s")


# --------------------------------------------------------------- HTTPS

def peer_cert_sha256(ca):
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((HOST, PORT)) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="localhost") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def pem_sha256(path):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(path).read())).hexdigest()


def https(ca, pid, new_cert, new_key, cert_path, key_path):
    assert ENDPOINT.startswith("https://")
    s3 = client(verify=ca)
    b = new_bucket(s3, "secure")
    s3.put_object(Bucket=b, Key="k", Body=b"over tls")
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"over tls"
    print("boto3 verify=ca.pem: PUT and GET over HTTPS")

    # The aws CLI with --ca-bundle.
    src = os.path.join(os.path.dirname(ca), "cli-src.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(3 << 20))
    env = dict(os.environ)
    cli = ["aws", "--endpoint-url", ENDPOINT, "--ca-bundle", ca]
    subprocess.run(cli + ["s3", "cp", src, f"s3://{b}/cli.bin"], check=True, env=env, capture_output=True)
    out = subprocess.run(cli + ["s3api", "head-object", "--bucket", b, "--key", "cli.bin"],
                         check=True, env=env, capture_output=True, text=True)
    assert json.loads(out.stdout)["ContentLength"] == 3 << 20
    print("aws CLI --ca-bundle: cp and head-object over HTTPS")

    # A client that doesn't trust the CA is refused by its own check.
    try:
        client().list_buckets()
        raise AssertionError("an untrusted certificate was accepted")
    except Exception as e:  # botocore SSLError
        assert "SSL" in type(e).__name__ or "certificate" in str(e).lower(), e

    # Plaintext HTTP on the TLS port gets no HTTP answer.
    s = socket.create_connection((HOST, PORT), timeout=10)
    s.sendall(f"GET /{b}/k HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.settimeout(5)
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    s.close()
    assert not data.startswith(b"HTTP/"), data[:100]
    print(f"plaintext on the TLS port: no HTTP answer ({len(data)} bytes of TLS alert)")

    # aws:SecureTransport is true over TLS: a policy allowing anonymous reads
    # only over TLS lets an unsigned HTTPS GET through.
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{b}/*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}
    s3.put_bucket_policy(Bucket=b, Policy=json.dumps(policy))
    ctx = ssl.create_default_context(cafile=ca)
    import http.client
    deadline = time.time() + 10
    while True:
        conn = http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=10)
        conn.request("GET", f"/{b}/k")
        resp = conn.getresponse()
        got = resp.read()
        conn.close()
        if resp.status == 200 or time.time() > deadline:
            break
        time.sleep(0.5)  # the policy cache
    assert resp.status == 200 and got == b"over tls", (resp.status, got)
    print("aws:SecureTransport: true over HTTPS (anonymous GET allowed by a TLS-only policy)")

    # Reload: a connection opened before keeps working; new ones get the new certificate.
    old_fp = peer_cert_sha256(ca)
    kept = http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=10)
    kept.request("GET", f"/{b}/k")
    assert kept.getresponse().read() == b"over tls"
    shutil.copyfile(new_cert, cert_path)
    shutil.copyfile(new_key, key_path)
    os.kill(pid, signal.SIGHUP)
    want = pem_sha256(new_cert)
    t0 = time.time()
    while peer_cert_sha256(ca) != want:
        assert time.time() - t0 < 10, "the new certificate was never served"
        time.sleep(0.2)
    took = time.time() - t0
    kept.request("GET", f"/{b}/k")
    r = kept.getresponse()
    assert r.status == 200 and r.read() == b"over tls"
    kept.close()
    assert old_fp != want
    print(f"SIGHUP reload: new certificate served after {took:.1f} s; the connection opened before still served")
    print("ok")


if __name__ == "__main__":
    phase, args = sys.argv[1], sys.argv[2:]
    {
        "malformed": lambda: malformed(),
        "post_forms": lambda: post_forms(int(args[0])),
        "slowloris": lambda: slowloris(int(args[0])),
        "in_flight": lambda: in_flight(int(args[0])),
        "idle_body": lambda: idle_body(),
        "write_stall": lambda: write_stall(),
        "conn_cap": lambda: conn_cap(int(args[0])),
        "header_limits": lambda: header_limits(int(args[0])),
        "h2": lambda: h2(float(args[0])),
        "https": lambda: https(*args[:1], int(args[1]), *args[2:]),
    }[phase]()
