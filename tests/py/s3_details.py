"""The remaining S3 details of issue 16 (tests/s3_details.rs), with boto3 and
the aws CLI, against `kura dev --gateways 2` (decision 0033).

S3D_PHASE=main: DeleteBucket with incomplete uploads (aborted) and with
versions (BucketNotEmpty), `aws s3 rb --force`, GetObjectAttributes,
conditional DeleteObject / DeleteObjects (If-Match), multipart checksums
(COMPOSITE and FULL_OBJECT, per-part verification, GET/HEAD checksum mode),
multiple byte ranges and `x-amz-write-offset-bytes`.

S3D_PHASE=race-setup / race: PUTs, DELETEs and multipart uploads from both
gateways racing DeleteBucket from both gateways; tests/s3_details.rs then
checks that no metadata record and no fragment is left under the bucket id.
"""
import base64
import hashlib
import json
import os
import random
import subprocess
import threading
import time
import uuid
import zlib

from botocore.exceptions import ClientError

from kura_kit import CLUSTER, check, client

AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
PHASE = os.environ.get("S3D_PHASE", "main")
GATEWAYS = [c["s3"] for c in json.load(open(CLUSTER))["components"] if c["role"] == "gateway"]
assert len(GATEWAYS) == 2, GATEWAYS
s3 = client(AK, SK, GATEWAYS[0])
s3b = client(AK, SK, GATEWAYS[1])
BIG = 64 * 1024  # above the inline threshold: bodies live on data nodes
MIB5 = 5 * 1024 * 1024


def new_bucket(versioning=None, prefix="d"):
    name = f"{prefix}-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    if versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
    return name


def err(fn, *a, **kw):
    """The ClientError a call must raise: (code, status)."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__} {kw} succeeded")


def aws(*args, endpoint=GATEWAYS[1]):
    return subprocess.run(["aws", "--endpoint-url", endpoint, *args], capture_output=True, text=True)


def b64(raw):
    return base64.b64encode(raw).decode()


def crc32(data):
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def sha256(data):
    return b64(hashlib.sha256(data).digest())


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC32C in pure Python (no awscrt here); slow, so used on small bodies."""
    c = 0xFFFFFFFF
    t = CRC32C_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return b64((c ^ 0xFFFFFFFF).to_bytes(4, "big"))


def etag_of(r):
    return r["ETag"].strip('"')


# --- DeleteBucket


def delete_bucket_aborts_uploads():
    b = new_bucket()
    up = s3.create_multipart_upload(Bucket=b, Key="u/1")["UploadId"]
    s3.upload_part(Bucket=b, Key="u/1", UploadId=up, PartNumber=1, Body=b"p" * BIG)
    s3b.create_multipart_upload(Bucket=b, Key="u/2")
    assert len(s3.list_multipart_uploads(Bucket=b)["Uploads"]) == 2
    # Only incomplete uploads: deleted (AWS aborts them), from the other gateway.
    s3b.delete_bucket(Bucket=b)
    assert err(s3.head_bucket, Bucket=b)[1] == 404
    assert err(s3.list_multipart_uploads, Bucket=b)[0] == "NoSuchBucket"
    # The name is free again at once, and the new bucket is empty.
    s3.create_bucket(Bucket=b)
    assert s3.list_multipart_uploads(Bucket=b).get("Uploads", []) == []
    s3.delete_bucket(Bucket=b)


def delete_bucket_refuses_versions():
    b = new_bucket("Enabled")
    s3.put_object(Bucket=b, Key="k", Body=b"1" * BIG)
    s3.put_object(Bucket=b, Key="k", Body=b"2" * BIG)
    s3.delete_object(Bucket=b, Key="k")  # a delete marker on top
    assert err(s3.delete_bucket, Bucket=b) == ("BucketNotEmpty", 409)
    vs = s3.list_object_versions(Bucket=b)
    for v in vs.get("Versions", []):
        s3.delete_object(Bucket=b, Key=v["Key"], VersionId=v["VersionId"])
    # Only the delete marker is left: still not empty, as S3.
    assert err(s3b.delete_bucket, Bucket=b) == ("BucketNotEmpty", 409)
    # The refused deletes left the bucket fully usable.
    s3.put_object(Bucket=b, Key="after", Body=b"x")
    assert s3.get_object(Bucket=b, Key="after")["Body"].read() == b"x"


