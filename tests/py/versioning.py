"""S3 object versioning end to end (tests/versioning.rs), with boto3 and the aws CLI.

Run against `kura dev --gateways 2` with a short orphan-GC age, so old
versions' bodies are checked to survive orphan GC. Covers: the bucket
states (never versioned, Enabled, Suspended, Enabled again) and what each
does to PUT / GET / HEAD / DELETE / Copy / multipart, the null version,
delete markers, ListObjectVersions paging, DeleteObjects with versions,
ListObjects on versioned buckets, usage accounting of every version, and
two gateways writing versions of one key at once.
"""
import json
import os
import subprocess
import threading
import time
import uuid

from botocore.exceptions import ClientError

from kura_kit import CLUSTER, admin, check, client

AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
GATEWAYS = [c["s3"] for c in json.load(open(CLUSTER))["components"] if c["role"] == "gateway"]
assert len(GATEWAYS) == 2, GATEWAYS
s3 = client(AK, SK, GATEWAYS[0])
s3b = client(AK, SK, GATEWAYS[1])
BIG = 100 * 1024  # above the inline threshold: stored on data nodes


def new_bucket(versioning=None):
    name = "v-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    if versioning:
        set_versioning(name, versioning)
    return name


def set_versioning(bucket, status):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") == status


def err(fn, *a, **kw):
    """The ClientError a call must raise: (code, status, headers)."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        md = e.response["ResponseMetadata"]
        return e.response["Error"]["Code"], md["HTTPStatusCode"], md.get("HTTPHeaders", {})
    raise AssertionError(f"{fn.__name__} {kw} succeeded")


def body(seed, n=BIG):
    return (seed.encode() * (n // len(seed) + 1))[:n]


def versions(bucket, **kw):
    """Every version and delete marker as (key, version id, is_latest, is_marker), paging."""
    out, marker = [], {}
    while True:
        r = s3.list_object_versions(Bucket=bucket, **kw, **marker)
        page = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in r.get("Versions", [])]
        page += [(d["Key"], d["VersionId"], d["IsLatest"], True) for d in r.get("DeleteMarkers", [])]
        out += page
        if not r["IsTruncated"]:
            return by_key_newest_first(out)
        marker = {"KeyMarker": r["NextKeyMarker"]}
        if r.get("NextVersionIdMarker"):
            marker["VersionIdMarker"] = r["NextVersionIdMarker"]


def by_key_newest_first(vs):
    """Versions and delete markers come back in two lists: merged into
    storage order (by key; the latest, then newest first; in these tests a
    null version that is not the latest is the oldest)."""
    return sorted(vs, key=lambda v: (v[0], not v[2], v[1] == "null", [-ord(c) for c in v[1]]))


def keys(bucket, **kw):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, **kw).get("Contents", [])]


def get(bucket, key, **kw):
    r = s3.get_object(Bucket=bucket, Key=key, **kw)
    return r["Body"].read(), r.get("VersionId")


def never_versioned():
    b = new_bucket()
    r = s3.get_bucket_versioning(Bucket=b)
    assert "Status" not in r and "MFADelete" not in r, r
    put = s3.put_object(Bucket=b, Key="k", Body=b"one")
    assert "VersionId" not in put, put
    assert get(b, "k") == (b"one", None)
    # The object is the null version, readable by that name.
    assert get(b, "k", VersionId="null")[0] == b"one"
    vs = s3.list_object_versions(Bucket=b)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in vs["Versions"]] == [("k", "null", True)], vs
    # An overwrite replaces it.
    s3.put_object(Bucket=b, Key="k", Body=b"two")
    assert versions(b) == [("k", "null", True, False)]
    assert err(s3.get_object, Bucket=b, Key="k", VersionId="nonsense")[:2] == ("InvalidArgument", 400)
    assert err(s3.get_object, Bucket=b, Key="k", VersionId="0123456789abcdef")[:2] == ("NoSuchVersion", 404)
    d = s3.delete_object(Bucket=b, Key="k")
    assert "VersionId" not in d and "DeleteMarker" not in d, d
    assert versions(b) == []
    assert err(s3.get_object, Bucket=b, Key="k")[:2] == ("NoSuchKey", 404)


def configuration_errors():
    b = new_bucket()
    code, status, _ = err(s3.put_bucket_versioning, Bucket=b, VersioningConfiguration={"Status": "Bogus"})
    assert (code, status) == ("MalformedXML", 400), (code, status)
    code, status, _ = err(
        s3.put_bucket_versioning,
        Bucket=b,
        VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"},
    )
    assert (code, status) == ("NotImplemented", 501), (code, status)
    # Nothing changed.
    assert "Status" not in s3.get_bucket_versioning(Bucket=b)
    assert err(s3.get_bucket_versioning, Bucket="v-no-such-bucket-x")[:2] == ("NoSuchBucket", 404)


def enabled_versions_and_markers():
    b = new_bucket()
    s3.put_object(Bucket=b, Key="k", Body=body("legacy"))
    set_versioning(b, "Enabled")
    v1 = s3.put_object(Bucket=b, Key="k", Body=body("first"))["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=body("second"))["VersionId"]
    assert v1 != v2 and v1 != "null" and v2 > v1, (v1, v2)
    assert get(b, "k") == (body("second"), v2)
    assert get(b, "k", VersionId=v1) == (body("first"), v1)
    assert get(b, "k", VersionId="null") == (body("legacy"), "null")
    h = s3.head_object(Bucket=b, Key="k", VersionId=v1)
    assert h["VersionId"] == v1 and h["ContentLength"] == BIG, h
    assert s3.head_object(Bucket=b, Key="k")["VersionId"] == v2
    # Newest first, the pre-versioning object as the null version last.
    assert versions(b) == [("k", v2, True, False), ("k", v1, False, False), ("k", "null", False, False)]
    assert keys(b) == ["k"]
    assert s3.list_objects(Bucket=b)["Contents"][0]["Size"] == BIG

    # DELETE without a version id puts a delete marker on top.
    d = s3.delete_object(Bucket=b, Key="k")
    assert d["DeleteMarker"] is True and d["VersionId"] not in (v1, v2, "null"), d
    dm = d["VersionId"]
    code, status, headers = err(s3.get_object, Bucket=b, Key="k")
    assert (code, status) == ("NoSuchKey", 404), (code, status)
    assert headers.get("x-amz-delete-marker") == "true" and headers.get("x-amz-version-id") == dm, headers
    code, status, headers = err(s3.head_object, Bucket=b, Key="k")
    assert status == 404 and headers.get("x-amz-delete-marker") == "true", (code, status, headers)
    code, status, headers = err(s3.get_object, Bucket=b, Key="k", VersionId=dm)
    assert (code, status) == ("MethodNotAllowed", 405), (code, status)
    assert headers.get("x-amz-delete-marker") == "true", headers
    assert err(s3.head_object, Bucket=b, Key="k", VersionId=dm)[1] == 405
    assert keys(b) == []
    assert versions(b)[0] == ("k", dm, True, True), versions(b)
    # Old versions stay readable.
    assert get(b, "k", VersionId=v2)[0] == body("second")
    # A second DELETE stacks another marker.
    dm2 = s3.delete_object(Bucket=b, Key="k")["VersionId"]
    assert dm2 > dm
    # Deleting the markers by id brings the object back.
    for m in (dm2, dm):
        d = s3.delete_object(Bucket=b, Key="k", VersionId=m)
        assert d["DeleteMarker"] is True and d["VersionId"] == m, d
    assert get(b, "k") == (body("second"), v2)
    assert keys(b) == ["k"]

    # Deleting the latest version by id makes the previous one latest.
    d = s3.delete_object(Bucket=b, Key="k", VersionId=v2)
    assert d["VersionId"] == v2 and "DeleteMarker" not in d, d
    assert get(b, "k") == (body("first"), v1)
    assert err(s3.get_object, Bucket=b, Key="k", VersionId=v2)[:2] == ("NoSuchVersion", 404)
    # Deleting a version that is gone succeeds (as S3).
    s3.delete_object(Bucket=b, Key="k", VersionId=v2)
    # Deleting the null version by name.
    s3.delete_object(Bucket=b, Key="k", VersionId="null")
    assert versions(b) == [("k", v1, True, False)]
    # A key that never existed still gets a marker in a versioned bucket.
    d = s3.delete_object(Bucket=b, Key="never")
    assert d["DeleteMarker"] is True and d["VersionId"] != "null"


def copy_and_multipart():
    b = new_bucket("Enabled")
    v1 = s3.put_object(Bucket=b, Key="src", Body=body("one"))["VersionId"]
    s3.put_object(Bucket=b, Key="src", Body=body("two"))
    c = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src", "VersionId": v1})
    assert c["CopySourceVersionId"] == v1 and c["VersionId"] not in (None, v1, "null"), c
    assert get(b, "dst") == (body("one"), c["VersionId"])
    # Copying an old version onto its own key restores it as a new version.
    r = s3.copy_object(Bucket=b, Key="src", CopySource={"Bucket": b, "Key": "src", "VersionId": v1})
    assert get(b, "src") == (body("one"), r["VersionId"])
    assert len([v for v in versions(b) if v[0] == "src"]) == 3
    # A delete marker is no copy source.
    dm = s3.delete_object(Bucket=b, Key="dst")["VersionId"]
    assert err(s3.copy_object, Bucket=b, Key="x", CopySource={"Bucket": b, "Key": "dst"})[:2] == ("NoSuchKey", 404)
    assert err(s3.copy_object, Bucket=b, Key="x", CopySource={"Bucket": b, "Key": "dst", "VersionId": dm})[1] == 400
    # Multipart completion makes a version too.
    up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    part = body("part", 5 * 1024 * 1024)
    e1 = s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=part)["ETag"]
    e2 = s3.upload_part_copy(
        Bucket=b, Key="mp", UploadId=up, PartNumber=2, CopySource={"Bucket": b, "Key": "src", "VersionId": v1}
    )
    assert e2["CopySourceVersionId"] == v1, e2
    done = s3.complete_multipart_upload(
        Bucket=b,
        Key="mp",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2["CopyPartResult"]["ETag"]}]},
    )
    assert done["VersionId"] not in (None, "null"), done
    assert get(b, "mp") == (part + body("one"), done["VersionId"])
    s3.put_object(Bucket=b, Key="mp", Body=b"small")
    assert get(b, "mp", VersionId=done["VersionId"])[0] == part + body("one")


def suspended_and_back():
    b = new_bucket()
    s3.put_object(Bucket=b, Key="k", Body=body("legacy"))
    set_versioning(b, "Enabled")
    v1 = s3.put_object(Bucket=b, Key="k", Body=body("v1"))["VersionId"]
    set_versioning(b, "Suspended")
    # A PUT while Suspended replaces the null version and is the latest.
    r = s3.put_object(Bucket=b, Key="k", Body=body("null-1"))
    assert r["VersionId"] == "null", r
    assert get(b, "k") == (body("null-1"), "null")
    assert versions(b) == [("k", "null", True, False), ("k", v1, False, False)], versions(b)
    r = s3.put_object(Bucket=b, Key="k", Body=body("null-2"))
    assert versions(b) == [("k", "null", True, False), ("k", v1, False, False)], versions(b)
    assert get(b, "k", VersionId="null")[0] == body("null-2")
    assert get(b, "k", VersionId=v1)[0] == body("v1")
    # A DELETE while Suspended: a null delete marker replacing the null version.
    d = s3.delete_object(Bucket=b, Key="k")
    assert d["DeleteMarker"] is True and d["VersionId"] == "null", d
    assert versions(b) == [("k", "null", True, True), ("k", v1, False, False)], versions(b)
    assert err(s3.get_object, Bucket=b, Key="k")[:2] == ("NoSuchKey", 404)
    # A new key while Suspended: only a null version (no anchor games).
    s3.put_object(Bucket=b, Key="fresh", Body=b"f")
    assert [v for v in versions(b) if v[0] == "fresh"] == [("fresh", "null", True, False)]
    # Enabled again: new versions go on top; the null one stays.
    set_versioning(b, "Enabled")
    v3 = s3.put_object(Bucket=b, Key="k", Body=body("v3"))["VersionId"]
    assert versions(b, Prefix="k") == [
        ("k", v3, True, False),
        ("k", v1, False, False),
        ("k", "null", False, True),
    ], versions(b, Prefix="k")
    # Suspended once more: the null (marker) under v3 is replaced by a new null on top.
    set_versioning(b, "Suspended")
    s3.put_object(Bucket=b, Key="k", Body=body("null-3"))
    assert versions(b, Prefix="k") == [
        ("k", "null", True, False),
        ("k", v3, False, False),
        ("k", v1, False, False),
    ], versions(b, Prefix="k")
    assert get(b, "k") == (body("null-3"), "null")
    # Deleting the null version by id: the newest remaining version is the latest.
    s3.delete_object(Bucket=b, Key="k", VersionId="null")
    assert get(b, "k") == (body("v3"), v3)
    assert versions(b, Prefix="k") == [("k", v3, True, False), ("k", v1, False, False)]
    # Back to Enabled and never back to unversioned.
    set_versioning(b, "Enabled")
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    # A never-versioned bucket may be Suspended directly.
    b2 = new_bucket("Suspended")
    assert s3.put_object(Bucket=b2, Key="x", Body=b"1")["VersionId"] == "null"


def listing_and_paging():
    b = new_bucket("Enabled")
    expected = []
    for key, n in [("a", 3), ("b/1", 2), ("b/2", 1), ("c", 7), ("d/x/y", 2)]:
        ids = [s3.put_object(Bucket=b, Key=key, Body=f"{key}{i}".encode())["VersionId"] for i in range(n)]
        expected += [(key, v, i == n - 1, False) for i, v in reversed(list(enumerate(ids)))]
    dm = s3.delete_object(Bucket=b, Key="a")["VersionId"]
    expected = [("a", dm, True, True)] + [(k, v, False, m) if k == "a" else (k, v, l, m) for k, v, l, m in expected]
    everything = versions(b)
    assert by_key_newest_first(everything) == by_key_newest_first(expected), (everything, expected)
    for page in (1, 2, 3, 5):
        got = versions(b, MaxKeys=page)
        assert by_key_newest_first(got) == by_key_newest_first(expected), (page, got)
        assert len(got) == len(expected), page
    # Paging by hand: the markers point into the middle of one key's versions.
    r = s3.list_object_versions(Bucket=b, Prefix="c", MaxKeys=3)
    assert r["IsTruncated"] and r["NextKeyMarker"] == "c", r
    assert [v["IsLatest"] for v in r["Versions"]] == [True, False, False]
    r2 = s3.list_object_versions(Bucket=b, Prefix="c", KeyMarker="c", VersionIdMarker=r["NextVersionIdMarker"])
    assert len(r2["Versions"]) == 4 and not any(v["IsLatest"] for v in r2["Versions"]), r2
    assert not r2["IsTruncated"]
    # key-marker alone starts after every version of that key.
    r = s3.list_object_versions(Bucket=b, KeyMarker="b/2")
    assert sorted({v["Key"] for v in r["Versions"]}) == ["c", "d/x/y"], r
    # Delimiter and prefix roll keys up into common prefixes.
    r = s3.list_object_versions(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/", "d/"], r
    assert sorted({v["Key"] for v in r["Versions"]}) == ["a", "c"]
    r = s3.list_object_versions(Bucket=b, Delimiter="/", KeyMarker="a", MaxKeys=1)
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/"] and "Versions" not in r, r
    assert r["IsTruncated"] and r["NextKeyMarker"] == "b/" and "NextVersionIdMarker" not in r, r
    r = s3.list_object_versions(Bucket=b, Delimiter="/", KeyMarker="b/")
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["d/"], r
    assert {v["Key"] for v in r["Versions"]} == {"c"} and len(r["Versions"]) == 7, r
    assert err(s3.list_object_versions, Bucket=b, VersionIdMarker="null")[:2] == ("InvalidArgument", 400)
    assert err(s3.list_object_versions, Bucket=b, KeyMarker="a", VersionIdMarker="zz")[:2] == ("InvalidArgument", 400)
    # ListObjects shows the latest versions only, without the deleted key,
    # paging the same way (c has 7 versions to seek past).
    assert keys(b) == ["b/1", "b/2", "c", "d/x/y"]
    got, token = [], {}
    while True:
        r = s3.list_objects_v2(Bucket=b, MaxKeys=1, **token)
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = {"ContinuationToken": r["NextContinuationToken"]}
    assert got == ["b/1", "b/2", "c", "d/x/y"], got
    assert [p["Prefix"] for p in s3.list_objects(Bucket=b, Delimiter="/")["CommonPrefixes"]] == ["b/", "d/"]
    c = [o for o in s3.list_objects_v2(Bucket=b, Prefix="c")["Contents"]]
    assert c[0]["Size"] == len(b"c6"), c


def delete_objects_with_versions():
    b = new_bucket("Enabled")
    v1 = s3.put_object(Bucket=b, Key="a", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="a", Body=b"2")["VersionId"]
    s3.put_object(Bucket=b, Key="b", Body=b"b")
    r = s3.delete_objects(
        Bucket=b,
        Delete={"Objects": [{"Key": "a", "VersionId": v1}, {"Key": "b"}, {"Key": "c", "VersionId": "bad"}]},
    )
    done = {d["Key"]: d for d in r["Deleted"]}
    assert done["a"]["VersionId"] == v1 and "DeleteMarker" not in done["a"], done
    assert done["b"]["DeleteMarker"] is True and done["b"]["DeleteMarkerVersionId"], done
    assert [(e["Key"], e["Code"]) for e in r["Errors"]] == [("c", "InvalidArgument")], r
    marker = done["b"]["DeleteMarkerVersionId"]
    r = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "b", "VersionId": marker}, {"Key": "a", "VersionId": v2}]})
    done = {d["Key"]: d for d in r["Deleted"]}
    assert done["b"]["DeleteMarker"] is True and done["b"]["DeleteMarkerVersionId"] == marker, done
    assert keys(b) == ["b"]
    assert [v[0] for v in versions(b)] == ["b"]


def usage_counts_every_version():
    b = new_bucket("Enabled")
    for i in range(3):
        s3.put_object(Bucket=b, Key="k", Body=b"x" * 1000)
    s3.delete_object(Bucket=b, Key="k")  # a marker adds nothing

    def usage():
        rep = admin("usage", "--tenant", "")
        for row in rep["buckets"]:
            if row["name"] == b:
                return row["bytes"], row["objects"]
        return None

    deadline = time.time() + 30
    while usage() != (3000, 3) and time.time() < deadline:
        time.sleep(0.5)
    assert usage() == (3000, 3), usage()
    vs = [v for v in versions(b) if not v[3]]
    s3.delete_object(Bucket=b, Key="k", VersionId=vs[0][1])
    set_versioning(b, "Suspended")
    s3.put_object(Bucket=b, Key="k", Body=b"y" * 10)  # a null version on top
    s3.put_object(Bucket=b, Key="k", Body=b"z" * 20)  # replaces it
    deadline = time.time() + 30
    while usage() != (2020, 3) and time.time() < deadline:
        time.sleep(0.5)
    assert usage() == (2020, 3), usage()


def two_gateways_write_one_key():
    b = new_bucket("Enabled")
    clients = [s3, s3b]
    written, errors = [], []
    lock = threading.Lock()

    def writer(g):
        c = client(AK, SK, GATEWAYS[g])
        for i in range(15):
            data = f"gw{g}-{i}".encode()
            try:
                vid = c.put_object(Bucket=b, Key="hot", Body=data)["VersionId"]
                with lock:
                    written.append((vid, data))
            except ClientError as e:
                with lock:
                    errors.append(e)

    threads = [threading.Thread(target=writer, args=(g,)) for g in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ids = [v for v, _ in written]
    assert len(ids) == 60 and len(set(ids)) == 60, "version ids are unique across gateways"
    listed = versions(b)
    assert sorted(v[1] for v in listed) == sorted(ids), "every acknowledged version is listed"
    assert [v[1] for v in listed] == sorted(ids, reverse=True), "listed newest (largest id) first"
    latest = max(ids)
    want = dict(written)[latest]
    for c in clients:
        assert get(b, "hot") == (want, latest), "both gateways agree on the latest"
    # A write after all of them is the latest, from either gateway.
    last = s3b.put_object(Bucket=b, Key="hot", Body=b"last")["VersionId"]
    assert last > latest
    assert get(b, "hot") == (b"last", last)
    # Suspended: null writes from both gateways serialize on the null slot.
    set_versioning(b, "Suspended")
    errs = []

    def null_writer(c, tag):
        for i in range(8):
            try:
                c.put_object(Bucket=b, Key="hot", Body=f"{tag}{i}".encode())
            except ClientError as e:
                errs.append(e)

    ts = [threading.Thread(target=null_writer, args=(c, t)) for c, t in ((s3, "a"), (s3b, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    slow = [e for e in errs if e.response["Error"]["Code"] != "SlowDown"]
    assert not slow, slow
    nulls = [v for v in versions(b) if v[1] == "null"]
    assert nulls == [("hot", "null", True, False)], nulls
    assert len(versions(b)) == 62


def old_bodies_survive_orphan_gc(state):
    """Versions written earlier in this run are read back after the data
    nodes' orphan GC (--orphan-after-secs) has had time to run."""
    b, want = state
    for vid, data in want.items():
        assert get(b, "big", VersionId=vid)[0] == data, vid


