//! Wall-clock helpers: Unix milliseconds for storage, RFC 3339 for every payload.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Last millisecond RFC 3339 (four-digit years) can express: 9999-12-31T23:59:59.999Z.
const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision. Later times (a
/// damaged record, a clock far off) are written as the last one it can express: humantime's
/// formatter fails beyond it, and `to_string` would panic.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_RFC3339_MS))).to_string()
}

/// Time-of-day bucket of a local wall-clock instant, used as a metric label.
pub fn period_of_day(ms: u64) -> &'static str {
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: localtime_r only writes into the zeroed struct we hand it.
    let hour = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return "unknown";
        }
        tm.tm_hour
    };
    match hour {
        6..=11 => "morning",
        12..=17 => "afternoon",
        18..=21 => "evening",
        _ => "night",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        // Beyond the year 9999 (found by fuzzing stored records): clamped, no panic.
        assert_eq!(rfc3339(MAX_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(MAX_RFC3339_MS + 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