def aws_rb_force():
    # Unversioned: objects and an incomplete upload; rm --recursive + DeleteBucket.
    b = new_bucket()
    for i in range(5):
        s3.put_object(Bucket=b, Key=f"o/{i}", Body=b"z" * BIG)
    s3.create_multipart_upload(Bucket=b, Key="o/unfinished")
    p = aws("s3", "rb", "--force", f"s3://{b}")
    assert p.returncode == 0, p.stderr + p.stdout
    assert err(s3.head_bucket, Bucket=b)[1] == 404

    # Versioned: aws CLI's rb --force removes only the latest objects (it
    # lists with ListObjectsV2 and adds delete markers), so DeleteBucket
    # answers BucketNotEmpty and the bucket stays, exactly as on AWS.
    v = new_bucket("Enabled")
    for i in range(3):
        s3.put_object(Bucket=v, Key=f"k{i}", Body=b"a" * BIG)
        s3.put_object(Bucket=v, Key=f"k{i}", Body=b"b" * BIG)
    p = aws("s3", "rb", "--force", f"s3://{v}")
    assert p.returncode != 0 and "BucketNotEmpty" in p.stderr + p.stdout, p.stderr + p.stdout
    s3.head_bucket(Bucket=v)
    # What SDK cleanups do: every version and marker by id, then rb.
    vs = s3.list_object_versions(Bucket=v)
    items = [{"Key": x["Key"], "VersionId": x["VersionId"]} for x in vs.get("Versions", []) + vs.get("DeleteMarkers", [])]
    assert len(items) == 9, items  # 6 versions + 3 markers from rm --recursive
    out = s3.delete_objects(Bucket=v, Delete={"Objects": items, "Quiet": True})
    assert not out.get("Errors"), out
    p = aws("s3", "rb", f"s3://{v}")
    assert p.returncode == 0, p.stderr + p.stdout
    assert err(s3.head_bucket, Bucket=v)[1] == 404


# --- GetObjectAttributes