def aws_cli():
    b = new_bucket()

    def aws(*args):
        p = subprocess.run(
            ["aws", "--endpoint-url", GATEWAYS[1], "s3api", *args, "--bucket", b, "--output", "json"],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else {}

    aws("put-bucket-versioning", "--versioning-configuration", "Status=Enabled")
    assert aws("get-bucket-versioning")["Status"] == "Enabled"
    path = os.path.join(os.environ["KURA_DIR"], "cli-body")
    with open(path, "wb") as f:
        f.write(b"cli body")
    v = aws("put-object", "--key", "f", "--body", path)["VersionId"]
    aws("put-object", "--key", "f", "--body", path)
    r = aws("list-object-versions")
    assert len(r["Versions"]) == 2 and r["Versions"][1]["VersionId"] == v, r
    d = aws("delete-object", "--key", "f", "--version-id", v)
    assert d["VersionId"] == v, d
    assert len(aws("list-object-versions")["Versions"]) == 1


def main():
    # Bodies for the orphan-GC check, written first so they are oldest.
    gb = new_bucket("Enabled")
    want = {}
    for i in range(3):
        data = body(f"big{i}")
        want[s3.put_object(Bucket=gb, Key="big", Body=data)["VersionId"]] = data
    started = time.time()

    check("a never-versioned bucket has only null versions", never_versioned)
    check("bad versioning configurations are refused", configuration_errors)
    check("Enabled: versions, the null version, delete markers", enabled_versions_and_markers)
    check("copy from a version, multipart versions", copy_and_multipart)
    check("Enabled -> Suspended -> Enabled -> Suspended", suspended_and_back)
    check("ListObjectVersions paging, ListObjects on versions", listing_and_paging)
    check("DeleteObjects with versions", delete_objects_with_versions)
    check("usage counts every stored version", usage_counts_every_version)
    check("two gateways write versions of one key at once", two_gateways_write_one_key)
    check("aws CLI s3api versioning", aws_cli)
    # The cluster runs with --orphan-after-secs 8 and a 2 s repair pass.
    time.sleep(max(0, 25 - (time.time() - started)))
    check("old versions' bodies survive orphan GC", lambda: old_bodies_survive_orphan_gc((gb, want)))
    print("all versioning checks passed")


main()
