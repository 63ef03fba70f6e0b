"""A PUT whose body stalls midway: sends the first HEAD_BYTES, creates
PAUSED_FILE, waits for RESUME_FILE, then sends the rest. Lets a test break
something (kill the metadata stores) between the body and the commit.
Prints the HTTP status and body of the answer; writes the MD5 (hex) of
the body to MD5_FILE if given.

usage: paused_put.py BUCKET KEY SIZE HEAD_BYTES PAUSED_FILE RESUME_FILE [MD5_FILE]
"""
import hashlib
import http.client
import os
import sys
import time
from urllib.parse import urlparse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

bucket, key, size, head = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
paused_file, resume_file = sys.argv[5], sys.argv[6]
endpoint = os.environ["KURA_S3"]
url = f"{endpoint}/{bucket}/{key}"
req = AWSRequest(method="PUT", url=url, headers={
    "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
    "Content-Length": str(size),
})
SigV4Auth(Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]),
          "s3", "us-east-1").add_auth(req)
u = urlparse(url)
conn = (http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection)(
    u.hostname, u.port, timeout=300)
conn.putrequest("PUT", u.path, skip_accept_encoding=True, skip_host=True)
for name, value in req.headers.items():
    conn.putheader(name, value)
conn.putheader("Host", u.netloc)
conn.endheaders()
block = os.urandom(1 << 16)
md5 = hashlib.md5()
for _ in range(size // len(block)):
    md5.update(block)
md5.update(block[:size % len(block)])
if len(sys.argv) > 7:
    with open(sys.argv[7], "w") as f:
        f.write(md5.hexdigest())
sent = 0
paused = False
while sent < size:
    if sent >= head and not paused:
        open(paused_file, "w").close()
        while not os.path.exists(resume_file):
            time.sleep(0.05)
        paused = True
    n = min(len(block), size - sent)
    try:
        conn.send(block[:n])
    except OSError as e:  # the server answered and closed early: show its answer
        print(f"send failed after {sent} bytes: {e}", flush=True)
        break
    sent += n
resp = conn.getresponse()
print(resp.status, resp.read().decode(errors="replace"))