def attributes_single_and_versions():
    b = new_bucket("Enabled")
    data = os.urandom(BIG)
    r1 = s3.put_object(Bucket=b, Key="k", Body=data, ChecksumAlgorithm="SHA256")
    assert r1["ChecksumSHA256"] == sha256(data)
    r2 = s3.put_object(Bucket=b, Key="k", Body=b"second")
    a = s3.get_object_attributes(
        Bucket=b, Key="k", VersionId=r1["VersionId"],
        ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"])
    assert a["VersionId"] == r1["VersionId"], a
    assert a["ETag"].strip('"') == etag_of(r1), a
    assert a["ObjectSize"] == BIG and a["StorageClass"] == "STANDARD", a
    assert a["Checksum"] == {"ChecksumSHA256": sha256(data), "ChecksumType": "FULL_OBJECT"}, a
    assert "ObjectParts" not in a, a  # a single PUT has no parts
    assert "LastModified" in a
    # The latest, only what was asked for.
    a = s3b.get_object_attributes(Bucket=b, Key="k", ObjectAttributes=["ObjectSize"])
    assert a["ObjectSize"] == 6 and a["VersionId"] == r2["VersionId"] and "ETag" not in a, a
    # Refusals.
    assert err(s3.get_object_attributes, Bucket=b, Key="k", ObjectAttributes=["Size"]) == ("InvalidArgument", 400)
    assert err(s3.get_object_attributes, Bucket=b, Key="nope", ObjectAttributes=["ETag"]) == ("NoSuchKey", 404)
    assert err(s3.get_object_attributes, Bucket=b, Key="k", VersionId="0123456789abcdef",
               ObjectAttributes=["ETag"]) == ("NoSuchVersion", 404)
    code, status = err(s3.get_object_attributes, Bucket=b, Key="k", ObjectAttributes=[])
    assert status == 400, (code, status)
    s3.delete_object(Bucket=b, Key="k")  # latest is a delete marker now
    assert err(s3.get_object_attributes, Bucket=b, Key="k", ObjectAttributes=["ETag"]) == ("NoSuchKey", 404)


def attributes_multipart_parts_paging():
    b = new_bucket()
    parts = [os.urandom(MIB5), os.urandom(MIB5), os.urandom(1000)]
    up = s3.create_multipart_upload(Bucket=b, Key="mp", ChecksumAlgorithm="SHA256")["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=i, Body=p, ChecksumAlgorithm="SHA256")
        assert r["ChecksumSHA256"] == sha256(p)
        done.append({"PartNumber": i, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={"Parts": done})
    a = s3.get_object_attributes(Bucket=b, Key="mp", ObjectAttributes=["ObjectParts", "Checksum", "ETag"], MaxParts=2)
    op = a["ObjectParts"]
    assert op["TotalPartsCount"] == 3 and op["IsTruncated"] and op["NextPartNumberMarker"] == 2, op
    assert [(p["PartNumber"], p["Size"], p["ChecksumSHA256"]) for p in op["Parts"]] == [
        (1, MIB5, sha256(parts[0])), (2, MIB5, sha256(parts[1]))], op
    a2 = s3b.get_object_attributes(Bucket=b, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=2, PartNumberMarker=2)
    op = a2["ObjectParts"]
    assert not op["IsTruncated"] and [p["PartNumber"] for p in op["Parts"]] == [3], op
    raw = b"".join(hashlib.sha256(p).digest() for p in parts)
    assert a["Checksum"] == {"ChecksumSHA256": b64(hashlib.sha256(raw).digest()) + "-3", "ChecksumType": "COMPOSITE"}, a
    assert a["ETag"].strip('"').endswith("-3"), a


# --- conditional DeleteObject


def conditional_delete_unversioned():
    b = new_bucket()
    r = s3.put_object(Bucket=b, Key="k", Body=b"v1" * BIG)
    assert err(s3.delete_object, Bucket=b, Key="k", IfMatch='"0123456789abcdef0123456789abcdef"') == ("PreconditionFailed", 412)
    assert s3.head_object(Bucket=b, Key="k")["ETag"] == r["ETag"]  # untouched
    s3b.delete_object(Bucket=b, Key="k", IfMatch=r["ETag"])
    assert err(s3.head_object, Bucket=b, Key="k")[1] == 404
    # Absent with If-Match: 404, as AWS (a plain DELETE of it is 204).
    assert err(s3.delete_object, Bucket=b, Key="k", IfMatch=r["ETag"]) == ("NoSuchKey", 404)
    assert err(s3.delete_object, Bucket=b, Key="k", IfMatch="*") == ("NoSuchKey", 404)
    s3.delete_object(Bucket=b, Key="k")
    s3.put_object(Bucket=b, Key="k", Body=b"x")
    s3.delete_object(Bucket=b, Key="k", IfMatch="*")
    assert err(s3.head_object, Bucket=b, Key="k")[1] == 404


def conditional_delete_versioned():
    b = new_bucket("Enabled")
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"one")
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"two")
    # The latest is v2: v1's ETag does not match it.
    assert err(s3.delete_object, Bucket=b, Key="k", IfMatch=v1["ETag"]) == ("PreconditionFailed", 412)
    d = s3.delete_object(Bucket=b, Key="k", IfMatch=v2["ETag"])
    assert d["DeleteMarker"] is True
    # The latest is a delete marker now: no object to match.
    assert err(s3.delete_object, Bucket=b, Key="k", IfMatch=v2["ETag"]) == ("NoSuchKey", 404)
    # By version id: evaluated against that version.
    assert err(s3.delete_object, Bucket=b, Key="k", VersionId=v1["VersionId"], IfMatch=v2["ETag"]) == ("PreconditionFailed", 412)
    s3.delete_object(Bucket=b, Key="k", VersionId=v1["VersionId"], IfMatch=v1["ETag"])
    left = [v["VersionId"] for v in s3.list_object_versions(Bucket=b).get("Versions", [])]
    assert left == [v2["VersionId"]], left
    # DeleteObjects: per-key ETag conditions.
    a = s3.put_object(Bucket=b, Key="a", Body=b"a")
    s3.put_object(Bucket=b, Key="c", Body=b"c")
    out = s3.delete_objects(Bucket=b, Delete={"Objects": [
        {"Key": "a", "ETag": a["ETag"]},
        {"Key": "c", "ETag": '"ffffffffffffffffffffffffffffffff"'},
    ]})
    assert [x["Key"] for x in out.get("Deleted", [])] == ["a"], out
    assert [(x["Key"], x["Code"]) for x in out.get("Errors", [])] == [("c", "PreconditionFailed")], out
    # The aws CLI sends it too.
    p = aws("s3api", "delete-object", "--bucket", b, "--key", "c", "--if-match", '"00000000000000000000000000000000"')
    assert p.returncode != 0 and "PreconditionFailed" in p.stderr, p.stderr


# --- multipart checksums


def upload(bucket, key, parts, algo, kind=None, sums=None):
    """Creates an upload with a checksum algorithm, uploads `parts`: (upload id, completed parts)."""
    kw = {"ChecksumAlgorithm": algo}
    if kind:
        kw["ChecksumType"] = kind
    c = s3.create_multipart_upload(Bucket=bucket, Key=key, **kw)
    assert c.get("ChecksumAlgorithm") == algo, c
    if kind:
        assert c.get("ChecksumType") == kind, c
    up = c["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        if sums:  # sent by us (boto3 has no CRC32C without awscrt)
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=p, **{f"Checksum{algo}": sums(p)})
        else:
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=p, ChecksumAlgorithm=algo)
        done.append({"PartNumber": i, "ETag": r["ETag"], f"Checksum{algo}": r[f"Checksum{algo}"]})
    return up, done


