//! Timestamps as they appear in messages: RFC 3339 UTC strings.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Seconds since an RFC 3339 timestamp, or `None` if it does not parse.
pub fn age_secs(ts: &str) -> Option<f64> {
    let t = OffsetDateTime::parse(ts, &Rfc3339).ok()?;
    Some((OffsetDateTime::now_utc() - t).as_seconds_f64())
}
