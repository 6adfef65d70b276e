//! The `X-Amz-Date` format: `YYYYMMDD'T'HHMMSS'Z'` (basic ISO 8601, UTC).

use std::time::SystemTime;

use time::{Date, Month, PrimitiveDateTime, Time};

use crate::error::VerifyError;

fn malformed(reason: &'static str) -> VerifyError {
    VerifyError::MalformedDate(reason)
}

/// The value of `digits` (ASCII digits, already checked).
fn number(digits: &[u8]) -> u16 {
    digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))
}

/// Parses an `X-Amz-Date` value such as `20150830T123600Z`.
pub(crate) fn parse(value: &[u8]) -> Result<SystemTime, VerifyError> {
    const FORMAT: &str = "expected YYYYMMDD'T'HHMMSS'Z'";
    if value.len() != 16 || value[8] != b'T' || value[15] != b'Z' {
        return Err(malformed(FORMAT));
    }
    if !value[..8]
        .iter()
        .chain(&value[9..15])
        .all(u8::is_ascii_digit)
    {
        return Err(malformed(FORMAT));
    }
    let year = i32::from(number(&value[0..4]));
    // Both fit in a u8: two digits each.
    let month = u8::try_from(number(&value[4..6])).unwrap_or(0);
    let day = u8::try_from(number(&value[6..8])).unwrap_or(0);
    let hour = u8::try_from(number(&value[9..11])).unwrap_or(u8::MAX);
    let minute = u8::try_from(number(&value[11..13])).unwrap_or(u8::MAX);
    let second = u8::try_from(number(&value[13..15])).unwrap_or(u8::MAX);

    let month = Month::try_from(month).map_err(|_| malformed("not a calendar date"))?;
    let date =
        Date::from_calendar_date(year, month, day).map_err(|_| malformed("not a calendar date"))?;
    let time = Time::from_hms(hour, minute, second).map_err(|_| malformed("not a time of day"))?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn parses_valid_dates() {
        assert_eq!(
            parse(b"20150830T123600Z").expect("valid"),
            UNIX_EPOCH + Duration::from_secs(1_440_938_160)
        );
        assert_eq!(parse(b"19700101T000000Z").expect("valid"), UNIX_EPOCH);
        assert_eq!(
            parse(b"20240229T235959Z").expect("valid"),
            UNIX_EPOCH + Duration::from_secs(1_709_251_199)
        );
    }

    #[test]
    fn rejects_malformed_dates() {
        for value in [
            "",
            "20150830",
            "20150830T123600",
            "20150830T123600z",
            "20150830t123600Z",
            "2015-08-30T12:36:00Z",
            "20150830T1236000Z",
            "2015083OT123600Z",
            "20150830T12360aZ",
            "20150830 123600Z",
            "+0150830T123600Z",
            "20151330T123600Z",
            "20150003T123600Z",
            "20150230T123600Z",
            "20150830T243600Z",
            "20150830T126000Z",
            "20150830T123660Z",
            "20150830T123600Z ",
        ] {
            assert!(
                matches!(parse(value.as_bytes()), Err(VerifyError::MalformedDate(_))),
                "{value}"
            );
        }
    }
}
