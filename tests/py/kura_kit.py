"""Helpers shared by the tenancy test scripts (tenancy.py, quota.py, acl.py):
`kura admin` as a subprocess, boto3 clients for given keys, expected-error
checks, named checks, unsigned requests, PUTs whose body the script sends
by hand (`put_connection`).

The scripts are run by tests/*.rs with KURA_S3, KURA_DIR (cluster.json,
credentials) and KURA_BIN (the kura binary) set.
"""
import http.client
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore.handlers
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KURA_S3"]
DIR = os.environ["KURA_DIR"]
KURA = os.environ["KURA_BIN"]
CLUSTER = os.path.join(DIR, "cluster.json")


def admin(*args, ok=True):
    """`kura admin --cluster CLUSTER ARGS`: its JSON, or (ok=False) the process."""
    p = subprocess.run([KURA, "admin", "--cluster", CLUSTER, *args], capture_output=True, text=True)
    if not ok:
        return p
    if p.returncode != 0:
        raise AssertionError(f"kura admin {args} failed: {p.stderr}{p.stdout}")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def client(ak, sk, endpoint=ENDPOINT, **cfg):
    """A boto3 client for one key, path-style, no retries."""
    cfg.setdefault("retries", {"max_attempts": 1})
    c = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        config=Config(s3={"addressing_style": "path"}, **cfg),
    )
    # `tenant:bucket` names another tenant's bucket (as in Ceph RGW);
    # botocore's client-side name check does not know that form.
    c.meta.events.unregister("before-parameter-build.s3", botocore.handlers.validate_bucket_name)
    return c


def key_of(user):
    """The first key (access key, secret) of a user as `user create` printed it."""
    k = user["keys"][0]
    return k["access_key"], k["secret_key"]


def expect_error(code, fn, *a, status=None, **kw):
    """Calls fn and insists on the S3 error `code` (and HTTP `status` if given)."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        # HEAD answers carry no body: only the status says it.
        head_denied = code == "AccessDenied" and got == "403" and got_status == 403
        if (got != code and not head_denied) or (status is not None and got_status != status):
            raise AssertionError(f"expected {code}, got {got} ({got_status}): {e}")
        return
    raise AssertionError(f"expected {code}, the call succeeded: {fn.__name__} {kw}")


def anon(method, path, data=None):
    """An unsigned request, as curl sends it: (status, body)."""
    req = urllib.request.Request(f"{ENDPOINT}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def components(role):
    """The components of one role in cluster.json."""
    with open(CLUSTER) as f:
        return [c for c in json.load(f)["components"] if c["role"] == role]


def metric_sum(comps, series):
    """The sum of one sample (`name` or `name{labels}`) over the components'
    /metrics; a component that does not answer (being restarted) adds 0."""
    total = 0.0
    for c in comps:
        try:
            with urllib.request.urlopen(f"http://{c['status']}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(series + " "):
                        total += float(line.split()[1])
        except OSError:
            pass
    return total


def check(name, fn):
    """Runs one named check, printing ok or FAIL."""
    try:
        fn()
    except Exception as e:
        print(f"FAIL {name}: {e}")
        raise
    print(f"ok   {name}")


def put_connection(url, size, signed=True, timeout=300):
    """A connection with the head of a PUT of `size` bytes to `url` sent
    (SigV4 over UNSIGNED-PAYLOAD with the env's keys, or anonymous); the
    caller sends the body and reads the answer."""
    req = AWSRequest(method="PUT", url=url, headers={
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "Content-Length": str(size),
    })
    if signed:
        SigV4Auth(Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]),
                  "s3", "us-east-1").add_auth(req)
    u = urllib.parse.urlparse(url)
    conn = (http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection)(
        u.hostname, u.port, timeout=timeout)
    conn.putrequest("PUT", u.path, skip_accept_encoding=True, skip_host=True)
    for name, value in req.headers.items():
        conn.putheader(name, value)
    conn.putheader("Host", u.netloc)
    conn.endheaders()
    return conn
