//! The JSON tree a policy is read into: like `serde_json::Value`, but objects
//! keep their order and refuse duplicate keys. `{"Effect":"Deny","Effect":"Allow"}`
//! would otherwise silently keep the last one, and parsers disagree on which
//! one wins, so such a document is refused rather than guessed at. Depth is
//! bounded by serde_json's recursion limit (128).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::PolicyError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Json {
    Null,
    Bool(bool),
    /// A number, as serde_json prints it (`10`, `1.5`, `1e300`).
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub(super) fn parse(text: &str) -> Result<Json, PolicyError> {
        serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))
    }

    /// What a value is, for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Num(_) => "a number",
            Json::Str(_) => "a string",
            Json::Arr(_) => "an array",
            Json::Obj(_) => "an object",
        }
    }
}

/// A string, or a non-empty array of strings (the shape of Action, Resource
/// and principal lists).
pub(super) fn string_or_array<'a>(v: &'a Json, loc: &str) -> Result<Vec<&'a str>, PolicyError> {
    match v {
        Json::Str(s) => Ok(vec![s.as_str()]),
        Json::Arr(items) if items.is_empty() => {
            Err(invalid(format!("{loc} must not be an empty list")))
        }
        Json::Arr(items) => items
            .iter()
            .map(|item| match item {
                Json::Str(s) => Ok(s.as_str()),
                other => Err(invalid(format!(
                    "{loc} must list strings, found {}",
                    other.kind()
                ))),
            })
            .collect(),
        other => Err(invalid(format!(
            "{loc} must be a string or a list of strings, found {}",
            other.kind()
        ))),
    }
}

pub(super) fn invalid(msg: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(msg.into())
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Num(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Num(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        // serde_json's own rendering (shortest round-trip, exponent for huge
        // values) rather than f64's Display, which writes 1e300 in full.
        Ok(Json::Num(match serde_json::Number::from_f64(v) {
            Some(n) => n.to_string(),
            None => v.to_string(),
        }))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
            }
            let value = map.next_value::<Json>()?;
            entries.push((key, value));
        }
        Ok(Json::Obj(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_in_order() {
        let j = Json::parse(r#"{"b":[1,-2,1.5,true,null],"a":"x"}"#).unwrap();
        assert_eq!(
            j,
            Json::Obj(vec![
                (
                    "b".into(),
                    Json::Arr(vec![
                        Json::Num("1".into()),
                        Json::Num("-2".into()),
                        Json::Num("1.5".into()),
                        Json::Bool(true),
                        Json::Null,
                    ])
                ),
                ("a".into(), Json::Str("x".into())),
            ])
        );
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        let e = Json::parse(r#"{"a":{"k":1,"k":2}}"#).unwrap_err();
        assert!(
            matches!(&e, PolicyError::Json(m) if m.contains("duplicate key \"k\"")),
            "{e}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(Json::parse(&deep), Err(PolicyError::Json(_))));
    }

    #[test]
    fn string_or_array_shapes() {
        let j = Json::parse(r#"["a","b"]"#).unwrap();
        assert_eq!(string_or_array(&j, "Action").unwrap(), vec!["a", "b"]);
        let e = string_or_array(&Json::Arr(vec![]), "Action").unwrap_err();
        assert_eq!(e.to_string(), "Action must not be an empty list");
        let e = string_or_array(&Json::Num("1".into()), "Action").unwrap_err();
        assert!(e.to_string().contains("found a number"), "{e}");
    }
}
