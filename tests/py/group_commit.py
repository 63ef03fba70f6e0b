"""Group commit on data nodes (decision 0039), driven by boto3.

usage: group_commit.py put BUCKET COUNT CONCURRENCY   -- PUT COUNT small objects from
                                                        CONCURRENCY threads; all must succeed
       group_commit.py verify BUCKET COUNT            -- GET each one back, byte for byte

Bodies are 64 KiB (six 16 KiB fragments under EC 4+2: the size group commit is for),
every fourth one 10 000 bytes; their content is derived from the key, so `verify` needs
nothing from `put`.
"""
import concurrent.futures
import hashlib
import os
import sys
import threading
import time

import boto3
from botocore.config import Config


def s3():
    return boto3.client("s3", endpoint_url=os.environ["KURA_S3"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      connect_timeout=5, read_timeout=30))


def key(i):
    return f"gc/{i:05d}"


def body(i):
    size = 10_000 if i % 4 == 0 else 64 << 10
    seed = hashlib.sha256(key(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


local = threading.local()


def client():
    if not hasattr(local, "c"):
        local.c = s3()
    return local.c


def put_one(bucket, i):
    t = time.monotonic()
    client().put_object(Bucket=bucket, Key=key(i), Body=body(i))
    return time.monotonic() - t


def main():
    mode, bucket, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "put":
        conc = int(sys.argv[4])
        with concurrent.futures.ThreadPoolExecutor(conc) as ex:
            lat = sorted(ex.map(lambda i: put_one(bucket, i), range(count)))
        print(f"put {count} objects at c={conc}: p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms")
    elif mode == "verify":
        c = s3()
        for i in range(count):
            got = c.get_object(Bucket=bucket, Key=key(i))["Body"].read()
            assert got == body(i), f"{key(i)}: {len(got)} bytes differ from what was acknowledged"
        print(f"verified {count} objects")
    else:
        raise SystemExit(f"unknown mode {mode}")


main()
