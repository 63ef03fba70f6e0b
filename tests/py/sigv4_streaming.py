"""Hand-written SigV4 requests (stdlib only) against a running Kura cluster.

Checks the wire protocol the SDKs hide: aws-chunked bodies with a chunk
signature chain, unsigned-payload trailers with a CRC32 checksum,
Content-MD5 and clock-skew rejection. Follows the AWS spec "Signature
Calculations for the Authorization Header: Transferring Payload in Multiple
Chunks (Chunked Upload)" and "... Including Trailing Headers".

Run by tests/s3_protocol.rs with KURA_S3, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY set. Exits non-zero on the first failure, printing what
was expected and what came back.
"""
import base64
import datetime
import hashlib
import hmac
import http.client
import os
import re
import sys
import urllib.parse
import uuid
import zlib

ENDPOINT = urllib.parse.urlparse(os.environ["KURA_S3"])
HOST = ENDPOINT.netloc
ACCESS = os.environ["AWS_ACCESS_KEY_ID"]
SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]
REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
KiB = 1024


def sha256_hex(b):
    return hashlib.sha256(b).hexdigest()


def hmac256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(date):
    k = hmac256(("AWS4" + SECRET).encode(), date)
    k = hmac256(k, REGION)
    k = hmac256(k, "s3")
    return hmac256(k, "aws4_request")


class Signer:
    """SigV4 for one request at one instant (default: now)."""

    def __init__(self, when=None):
        when = when or datetime.datetime.now(datetime.timezone.utc)
        self.amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        self.date = when.strftime("%Y%m%d")
        self.scope = f"{self.date}/{REGION}/s3/aws4_request"
        self.key = signing_key(self.date)

    def sign(self, s):
        return hmac.new(self.key, s.encode(), hashlib.sha256).hexdigest()

    def authorize(self, method, path, headers, payload_hash):
        """Adds x-amz-date, x-amz-content-sha256 and Authorization to headers;
        returns the seed signature."""
        headers["host"] = HOST
        headers["x-amz-date"] = self.amz_date
        headers["x-amz-content-sha256"] = payload_hash
        names = sorted(h.lower() for h in headers)
        lower = {k.lower(): str(v).strip() for k, v in headers.items()}
        canonical_headers = "".join(f"{n}:{lower[n]}\n" for n in names)
        signed = ";".join(names)
        canonical = "\n".join([
            method,
            urllib.parse.quote(path, safe="/~"),
            "",
            canonical_headers,
            signed,
            payload_hash,
        ])
        sts = "\n".join(["AWS4-HMAC-SHA256", self.amz_date, self.scope, sha256_hex(canonical.encode())])
        sig = self.sign(sts)
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={ACCESS}/{self.scope}, SignedHeaders={signed}, Signature={sig}"
        )
        return sig

    def chunk_signature(self, prev, data):
        sts = "\n".join([
            "AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, prev, EMPTY_SHA256, sha256_hex(data),
        ])
        return self.sign(sts)


