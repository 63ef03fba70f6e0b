//! Helpers shared by PD's in-process tests.

/// A uuid standing for the data dir `tag` names (same tag, same dir).
pub fn uuid(tag: &str) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, tag).hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}
