"""PostObject from a real browser (decision 0028): headless Chromium loads a
page from another origin that
1. posts a `FormData` built in the page with `fetch` (success_action_status
   201; the bucket's CORS rules let the page read the answer and its ETag),
2. posts a second one whose file is over the policy's content-length-range
   (the page reads the 400 EntityTooLarge),
3. fills the `<input type=file>` of a real `<form method=post
   enctype=multipart/form-data>` through `DataTransfer` and submits it (a
   navigation of an iframe the form targets, so the page that reports stays
   loaded; a top-level navigation keeps headless Chromium's --dump-dom from
   ever returning), answered with a 303 to the page's own origin
   (success_action_redirect) carrying bucket, key and ETag.
Every form is signed by boto3's generate_presigned_post; the objects are
checked with boto3, byte for byte.

Run by tests/post_object.rs with KURA_S3, KURA_DIR and the root key in
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""
import hashlib
import html
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import tempfile
import threading
import urllib.parse
import uuid

import boto3
from botocore.config import Config

ENDPOINT = os.environ["KURA_S3"]
S3 = boto3.client(
    "s3", endpoint_url=ENDPOINT, region_name="us-east-1",
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
)
FORM_SIZE = 1 << 20
FETCH_SIZE = 300_000


def pattern(n, seed):
    """The bytes the page builds: b[i] = (7i + seed) mod 256 (every byte value)."""
    return bytes((i * 7 + seed) & 255 for i in range(n))


PAGE = """<!doctype html><html><body><pre id="out">running</pre>
<iframe name="result" id="result"></iframe>
<form id="f" method="post" enctype="multipart/form-data" action="@FORM_ACTION@" target="result">
FORM_INPUTS
<input type="file" name="file" id="file">
</form>
<script>
function bytes(n, seed) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 255;
  return b;
}
async function post(fields, size, seed, name) {
  try {
    const fd = new FormData();
    for (const [k, v] of fields) fd.append(k, v);
    fd.append('file', new Blob([bytes(size, seed)], {type: 'application/octet-stream'}), name);
    const r = await fetch(@ACTION_JS@, {method: 'POST', body: fd});
    return {status: r.status, body: await r.text(), etag: r.headers.get('ETag')};
  } catch (e) { return {error: String(e)}; }
}
const results = {};
// done.html, where the form's 303 lands in the iframe, reports its query.
window.addEventListener('message', (e) => {
  if (e.origin !== location.origin) return;
  results.redirect = e.data;
  document.getElementById('out').textContent = 'RESULTS:' + JSON.stringify(results) + ':END';
});
async function run() {
  results.fetch = await post(FETCH_FIELDS, FETCH_SIZE, 5, 'fetched.bin');
  results.too_big = await post(SMALL_FIELDS, 5000, 1, 'big.bin');
  const dt = new DataTransfer();
  dt.items.add(new File([bytes(FORM_SIZE, 3)], 'hello world.bin', {type: 'application/x-kura-form'}));
  const input = document.getElementById('file');
  input.files = dt.files;
  results.files = input.files.length;
  document.getElementById('f').submit();
}
run();
</script></body></html>"""

DONE = """<!doctype html><html><body>done<script>
parent.postMessage(location.search, location.origin);
</script></body></html>"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def check(name, fn):
    try:
        fn()
    except Exception:
        print(f"FAIL {name}")
        raise
    print(f"ok   {name}")


