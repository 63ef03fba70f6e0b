//! Wildcard matching (`*` any run of characters, including none and `/`;
//! `?` exactly one character) and policy-variable templates.
//!
//! The matcher is the classic two-pointer walk that remembers only the last
//! `*`: O(pattern × subject) at worst, never exponential, no recursion.

use std::borrow::Cow;

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok {
    Lit(char),
    /// `*`
    Any,
    /// `?`
    One,
}

/// Whether `pat` matches all of `subject`. Characters compare exactly, or
/// case-insensitively (Unicode simple lowercase) with `ignore_case`.
pub(super) fn wildcard_match(pat: &[Tok], subject: &str, ignore_case: bool) -> bool {
    let same = |a: char, b: char| a == b || (ignore_case && a.to_lowercase().eq(b.to_lowercase()));
    let next_char = |at: usize| subject.get(at..).and_then(|rest| rest.chars().next());
    // p: index into pat; s: byte offset into subject (always a char boundary).
    let (mut p, mut s) = (0usize, 0usize);
    // The last `*` seen: the pattern index after it, and the subject offset it
    // has swallowed up to so far.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let c = next_char(s);
        match (pat.get(p), c) {
            (None, None) => return true,
            (Some(Tok::Any), _) => {
                p += 1;
                star = Some((p, s));
                continue;
            }
            (Some(Tok::One), Some(c)) => {
                p += 1;
                s += c.len_utf8();
                continue;
            }
            (Some(Tok::Lit(l)), Some(c)) if same(*l, c) => {
                p += 1;
                s += c.len_utf8();
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character and retry
        // from just after it.
        let Some((after_star, swallowed)) = star else {
            return false;
        };
        let Some(c) = next_char(swallowed) else {
            return false;
        };
        let swallowed = swallowed + c.len_utf8();
        star = Some((after_star, swallowed));
        p = after_star;
        s = swallowed;
    }
}

/// Looks up policy variables (`${aws:username}`) for one request.
pub(super) trait Resolver {
    /// The value of a variable, its key lowercased; `None` when it has none.
    fn resolve(&self, key: &str) -> Option<&str>;
}

/// For patterns that cannot hold variables (actions).
pub(super) struct NoVars;

impl Resolver for NoVars {
    fn resolve(&self, _: &str) -> Option<&str> {
        None
    }
}

/// A policy string with its wildcards and variables found once at parse:
/// `*`/`?` become [`Tok::Any`]/[`Tok::One`], `${*}` `${?}` `${$}` literal
/// characters, and `${key}` a variable whose value is inserted as literal
/// text (a user name holding `*` must not become a wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    toks: Vec<Tok>,
    /// (position in `toks` the value goes before, lowercased key), in order.
    vars: Vec<(usize, String)>,
}

