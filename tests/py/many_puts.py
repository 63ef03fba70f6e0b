"""Writes or verifies many small objects, 8 requests in flight.

Each object's body is its own key, so every read checks content, not only
presence. Used by the snapshot catch-up test: enough PUTs to push the Raft
log past the metashard's log GC threshold.

usage: many_puts.py put    BUCKET PREFIX COUNT
       many_puts.py verify BUCKET PREFIX COUNT
`verify` first polls (to a deadline) until the bucket can be listed, since it
runs right after a metadata leader was killed; then it lists PREFIX and
requires exactly the COUNT keys, and GETs every one of them.
"""
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

mode, bucket, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["KURA_S3"],
    region_name="us-east-1",
    config=Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=8,
        connect_timeout=3,
        read_timeout=20,
    ),
)
keys = [f"{prefix}{i:05d}" for i in range(count)]


def put(key):
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())


def get(key):
    try:
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as e:  # noqa: BLE001 - report every unreadable key
        return f"{key}: {e}"
    return None if got == key.encode() else f"{key}: got {got[:40]!r}"


def list_all():
    out = []
    token = None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        out += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


start = time.time()
with ThreadPoolExecutor(8) as pool:
    if mode == "put":
        list(pool.map(put, keys))  # raises on the first failed PUT
        print(f"many_puts: {count} PUTs in {time.time() - start:.1f}s")
    elif mode == "verify":
        deadline = time.time() + 60
        while True:
            try:
                s3.head_bucket(Bucket=bucket)
                break
            except Exception as e:  # noqa: BLE001 - metadata may still be electing
                if time.time() > deadline:
                    raise SystemExit(f"bucket never became readable: {e}")
                time.sleep(0.2)
        listed = list_all()
        missing = sorted(set(keys) - set(listed))
        extra = sorted(set(listed) - set(keys))
        bad = [b for b in pool.map(get, keys) if b]
        print(f"many_puts: listed {len(listed)}, missing {len(missing)}, extra {len(extra)}, "
              f"{len(bad)} bad reads of {count} in {time.time() - start:.1f}s")
        for line in missing[:10] + extra[:10] + bad[:10]:
            print("  " + line)
        sys.exit(1 if missing or extra or bad or len(listed) != count else 0)
    else:
        raise SystemExit(f"unknown mode {mode}")