def multipart_composite_crc32():
    b = new_bucket()
    parts = [os.urandom(MIB5), os.urandom(300)]
    up, done = upload(b, "c", parts, "CRC32", "COMPOSITE")
    assert [d["ChecksumCRC32"] for d in done] == [crc32(p) for p in parts]
    lp = s3.list_parts(Bucket=b, Key="c", UploadId=up)
    assert [p["ChecksumCRC32"] for p in lp["Parts"]] == [crc32(p) for p in parts], lp
    assert lp.get("ChecksumAlgorithm") == "CRC32", lp
    # A part listed with a checksum that is not the part's: refused.
    bad = [dict(done[0]), dict(done[1])]
    bad[1]["ChecksumCRC32"] = crc32(b"something else")
    assert err(s3.complete_multipart_upload, Bucket=b, Key="c", UploadId=up, MultipartUpload={"Parts": bad})[0] == "InvalidPart"
    r = s3b.complete_multipart_upload(Bucket=b, Key="c", UploadId=up, MultipartUpload={"Parts": done})
    want = b64(zlib.crc32(b"".join(base64.b64decode(crc32(p)) for p in parts)).to_bytes(4, "big")) + "-2"
    assert r["ChecksumCRC32"] == want and r["ChecksumType"] == "COMPOSITE", r
    h = s3.head_object(Bucket=b, Key="c", ChecksumMode="ENABLED")
    assert h["ChecksumCRC32"] == want and h["ChecksumType"] == "COMPOSITE", h
    g = s3.get_object(Bucket=b, Key="c", ChecksumMode="ENABLED")
    assert g["Body"].read() == b"".join(parts)
    assert g["ChecksumCRC32"] == want and g["ChecksumType"] == "COMPOSITE"
    # Not asked for: not sent.
    assert "ChecksumCRC32" not in s3.head_object(Bucket=b, Key="c")
    # A part with another algorithm than the upload's: refused.
    up2 = s3.create_multipart_upload(Bucket=b, Key="c2", ChecksumAlgorithm="CRC32")["UploadId"]
    assert err(s3.upload_part, Bucket=b, Key="c2", UploadId=up2, PartNumber=1, Body=b"x",
               ChecksumAlgorithm="SHA256") == ("InvalidRequest", 400)


