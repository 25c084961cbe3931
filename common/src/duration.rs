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
    fn waits_are_bounded() {
        let max = Duration::from_secs(300);
        assert_eq!(parse_wait("300s", max), Ok(max));
        assert!(parse_wait("301s", max)
            .unwrap_err()
            .contains("at most 300s"));
        assert!(parse_wait("x", max).unwrap_err().starts_with("wait: "));
    }
}
