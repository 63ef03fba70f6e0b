"""LIST of a versioned bucket reads what an unversioned LIST reads
(decision 0034).

Run by tests/list_versions_cost.rs against `kura dev` with KURA_S3, KURA_DIR
and the root key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

The same KEYS keys go into an unversioned bucket (one version each) and into
a versioned one (VERSIONS versions each, some keys ending in a delete
marker). Both are listed in full with ListObjectsV2, 1,000 per page, and the
keys the metashard stores' scans read are taken from their
`kura_metashard_scan_keys_read_total{cf="meta"}` counters (summed over the
stores) around each listing: the versioned listing must read no more than
1.5× what the unversioned one reads. The same counter around a
ListObjectVersions of the versioned bucket (which must read every version)
shows the measure tells the two apart.
"""
import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from kura_kit import CLUSTER, check, client

KEYS = int(os.environ.get("LIST_COST_KEYS", "2000"))
VERSIONS = int(os.environ.get("LIST_COST_VERSIONS", "5"))
s3 = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], max_pool_connections=16,
           retries={"max_attempts": 5, "mode": "standard"})


def key(n):
    # Spread over a few "directories", and neighbours that sort right after
    # one another ("k1", "k1/", "k10") to exercise the seek past an object.
    return f"d{n % 7}/k{n}"


def stores():
    comps = json.load(open(CLUSTER))["components"]
    return [c["status"] for c in comps if c["role"] == "metashard"]


def keys_read():
    total = 0
    for s in stores():
        with urllib.request.urlopen(f"http://{s}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("kura_metashard_scan_keys_read_total{") and 'cf="meta"' in line:
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


def put_all(bucket, rounds, body_of):
    jobs = [(n, r) for r in range(rounds) for n in range(KEYS)]

    def one(job):
        n, r = job
        s3.put_object(Bucket=bucket, Key=key(n), Body=body_of(n, r))

    # Round by round, so a key's versions are written in order.
    for r in range(rounds):
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(one, [j for j in jobs if j[1] == r]))


def list_all(bucket):
    """Every key and ETag of a full ListObjectsV2 (1,000 per page), its keys
    read by the stores, and its wall time."""
    before = keys_read()
    t0 = time.monotonic()
    out, token, pages = {}, None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=bucket, MaxKeys=1000, **kw)
        pages += 1
        for o in r.get("Contents", []):
            assert o["Key"] not in out, f"{o['Key']} listed twice"
            out[o["Key"]] = o["ETag"]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    secs = time.monotonic() - t0
    return out, keys_read() - before, secs, pages


s3.create_bucket(Bucket="flat")
s3.create_bucket(Bucket="vers")
s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
t0 = time.monotonic()
put_all("flat", 1, lambda n, r: f"{n}".encode())
put_all("vers", VERSIONS, lambda n, r: f"{n}.{r}".encode())
# Every 10th key's latest version is a delete marker: not listed.
DELETED = {key(n) for n in range(0, KEYS, 10)}
for k in DELETED:
    s3.delete_object(Bucket="vers", Key=k)
print(f"loaded {KEYS} + {KEYS}×{VERSIONS} versions in {time.monotonic() - t0:.1f} s")

flat, flat_read, flat_secs, flat_pages = list_all("flat")
vers, vers_read, vers_secs, vers_pages = list_all("vers")
print(f"unversioned: {len(flat)} keys, {flat_pages} pages, {flat_read} keys read, {flat_secs:.2f} s")
print(f"versioned:   {len(vers)} keys, {vers_pages} pages, {vers_read} keys read, {vers_secs:.2f} s")


def versioned_listing_is_right():
    assert len(flat) == KEYS, len(flat)
    assert set(vers) == {key(n) for n in range(KEYS)} - DELETED, "latest non-marker keys only"
    # Each listed key shows its latest version's ETag.
    for n in (1, 2, 3, KEYS - 1):
        k = key(n)
        if k in vers:
            head = s3.head_object(Bucket="vers", Key=k)
            assert vers[k] == head["ETag"], (k, vers[k], head["ETag"])
            assert s3.get_object(Bucket="vers", Key=k)["Body"].read() == f"{n}.{VERSIONS - 1}".encode()


check("a versioned LIST shows each key's latest version once", versioned_listing_is_right)


def versioned_list_reads_what_an_unversioned_one_reads():
    assert flat_read >= KEYS, f"the counter saw the unversioned listing: {flat_read}"
    assert vers_read <= 1.5 * flat_read, (
        f"versioned LIST read {vers_read} keys, unversioned {flat_read} "
        f"({vers_read / flat_read:.2f}×; every version would be {KEYS * (VERSIONS + 1)})")


check("versioned LIST reads ≤ 1.5× the keys of an unversioned LIST", versioned_list_reads_what_an_unversioned_one_reads)


def the_measure_sees_every_version_when_they_are_read():
    before = keys_read()
    n, marker = 0, {}
    while True:
        r = s3.list_object_versions(Bucket="vers", MaxKeys=1000, **marker)
        n += len(r.get("Versions", [])) + len(r.get("DeleteMarkers", []))
        if not r["IsTruncated"]:
            break
        marker = {"KeyMarker": r["NextKeyMarker"], "VersionIdMarker": r["NextVersionIdMarker"]}
    read = keys_read() - before
    assert n == KEYS * VERSIONS + len(DELETED), n
    assert read >= n, f"ListObjectVersions read {read} keys for {n} versions"
    assert read > 3 * vers_read, (read, vers_read)


check("ListObjectVersions reads every version (the counter tells them apart)",
      the_measure_sees_every_version_when_they_are_read)


def delimiter_and_prefix_listings_on_versions():
    r = s3.list_objects_v2(Bucket="vers", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == [f"d{i}/" for i in range(7)], r
    want = sorted(k for k in {key(n) for n in range(KEYS)} - DELETED if k.startswith("d3/"))
    got, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="vers", Prefix="d3/", MaxKeys=7, **kw)
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert got == want, (len(got), len(want))
    # ListObjects v1 with markers agrees.
    r = s3.list_objects(Bucket="vers", Prefix="d3/", Marker=want[10], MaxKeys=5)
    assert [o["Key"] for o in r["Contents"]] == want[11:16]


check("prefix, delimiter and small pages over many versions", delimiter_and_prefix_listings_on_versions)
print("all list_versions_cost checks passed")