def multipart_full_object_crcs():
    b = new_bucket()
    parts = [os.urandom(MIB5), os.urandom(4321)]
    whole = b"".join(parts)
    up, done = upload(b, "f", parts, "CRC32", "FULL_OBJECT")
    # A whole-object value that is not the body's: BadDigest, upload kept.
    assert err(s3.complete_multipart_upload, Bucket=b, Key="f", UploadId=up, MultipartUpload={"Parts": done},
               ChecksumCRC32=crc32(b"not it"), ChecksumType="FULL_OBJECT")[0] == "BadDigest"
    r = s3.complete_multipart_upload(Bucket=b, Key="f", UploadId=up, MultipartUpload={"Parts": done},
                                     ChecksumCRC32=crc32(whole), ChecksumType="FULL_OBJECT")
    assert r["ChecksumCRC32"] == crc32(whole) and r["ChecksumType"] == "FULL_OBJECT", r
    h = s3b.head_object(Bucket=b, Key="f", ChecksumMode="ENABLED")
    assert h["ChecksumCRC32"] == crc32(whole) and h["ChecksumType"] == "FULL_OBJECT", h
    a = s3.get_object_attributes(Bucket=b, Key="f", ObjectAttributes=["Checksum"])
    assert a["Checksum"] == {"ChecksumCRC32": crc32(whole), "ChecksumType": "FULL_OBJECT"}, a
    # CRC32C, sent by us; small last part keeps the pure-Python CRC quick.
    small = [os.urandom(MIB5), os.urandom(777)]
    up, done = upload(b, "f2", small, "CRC32C", "FULL_OBJECT", sums=crc32c)
    r = s3.complete_multipart_upload(Bucket=b, Key="f2", UploadId=up, MultipartUpload={"Parts": done})
    assert r["ChecksumCRC32C"] == crc32c(b"".join(small)) and r["ChecksumType"] == "FULL_OBJECT", r
    # Invalid combinations at CreateMultipartUpload.
    assert err(s3.create_multipart_upload, Bucket=b, Key="x", ChecksumAlgorithm="SHA256",
               ChecksumType="FULL_OBJECT") == ("InvalidRequest", 400)
    assert err(s3.create_multipart_upload, Bucket=b, Key="x", ChecksumAlgorithm="CRC64NVME",
               ChecksumType="COMPOSITE") == ("InvalidRequest", 400)
    # An upload without an algorithm: no object checksum, none returned.
    up = s3.create_multipart_upload(Bucket=b, Key="plain")["UploadId"]
    e = s3.upload_part(Bucket=b, Key="plain", UploadId=up, PartNumber=1, Body=b"q" * 100)["ETag"]
    r = s3.complete_multipart_upload(Bucket=b, Key="plain", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    assert "ChecksumType" not in r, r


# --- ranges, appends


def ranges_and_appends():
    b = new_bucket()
    body = bytes(range(256)) * 40
    s3.put_object(Bucket=b, Key="k", Body=body)
    # Unsigned Range (SigV2 does not sign it): several ranges → the whole object, as AWS.
    v2 = client(AK, SK, GATEWAYS[0], signature_version="s3")
    g = v2.get_object(Bucket=b, Key="k", Range="bytes=0-1,5-6")
    assert g["ResponseMetadata"]["HTTPStatusCode"] == 200 and g["Body"].read() == body and "ContentRange" not in g
    # Signed by SigV4 (boto3 signs `range`): the same answer (decision 0043).
    g = s3.get_object(Bucket=b, Key="k", Range="bytes=0-1,5-6")
    assert g["ResponseMetadata"]["HTTPStatusCode"] == 200 and g["Body"].read() == body and "ContentRange" not in g
    assert err(s3.put_object, Bucket=b, Key="k", Body=b"more", WriteOffsetBytes=len(body)) == ("NotImplemented", 501)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == body  # nothing appended


# --- the DeleteBucket race


def race_setup():
    b = new_bucket(prefix="race")
    probe = f"probe-{uuid.uuid4().hex}"
    s3.put_object(Bucket=b, Key=probe, Body=b"p" * BIG)
    print(f"RACE_BUCKET={b}")
    print(f"RACE_PROBE={probe}")


def race():
    b = os.environ["RACE_BUCKET"]
    s3.delete_object(Bucket=b, Key=os.environ["RACE_PROBE"])
    gone = threading.Event()
    sparse = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"put_ok": 0, "put_refused": 0, "lost": [], "uploads": 0, "parts": 0, "not_empty": 0, "other": []}

    def note(k, v=1):
        with lock:
            stats[k] += v

    def writer(c, wid):
        n = 0
        while not stop.is_set():
            n += 1
            key = f"w{wid}/{n}"
            try:
                c.put_object(Bucket=b, Key=key, Body=os.urandom(BIG))
            except ClientError as e:
                code = e.response["Error"]["Code"]
                if code not in ("NoSuchBucket", "OperationAborted"):
                    with lock:
                        stats["other"].append(("put", code))
                note("put_refused")
                continue
            note("put_ok")
            try:
                c.delete_object(Bucket=b, Key=key)
            except ClientError as e:
                # An acknowledged object whose bucket vanished before its
                # delete: a write the DeleteBucket lost.
                with lock:
                    stats["lost"].append((key, e.response["Error"]["Code"]))
            time.sleep(random.random() * (0.3 if sparse.is_set() else 0.02))

    def uploader(c, wid):
        n = 0
        while not stop.is_set():
            n += 1
            try:
                up = c.create_multipart_upload(Bucket=b, Key=f"u{wid}/{n}")["UploadId"]
                note("uploads")
                c.upload_part(Bucket=b, Key=f"u{wid}/{n}", UploadId=up, PartNumber=1, Body=os.urandom(BIG))
                note("parts")
            except ClientError:
                pass
            time.sleep(random.random() * 0.05)

    def deleter(c):
        deadline = time.time() + 60
        while not gone.is_set() and time.time() < deadline:
            try:
                c.delete_bucket(Bucket=b)
                gone.set()
            except ClientError as e:
                code = e.response["Error"]["Code"]
                if code == "NoSuchBucket":
                    gone.set()
                elif code == "BucketNotEmpty":
                    note("not_empty")
                elif code not in ("OperationAborted", "SlowDown"):
                    with lock:
                        stats["other"].append(("delete", code))
            time.sleep(random.random() * 0.05)

    clients = [client(AK, SK, g) for g in GATEWAYS for _ in range(3)]
    threads = [threading.Thread(target=writer, args=(c, i)) for i, c in enumerate(clients[:5])]
    threads.append(threading.Thread(target=uploader, args=(clients[5], 9)))
    dels = [threading.Thread(target=deleter, args=(client(AK, SK, g),)) for g in GATEWAYS]
    for t in threads:
        t.start()
    # The deletes start once the writers are under way, counted rather than
    # timed: a loaded debug build can take seconds for the first few dozen.
    deadline = time.time() + 60
    while time.time() < deadline:
        with lock:
            if stats["put_ok"] >= 30 and stats["uploads"] >= 3:
                break
        time.sleep(0.05)
    for t in dels:
        t.start()
    # Full contention first; then the writers thin out so the bucket is
    # sometimes empty and a delete can win.
    time.sleep(4.0)
    sparse.set()
    for t in dels:
        t.join()
    time.sleep(1.0)  # writers keep hitting the deleted bucket meanwhile
    stop.set()
    for t in threads:
        t.join()
    print(f"race: {stats['put_ok']} PUTs acknowledged, {stats['put_refused']} refused, "
          f"{stats['uploads']} uploads, {stats['parts']} parts, "
          f"{stats['not_empty']} DeleteBucket answered BucketNotEmpty")
    assert gone.is_set(), "DeleteBucket never succeeded"
    assert not stats["lost"], f"acknowledged writes lost with their bucket: {stats['lost'][:5]}"
    assert not stats["other"], stats["other"][:5]
    assert stats["put_ok"] >= 30 and stats["uploads"] >= 3, stats
    for c in (s3, s3b):
        assert err(c.head_bucket, Bucket=b)[1] == 404
    print("RACE_DONE")


if PHASE == "main":
    for name, fn in [
        ("DeleteBucket aborts incomplete uploads", delete_bucket_aborts_uploads),
        ("DeleteBucket refuses versions and delete markers", delete_bucket_refuses_versions),
        ("aws s3 rb --force", aws_rb_force),
        ("GetObjectAttributes: single PUT, versions, refusals", attributes_single_and_versions),
        ("GetObjectAttributes: multipart parts paging", attributes_multipart_parts_paging),
        ("conditional DeleteObject (unversioned)", conditional_delete_unversioned),
        ("conditional DeleteObject / DeleteObjects (versioned)", conditional_delete_versioned),
        ("multipart COMPOSITE CRC32", multipart_composite_crc32),
        ("multipart FULL_OBJECT CRC32 / CRC32C", multipart_full_object_crcs),
        ("multiple ranges, write offset", ranges_and_appends),
    ]:
        check(name, fn)
    print("all checks passed")
elif PHASE == "race-setup":
    race_setup()
elif PHASE == "race":
    race()
