"""PUTs of large bodies sent whole before the answer is read, as Python's
http.client and many simple clients do (no `Expect: 100-continue`), to a
server that refuses them early. The answer must arrive, as S3 XML: a
server that closes with the body unread resets the connection, and the
client sees "connection reset" instead of the error.

usage: whole_body_put.py signed|anonymous BUCKET KEY SIZE COUNT
Prints one line per PUT: `STATUS CODE` (CODE from the XML error, `-` if none).
"""
import os
import re
import sys

from kura_kit import put_connection

mode, bucket, key, size, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
endpoint = os.environ["KURA_S3"]
block = os.urandom(1 << 20)

for i in range(count):
    conn = put_connection(f"{endpoint}/{bucket}/{key}-{i}", size, signed=mode == "signed", timeout=60)
    sent = 0
    while sent < size:
        n = min(len(block), size - sent)
        # A reset here is the failure this script looks for: let it raise.
        conn.send(block[:n])
        sent += n
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    code = re.search(r"<Code>([^<]*)</Code>", body)
    print(resp.status, code.group(1) if code else "-", flush=True)
    conn.close()
