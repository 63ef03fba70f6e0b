//! restic (Debian's package, minio-go underneath) backs a directory tree up
//! into a versioned Kura bucket, restores it byte-identical, survives a
//! prune (its deletes leave delete markers behind in a versioned bucket), and
//! `restic check --read-data` re-reads and verifies every pack it stored.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{pattern, Cluster};

struct Restic<'a> {
    c: &'a Cluster,
    repo: String,
}

impl Restic<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("restic");
        cmd.arg("-r").arg(&self.repo).args(args);
        if self.c.tls {
            cmd.arg("--cacert").arg(self.c.ca());
        }
        cmd.env("AWS_ACCESS_KEY_ID", &self.c.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.c.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("RESTIC_PASSWORD", "kura-test-password")
            .env("RESTIC_CACHE_DIR", self.c.dir.join("restic-cache"))
            // Not the user's config: minio-go also reads ~/.aws and ~/.mc.
            .env("HOME", &self.c.dir)
            .output()
            .expect("run restic (scripts/install-deps.sh installs it)")
    }

    fn must(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "restic {args:?} failed: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.c.logs_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A tree with empty, small, odd-sized and multi-pack files, nested dirs.
fn make_tree(root: &Path) {
    let w = |rel: &str, len: usize, seed: u64| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, pattern(len, seed)).expect("write");
    };
    w("empty", 0, 0);
    w("one-byte", 1, 1);
    for i in 0..40 {
        w(
            &format!("docs/{}/f{i}.txt", i % 4),
            1000 + 3331 * i,
            10 + i as u64,
        );
    }
    w("media/big.bin", 21 << 20, 99);
    w("media/odd.bin", (5 << 20) + 12345, 98);
}

/// Every file under `root`, relative path → contents.
fn read_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn assert_same_tree(want: &Path, got: &Path) {
    let (a, b) = (read_tree(want), read_tree(got));
    let names = |v: &[(PathBuf, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "restored file set differs");
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs after restore", name.display());
    }
}

#[test]
fn restic_backs_up_restores_and_checks_a_versioned_bucket() {
    let c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://backup"]);
    c.must_aws(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "backup",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let src = c.dir.join("src");
    make_tree(&src);
    let restic = Restic {
        c: &c,
        repo: format!("s3:{}/backup", c.s3),
    };
    restic.must(&["init"]);
    let src_arg = src.to_str().expect("utf-8 path");
    restic.must(&["backup", src_arg]);

    // A second snapshot: one file changed, one added, one removed.
    std::fs::write(src.join("docs/0/f0.txt"), pattern(7777, 1234)).expect("write");
    std::fs::write(src.join("added.txt"), b"added after the first snapshot").expect("write");
    std::fs::remove_file(src.join("one-byte")).expect("rm");
    restic.must(&["backup", src_arg]);

    let out = c.dir.join("restore");
    restic.must(&[
        "restore",
        "latest",
        "--target",
        out.to_str().expect("utf-8"),
    ]);
    // restic restores under the absolute path it backed up.
    assert_same_tree(&src, &out.join(src.strip_prefix("/").expect("absolute")));

    // Prune deletes the first snapshot's unreferenced data: in a versioned
    // bucket each delete leaves a delete marker and keeps the old version.
    restic.must(&["forget", "--keep-last", "1", "--prune"]);
    let versions = c.must_aws(&["s3api", "list-object-versions", "--bucket", "backup"]);
    assert!(
        versions.contains("DeleteMarkers"),
        "the prune's deletes left no delete marker:\n{versions}"
    );
    let check = restic.must(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
}
