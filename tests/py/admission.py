"""The S3 port's front door, played as an attacker and as a careless client
(tests/admission.rs starts the cluster and runs one phase per call):

  malformed            invalid Range ignored, garbage AWS4 Authorization,
                       unknown methods, oversized headers
  post_forms PID       unsigned 1 GiB multipart POSTs refused early, RSS bounded
  slowloris PID        2000 idle + 50 byte-per-second connections cut by the
                       header timeout while boto3 keeps working, RSS figures
  in_flight            requests beyond --max-in-flight answered 503 SlowDown
  idle_body            a body that stops sending → 400 RequestTimeout
  write_stall          a client that stops reading is dropped
  conn_cap N           connections beyond --max-connections answered 503 SlowDown
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


def connect(timeout=10):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s, limit=1 << 16):
    """(status, headers text, body start) of one response, or None if closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
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
    # SigV4 signs Range: s3s 0.14.1 checks the signature, then refuses the
    # value while parsing, with no hook between. A 4xx, not AWS's 200.
    e = expect_error("InvalidArgument", 400, s3.get_object, Bucket=b, Key="k", Range="bytes=5-2")
    print("KNOWN DEVIATION: an invalid Range covered by a SigV4 signature → 400 InvalidArgument (AWS: 200)")
    # Valid ranges still work; valid but unsatisfiable ones stay 416.
    got = s3.get_object(Bucket=b, Key="k", Range="bytes=10-19")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["Body"].read() == body[10:20]
    expect_error("InvalidRange", 416, s3.get_object, Bucket=b, Key="k", Range="bytes=500-600")
    print("invalid ranges (SigV2): 7 ignored (200, whole object); valid 206; unsatisfiable 416")

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
                    s.setblocking(True)
                    s.settimeout(10)
                    return sent, read_response(s)
                if ev & selectors.EVENT_WRITE:
                    try:
                        n = s.send(pending)
                    except (BrokenPipeError, ConnectionResetError):
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
        s.setblocking(False)
        opened[s] = time.time()
        sel.register(s, selectors.EVENT_READ, "drip" if i >= n_idle else "idle")
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
                    except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                        pass
            next_drip = now + 0.5
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BlockingIOError):
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
        except ConnectionResetError:
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
    for s in idle:
        s.close()
    time.sleep(0.5)
    assert client().get_object(Bucket=b, Key="k")["Body"].read() == b"v"
    print(f"connection cap {cap}: the next connection's request got 503 SlowDown and Connection: close; served once freed")
    print("ok")


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
    s = connect()
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
        "https": lambda: https(*args[:1], int(args[1]), *args[2:]),
    }[phase]()
