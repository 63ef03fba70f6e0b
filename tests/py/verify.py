"""Reads back every key in an ack log and checks its MD5 and size.

usage: verify.py BUCKET ACK_LOG
"""
import hashlib
import os
import sys

import boto3
from botocore.config import Config

bucket, ack_log = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=os.environ["KURA_S3"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))
bad = []
n = 0
for line in open(ack_log):
    key, md5, size = line.split()
    n += 1
    try:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as e:  # noqa: BLE001
        bad.append(f"{key}: {e}")
        continue
    if len(data) != int(size) or hashlib.md5(data).hexdigest() != md5:
        bad.append(f"{key}: got {len(data)} bytes md5 {hashlib.md5(data).hexdigest()}, want {size} {md5}")
print(f"verify: {n} acknowledged objects checked, {len(bad)} bad")
for b in bad[:20]:
    print("  " + b)
sys.exit(1 if bad or n == 0 else 0)
