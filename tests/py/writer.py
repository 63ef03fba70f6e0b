"""Keeps PUTting objects until a stop file appears (or a time limit), and
records every PUT that got a 200 (key, md5) in an ack log, one line each,
flushed immediately. Used by the durability tests: every acked key must read
back identical after processes are killed and restarted.

usage: writer.py BUCKET ACK_LOG STOP_FILE MAX_SECONDS
"""
import hashlib
import os
import sys
import time

import boto3
from botocore.config import Config

bucket, ack_log, stop_file, max_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=os.environ["KURA_S3"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                connect_timeout=3, read_timeout=20))
sizes = [100, 5000, 300_000, 1_500_000]
deadline = time.time() + max_s
i = ok = failed = 0
with open(ack_log, "a") as log:
    while time.time() < deadline and not os.path.exists(stop_file):
        size = sizes[i % len(sizes)]
        data = os.urandom(size)
        key = f"w/{i:06d}"
        i += 1
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as e:  # noqa: BLE001 - any failure just means "not acknowledged"
            failed += 1
            time.sleep(0.05)
            continue
        log.write(f"{key} {hashlib.md5(data).hexdigest()} {size}\n")
        log.flush()
        ok += 1
print(f"writer: {ok} acknowledged, {failed} failed")
