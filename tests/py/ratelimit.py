"""A cluster-wide rate limit under load spread unevenly over the gateways.

Run by tests/ratelimit.rs against `kura dev --gateways 3` with KURA_S3,
KURA_DIR (cluster.json), KURA_BIN (the kura binary, for `kura admin`) and the
root key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Optional: RL_LIMIT
(read ops/s, default 50), RL_CLIENTS (30), RL_PER_CLIENT (requests/s each,
5), RL_SPREAD ("70,20,10": percent of the clients per gateway), RL_WARMUP (3 s),
RL_MEASURE (10 s), RL_ARRIVALS ("paced", or "poisson": random gaps of the same
mean), RL_TENANT ("rl"; another name to run again on the same cluster).

A user of tenant `rl` gets a read_ops limit (`kura admin ratelimit set`).
Paced clients (threads sharing one boto3 client per gateway, no retries)
GET a small object, most of them through the first gateway. After the warm-up, every
answer is recorded for the measured window: the admitted (2xx) rate across
all gateways is the figure; every refusal must be 503 SlowDown with a
Retry-After header. Prints `RESULT {json}` for the Rust side to check.
"""
import json
import os
import random
import subprocess
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

DIR = os.environ["KURA_DIR"]
KURA = os.environ["KURA_BIN"]
CLUSTER = os.path.join(DIR, "cluster.json")
LIMIT = int(os.environ.get("RL_LIMIT", "50"))
CLIENTS = int(os.environ.get("RL_CLIENTS", "30"))
PER_CLIENT = float(os.environ.get("RL_PER_CLIENT", "5"))
SPREAD = [int(x) for x in os.environ.get("RL_SPREAD", "70,20,10").split(",")]
WARMUP = float(os.environ.get("RL_WARMUP", "3"))
MEASURE = float(os.environ.get("RL_MEASURE", "10"))
POISSON = os.environ.get("RL_ARRIVALS", "paced") == "poisson"
TENANT = os.environ.get("RL_TENANT", "rl")
BUCKET, KEY = "rl-bucket", "small"


def admin(*args):
    p = subprocess.run([KURA, "admin", "--cluster", CLUSTER, *args], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"kura admin {args} failed: {p.stderr}{p.stdout}")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def client(ak, sk, endpoint, pool=2):
    # boto3 clients are thread-safe; making one per thread would cost more
    # CPU than the load itself.
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        # One attempt: a SlowDown must reach the driver, not botocore's retry loop.
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=10,
            max_pool_connections=pool,
        ),
    )


gateways = [c["s3"] for c in json.load(open(CLUSTER))["components"] if c["role"] == "gateway"]
assert len(gateways) == len(SPREAD), f"{len(gateways)} gateways for spread {SPREAD}"

admin("tenant", "create", TENANT)
user = admin("user", "create", "--tenant", TENANT, "--name", "loader")
ak, sk = user["keys"][0]["access_key"], user["keys"][0]["secret_key"]
setup = client(ak, sk, gateways[0])
setup.create_bucket(Bucket=BUCKET)
setup.put_object(Bucket=BUCKET, Key=KEY, Body=b"x" * 100)
limits = admin("ratelimit", "set", "--scope", "user", "--tenant", TENANT, "--user", "loader", "--max-read-ops", str(LIMIT))
assert limits.get("max_read_ops") == LIMIT, limits
# Gateways cache user records for 2 s: let the one read before the change expire.
time.sleep(2.2)

# Clients per gateway, as SPREAD says (the remainder to the first).
per_gw = [CLIENTS * p // 100 for p in SPREAD]
per_gw[0] += CLIENTS - sum(per_gw)
assignments = [g for g, n in enumerate(per_gw) for _ in range(n)]

clients = [client(ak, sk, g, pool=max(2, n)) for g, n in zip(gateways, per_gw)]
start = time.monotonic()
t_measure = start + WARMUP
t_end = t_measure + MEASURE
lock = threading.Lock()
records = []  # (send time, gateway, outcome) in the measured window
problems = []


def run(gw, seed):
    c = clients[gw]
    period = 1.0 / PER_CLIENT
    rng = random.Random(seed)
    nxt = start + rng.random() * period
    mine, bad = [], []
    while True:
        now = time.monotonic()
        if nxt > now:
            time.sleep(nxt - now)
        sent = time.monotonic()
        if sent >= t_end:
            break
        # Pace from the schedule, never in bursts to catch up.
        gap = rng.expovariate(PER_CLIENT) if POISSON else period
        nxt = max(nxt + gap, sent)
        try:
            r = c.get_object(Bucket=BUCKET, Key=KEY)
            r["Body"].read()
            outcome = "ok"
        except ClientError as e:
            meta = e.response["ResponseMetadata"]
            code = e.response["Error"]["Code"]
            retry_after = meta.get("HTTPHeaders", {}).get("retry-after")
            if meta["HTTPStatusCode"] == 503 and code == "SlowDown" and retry_after and int(retry_after) >= 1:
                outcome = "slowdown"
            else:
                outcome = "bad"
                bad.append(f"{meta['HTTPStatusCode']} {code} retry-after={retry_after}")
        except Exception as e:  # transport errors: the measurement would be wrong
            outcome = "bad"
            bad.append(repr(e))
        if sent >= t_measure:
            mine.append((sent - t_measure, gw, outcome))
    with lock:
        records.extend(mine)
        problems.extend(bad)


threads = [threading.Thread(target=run, args=(gw, i)) for i, gw in enumerate(assignments)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=WARMUP + MEASURE + 60)
    assert not t.is_alive(), "a client hung"

ok = [r for r in records if r[2] == "ok"]
per_second = [0] * int(MEASURE)
for r in ok:
    if int(r[0]) < len(per_second):
        per_second[int(r[0])] += 1
result = {
    "limit": LIMIT,
    "admitted_per_s": round(len(ok) / MEASURE, 2),
    "offered_per_s": round(len(records) / MEASURE, 2),
    "admitted_per_s_by_gateway": [round(sum(1 for r in ok if r[1] == g) / MEASURE, 2) for g in range(len(gateways))],
    "offered_per_s_by_gateway": [round(sum(1 for r in records if r[1] == g) / MEASURE, 2) for g in range(len(gateways))],
    "clients_by_gateway": per_gw,
    "slowdowns": sum(1 for r in records if r[2] == "slowdown"),
    "other_errors": problems[:10],
    "other_error_count": len(problems),
    "admitted_each_second": per_second,
}
print("RESULT " + json.dumps(result), flush=True)
