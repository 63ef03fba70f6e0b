#!/usr/bin/env python3
"""The client CPU one boto3 request costs, to set beside `kura bench`'s own
"bench CPU per request" (docs/performance.md). Runs the same kind of load as
`kura bench put|get --obj.size SIZE --concurrent N --duration D` with one
boto3 client shared by N threads (boto3's documented thread-safe use) and
prints this process's user+sys CPU per request from getrusage.

    AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. \\
      python3 scripts/bench/cpu_boto3.py --endpoint http://127.0.0.1:9000 \\
      --op put --size 16384 --concurrent 8 --duration 10
"""
import argparse
import os
import resource
import threading
import time
import uuid

import boto3
from botocore.config import Config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"))
    ap.add_argument("--bucket", default="kura-bench")
    ap.add_argument("--op", choices=["put", "get"], default="put")
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--ca-bundle", default=None)
    a = ap.parse_args()

    s3 = boto3.client(
        "s3",
        endpoint_url=a.endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        verify=a.ca_bundle if a.ca_bundle else True,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=a.concurrent),
    )
    try:
        s3.create_bucket(Bucket=a.bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            raise
    prefix = "boto3-%s/" % uuid.uuid4().hex[:8]
    body = os.urandom(a.size)
    keys = []
    if a.op == "get":
        for i in range(a.objects):
            k = "%sobj-%d" % (prefix, i)
            s3.put_object(Bucket=a.bucket, Key=k, Body=body)
            keys.append(k)

    done = [0] * a.concurrent
    stop = time.monotonic() + a.duration

    def worker(w):
        n = 0
        while time.monotonic() < stop:
            if a.op == "put":
                k = "%sw%d-%d" % (prefix, w, n)
                s3.put_object(Bucket=a.bucket, Key=k, Body=body)
            else:
                k = keys[(w * 7919 + n) % len(keys)]
                s3.get_object(Bucket=a.bucket, Key=k)["Body"].read()
            n += 1
        done[w] = n

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(a.concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    ops = sum(done)
    print(
        "boto3 %s %d B x%d: %d ops in %.1f s = %.0f ops/s; client CPU %.2f s = %.2f cores; %.0f us per request"
        % (a.op, a.size, a.concurrent, ops, secs, ops / secs, cpu, cpu / secs, cpu / max(ops, 1) * 1e6)
    )
    # Clean up what this run wrote.
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=prefix):
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            s3.delete_objects(Bucket=a.bucket, Delete={"Objects": objs})


if __name__ == "__main__":
    main()
