"""Mixed read/write load for the erasure-coding tests.

usage:
  ec_load.py preload BUCKET MANIFEST COUNT
      PUTs COUNT objects of several sizes (bytes derived from a seed) and
      writes "key seed size" lines to MANIFEST.
  ec_load.py run BUCKET MANIFEST ACK_LOG STATUS STOP_FILE MAX_SECONDS
      Until STOP_FILE exists: GETs a random preloaded object, whole or a
      random range, and compares every byte with what was written; then PUTs
      a new object and appends "key md5 size" to ACK_LOG once acknowledged.
      STATUS is rewritten after every step: "reads_ok reads_bad read_errors
      puts_ok puts_failed". Every request is also logged to STATUS.lat as
      "op start_unix_s seconds ok" (op: get or put, ok: 1 or 0). Exits 1 if
      any read returned wrong bytes.
"""
import hashlib
import os
import random
import sys
import time

import boto3
from botocore.config import Config

SIZES = [5_000, 300_000, 1_048_576 * 3 + 17, 4_718_592 + 3]


def client(retries):
    return boto3.client("s3", endpoint_url=os.environ["KURA_S3"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": retries},
                                      connect_timeout=3, read_timeout=30))


def body(seed, size):
    return random.Random(seed).randbytes(size)


def preload(bucket, manifest, count):
    s3 = client(3)
    with open(manifest, "w") as out:
        for i in range(count):
            size = SIZES[i % len(SIZES)]
            key = f"pre/{i:04d}"
            s3.put_object(Bucket=bucket, Key=key, Body=body(i, size))
            out.write(f"{key} {i} {size}\n")
    print(f"preload: {count} objects")


def run(bucket, manifest, ack_log, status, stop_file, max_s):
    s3 = client(1)
    objects = [line.split() for line in open(manifest)]
    cache = {}
    rng = random.Random(7)
    reads_ok = reads_bad = read_errors = puts_ok = puts_failed = 0
    bad = []
    deadline = time.time() + max_s
    i = 0
    with open(ack_log, "a") as acks, open(status + ".lat", "a") as lat:
        def timed(op, t0, ok):
            lat.write(f"{op} {t0:.3f} {time.time() - t0:.3f} {1 if ok else 0}\n")
            lat.flush()
        while time.time() < deadline and not os.path.exists(stop_file):
            key, seed, size = objects[rng.randrange(len(objects))]
            seed, size = int(seed), int(size)
            if key not in cache:
                cache[key] = body(seed, size)
            want = cache[key]
            if rng.random() < 0.5:
                start = rng.randrange(size)
                end = min(size, start + rng.randrange(1, 2_500_000))
                args = {"Range": f"bytes={start}-{end - 1}"}
                want = want[start:end]
            else:
                args = {}
            t0 = time.time()
            try:
                got = s3.get_object(Bucket=bucket, Key=key, **args)["Body"].read()
                timed("get", t0, True)
                if got == want:
                    reads_ok += 1
                else:
                    reads_bad += 1
                    bad.append(f"{key} {args}: {len(got)} bytes, want {len(want)}")
            except Exception as e:  # noqa: BLE001 - counted, the test decides
                timed("get", t0, False)
                read_errors += 1
                print(f"read error {key} {args}: {e}", flush=True)
            data = os.urandom(SIZES[i % len(SIZES)])
            wkey = f"w/{i:06d}"
            i += 1
            t0 = time.time()
            try:
                s3.put_object(Bucket=bucket, Key=wkey, Body=data)
                timed("put", t0, True)
                acks.write(f"{wkey} {hashlib.md5(data).hexdigest()} {len(data)}\n")
                acks.flush()
                puts_ok += 1
            except Exception as e:  # noqa: BLE001
                timed("put", t0, False)
                puts_failed += 1
                print(f"put error {wkey}: {e}", flush=True)
            tmp = status + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{reads_ok} {reads_bad} {read_errors} {puts_ok} {puts_failed}\n")
            os.replace(tmp, status)
    print(f"load: reads ok={reads_ok} bad={reads_bad} errors={read_errors}; "
          f"puts ok={puts_ok} failed={puts_failed}")
    for b in bad[:20]:
        print("  WRONG BYTES " + b)
    sys.exit(1 if reads_bad else 0)


if __name__ == "__main__":
    if sys.argv[1] == "preload":
        preload(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        run(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7]))
