"""Bucket lifecycle end to end (tests/lifecycle.rs), with boto3 and the aws CLI.

Run against `kura dev --gateways 2 --lifecycle-day-secs 2
--lifecycle-interval-secs 1 --lifecycle-ops-per-sec 10`: a "day" is 2 s.
LIFECYCLE_PHASE selects what runs:
- main: the three operations and their refusals; expiration by days and by
  date; prefix, tag and size filters; disabled rules; a versioned bucket
  (delete markers appear, noncurrent versions expire keeping the newest N,
  expired delete markers go); a suspended bucket; incomplete uploads
  aborted; a GET streaming a large object while it expires returns the
  right bytes or fails, never wrong bytes; and, from the metrics of both
  gateways, exactly one action per thing expired (no gateway double-acts).
- resume-setup / resume-check: many objects expiring in one slow pass,
  which tests/lifecycle.rs interrupts by killing the gateway running it.
"""
import json
import os
import subprocess
import threading
import time
import urllib.request
import uuid

from botocore.exceptions import ClientError

from kura_kit import CLUSTER, check, client, expect_error

AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
PHASE = os.environ.get("LIFECYCLE_PHASE", "main")
COMPONENTS = json.load(open(CLUSTER))["components"]
GATEWAYS = [c for c in COMPONENTS if c["role"] == "gateway"]
assert len(GATEWAYS) == 2, GATEWAYS
s3 = client(AK, SK, GATEWAYS[0]["s3"], read_timeout=120)
BIG = 100 * 1024  # above the inline threshold: the body is on data nodes
METRICS = [
    "kura_lifecycle_objects_expired_total",
    "kura_lifecycle_versions_expired_total",
    "kura_lifecycle_delete_markers_removed_total",
    "kura_lifecycle_uploads_aborted_total",
]


def metric_sum(name):
    """The sum of an unlabelled sample over both gateways' /metrics."""
    total = 0.0
    for g in GATEWAYS:
        with urllib.request.urlopen(f"http://{g['status']}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    total += float(line.split()[1])
    return total


def new_bucket(prefix="lc"):
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def exists(bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


def wait_for(what, cond, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def rule(rid, flt, status="Enabled", **actions):
    r = {"ID": rid, "Status": status, "Filter": flt}
    r.update(actions)
    return r


def put_rules(bucket, rules):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


def versions(bucket, key):
    r = s3.list_object_versions(Bucket=bucket, Prefix=key)
    vs = [(v["VersionId"], False, v["IsLatest"]) for v in r.get("Versions", []) if v["Key"] == key]
    ms = [(m["VersionId"], True, m["IsLatest"]) for m in r.get("DeleteMarkers", []) if m["Key"] == key]
    return vs, ms


def api_checks():
    b = new_bucket()
    expect_error("NoSuchLifecycleConfiguration", s3.get_bucket_lifecycle_configuration, Bucket=b, status=404)
    rules = [
        rule("one", {"Prefix": "logs/"}, Expiration={"Days": 3}),
        rule("two", {"And": {"Prefix": "a/", "Tags": [{"Key": "k", "Value": "v"}],
                             "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 1000}},
             status="Disabled", NoncurrentVersionExpiration={"NoncurrentDays": 4, "NewerNoncurrentVersions": 2}),
        rule("three", {"Tag": {"Key": "t", "Value": "x"}}, Expiration={"Date": "2030-01-01T00:00:00Z"}),
        rule("four", {"Prefix": "up/"}, AbortIncompleteMultipartUpload={"DaysAfterInitiation": 7},
             Expiration={"ExpiredObjectDeleteMarker": True}),
    ]
    put_rules(b, rules)
    got = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert [r["ID"] for r in got] == ["one", "two", "three", "four"], got
    assert got[0]["Filter"] == {"Prefix": "logs/"} and got[0]["Expiration"] == {"Days": 3}, got[0]
    assert got[1]["Status"] == "Disabled", got[1]
    assert got[1]["Filter"]["And"]["Tags"] == [{"Key": "k", "Value": "v"}], got[1]
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 4, "NewerNoncurrentVersions": 2}, got[1]
    assert got[2]["Expiration"]["Date"].year == 2030, got[2]
    assert got[3]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}, got[3]
    # The aws CLI reads back the same rules.
    out = subprocess.run(["aws", "--endpoint-url", GATEWAYS[1]["s3"], "s3api",
                          "get-bucket-lifecycle-configuration", "--bucket", b],
                         capture_output=True, text=True, check=True).stdout
    assert [r["ID"] for r in json.loads(out)["Rules"]] == ["one", "two", "three", "four"], out
    # Refusals, as AWS.
    bad = [
        ("InvalidArgument", 400, [rule("x", {"Prefix": ""}, Expiration={"Days": 1}),
                                  rule("x", {"Prefix": "b"}, Expiration={"Days": 1})]),
        ("InvalidArgument", 400, [rule("x", {"Prefix": ""}, Expiration={"Days": 0})]),
        ("InvalidArgument", 400, [rule("x", {"Prefix": ""}, Expiration={"Date": "2030-01-01T10:00:00Z"})]),
        ("InvalidRequest", 400, [rule("x", {"Prefix": ""})]),
        ("InvalidRequest", 400, [rule("x", {"Tag": {"Key": "k", "Value": "v"}},
                                      AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1})]),
        # AWS: an upload has no size yet ("... cannot be specified with Object Size.").
        ("InvalidRequest", 400, [rule("x", {"ObjectSizeGreaterThan": 10},
                                      AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1})]),
        ("InvalidRequest", 400, [rule("x", {"And": {"Prefix": "a/", "ObjectSizeLessThan": 10}},
                                      AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1})]),
        ("InvalidArgument", 400, [rule("x", {"Prefix": ""}, NoncurrentVersionExpiration={
            "NoncurrentDays": 1, "NewerNoncurrentVersions": 101})]),
        ("NotImplemented", 501, [rule("x", {"Prefix": ""}, Transitions=[{"Days": 30, "StorageClass": "GLACIER"}])]),
    ]
    for code, status, rs in bad:
        expect_error(code, put_rules, b, rs, status=status)
    too_many = [rule(f"r{i}", {"Prefix": f"p{i}/"}, Expiration={"Days": 1}) for i in range(1001)]
    expect_error("InvalidRequest", put_rules, b, too_many, status=400)
    # A refused configuration changed nothing.
    assert len(s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]) == 4
    r = s3.delete_bucket_lifecycle(Bucket=b)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204, r
    expect_error("NoSuchLifecycleConfiguration", s3.get_bucket_lifecycle_configuration, Bucket=b, status=404)
    expect_error("NoSuchBucket", s3.get_bucket_lifecycle_configuration, Bucket="no-such-" + b, status=404)