impl Template {
    /// `variables`: whether `${...}` is special (policy Version 2012-10-17);
    /// under 2008-10-17 AWS reads it as plain text.
    pub(super) fn parse(text: &str, variables: bool) -> Template {
        let mut toks = Vec::with_capacity(text.len());
        let mut vars = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if variables {
                if let Some((name, after)) = rest.strip_prefix("${").and_then(|r| r.split_once('}'))
                {
                    match name {
                        "*" => toks.push(Tok::Lit('*')),
                        "?" => toks.push(Tok::Lit('?')),
                        "$" => toks.push(Tok::Lit('$')),
                        key => vars.push((toks.len(), key.to_lowercase())),
                    }
                    rest = after;
                    continue;
                }
            }
            toks.push(match c {
                '*' => Tok::Any,
                '?' => Tok::One,
                c => Tok::Lit(c),
            });
            rest = rest.get(c.len_utf8()..).unwrap_or("");
        }
        Template { toks, vars }
    }

    /// The variables used, keys lowercased.
    pub(super) fn vars(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(_, k)| k.as_str())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.toks.is_empty() && self.vars.is_empty()
    }

    /// The text when it is plain (no wildcard, no variable).
    pub(super) fn literal(&self) -> Option<String> {
        if !self.vars.is_empty() {
            return None;
        }
        self.toks
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => Some(*c),
                Tok::Any | Tok::One => None,
            })
            .collect()
    }

    /// The plain text before the first wildcard or variable.
    pub(super) fn literal_prefix(&self) -> String {
        let stop = self.vars.first().map_or(self.toks.len(), |(at, _)| *at);
        self.toks
            .iter()
            .take(stop)
            .map_while(|t| match t {
                Tok::Lit(c) => Some(*c),
                Tok::Any | Tok::One => None,
            })
            .collect()
    }

    /// The pattern with variables substituted. Callers check first that
    /// every variable resolves; one that does not expands to nothing.
    fn expand<'t>(&'t self, vars: &dyn Resolver) -> Cow<'t, [Tok]> {
        if self.vars.is_empty() {
            return Cow::Borrowed(&self.toks);
        }
        let mut out = Vec::with_capacity(self.toks.len() + 16);
        let mut pending = self.vars.iter().peekable();
        for i in 0..=self.toks.len() {
            while let Some((_, key)) = pending.next_if(|(at, _)| *at == i) {
                out.extend(vars.resolve(key).unwrap_or("").chars().map(Tok::Lit));
            }
            if let Some(t) = self.toks.get(i) {
                out.push(*t);
            }
        }
        Cow::Owned(out)
    }

    /// Wildcard match of the whole `subject`.
    pub(super) fn matches(&self, subject: &str, vars: &dyn Resolver, ignore_case: bool) -> bool {
        wildcard_match(&self.expand(vars), subject, ignore_case)
    }

    /// The text with variables substituted and wildcards as plain `*`/`?`
    /// (for the operators that do not take wildcards, e.g. StringEquals).
    pub(super) fn render(&self, vars: &dyn Resolver) -> String {
        self.expand(vars)
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => *c,
                Tok::Any => '*',
                Tok::One => '?',
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    fn m(pat: &str, s: &str) -> bool {
        Template::parse(pat, false).matches(s, &NoVars, false)
    }

    fn mi(pat: &str, s: &str) -> bool {
        Template::parse(pat, false).matches(s, &NoVars, true)
    }

    struct Map(HashMap<&'static str, &'static str>);
    impl Resolver for Map {
        fn resolve(&self, key: &str) -> Option<&str> {
            self.0.get(key).copied()
        }
    }

    #[test]
    fn star_matches_any_run_including_empty_and_slashes() {
        assert!(m("*", ""));
        assert!(m("*", "anything/at/all"));
        assert!(m("a*", "a"));
        assert!(m("a*", "abc/def"));
        assert!(m("*c", "c"));
        assert!(m("a*b", "ab"));
        assert!(m("**", ""));
        assert!(!m("a*", ""));
        assert!(!m("a*", "ba"));
    }

    #[test]
    fn question_mark_is_exactly_one_char() {
        assert!(m("?", "x"));
        assert!(!m("?", ""));
        assert!(!m("?", "xy"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(!m("a?c", "abbc"));
        // One character, not one byte.
        assert!(m("a?c", "aéc"));
        assert!(m("??", "日本"));
        assert!(!m("?", "日本"));
    }

    #[test]
    fn several_stars_need_backtracking() {
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(m("a*b*c", "abbbcbc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(!m("a*b*c", "acb"));
        assert!(m("*a*", "banana"));
        assert!(m("*ana", "banana"));
        assert!(!m("*anab", "banana"));
        assert!(m("s3:List?ucket", "s3:ListBucket"));
        assert!(m("a*?", "ab"));
        assert!(!m("a*?", "a"));
    }

    #[test]
    fn empty_pattern_matches_only_empty() {
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn case_rules() {
        assert!(!m("arn:aws:s3:::Photos/*", "arn:aws:s3:::photos/x"));
        assert!(mi("s3:get*", "S3:GetObject"));
        assert!(mi("S3:LIST?UCKET", "s3:ListBucket"));
        assert!(mi("ÉTÉ", "été"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let subject = "a".repeat(20_000);
        let pat = "a*a*a*a*a*a*a*b";
        let start = Instant::now();
        assert!(!m(pat, &subject));
        assert!(m("a*a*a*a*a*a*a*", &subject));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn escapes_and_variables() {
        let t = Template::parse("a${*}b${?}c${$}d", true);
        assert_eq!(t.literal().as_deref(), Some("a*b?c$d"));
        assert!(t.matches("a*b?c$d", &NoVars, false));
        assert!(!t.matches("axb?c$d", &NoVars, false));

        let vars = Map([("aws:username", "al*ce")].into());
        let t = Template::parse("home/${AWS:UserName}/*", true);
        assert_eq!(t.vars().collect::<Vec<_>>(), vec!["aws:username"]);
        assert!(t.matches("home/al*ce/x", &vars, false));
        // The value is literal text: its `*` is not a wildcard.
        assert!(!t.matches("home/alice/x", &vars, false));
        assert_eq!(t.render(&vars), "home/al*ce/*");
        assert_eq!(t.literal_prefix(), "home/");

        // Two variables back to back, and one at the end.
        let vars = Map([("a:x", "1"), ("a:y", "2")].into());
        assert_eq!(
            Template::parse("${a:x}${a:y}-${a:x}", true).render(&vars),
            "12-1"
        );
    }

    #[test]
    fn variables_off_or_unterminated_are_plain_text() {
        let t = Template::parse("${aws:username}", false);
        assert!(t.vars().next().is_none());
        assert_eq!(t.render(&NoVars), "${aws:username}");
        let t = Template::parse("x${aws:username", true);
        assert!(t.vars().next().is_none());
        assert_eq!(t.literal().as_deref(), Some("x${aws:username"));
    }

    #[test]
    fn literal_and_prefix() {
        let t = Template::parse("bucket/a?b*", false);
        assert_eq!(t.literal(), None);
        assert_eq!(t.literal_prefix(), "bucket/a");
        assert!(Template::parse("", false).is_empty());
    }
}
