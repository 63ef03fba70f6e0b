//! Dates in condition values and request context: what AWS accepts for the
//! Date operators (W3C's ISO 8601 profile, or epoch seconds).

use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

/// Epoch seconds (all digits, optional `-`), or a W3C ISO 8601 profile date:
/// `YYYY-MM-DD`, `YYYY-MM-DDThh:mm[:ss[.fff]]` with `Z`, `±hh:mm`, `±hhmm`
/// or no offset (UTC). Returns nanoseconds since the epoch.
pub(super) fn parse_date(s: &str) -> Option<i128> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(i128::from(s.parse::<i64>().ok()?) * 1_000_000_000);
    }
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let year = c.number(4)?;
    c.eat(b"-")?;
    let month = Month::try_from(u8::try_from(c.number(2)?).ok()?).ok()?;
    c.eat(b"-")?;
    let day = u8::try_from(c.number(2)?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, day).ok()?;
    if c.done() {
        return Some(date.midnight().assume_utc().unix_timestamp_nanos());
    }
    c.eat(b"Tt")?;
    let hour = u8::try_from(c.number(2)?).ok()?;
    c.eat(b":")?;
    let minute = u8::try_from(c.number(2)?).ok()?;
    let (mut second, mut nano) = (0u8, 0u32);
    if c.eat(b":").is_some() {
        second = u8::try_from(c.number(2)?).ok()?;
        if c.eat(b".").is_some() {
            let start = c.i;
            let mut scale = 100_000_000u32;
            while let Some(d) = c.digit() {
                // Digits past nanoseconds are dropped, not rounded.
                nano += u32::from(d) * scale;
                scale /= 10;
            }
            if c.i == start {
                return None;
            }
        }
    }
    let offset = if c.done() || c.eat(b"Zz").is_some() {
        UtcOffset::UTC
    } else {
        let sign: i8 = if c.eat(b"+").is_some() {
            1
        } else {
            c.eat(b"-")?;
            -1
        };
        let oh = i8::try_from(c.number(2)?).ok()?;
        // `+hh:mm` and `+hhmm` alike.
        let _ = c.eat(b":");
        let om = i8::try_from(c.number(2)?).ok()?;
        UtcOffset::from_hms(sign * oh, sign * om, 0).ok()?
    };
    if !c.done() {
        return None;
    }
    let time = Time::from_hms_nano(hour, minute, second, nano).ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_offset(offset)
            .unix_timestamp_nanos(),
    )
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }

    fn digit(&mut self) -> Option<u8> {
        let d = self.b.get(self.i).filter(|b| b.is_ascii_digit())?;
        self.i += 1;
        Some(d - b'0')
    }

    /// Exactly `n` digits.
    fn number(&mut self, n: usize) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some(acc * 10 + u32::from(self.digit()?)))
    }

    /// One of `chars`, consumed if present.
    fn eat(&mut self, chars: &[u8]) -> Option<()> {
        self.b.get(self.i).filter(|b| chars.contains(b))?;
        self.i += 1;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_date_values() {
        assert_eq!(parse_date("0"), Some(0));
        assert_eq!(parse_date("-1"), Some(-1_000_000_000));
        assert_eq!(parse_date("1970-01-01T00:00:00.000000001Z"), Some(1));
        assert_eq!(parse_date("1970-01-01T00:00:00.0000000019Z"), Some(1));
        assert_eq!(parse_date("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_date("1970-01-01T00:00:00"), Some(0));
        // All digits is epoch seconds, so a bare year is not one.
        assert_eq!(parse_date("2024"), Some(2024 * 1_000_000_000));
        for bad in [
            "",
            "-",
            "2024-1-01",
            "2024-01-01T",
            "2024-01-01T10",
            "2024-01-01T10:00:00.",
            "99999999999999999999",
            "２０２４-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
