//! The Condition element: `{"Operator": {"key": value-or-list, ...}, ...}`.
//!
//! Operators AND together, keys within an operator AND, the values of one key
//! OR (NOR for the negated operators). Values are parsed once, at policy
//! parse, so a bad number, date or address is a parse error, not a silent
//! mismatch at request time. Absent keys follow AWS's documented rule: a
//! positive operator is false, a negated one (`StringNotEquals`,
//! `NotIpAddress`, ...) is true; `...IfExists` makes absence true;
//! `ForAllValues:` is true and `ForAnyValue:` false on an absent key.

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::IpNet;

use super::date::parse_date;
use super::json::{invalid, Json};
use super::matcher::{Resolver, Template};
use super::{ConditionContext, PolicyError};

/// How a multi-valued key's values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    /// No set prefix: a positive operator needs one matching value, a
    /// negated one needs none (NOR).
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    /// `ord` is request value compared to policy value.
    fn holds(self, ord: Option<Ordering>) -> bool {
        match (self, ord) {
            (_, None) => false,
            (Cmp::Eq, Some(o)) => o == Ordering::Equal,
            (Cmp::Lt, Some(o)) => o == Ordering::Less,
            (Cmp::Le, Some(o)) => o != Ordering::Greater,
            (Cmp::Gt, Some(o)) => o == Ordering::Greater,
            (Cmp::Ge, Some(o)) => o != Ordering::Less,
        }
    }
}

/// The operator family without its negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    StrEquals,
    StrEqualsIgnoreCase,
    StrLike,
    Numeric(Cmp),
    Date(Cmp),
    Bool,
    Ip,
    Null,
}

/// The policy values of one key, parsed for their family.
#[derive(Debug, Clone)]
enum Test {
    StrEquals(Vec<Template>),
    StrEqualsIgnoreCase(Vec<Template>),
    StrLike(Vec<Template>),
    Numeric(Cmp, Vec<Num>),
    /// Nanoseconds since the Unix epoch.
    Date(Cmp, Vec<i128>),
    Bool(Vec<bool>),
    Ip(Vec<IpNet>),
    /// `true`: the key must be absent; `false`: present.
    Null(Vec<bool>),
}

/// One (operator, key) pair of a Condition block.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    /// Lowercased: condition key names are case-insensitive.
    key: String,
    qualifier: Qualifier,
    if_exists: bool,
    negated: bool,
    test: Test,
}

/// An operator name taken apart: `ForAnyValue:StringNotLikeIfExists`.
struct Operator {
    qualifier: Qualifier,
    family: Family,
    negated: bool,
    if_exists: bool,
}

