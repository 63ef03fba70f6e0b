"""Small-object load for the hot-region test, 8 requests in flight.

usage:
  hot_load.py put  BUCKET PREFIX COUNT
      PUTs PREFIX00000 .. (COUNT objects, each body its own key).
  hot_load.py read BUCKET PREFIX COUNT STATUS STOP_FILE MAX_SECONDS
      Until STOP_FILE exists (or MAX_SECONDS pass): HEADs (3 in 4) or GETs a
      random one of those objects and checks it. STATUS is rewritten every
      half second: "ok errors". Every error is printed.
"""
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

THREADS = 8

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["KURA_S3"],
    region_name="us-east-1",
    config=Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        max_pool_connections=THREADS,
        connect_timeout=3,
        read_timeout=20,
    ),
)


def put(bucket, keys):
    with ThreadPoolExecutor(THREADS) as ex:
        list(ex.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    print(f"put {len(keys)} objects")


def read(bucket, keys, status, stop_file, max_s):
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.time() + max_s

    def running():
        return time.time() < deadline and not os.path.exists(stop_file)

    def worker(seed):
        rng = random.Random(seed)
        while running():
            k = keys[rng.randrange(len(keys))]
            try:
                if rng.random() < 0.75:
                    ok = s3.head_object(Bucket=bucket, Key=k)["ContentLength"] == len(k)
                else:
                    ok = s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode()
                err = None if ok else f"{k}: wrong answer"
            except Exception as e:  # noqa: BLE001 - counted, the test decides
                err = f"{k}: {e}"
            with lock:
                if err is None:
                    counts["ok"] += 1
                else:
                    counts["errors"] += 1
                    print("error " + err, flush=True)

    def write_status():
        tmp = status + ".tmp"
        with lock:
            line = f"{counts['ok']} {counts['errors']}\n"
        with open(tmp, "w") as f:
            f.write(line)
        os.replace(tmp, status)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    while running():
        write_status()
        time.sleep(0.5)
    for t in threads:
        t.join()
    write_status()
    print(f"read: ok={counts['ok']} errors={counts['errors']}")


if __name__ == "__main__":
    mode, bucket, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    keys = [f"{prefix}{i:05d}" for i in range(count)]
    if mode == "put":
        put(bucket, keys)
    else:
        read(bucket, keys, sys.argv[5], sys.argv[6], float(sys.argv[7]))