def send(method, path, headers, body=b""):
    """Sends one request on a fresh connection; returns (status, headers, body).

    The server may answer (and close) before it has read the whole body, so a
    failed send still reads whatever response arrived."""
    conn = (http.client.HTTPSConnection if ENDPOINT.scheme == "https" else http.client.HTTPConnection)(
        HOST, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def signed(method, path, body=b"", extra=None, when=None):
    headers = dict(extra or {})
    if body or method in ("PUT", "POST"):
        headers["content-length"] = str(len(body))
    Signer(when).authorize(method, path, headers, sha256_hex(body))
    return send(method, path, headers, body)


def error_code(body):
    m = re.search(rb"<Code>([^<]*)</Code>", body)
    return m.group(1).decode() if m else None


# Answers that differ from AWS but still reject the request, accepted (and
# printed) until the gateway is fixed: (what, status, code). Keep it empty
# once fixed so the check is strict again.
KNOWN_DEVIATIONS = set()


def expect(what, status, body, want_status, want_codes, known=None):
    code = error_code(body)
    if known and (known, status, code) in KNOWN_DEVIATIONS:
        print(f"  {what}: KNOWN DEVIATION: got {status} {code}, AWS answers {want_status} {sorted(want_codes)}")
        return
    if status != want_status or (want_codes and code not in want_codes):
        raise AssertionError(
            f"{what}: expected {want_status} {want_codes}, got {status} {code}: {body[:500]!r}"
        )
    print(f"  {what}: {status} {code}")


def must_ok(what, res):
    status, _, body = res
    if status != 200:
        raise AssertionError(f"{what}: expected 200, got {status}: {body[:500]!r}")
    return res


def must_not_exist(bucket, key):
    status, _, body = signed("HEAD", f"/{bucket}/{key}")
    if status != 404:
        raise AssertionError(f"HEAD {key} after a rejected PUT: expected 404, got {status} {body[:200]!r}")


def must_read_back(bucket, key, data):
    status, _, got = must_ok(f"GET {key}", signed("GET", f"/{bucket}/{key}"))
    if got != data:
        raise AssertionError(
            f"GET {key}: {len(got)} bytes sha256 {sha256_hex(got)}, want {len(data)} {sha256_hex(data)}"
        )


def payload(n, seed):
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def chunks_of(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def signed_chunked_put(bucket, key, data, chunk=64 * KiB, tamper=None):
    """PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD. `tamper`: index of the
    chunk (the final empty chunk is len(chunks)) whose signature is flipped."""
    s = Signer()
    parts = chunks_of(data, chunk) + [b""]
    sizes = [len(p) for p in parts]
    sig_len = 64
    encoded_len = sum(len(f"{n:x};chunk-signature=") + sig_len + 2 + n + 2 for n in sizes)
    headers = {
        "content-encoding": "aws-chunked",
        "content-length": str(encoded_len),
        "x-amz-decoded-content-length": str(len(data)),
    }
    prev = s.authorize("PUT", f"/{bucket}/{key}", headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    body = bytearray()
    for i, p in enumerate(parts):
        sig = s.chunk_signature(prev, p)
        prev = sig
        if i == tamper:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(p):x};chunk-signature={sig}\r\n".encode() + p + b"\r\n"
    assert len(body) == encoded_len
    return send("PUT", f"/{bucket}/{key}", headers, bytes(body))


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def unsigned_trailer_put(bucket, key, data, crc, chunk=64 * KiB):
    """PUT with STREAMING-UNSIGNED-PAYLOAD-TRAILER and an x-amz-checksum-crc32 trailer."""
    parts = chunks_of(data, chunk) + [b""]
    body = bytearray()
    for p in parts:
        body += f"{len(p):x}\r\n".encode() + p
        if p:
            body += b"\r\n"
    body += f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    headers = {
        "content-encoding": "aws-chunked",
        "content-length": str(len(body)),
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }
    Signer().authorize("PUT", f"/{bucket}/{key}", headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    return send("PUT", f"/{bucket}/{key}", headers, bytes(body))


def signed_trailer_put(bucket, key, data, crc, chunk=64 * KiB, tamper_trailer=False):
    """PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: signed chunks, then
    an x-amz-checksum-crc32 trailer signed with x-amz-trailer-signature."""
    s = Signer()
    parts = chunks_of(data, chunk) + [b""]
    trailer = f"x-amz-checksum-crc32:{crc}"
    sig_line = len("x-amz-trailer-signature:") + 64
    encoded_len = sum(len(f"{len(p):x};chunk-signature=") + 64 + 2 + len(p) + (2 if p else 0) for p in parts)
    encoded_len += len(trailer) + 2 + sig_line + 2 + 2
    headers = {
        "content-encoding": "aws-chunked",
        "content-length": str(encoded_len),
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }
    prev = s.authorize("PUT", f"/{bucket}/{key}", headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
    body = bytearray()
    for p in parts:
        prev = s.chunk_signature(prev, p)
        body += f"{len(p):x};chunk-signature={prev}\r\n".encode() + p
        if p:
            body += b"\r\n"
    sts = "\n".join([
        "AWS4-HMAC-SHA256-TRAILER", s.amz_date, s.scope, prev, sha256_hex((trailer + "\n").encode()),
    ])
    tsig = s.sign(sts)
    if tamper_trailer:
        tsig = ("0" if tsig[0] != "0" else "1") + tsig[1:]
    body += f"{trailer}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n".encode()
    assert len(body) == encoded_len, (len(body), encoded_len)
    return send("PUT", f"/{bucket}/{key}", headers, bytes(body))


def main():
    bucket = "sigv4-" + uuid.uuid4().hex[:12]
    must_ok("create bucket", signed("PUT", f"/{bucket}"))
    data = payload(200 * KiB, "streaming")

    print("(a) signed aws-chunked PUT, 64 KiB chunks of 200 KiB")
    must_ok("chunked PUT", signed_chunked_put(bucket, "chunked", data))
    must_read_back(bucket, "chunked", data)
    # A chunk size that does not divide the body, and an empty body.
    odd = payload(100_001, "odd")
    must_ok("chunked PUT (8 KiB + 1)", signed_chunked_put(bucket, "odd", odd, chunk=8 * KiB + 1))
    must_read_back(bucket, "odd", odd)
    must_ok("chunked PUT (empty)", signed_chunked_put(bucket, "empty", b""))
    must_read_back(bucket, "empty", b"")

    print("(b) signed aws-chunked PUT with a tampered chunk signature")
    for idx, name in [(0, "first"), (1, "second"), (4, "final empty")]:
        key = f"tampered-{idx}"
        status, _, body = signed_chunked_put(bucket, key, data, tamper=idx)
        expect(f"tampered {name} chunk", status, body, 403, {"SignatureDoesNotMatch"}, known="chunk signature")
        must_not_exist(bucket, key)

    print("(c) STREAMING-UNSIGNED-PAYLOAD-TRAILER with x-amz-checksum-crc32")
    status, headers, body = must_ok("trailer PUT", unsigned_trailer_put(bucket, "trailer", data, crc32_b64(data)))
    if headers.get("x-amz-checksum-crc32") not in (None, crc32_b64(data)):
        raise AssertionError(f"PUT answered x-amz-checksum-crc32 {headers.get('x-amz-checksum-crc32')}")
    must_read_back(bucket, "trailer", data)
    wrong = crc32_b64(data + b"x")
    status, _, body = unsigned_trailer_put(bucket, "trailer-bad", data, wrong)
    expect("wrong CRC32 trailer", status, body, 400, {"BadDigest", "XAmzContentChecksumMismatch"})
    must_not_exist(bucket, "trailer-bad")
    # A wrong trailer must not replace an existing object either.
    status, _, body = unsigned_trailer_put(bucket, "trailer", payload(1000, "other"), wrong)
    expect("wrong CRC32 trailer over an existing key", status, body, 400,
           {"BadDigest", "XAmzContentChecksumMismatch"})
    must_read_back(bucket, "trailer", data)

    print("(c2) STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER (signed chunks and trailer)")
    must_ok("signed trailer PUT", signed_trailer_put(bucket, "strailer", data, crc32_b64(data)))
    must_read_back(bucket, "strailer", data)
    status, _, body = signed_trailer_put(bucket, "strailer-bad", data, wrong)
    expect("wrong CRC32 in a signed trailer", status, body, 400, {"BadDigest", "XAmzContentChecksumMismatch"})
    must_not_exist(bucket, "strailer-bad")
    status, _, body = signed_trailer_put(bucket, "strailer-sig", data, crc32_b64(data), tamper_trailer=True)
    expect("tampered trailer signature", status, body, 403, {"SignatureDoesNotMatch"}, known="chunk signature")
    must_not_exist(bucket, "strailer-sig")

    print("(d) plain PUT with a wrong Content-MD5")
    small = payload(5000, "md5")
    good_md5 = base64.b64encode(hashlib.md5(small).digest()).decode()
    bad_md5 = base64.b64encode(hashlib.md5(small + b"!").digest()).decode()
    status, _, body = signed("PUT", f"/{bucket}/md5-bad", small, {"content-md5": bad_md5})
    expect("wrong Content-MD5", status, body, 400, {"BadDigest"})
    must_not_exist(bucket, "md5-bad")
    must_ok("right Content-MD5", signed("PUT", f"/{bucket}/md5-good", small, {"content-md5": good_md5}))
    must_read_back(bucket, "md5-good", small)

    print("(e) x-amz-date 20 minutes in the past")
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    status, _, body = signed("GET", f"/{bucket}/md5-good", when=past)
    expect("skewed GET", status, body, 403, {"RequestTimeTooSkewed"})
    status, _, body = signed("PUT", f"/{bucket}/skewed", b"abc", when=past)
    expect("skewed PUT", status, body, 403, {"RequestTimeTooSkewed"})
    must_not_exist(bucket, "skewed")
    # 5 minutes off is within the allowed window.
    near = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    must_ok("GET 5 minutes in the past", signed("GET", f"/{bucket}/md5-good", when=near))

    print("sigv4 streaming: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
