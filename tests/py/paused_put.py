"""A PUT whose body stalls midway: sends the first HEAD_BYTES, creates
PAUSED_FILE, waits for RESUME_FILE, then sends the rest. Lets a test break
something (kill the metadata stores) between the body and the commit.
Prints the HTTP status and body of the answer; writes the MD5 (hex) of
the body to MD5_FILE if given.

usage: paused_put.py BUCKET KEY SIZE HEAD_BYTES PAUSED_FILE RESUME_FILE [MD5_FILE]
"""
import hashlib
import os
import sys
import time

from kura_kit import put_connection

bucket, key, size, head = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
paused_file, resume_file = sys.argv[5], sys.argv[6]
endpoint = os.environ["KURA_S3"]
conn = put_connection(f"{endpoint}/{bucket}/{key}", size)
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