def main():
    before = {m: metric_sum(m) for m in METRICS}
    expected = {m: 0 for m in METRICS}
    check("Put/Get/DeleteBucketLifecycleConfiguration and refusals", api_checks)

    # --- never-versioned bucket: days, filters, disabled rules, uploads
    b = new_bucket()
    put_rules(b, [
        rule("days", {"Prefix": "exp/"}, Expiration={"Days": 1}),
        rule("tag", {"Tag": {"Key": "class", "Value": "tmp"}}, Expiration={"Days": 1}),
        rule("size", {"And": {"Prefix": "size/", "ObjectSizeGreaterThan": 1000}}, Expiration={"Days": 1}),
        rule("off", {"Prefix": "off/"}, status="Disabled", Expiration={"Days": 1},
             AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1}),
        rule("mpu", {"Prefix": "mpu/"}, AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1}),
    ])
    s3.put_object(Bucket=b, Key="exp/big", Body=b"x" * BIG)
    s3.put_object(Bucket=b, Key="exp/small", Body=b"tiny")
    s3.put_object(Bucket=b, Key="tag/t1", Body=b"t", Tagging="class=tmp")
    s3.put_object(Bucket=b, Key="tag/t2", Body=b"t", Tagging="class=keep")
    s3.put_object(Bucket=b, Key="size/big", Body=b"s" * 5000)
    s3.put_object(Bucket=b, Key="size/small", Body=b"s" * 10)
    s3.put_object(Bucket=b, Key="off/x", Body=b"o")
    s3.put_object(Bucket=b, Key="keep/y", Body=b"k")
    up = s3.create_multipart_upload(Bucket=b, Key="mpu/u")["UploadId"]
    s3.upload_part(Bucket=b, Key="mpu/u", UploadId=up, PartNumber=1, Body=b"p" * BIG)
    s3.create_multipart_upload(Bucket=b, Key="off/u")
    gone = ["exp/big", "exp/small", "tag/t1", "size/big"]
    expected["kura_lifecycle_objects_expired_total"] += len(gone)
    expected["kura_lifecycle_uploads_aborted_total"] += 1

    def expired_by_days_and_filters():
        wait_for("objects matching enabled rules to expire",
                 lambda: not any(exists(b, k) for k in gone))
        # Several more passes ran (interval 1 s): the rest stays.
        time.sleep(4)
        for k in ["tag/t2", "size/small", "off/x", "keep/y"]:
            assert exists(b, k), k
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])]
        assert sorted(keys) == ["keep/y", "off/x", "size/small", "tag/t2"], keys
    check("expiration by days with prefix, tag and size filters; disabled rules do nothing",
          expired_by_days_and_filters)

    def uploads_aborted():
        wait_for("the upload under mpu/ to be aborted",
                 lambda: [u["Key"] for u in s3.list_multipart_uploads(Bucket=b).get("Uploads", [])] == ["off/u"])
        expect_error("NoSuchUpload", s3.list_parts, Bucket=b, Key="mpu/u", UploadId=up, status=404)
    check("incomplete multipart uploads aborted (only where an enabled rule says)", uploads_aborted)

    # --- expiration by date
    d = new_bucket()
    put_rules(d, [
        rule("past", {"Prefix": "old/"}, Expiration={"Date": "2020-01-01T00:00:00Z"}),
        rule("future", {"Prefix": "new/"}, Expiration={"Date": "2100-01-01T00:00:00Z"}),
    ])
    s3.put_object(Bucket=d, Key="old/a", Body=b"a")
    s3.put_object(Bucket=d, Key="new/a", Body=b"a")
    expected["kura_lifecycle_objects_expired_total"] += 1

    def by_date():
        wait_for("old/a to expire (date in the past)", lambda: not exists(d, "old/a"))
        time.sleep(3)
        assert exists(d, "new/a")
    check("expiration by date", by_date)

    # --- versioning Enabled
    v = new_bucket()
    s3.put_bucket_versioning(Bucket=v, VersioningConfiguration={"Status": "Enabled"})
    put_rules(v, [
        rule("cur", {"Prefix": "cur/"}, Expiration={"Days": 1},
             NoncurrentVersionExpiration={"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}),
        rule("dm", {"Prefix": "dm/"}, Expiration={"ExpiredObjectDeleteMarker": True},
             NoncurrentVersionExpiration={"NoncurrentDays": 1}),
    ])
    ids = [s3.put_object(Bucket=v, Key="cur/k", Body=f"v{i}".encode() * 30000)["VersionId"] for i in range(3)]
    s3.put_object(Bucket=v, Key="dm/k", Body=b"gone soon")
    s3.delete_object(Bucket=v, Key="dm/k")
    expected["kura_lifecycle_objects_expired_total"] += 1  # cur/k's marker
    expected["kura_lifecycle_versions_expired_total"] += 3  # cur/k v0, v1; dm/k's version
    expected["kura_lifecycle_delete_markers_removed_total"] += 1

    def versioned():
        # The current version gets a delete marker; the noncurrent ones
        # expire except the newest one (NewerNoncurrentVersions 1).
        def settled():
            vs, ms = versions(v, "cur/k")
            return len(ms) == 1 and ms[0][2] and [x[0] for x in vs] == [ids[2]]
        wait_for("cur/k: a delete marker on top of the last version only", settled)
        expect_error("NoSuchKey", s3.get_object, Bucket=v, Key="cur/k", status=404)
        assert s3.get_object(Bucket=v, Key="cur/k", VersionId=ids[2])["Body"].read() == b"v2" * 30000
        # dm/k: its version expires, then the marker left alone goes.
        wait_for("dm/k to have no version and no marker", lambda: versions(v, "dm/k") == ([], []))
        time.sleep(3)
        vs, ms = versions(v, "cur/k")
        assert len(ms) == 1 and [x[0] for x in vs] == [ids[2]], (vs, ms)
    check("versioned bucket: delete markers, noncurrent expiry keeping the newest, expired markers", versioned)

    # --- versioning Enabled, rules on current versions only: the pass reads
    # one record per key (first_per_object); the marker is a new version
    # from the clock, not "the expired version + 1".
    f = new_bucket()
    s3.put_bucket_versioning(Bucket=f, VersioningConfiguration={"Status": "Enabled"})
    put_rules(f, [
        rule("cur", {"Prefix": "many/"}, Expiration={"Days": 1}),
        rule("dm", {"Prefix": "dm/"}, Expiration={"ExpiredObjectDeleteMarker": True}),
    ])
    many = [s3.put_object(Bucket=f, Key="many/k", Body=f"m{i}".encode())["VersionId"] for i in range(5)]
    s3.put_object(Bucket=f, Key="dm/kept", Body=b"stays")
    s3.delete_object(Bucket=f, Key="dm/kept")  # a marker over a version: not alone
    s3.delete_object(Bucket=f, Key="dm/alone")  # a marker and nothing else
    expected["kura_lifecycle_objects_expired_total"] += 1
    expected["kura_lifecycle_delete_markers_removed_total"] += 1

    def current_only():
        def marked():
            vs, ms = versions(f, "many/k")
            return len(ms) == 1 and ms[0][2]
        wait_for("many/k: a delete marker on top", marked)
        vs, ms = versions(f, "many/k")
        assert sorted(x[0] for x in vs) == sorted(many), vs  # no noncurrent rule: all kept
        # The marker's number comes from the clock at expiry (a "day" is
        # 2 s after the last PUT at the earliest), above every version.
        marker_ms, last_ms = int(ms[0][0], 16) >> 16, int(many[-1], 16) >> 16
        assert marker_ms - last_ms >= 1500, (ms[0][0], many[-1])
        assert ms[0][0] > max(many), (ms, many)
        wait_for("dm/alone: the lone marker removed", lambda: versions(f, "dm/alone") == ([], []))
        time.sleep(3)
        vs, ms = versions(f, "dm/kept")
        assert len(vs) == 1 and len(ms) == 1 and ms[0][2], (vs, ms)
        vs, ms = versions(f, "many/k")
        assert len(ms) == 1 and len(vs) == 5, (vs, ms)  # expired once, not again
    check("current-version rules on a versioned bucket: one record read per key, clock-based markers",
          current_only)

    # --- versioning Suspended: a null delete marker replaces the null version
    s = new_bucket()
    s3.put_bucket_versioning(Bucket=s, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_versioning(Bucket=s, VersioningConfiguration={"Status": "Suspended"})
    put_rules(s, [rule("all", {}, Expiration={"Days": 1})])
    s3.put_object(Bucket=s, Key="k", Body=b"n" * BIG)
    expected["kura_lifecycle_objects_expired_total"] += 1

    def suspended():
        wait_for("a null delete marker", lambda: versions(s, "k") == ([], [("null", True, True)]))
    check("suspended bucket: the null version becomes a null delete marker", suspended)

    # --- a GET streaming a large object while it expires
    g = new_bucket()
    size = 48 << 20

    def pattern(n):
        block = bytes(range(251)) * 4177  # 1,048,427 bytes, not a power of two
        return (block * (n // len(block) + 1))[:n]
    data = pattern(size)
    s3.put_object(Bucket=g, Key="stream/big", Body=data)
    put_rules(g, [rule("s", {"Prefix": "stream/"}, Expiration={"Days": 1})])
    expected["kura_lifecycle_objects_expired_total"] += 1

    def streaming():
        got, error = 0, None
        gone_at = []

        def watch():
            other = client(AK, SK, GATEWAYS[1]["s3"])
            while True:
                try:
                    other.head_object(Bucket=g, Key="stream/big")
                except ClientError:
                    gone_at.append(time.time())
                    return
                time.sleep(0.2)
        watcher = threading.Thread(target=watch, daemon=True)
        resp = s3.get_object(Bucket=g, Key="stream/big")
        watcher.start()
        stream = resp["Body"]
        try:
            while True:
                chunk = stream.read(256 * 1024)
                if not chunk:
                    break
                assert chunk == data[got:got + len(chunk)], f"wrong bytes at offset {got}"
                got += len(chunk)
                time.sleep(0.06)
        except AssertionError:
            raise
        except Exception as e:  # a clean failure: the connection ends early
            error = e
        ended = time.time()
        assert error is not None or got == size, (got, size)
        watcher.join(60)
        assert gone_at and gone_at[0] < ended, "the object did not expire while it streamed"
        print(f"     expired {ended - gone_at[0]:.1f} s before the stream ended; streamed {got} of {size} "
              f"bytes, {'then ' + type(error).__name__ if error else 'complete and correct'}")
    check("a GET streaming an object that expires returns the right bytes or fails", streaming)

    def no_double_actions():
        time.sleep(3)
        got = {m: metric_sum(m) - before[m] for m in METRICS}
        assert got == expected, f"metrics over both gateways {got} != actions expected {expected}"
    check("both gateways together acted exactly once per expiry (metrics)", no_double_actions)
    print("all lifecycle checks passed")


RESUME_OBJECTS = 120


def resume_setup():
    b = new_bucket("resume")
    for i in range(RESUME_OBJECTS):
        s3.put_object(Bucket=b, Key=f"r/{i:04d}", Body=b"r")
    put_rules(b, [rule("r", {"Prefix": "r/"}, Expiration={"Days": 1})])
    print(f"BUCKET {b}")


def resume_check():
    b = os.environ["LIFECYCLE_BUCKET"]
    wait_for("every object of the interrupted pass to expire",
             lambda: s3.list_objects_v2(Bucket=b).get("KeyCount", 0) == 0, secs=120)
    print("resume check passed")


{"main": main, "resume-setup": resume_setup, "resume-check": resume_check}[PHASE]()
