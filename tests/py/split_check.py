"""Writes, or reads back and lists, objects spread over six "directories", so a
region split falls between them. Each body is its own key.

usage: split_check.py put    BUCKET TAG COUNT
       split_check.py verify BUCKET TAG:COUNT[,TAG:COUNT...]
       split_check.py heads  BUCKET TAG COUNT SECS
Keys: d{i%6}/{TAG}{i:05d}. `verify` GETs every key, then checks that LIST v2
with small pages returns every key exactly once in order, that a delimiter
listing returns each of the six common prefixes exactly once, and that a
prefix listing of each directory returns exactly its keys. `heads` HEADs
random keys of TAG from 8 threads for SECS seconds (a read load spread over
the objects) and fails on any error.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

mode, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["KURA_S3"],
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                  max_pool_connections=8, connect_timeout=3, read_timeout=30),
)


def keys(tag, n):
    return [f"d{i % 6}/{tag}{i:05d}" for i in range(n)]


def list_all(**kw):
    objs, prefixes, token = [], [], None
    while True:
        args = dict(Bucket=bucket, **kw)
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(**args)
        objs += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page.get("IsTruncated"):
            return objs, prefixes
        token = page["NextContinuationToken"]


def get(key):
    try:
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as e:  # noqa: BLE001 - report every unreadable key
        return f"{key}: {e}"
    return None if got == key.encode() else f"{key}: got {got[:40]!r}"


def fail(msg):
    print(msg)
    sys.exit(1)


if mode == "put":
    tag, n = sys.argv[3], int(sys.argv[4])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys(tag, n)))
    print(f"split_check: {n} PUTs")
elif mode == "verify":
    want = []
    for spec in sys.argv[3].split(","):
        tag, n = spec.split(":")
        want += keys(tag, int(n))
    want = sorted(want)
    with ThreadPoolExecutor(8) as pool:
        bad = [b for b in pool.map(get, want) if b]
    if bad:
        fail(f"{len(bad)} GETs failed: {bad[:5]}")
    listed, _ = list_all(MaxKeys=7)
    if listed != want:
        dups = sorted({k for k in listed if listed.count(k) > 1})
        fail(f"LIST v2: {len(listed)} keys, want {len(want)}; missing "
             f"{sorted(set(want) - set(listed))[:5]} extra {sorted(set(listed) - set(want))[:5]} dups {dups[:5]}")
    objs, prefixes = list_all(Delimiter="/", MaxKeys=2)
    if objs or prefixes != [f"d{j}/" for j in range(6)]:
        fail(f"delimiter LIST: objects {objs[:5]} prefixes {prefixes}")
    for j in range(6):
        got, _ = list_all(Prefix=f"d{j}/", MaxKeys=13)
        exp = [k for k in want if k.startswith(f"d{j}/")]
        if got != exp:
            fail(f"prefix d{j}/: {len(got)} keys, want {len(exp)}")
    print(f"split_check: {len(want)} keys read, listed exactly once")
elif mode == "heads":
    import random
    import time
    tag, n, secs = sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    ks, end = keys(tag, n), time.monotonic() + secs

    def loop(seed):
        rnd, done = random.Random(seed), 0
        while time.monotonic() < end:
            s3.head_object(Bucket=bucket, Key=rnd.choice(ks))
            done += 1
        return done

    with ThreadPoolExecutor(8) as pool:
        total = sum(pool.map(loop, range(8)))
    print(f"split_check: {total} HEADs in {secs:.0f} s ({total / secs:.0f}/s), 0 errors")
else:
    fail(f"unknown mode {mode}")