def browser_posts_forms():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed: `make deps-test` (scripts/install-deps.sh test) installs it"
    b = f"browser-{uuid.uuid4().hex[:8]}"
    S3.create_bucket(Bucket=b)
    # The fetches are cross-origin: the page may read their answers only if CORS says so.
    S3.put_bucket_cors(Bucket=b, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://127.0.0.1:*"], "AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"]}]})
    action = f"{ENDPOINT}/{b}"
    with tempfile.TemporaryDirectory() as site, tempfile.TemporaryDirectory() as profile:
        handler = lambda *a, **kw: Quiet(*a, directory=site, **kw)
        with socketserver.TCPServer(("127.0.0.1", 0), handler) as httpd:
            origin = f"http://127.0.0.1:{httpd.server_address[1]}"
            redirect = f"{origin}/done.html"
            form = S3.generate_presigned_post(
                b, "browser/${filename}",
                Fields={"success_action_redirect": redirect, "x-amz-meta-from": "form",
                        "Content-Type": "text/x-kura"},
                Conditions=[{"success_action_redirect": redirect}, {"x-amz-meta-from": "form"},
                            ["starts-with", "$Content-Type", "text/"],
                            ["content-length-range", 1, 4 << 20]])
            fetched = S3.generate_presigned_post(
                b, "fetched/${filename}",
                Fields={"success_action_status": "201", "x-amz-meta-from": "fetch"},
                Conditions=[{"success_action_status": "201"}, {"x-amz-meta-from": "fetch"}])
            small = S3.generate_presigned_post(
                b, "small/${filename}", Conditions=[["content-length-range", 1, 1000]])
            inputs = "\n".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in form["fields"].items())
            page = (PAGE.replace("@FORM_ACTION@", html.escape(action)).replace("@ACTION_JS@", json.dumps(action))
                    .replace("FORM_INPUTS", inputs)
                    .replace("FETCH_FIELDS", json.dumps(list(fetched["fields"].items())))
                    .replace("SMALL_FIELDS", json.dumps(list(small["fields"].items())))
                    .replace("FETCH_SIZE", str(FETCH_SIZE)).replace("FORM_SIZE", str(FORM_SIZE)))
            for name, text in (("index.html", page), ("done.html", DONE)):
                with open(os.path.join(site, name), "w") as f:
                    f.write(text)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--ignore-certificate-errors", f"--user-data-dir={profile}",
                                "--virtual-time-budget=30000", "--dump-dom", f"{origin}/index.html"],
                               capture_output=True, text=True, timeout=180)
            httpd.shutdown()
    dom = p.stdout
    assert "RESULTS:" in dom, f"no results in the page: {dom[-2000:]}\n{p.stderr[-2000:]}"
    results = json.loads(html.unescape(dom.split("RESULTS:", 1)[1].split(":END", 1)[0]))
    print("     browser:", json.dumps({k: (v if k != "fetch" else {**v, "body": v.get("body", "")[:80]})
                                       for k, v in results.items()}))

    # 1. FormData + fetch: 201 with the PostResponse document and a readable ETag.
    r = results["fetch"]
    assert r.get("status") == 201, r
    assert "<PostResponse>" in r["body"] and f"<Key>fetched/fetched.bin</Key>" in r["body"], r
    want = pattern(FETCH_SIZE, 5)
    got = S3.get_object(Bucket=b, Key="fetched/fetched.bin")
    assert got["Body"].read() == want, "fetched body differs"
    assert got["Metadata"] == {"from": "fetch"}, got["Metadata"]
    assert r["etag"] == got["ETag"] == f'"{hashlib.md5(want).hexdigest()}"', (r["etag"], got["ETag"])

    # 2. Over the policy's range: refused, and the page can read why.
    r = results["too_big"]
    assert r.get("status") == 400 and "EntityTooLarge" in r.get("body", ""), r
    assert "Contents" not in S3.list_objects_v2(Bucket=b, Prefix="small/"), "nothing stored"

    # 3. The real form: its file input held the file, the browser followed the 303.
    assert results.get("files") == 1, results
    q = urllib.parse.parse_qs(results.get("redirect", "").lstrip("?"))
    key = "browser/hello world.bin"
    assert q.get("bucket") == [b] and q.get("key") == [key], q
    want = pattern(FORM_SIZE, 3)
    got = S3.get_object(Bucket=b, Key=key)
    assert got["Body"].read() == want, "form body differs"
    assert got["ContentLength"] == FORM_SIZE
    assert got["ContentType"] == "text/x-kura", got["ContentType"]
    assert got["Metadata"] == {"from": "form"}, got["Metadata"]
    assert q.get("etag") == [got["ETag"]], (q, got["ETag"])


check("headless Chromium posts a FormData with fetch and submits a real HTML form (file input)",
      browser_posts_forms)
print("all post_object_browser checks passed")
