//! PostObject (browser form uploads) on a real cluster: SigV4 forms from
//! boto3's generate_presigned_post and a hand-signed SigV2 form posted as
//! multipart/form-data, every refusal AWS gives, content-length-range cut
//! while streaming, anonymous forms decided by the bucket policy, a 256 MiB
//! form with the gateway's RSS sampled, and an unsigned 1 GiB form refused
//! after its fields, the tagging, object lock and SSE fields
//! (tests/py/post_object.py; decisions 0028, 0036); and forms
//! posted by headless Chromium (tests/py/post_object_browser.py).
mod common;
use common::Cluster;

#[test]
fn post_object_forms_are_streamed_signed_and_refused_as_aws() {
    let c = Cluster::must_start();
    let out = c.must_python("post_object.py", &[]);
    for line in out.lines() {
        eprintln!("{line}");
    }
    assert!(out.contains("all post_object checks passed"), "{out}");
    // The same from a real browser (headless Chromium): a FormData fetch and
    // a real HTML form with a file input (tests/py/post_object_browser.py).
    let out = c.must_python("post_object_browser.py", &[]);
    for line in out.lines() {
        eprintln!("{line}");
    }
    assert!(
        out.contains("all post_object_browser checks passed"),
        "{out}"
    );
}
