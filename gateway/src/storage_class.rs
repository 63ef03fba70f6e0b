//! Storage class names: what S3 clients send in `x-amz-storage-class` and
//! what we report back (docs/s3-compatibility.md, "Storage classes").
//!
//! | S3 name              | Kura class | layout                      |
//! |----------------------|------------|-----------------------------|
//! | `STANDARD`           | `EC_4_2`   | Reed-Solomon 4+2, 1.5× raw  |
//! | `STANDARD_IA`        | `EC_8_3`   | Reed-Solomon 8+3, 1.375× raw|
//! | `REDUCED_REDUNDANCY` | `REPLICA3` | three copies, 3× raw        |
//!
//! The Kura names are accepted as well. A request without the header gets
//! the bucket's class; a bucket gets the gateway's default class
//! (`--default-storage-class`, EC_4_2) unless created with
//! `x-kura-storage-class`.

use kura_proto::meta::StorageClass;

/// The bucket-creation header that picks a bucket's class.
pub const BUCKET_CLASS_HEADER: &str = "x-kura-storage-class";

/// The class an S3 or Kura storage-class name stands for.
pub fn parse(name: &str) -> Option<StorageClass> {
    match name.trim().to_ascii_uppercase().as_str() {
        "STANDARD" | "EC_4_2" => Some(StorageClass::Ec42),
        "STANDARD_IA" | "EC_8_3" => Some(StorageClass::Ec83),
        "REDUCED_REDUNDANCY" | "REPLICA3" => Some(StorageClass::Replica3),
        _ => None,
    }
}

/// The S3 name reported in HEAD/GET/LIST for `class`.
pub fn s3_name(class: StorageClass) -> &'static str {
    match class {
        StorageClass::Ec42 => "STANDARD",
        StorageClass::Ec83 => "STANDARD_IA",
        StorageClass::Replica3 => "REDUCED_REDUNDANCY",
        // Records from before storage classes.
        StorageClass::Unspecified => "STANDARD",
    }
}

/// The class recorded in a bucket or object record (unset = `fallback`).
pub fn recorded(value: i32, fallback: StorageClass) -> StorageClass {
    StorageClass::try_from(value)
        .ok()
        .filter(|c| *c != StorageClass::Unspecified)
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [
            StorageClass::Ec42,
            StorageClass::Ec83,
            StorageClass::Replica3,
        ] {
            assert_eq!(parse(s3_name(c)), Some(c));
            assert_eq!(parse(c.as_str_name()), Some(c));
        }
        assert_eq!(parse("standard"), Some(StorageClass::Ec42));
        assert_eq!(parse("GLACIER"), None);
        assert_eq!(parse(""), None);
        assert_eq!(recorded(0, StorageClass::Ec42), StorageClass::Ec42);
        assert_eq!(recorded(99, StorageClass::Replica3), StorageClass::Replica3);
        assert_eq!(recorded(3, StorageClass::Ec42), StorageClass::Ec83);
    }
}