/// `None` if the name is not a known operator.
fn parse_operator(name: &str) -> Option<Operator> {
    let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (Qualifier::ForAnyValue, r)
    } else if let Some(r) = name.strip_prefix("ForAllValues:") {
        (Qualifier::ForAllValues, r)
    } else {
        (Qualifier::Single, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (rest, false),
    };
    use Family::*;
    let (family, negated) = match base {
        "StringEquals" => (StrEquals, false),
        "StringNotEquals" => (StrEquals, true),
        "StringEqualsIgnoreCase" => (StrEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (StrEqualsIgnoreCase, true),
        "StringLike" => (StrLike, false),
        "StringNotLike" => (StrLike, true),
        // AWS matches ARNs segment by segment; whole-string wildcard matching
        // agrees for every ARN whose segments hold no `:`.
        "ArnEquals" | "ArnLike" => (StrLike, false),
        "ArnNotEquals" | "ArnNotLike" => (StrLike, true),
        "NumericEquals" => (Numeric(Cmp::Eq), false),
        "NumericNotEquals" => (Numeric(Cmp::Eq), true),
        "NumericLessThan" => (Numeric(Cmp::Lt), false),
        "NumericLessThanEquals" => (Numeric(Cmp::Le), false),
        "NumericGreaterThan" => (Numeric(Cmp::Gt), false),
        "NumericGreaterThanEquals" => (Numeric(Cmp::Ge), false),
        "DateEquals" => (Date(Cmp::Eq), false),
        "DateNotEquals" => (Date(Cmp::Eq), true),
        "DateLessThan" => (Date(Cmp::Lt), false),
        "DateLessThanEquals" => (Date(Cmp::Le), false),
        "DateGreaterThan" => (Date(Cmp::Gt), false),
        "DateGreaterThanEquals" => (Date(Cmp::Ge), false),
        "Bool" => (Bool, false),
        "IpAddress" => (Ip, false),
        "NotIpAddress" => (Ip, true),
        "Null" => (Null, false),
        _ => return None,
    };
    Some(Operator {
        qualifier,
        family,
        negated,
        if_exists,
    })
}

/// Parses a statement's Condition element. `variables`: whether `${...}` is
/// a policy variable (Version 2012-10-17).
pub(super) fn parse_block(
    v: &Json,
    loc: &str,
    variables: bool,
) -> Result<Vec<Condition>, PolicyError> {
    let Json::Obj(operators) = v else {
        return Err(invalid(format!(
            "{loc} must be an object, found {}",
            v.kind()
        )));
    };
    let mut out = Vec::new();
    for (op, body) in operators {
        let Operator {
            qualifier,
            family,
            negated,
            if_exists,
        } = parse_operator(op)
            .ok_or_else(|| invalid(format!("{loc}: unknown condition operator \"{op}\"")))?;
        if family == Family::Null && if_exists {
            return Err(invalid(format!(
                "{loc}: \"{op}\": the Null operator does not take IfExists"
            )));
        }
        let loc = format!("{loc}.{op}");
        let Json::Obj(keys) = body else {
            return Err(invalid(format!(
                "{loc} must be an object of condition keys, found {}",
                body.kind()
            )));
        };
        if keys.is_empty() {
            return Err(invalid(format!("{loc} names no condition key")));
        }
        for (key, values) in keys {
            if !matches!(key.split_once(':'), Some((p, n)) if !p.is_empty() && !n.is_empty()) {
                return Err(invalid(format!(
                    "{loc}: invalid condition key \"{key}\" (expected prefix:name)"
                )));
            }
            let loc = format!("{loc}.{key}");
            let texts = scalar_values(values, &loc)?;
            out.push(Condition {
                key: key.to_lowercase(),
                qualifier,
                if_exists,
                negated,
                test: parse_test(family, &texts, &loc, variables)?,
            });
        }
    }
    Ok(out)
}

/// A condition value or list of values: strings, numbers and booleans, as
/// text (AWS accepts `10` and `true` unquoted).
fn scalar_values(v: &Json, loc: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Json| match v {
        Json::Str(s) | Json::Num(s) => Ok(s.clone()),
        Json::Bool(b) => Ok(b.to_string()),
        other => Err(invalid(format!(
            "{loc}: a condition value must be a string, number or boolean, found {}",
            other.kind()
        ))),
    };
    match v {
        Json::Arr(items) if items.is_empty() => {
            Err(invalid(format!("{loc}: the list of values is empty")))
        }
        Json::Arr(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

fn parse_test(
    family: Family,
    texts: &[String],
    loc: &str,
    variables: bool,
) -> Result<Test, PolicyError> {
    let templates = || {
        texts
            .iter()
            .map(|t| Template::parse(t, variables))
            .collect()
    };
    let each = |what: &str, parse: &dyn Fn(&str) -> bool| match texts.iter().find(|t| !parse(t)) {
        Some(bad) => Err(invalid(format!("{loc}: \"{bad}\" is not {what}"))),
        None => Ok(()),
    };
    Ok(match family {
        Family::StrEquals => Test::StrEquals(templates()),
        Family::StrEqualsIgnoreCase => Test::StrEqualsIgnoreCase(templates()),
        Family::StrLike => Test::StrLike(templates()),
        Family::Numeric(cmp) => {
            each("a number", &|t| parse_num(t).is_some())?;
            Test::Numeric(cmp, texts.iter().filter_map(|t| parse_num(t)).collect())
        }
        Family::Date(cmp) => {
            each(
                "a date (ISO 8601, e.g. 2024-01-31T12:00:00Z, or epoch seconds)",
                &|t| parse_date(t).is_some(),
            )?;
            Test::Date(cmp, texts.iter().filter_map(|t| parse_date(t)).collect())
        }
        Family::Bool | Family::Null => {
            each("\"true\" or \"false\"", &|t| parse_bool(t).is_some())?;
            let bools = texts.iter().filter_map(|t| parse_bool(t)).collect();
            if family == Family::Bool {
                Test::Bool(bools)
            } else {
                Test::Null(bools)
            }
        }
        Family::Ip => {
            each("an IP address or CIDR block", &|t| parse_net(t).is_some())?;
            Test::Ip(texts.iter().filter_map(|t| parse_net(t)).collect())
        }
    })
}

impl Condition {
    /// The policy variables its values use (keys lowercased).
    pub(super) fn vars(&self) -> impl Iterator<Item = &str> {
        let templates: &[Template] = match &self.test {
            Test::StrEquals(t) | Test::StrEqualsIgnoreCase(t) | Test::StrLike(t) => t,
            _ => &[],
        };
        templates.iter().flat_map(|t| t.vars())
    }

    /// Whether it lets through only callers with one of a few fixed values
    /// of a key that identifies where they are or who they are: what makes
    /// an Allow to `*` not public in AWS's sense (S3 "The meaning of
    /// public"). It must be positive, without IfExists or ForAllValues (an
    /// absent key would pass), and its values free of wildcards and
    /// variables; address ranges must be at least /8 (IPv4) or /32 (IPv6).
    pub(super) fn pins_caller(&self) -> bool {
        const IDENTIFYING_KEYS: &[&str] = &[
            "aws:sourceip",
            "aws:sourcearn",
            "aws:sourcevpc",
            "aws:sourcevpce",
            "aws:sourceowner",
            "aws:sourceaccount",
            "aws:principalarn",
            "aws:principalaccount",
            "aws:principalorgid",
            "aws:userid",
            "aws:username",
            "s3:dataaccesspointarn",
            "s3:dataaccesspointaccount",
        ];
        if self.negated
            || self.if_exists
            || self.qualifier == Qualifier::ForAllValues
            || !IDENTIFYING_KEYS.contains(&self.key.as_str())
        {
            return false;
        }
        match &self.test {
            Test::StrEquals(ts) | Test::StrEqualsIgnoreCase(ts) | Test::StrLike(ts) => {
                ts.iter().all(|t| t.literal().is_some())
            }
            Test::Ip(nets) => nets.iter().all(|n| match n {
                IpNet::V4(n) => n.prefix_len() >= 8,
                IpNet::V6(n) => n.prefix_len() >= 32,
            }),
            _ => false,
        }
    }

    pub(super) fn holds(&self, ctx: &ConditionContext, vars: &dyn Resolver) -> bool {
        // An empty list is no value at all ("resolves to an empty data set").
        let values = ctx.get_lowercase(&self.key).filter(|v| !v.is_empty());
        if let Test::Null(want_absent) = &self.test {
            let absent = values.is_none();
            return want_absent.contains(&absent);
        }
        let Some(values) = values else {
            return self.if_exists
                || match self.qualifier {
                    Qualifier::ForAllValues => true,
                    Qualifier::ForAnyValue => false,
                    Qualifier::Single => self.negated,
                };
        };
        let ok = |v: &String| self.matches_any(v, vars) != self.negated;
        match (self.qualifier, self.negated) {
            (Qualifier::ForAnyValue, _) | (Qualifier::Single, false) => values.iter().any(ok),
            (Qualifier::ForAllValues, _) | (Qualifier::Single, true) => values.iter().all(ok),
        }
    }

    /// Whether the request value `v` matches one of the policy values
    /// (before negation). A request value of the wrong type matches none.
    fn matches_any(&self, v: &str, vars: &dyn Resolver) -> bool {
        match &self.test {
            Test::StrEquals(ts) => ts.iter().any(|t| t.render(vars) == v),
            Test::StrEqualsIgnoreCase(ts) => {
                let v = v.to_lowercase();
                ts.iter().any(|t| t.render(vars).to_lowercase() == v)
            }
            Test::StrLike(ts) => ts.iter().any(|t| t.matches(v, vars, false)),
            Test::Numeric(cmp, ns) => {
                parse_num(v).is_some_and(|x| ns.iter().any(|n| cmp.holds(x.compare(*n))))
            }
            Test::Date(cmp, ds) => {
                parse_date(v).is_some_and(|x| ds.iter().any(|d| cmp.holds(Some(x.cmp(d)))))
            }
            Test::Bool(bs) => parse_bool(v).is_some_and(|x| bs.contains(&x)),
            Test::Ip(nets) => match v.parse::<IpAddr>() {
                Ok(ip) => {
                    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
                    let v4 = match ip {
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
                        IpAddr::V4(_) => None,
                    };
                    nets.iter()
                        .any(|n| n.contains(&ip) || v4.is_some_and(|v4| n.contains(&v4)))
                }
                Err(_) => false,
            },
            Test::Null(_) => false,
        }
    }
}

/// Integers compare exactly; anything with a fraction or exponent as f64.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

fn parse_num(s: &str) -> Option<Num> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Num::Int(i));
    }
    // f64's parser also takes "inf" and "NaN": not numbers to a policy.
    let f = s.parse::<f64>().ok()?;
    f.is_finite().then_some(Num::Float(f))
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A CIDR block, or a bare address as a /32 or /128.
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::super::matcher::NoVars;
    use super::*;

    fn conds(json: &str) -> Result<Vec<Condition>, PolicyError> {
        parse_block(&Json::parse(json).unwrap(), "Condition", true)
    }

    /// Whether the whole block holds for `ctx`.
    fn holds(json: &str, ctx: &[(&str, &[&str])]) -> bool {
        let mut c = ConditionContext::new();
        for (k, vs) in ctx {
            c.set_many(k, vs.iter().map(|v| v.to_string()).collect());
        }
        conds(json).unwrap().iter().all(|x| x.holds(&c, &NoVars))
    }

    fn err(json: &str) -> String {
        conds(json).unwrap_err().to_string()
    }

    #[test]
    fn string_operators() {
        let eq = r#"{"StringEquals":{"s3:prefix":["home/","docs/"]}}"#;
        assert!(holds(eq, &[("s3:prefix", &["docs/"])]));
        assert!(!holds(eq, &[("s3:prefix", &["Docs/"])]));
        assert!(!holds(eq, &[]));
        // Wildcards are plain characters for StringEquals.
        let star = r#"{"StringEquals":{"s3:prefix":"a*"}}"#;
        assert!(holds(star, &[("s3:prefix", &["a*"])]));
        assert!(!holds(star, &[("s3:prefix", &["ab"])]));

        let ne = r#"{"StringNotEquals":{"s3:x-amz-acl":["private","bucket-owner-full-control"]}}"#;
        assert!(holds(ne, &[("s3:x-amz-acl", &["public-read"])]));
        assert!(!holds(ne, &[("s3:x-amz-acl", &["private"])]));

        let ic = r#"{"StringEqualsIgnoreCase":{"aws:username":"Alice"}}"#;
        assert!(holds(ic, &[("aws:username", &["aLICE"])]));
        let nic = r#"{"StringNotEqualsIgnoreCase":{"aws:username":"Alice"}}"#;
        assert!(!holds(nic, &[("aws:username", &["ALICE"])]));
        assert!(holds(nic, &[("aws:username", &["bob"])]));

        let like = r#"{"StringLike":{"s3:prefix":["home/*/docs","t?p"]}}"#;
        assert!(holds(like, &[("s3:prefix", &["home/al/ice/docs"])]));
        assert!(holds(like, &[("s3:prefix", &["tip"])]));
        assert!(!holds(like, &[("s3:prefix", &["Tip"])]));
        let nlike = r#"{"StringNotLike":{"s3:prefix":"secret/*"}}"#;
        assert!(holds(nlike, &[("s3:prefix", &["public/x"])]));
        assert!(!holds(nlike, &[("s3:prefix", &["secret/x"])]));

        let arn = r#"{"ArnLike":{"aws:SourceArn":"arn:aws:sns:*:123:topic"}}"#;
        assert!(holds(
            arn,
            &[("aws:SourceArn", &["arn:aws:sns:eu-west-1:123:topic"])]
        ));
    }

    #[test]
    fn keys_are_case_insensitive_values_are_not() {
        let c = r#"{"StringEquals":{"AWS:SourceIP":"x"}}"#;
        assert!(holds(c, &[("aws:sourceip", &["x"])]));
        assert!(!holds(c, &[("aws:sourceip", &["X"])]));
    }

    #[test]
    fn numeric_operators() {
        let n = |op: &str, policy: &str, req: &str| {
            holds(
                &format!(r#"{{"{op}":{{"s3:max-keys":{policy}}}}}"#),
                &[("s3:max-keys", &[req])],
            )
        };
        assert!(n("NumericEquals", "10", "10"));
        assert!(n("NumericEquals", "\"10\"", "10.0"));
        assert!(!n("NumericEquals", "10", "11"));
        assert!(n("NumericNotEquals", "10", "11"));
        assert!(!n("NumericNotEquals", "10", "10"));
        assert!(n("NumericLessThan", "10", "9"));
        assert!(!n("NumericLessThan", "10", "10"));
        assert!(n("NumericLessThanEquals", "10", "10"));
        assert!(n("NumericGreaterThan", "1.5", "2"));
        assert!(!n("NumericGreaterThan", "1.5", "1.5"));
        assert!(n("NumericGreaterThanEquals", "-3", "-3"));
        // Large integers compare exactly, not through f64.
        assert!(!n("NumericEquals", "9007199254740993", "9007199254740992"));
        // A request value that is not a number matches nothing.
        assert!(!n("NumericLessThan", "10", "abc"));
        assert!(!n("NumericLessThan", "10", "NaN"));
        assert!(
            err(r#"{"NumericLessThan":{"s3:max-keys":"ten"}}"#).contains("\"ten\" is not a number")
        );
        assert!(err(r#"{"NumericLessThan":{"s3:max-keys":"inf"}}"#).contains("not a number"));
    }

    #[test]
    fn date_operators_and_formats() {
        let d = |op: &str, policy: &str, req: &str| {
            holds(
                &format!(r#"{{"{op}":{{"aws:CurrentTime":{policy}}}}}"#),
                &[("aws:CurrentTime", &[req])],
            )
        };
        let noon = "\"2024-03-01T12:00:00Z\"";
        assert!(d("DateEquals", noon, "2024-03-01T12:00:00Z"));
        assert!(d("DateEquals", noon, "2024-03-01T14:00:00+02:00"));
        assert!(d("DateEquals", noon, "2024-03-01T07:00:00-0500"));
        assert!(d("DateEquals", noon, "2024-03-01T12:00Z"));
        assert!(d("DateEquals", noon, "2024-03-01t12:00:00.000z"));
        assert!(d("DateEquals", noon, "1709294400"));
        assert!(d("DateEquals", "1709294400", "2024-03-01T12:00:00Z"));
        assert!(d("DateNotEquals", noon, "2024-03-01T12:00:00.5Z"));
        assert!(!d("DateNotEquals", noon, "2024-03-01T12:00:00Z"));
        assert!(d("DateLessThan", noon, "2024-03-01T11:59:59.999999999Z"));
        assert!(!d("DateLessThan", noon, "2024-03-01T12:00:00Z"));
        assert!(d("DateLessThanEquals", noon, "2024-03-01T12:00:00Z"));
        assert!(d(
            "DateGreaterThan",
            "\"2024-03-01\"",
            "2024-03-01T00:00:01Z"
        ));
        assert!(!d(
            "DateGreaterThan",
            "\"2024-03-01\"",
            "2024-03-01T00:00:00Z"
        ));
        assert!(d("DateGreaterThanEquals", "\"2024-03-01\"", "2024-03-01"));
        // A request value that is not a date matches nothing.
        assert!(!d("DateLessThan", noon, "yesterday"));
        assert!(
            err(r#"{"DateLessThan":{"aws:CurrentTime":"2024-02-30"}}"#).contains("is not a date")
        );
        assert!(
            err(r#"{"DateLessThan":{"aws:CurrentTime":"2024-01-01T25:00:00Z"}}"#)
                .contains("is not a date")
        );
        assert!(
            err(r#"{"DateLessThan":{"aws:CurrentTime":"2024-01-01T10:00:00Zjunk"}}"#)
                .contains("is not a date")
        );
    }

    #[test]
    fn bool_operator() {
        let c = r#"{"Bool":{"aws:SecureTransport":"false"}}"#;
        assert!(holds(c, &[("aws:SecureTransport", &["false"])]));
        assert!(holds(c, &[("aws:SecureTransport", &["FALSE"])]));
        assert!(!holds(c, &[("aws:SecureTransport", &["true"])]));
        assert!(!holds(c, &[]));
        // JSON booleans are accepted.
        assert!(holds(
            r#"{"Bool":{"aws:SecureTransport":true}}"#,
            &[("aws:SecureTransport", &["true"])]
        ));
        assert!(err(r#"{"Bool":{"aws:SecureTransport":"yes"}}"#)
            .contains("\"yes\" is not \"true\" or \"false\""));
    }

    #[test]
    fn ip_operators_v4_and_v6() {
        let c = r#"{"IpAddress":{"aws:SourceIp":["192.168.1.0/24","10.0.0.7","2001:db8::/32"]}}"#;
        let ip = |a: &str| holds(c, &[("aws:SourceIp", &[a])]);
        assert!(ip("192.168.1.200"));
        assert!(!ip("192.168.2.1"));
        assert!(ip("10.0.0.7"));
        assert!(!ip("10.0.0.8"));
        assert!(ip("2001:db8:1::5"));
        assert!(!ip("2001:db9::1"));
        assert!(ip("::ffff:192.168.1.9"));
        assert!(!ip("not-an-ip"));
        // Host bits in a CIDR are ignored, as AWS does.
        assert!(holds(
            r#"{"IpAddress":{"aws:SourceIp":"10.1.2.3/8"}}"#,
            &[("aws:SourceIp", &["10.200.0.1"])]
        ));
        let not = r#"{"NotIpAddress":{"aws:SourceIp":"192.168.1.0/24"}}"#;
        assert!(holds(not, &[("aws:SourceIp", &["8.8.8.8"])]));
        assert!(!holds(not, &[("aws:SourceIp", &["192.168.1.1"])]));
        assert!(err(r#"{"IpAddress":{"aws:SourceIp":"300.1.1.1/8"}}"#)
            .contains("not an IP address or CIDR block"));
        assert!(
            err(r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}"#).contains("not an IP address")
        );
    }

    #[test]
    fn null_operator() {
        let absent = r#"{"Null":{"s3:x-amz-acl":"true"}}"#;
        assert!(holds(absent, &[]));
        assert!(!holds(absent, &[("s3:x-amz-acl", &["private"])]));
        let present = r#"{"Null":{"s3:x-amz-acl":false}}"#;
        assert!(!holds(present, &[]));
        assert!(holds(present, &[("s3:x-amz-acl", &["private"])]));
        // An empty list of values is no value.
        assert!(holds(absent, &[("s3:x-amz-acl", &[])]));
        assert!(
            err(r#"{"NullIfExists":{"s3:x-amz-acl":"true"}}"#).contains("does not take IfExists")
        );
    }

    #[test]
    fn absent_keys_follow_aws() {
        // Positive operators: false. Negated ones: true.
        assert!(!holds(r#"{"StringEquals":{"s3:prefix":"a"}}"#, &[]));
        assert!(!holds(r#"{"StringLike":{"s3:prefix":"*"}}"#, &[]));
        assert!(!holds(r#"{"NumericLessThan":{"s3:max-keys":"5"}}"#, &[]));
        assert!(!holds(
            r#"{"DateLessThan":{"aws:CurrentTime":"2030-01-01"}}"#,
            &[]
        ));
        assert!(!holds(r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#, &[]));
        assert!(holds(r#"{"StringNotEquals":{"s3:prefix":"a"}}"#, &[]));
        assert!(holds(r#"{"StringNotLike":{"s3:prefix":"a*"}}"#, &[]));
        assert!(holds(
            r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
            &[]
        ));
        assert!(holds(r#"{"NumericNotEquals":{"s3:max-keys":"5"}}"#, &[]));
        assert!(holds(
            r#"{"DateNotEquals":{"aws:CurrentTime":"2030-01-01"}}"#,
            &[]
        ));
        // IfExists: absent holds, present is tested.
        let ie = r#"{"StringEqualsIfExists":{"s3:x-amz-acl":"private"}}"#;
        assert!(holds(ie, &[]));
        assert!(holds(ie, &[("s3:x-amz-acl", &["private"])]));
        assert!(!holds(ie, &[("s3:x-amz-acl", &["public-read"])]));
        assert!(holds(
            r#"{"NumericLessThanIfExists":{"s3:max-keys":"5"}}"#,
            &[]
        ));
        assert!(holds(
            r#"{"ForAnyValue:StringEqualsIfExists":{"s3:x":"a"}}"#,
            &[]
        ));
        // Set operators.
        assert!(holds(r#"{"ForAllValues:StringEquals":{"s3:x":"a"}}"#, &[]));
        assert!(!holds(r#"{"ForAnyValue:StringEquals":{"s3:x":"a"}}"#, &[]));
        assert!(!holds(
            r#"{"ForAnyValue:StringNotEquals":{"s3:x":"a"}}"#,
            &[]
        ));
    }

    #[test]
    fn set_operators_on_multi_valued_keys() {
        let k = "s3:RequestObjectTag/team";
        let all = r#"{"ForAllValues:StringEquals":{"s3:RequestObjectTag/team":["red","blue"]}}"#;
        assert!(holds(all, &[(k, &["red", "blue"])]));
        assert!(holds(all, &[(k, &["red"])]));
        assert!(!holds(all, &[(k, &["red", "green"])]));
        let any = r#"{"ForAnyValue:StringEquals":{"s3:RequestObjectTag/team":["red","blue"]}}"#;
        assert!(holds(any, &[(k, &["green", "blue"])]));
        assert!(!holds(any, &[(k, &["green", "pink"])]));
        // Negated: each value must match none of the policy values.
        let all_not = r#"{"ForAllValues:StringNotLike":{"s3:RequestObjectTag/team":"r*"}}"#;
        assert!(holds(all_not, &[(k, &["blue", "green"])]));
        assert!(!holds(all_not, &[(k, &["blue", "red"])]));
        let any_not = r#"{"ForAnyValue:StringNotEquals":{"s3:RequestObjectTag/team":"red"}}"#;
        assert!(holds(any_not, &[(k, &["red", "blue"])]));
        assert!(!holds(any_not, &[(k, &["red"])]));
        // No qualifier: positive needs one match, negated needs none.
        assert!(holds(
            r#"{"StringEquals":{"s3:x":"b"}}"#,
            &[("s3:x", &["a", "b"])]
        ));
        assert!(!holds(
            r#"{"StringNotEquals":{"s3:x":"b"}}"#,
            &[("s3:x", &["a", "b"])]
        ));
        assert!(holds(
            r#"{"StringNotEquals":{"s3:x":"c"}}"#,
            &[("s3:x", &["a", "b"])]
        ));
    }

    #[test]
    fn operators_and_keys_are_anded() {
        let c = r#"{"StringEquals":{"s3:prefix":"a","s3:delimiter":"/"},"NumericLessThanEquals":{"s3:max-keys":"100"}}"#;
        let full: &[(&str, &[&str])] = &[
            ("s3:prefix", &["a"]),
            ("s3:delimiter", &["/"]),
            ("s3:max-keys", &["50"]),
        ];
        assert!(holds(c, full));
        assert!(!holds(
            c,
            &[
                ("s3:prefix", &["a"]),
                ("s3:delimiter", &["/"]),
                ("s3:max-keys", &["500"])
            ]
        ));
        assert!(!holds(
            c,
            &[("s3:prefix", &["a"]), ("s3:max-keys", &["50"])]
        ));
    }

    #[test]
    fn json_numbers_and_bools_are_text_for_string_operators() {
        assert!(holds(
            r#"{"StringEquals":{"s3:max-keys":10}}"#,
            &[("s3:max-keys", &["10"])]
        ));
        assert!(holds(
            r#"{"StringEquals":{"s3:x":true}}"#,
            &[("s3:x", &["true"])]
        ));
        assert!(holds(
            r#"{"NumericEquals":{"s3:max-keys":[1, 2.5]}}"#,
            &[("s3:max-keys", &["2.5"])]
        ));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            err(r#"{"StringEqualz":{"s3:x":"a"}}"#),
            "Condition: unknown condition operator \"StringEqualz\""
        );
        assert!(err(r#"{"ForSomeValues:StringEquals":{"s3:x":"a"}}"#)
            .contains("unknown condition operator"));
        assert!(err(r#"{"stringequals":{"s3:x":"a"}}"#).contains("unknown condition operator"));
        assert!(err(r#"{"StringEquals":{"s3:x":{"a":1}}}"#)
            .contains("must be a string, number or boolean, found an object"));
        assert!(err(r#"{"StringEquals":{"s3:x":null}}"#).contains("found null"));
        assert!(err(r#"{"StringEquals":{"s3:x":[["a"]]}}"#).contains("found an array"));
        assert!(err(r#"{"StringEquals":{"s3:x":[]}}"#).contains("list of values is empty"));
        assert!(err(r#"{"StringEquals":{}}"#).contains("names no condition key"));
        assert!(err(r#"{"StringEquals":"s3:x"}"#).contains("must be an object of condition keys"));
        assert!(
            err(r#"{"StringEquals":{"prefix":"a"}}"#).contains("invalid condition key \"prefix\"")
        );
        assert!(err(r#"["StringEquals"]"#).contains("Condition must be an object"));
        // An empty Condition element is no condition.
        assert!(conds("{}").unwrap().is_empty());
    }

    #[test]
    fn pins_caller_only_with_fixed_values() {
        let pins = |json: &str| conds(json).unwrap().iter().any(Condition::pins_caller);
        assert!(pins(
            r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}"#
        ));
        assert!(pins(r#"{"StringEquals":{"aws:SourceVpc":"vpc-1"}}"#));
        assert!(pins(
            r#"{"ForAnyValue:StringEquals":{"aws:PrincipalOrgID":"o-1"}}"#
        ));
        assert!(pins(
            r#"{"ArnEquals":{"aws:SourceArn":"arn:aws:sns:eu-west-1:123:t"}}"#
        ));
        assert!(!pins(r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/1"}}"#));
        assert!(!pins(r#"{"IpAddress":{"aws:SourceIp":"2000::/3"}}"#));
        assert!(!pins(r#"{"StringLike":{"aws:SourceVpc":"vpc-*"}}"#));
        assert!(!pins(
            r#"{"StringEquals":{"aws:userid":"${aws:username}"}}"#
        ));
        assert!(!pins(r#"{"StringNotEquals":{"aws:SourceVpc":"vpc-1"}}"#));
        assert!(!pins(
            r#"{"StringEqualsIfExists":{"aws:SourceVpc":"vpc-1"}}"#
        ));
        assert!(!pins(
            r#"{"ForAllValues:StringEquals":{"aws:SourceVpc":"vpc-1"}}"#
        ));
        assert!(!pins(r#"{"StringEquals":{"s3:prefix":"home/"}}"#));
        assert!(!pins(r#"{"Bool":{"aws:SecureTransport":"true"}}"#));
    }

    #[test]
    fn variables_in_condition_values() {
        struct User;
        impl Resolver for User {
            fn resolve(&self, key: &str) -> Option<&str> {
                (key == "aws:username").then_some("alice")
            }
        }
        let c =
            &conds(r#"{"StringLike":{"s3:prefix":["home/${aws:username}/*","${*}"]}}"#).unwrap()[0];
        assert_eq!(c.vars().collect::<Vec<_>>(), vec!["aws:username"]);
        let mut ctx = ConditionContext::new();
        ctx.set("s3:prefix", "home/alice/docs");
        assert!(c.holds(&ctx, &User));
        ctx.set("s3:prefix", "home/bob/docs");
        assert!(!c.holds(&ctx, &User));
        ctx.set("s3:prefix", "*");
        assert!(c.holds(&ctx, &User));
        ctx.set("s3:prefix", "x");
        assert!(!c.holds(&ctx, &User));
    }
}
