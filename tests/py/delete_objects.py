"""DeleteObjects committed one batch per region (tests/delete_objects.rs).

    delete_objects.py fill BUCKET N      N objects d/00000.. (every 25th a 300 KiB EC body)
    delete_objects.py spans BUCKET       one request over three regions, with a duplicate,
                                         a missing key and a wrong ETag in it
    delete_objects.py stale BUCKET       a request whose keys a split cuts in two between
                                         the gateway's reads and its commit (failpoint)
    delete_objects.py race BUCKET        a key overwritten between the gateway's read and
                                         its commit (failpoint armed by the Rust side)

Every mode ends by checking the listing and `kura admin usage` agree.
Run with KURA_S3, KURA_DIR, KURA_BIN and the root key in AWS_* (kura_kit).
"""
import concurrent.futures
import os
import sys
import time

from kura_kit import admin, client

s3 = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
mode, bucket = sys.argv[1], sys.argv[2]


def key(i):
    return f"d/{i:05}"


def body(i):
    size = 300 * 1024 if i % 25 == 0 else 1000 + i
    return bytes([i % 251]) * size


def listing():
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


def usage_agrees():
    want = listing()
    # Deltas are read with the counter: deletes count at once.
    rep = admin("usage", "--tenant", "")
    got = [(b["bytes"], b["objects"]) for b in rep["buckets"] if b["name"] == bucket]
    assert got == [(sum(want.values()), len(want))], f"usage {got}, listing {len(want)} objects"
    return want


def delete(keys):
    return s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def deleted_keys(r):
    return sorted(d["Key"] for d in r.get("Deleted", []))


if mode == "fill":
    n = int(sys.argv[3])
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: s3.put_object(Bucket=bucket, Key=key(i), Body=body(i)), range(n)))
    assert len(usage_agrees()) == n
elif mode == "spans":
    # d/00000..d/00299 live in four regions (split at 100 and 200, and where
    # the Rust side split to learn the bucket id); reads all over show the
    # gateway's region cache every split.
    for i in range(0, 300, 10):
        s3.head_object(Bucket=bucket, Key=key(i))
    etag = s3.head_object(Bucket=bucket, Key=key(150))["ETag"]
    asked = [{"Key": key(i)} for i in range(10, 290, 2)]
    asked += [{"Key": key(20)}, {"Key": "d/missing"}]
    asked += [{"Key": key(151), "ETag": '"0123456789abcdef0123456789abcdef"'}]
    asked += [{"Key": key(153), "ETag": etag}]  # not 153's ETag
    asked += [{"Key": key(155), "ETag": s3.head_object(Bucket=bucket, Key=key(155))["ETag"]}]
    r = delete(asked)
    errors = sorted((e["Key"], e["Code"]) for e in r.get("Errors", []))
    assert errors == [(key(151), "PreconditionFailed"), (key(153), "PreconditionFailed")], errors
    want = sorted({key(i) for i in range(10, 290, 2)} | {key(20), "d/missing", key(155)})
    assert sorted(set(deleted_keys(r))) == want, deleted_keys(r)
    left = usage_agrees()
    gone = {key(i) for i in range(10, 290, 2)} | {key(155)}
    assert not gone & set(left), sorted(gone & set(left))
    assert {key(151), key(153)} <= set(left)
    assert len(left) == 300 - len(gone), len(left)
elif mode == "stale":
    # The Rust side splits d/00231..d/00279 in two while the gateway holds
    # its commit (failpoint). "spans" left the odd keys from 11 and 151, 153 (159 objects).
    asked = [key(i) for i in range(231, 280, 2)]
    open(os.path.join(os.environ["KURA_DIR"], "delete-sent"), "w").close()
    r = delete([{"Key": k} for k in asked])
    assert not r.get("Errors"), r["Errors"]
    assert deleted_keys(r) == asked, deleted_keys(r)
    left = usage_agrees()
    assert not set(asked) & set(left), sorted(set(asked) & set(left))
    assert len(left) == 159 - len(asked), len(left)
elif mode == "race":
    victim = key(101)
    asked = [{"Key": key(i)} for i in range(101, 130, 2)]
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        pending = ex.submit(delete, asked)
        # The gateway sleeps between its reads and its commit (failpoint):
        # the overwrite lands in between and fails the batch's condition.
        time.sleep(2.0)
        s3.put_object(Bucket=bucket, Key=victim, Body=b"new" * 5000)
        r = pending.result()
    assert not r.get("Errors"), r["Errors"]
    assert deleted_keys(r) == sorted(a["Key"] for a in asked), deleted_keys(r)
    left = usage_agrees()
    # The key was deleted again after its new read: the overwrite is gone too.
    assert not {a["Key"] for a in asked} & set(left)
else:
    raise SystemExit(f"unknown mode {mode}")
print(f"delete_objects {mode}: ok")
