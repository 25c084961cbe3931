//! Durations as people write them in flags, config files and query strings: `30s`, `500ms`,
//! `2m`, `24h`, or a plain number of seconds.

use std::time::Duration;

/// Parses `30s`, `500ms`, `2m`, `24h` or a plain number of seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long")),
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long")),
        _ => Err(format!("unknown unit in {text:?} (use ms, s, m or h)")),
    }
}

/// Parses a duration as Go writes it, which is how Consul's JSON carries them: a sequence of
/// decimal numbers with units (`10s`, `1m30s`, `1.5s`, `250ms`, `2h`; `ns`, `us`, `µs`, `ms`, `s`,
/// `m`, `h`), or `0`.
pub fn parse_go(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 10s, 1m30s or 500ms");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has no unit (use ns, us, ms, s, m or h)"))?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            unit => {
                return Err(format!(
                    "unknown unit {unit:?} in {text:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };
        rest = &rest[unit_end..];
        total += number * nanos_per;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Writes a duration the way [`parse_go`] reads it back exactly: `2s`, `1500ms`, `3m` (which
/// [`parse`] reads too), or `1000000001ns`.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ns", duration.as_nanos())
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A long-poll's `wait`: [`parse`], at most `max`.
pub fn parse_wait(text: &str, max: Duration) -> Result<Duration, String> {
    let wait = parse(text).map_err(|e| format!("wait: {e}"))?;
    if wait > max {
        return Err(format!("wait: at most {}s", max.as_secs()));
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("600s"), Ok(Duration::from_secs(600)));
        assert!(parse("10d").is_err());
        assert!(parse("abc").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn go_durations_as_consul_sends_them() {
        assert_eq!(parse_go("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_go("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_go("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "1x", "1..5s", "-1s", "1e400h"] {
            assert!(parse_go(bad).is_err(), "{bad:?}");
        }
        for d in [
            Duration::from_secs(2),
            Duration::from_millis(1500),
            Duration::from_secs(180),
        ] {
            assert_eq!(parse_go(&format(d)), Ok(d));
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }

    #[test]
    fn waits_are_bounded() {
        let max = Duration::from_secs(300);
        assert_eq!(parse_wait("300s", max), Ok(max));
        assert!(parse_wait("301s", max)
            .unwrap_err()
            .contains("at most 300s"));
        assert!(parse_wait("x", max).unwrap_err().starts_with("wait: "));
    }
}
