//! The wire-format helpers every token source shares: expiry fields in their several
//! shapes, Entra ID error bodies, `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::FetchError;

/// Reads `expires_in` (seconds, as a number or a numeric string), else `expires_on`
/// (epoch seconds as a number or string, or the old App Service form
/// `MM/dd/yyyy hh:mm:ss tt +00:00`), and `refresh_in` when present.
/// Returns (time to expiry, refresh hint).
pub fn parse_expiry(json: &serde_json::Value) -> Result<(Duration, Option<Duration>), FetchError> {
    let refresh_in = seconds(&json["refresh_in"]).map(Duration::from_secs);
    if let Some(secs) = seconds(&json["expires_in"]) {
        return Ok((Duration::from_secs(secs), refresh_in));
    }
    match &json["expires_on"] {
        serde_json::Value::Null => Err(FetchError::new(
            "the token response has neither expires_in nor expires_on",
        )),
        value => {
            let at = expires_on(value).ok_or_else(|| {
                FetchError::new(format!(
                    "the token response has an unreadable expires_on: {value}"
                ))
            })?;
            Ok((remaining(at), refresh_in))
        }
    }
}

/// Time from now until an epoch second (zero if it has passed).
pub fn remaining(epoch_secs: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Duration::from_secs(epoch_secs.saturating_sub(now))
}

fn seconds(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
        }
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `expires_on` as epoch seconds.
fn expires_on(value: &serde_json::Value) -> Option<u64> {
    seconds(value).or_else(|| value.as_str().and_then(parse_app_service_date))
}

/// `"09/14/2017 00:00:00 PM +00:00"`: the 2017 App Service format (12-hour clock, UTC).
fn parse_app_service_date(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let (date, time, ampm) = (parts.next()?, parts.next()?, parts.next()?);
    let offset = parts.next().unwrap_or("+00:00");
    let mut d = date.split('/').map(|p| p.parse::<u64>().ok());
    let (month, day, year) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<u64>().ok());
    let (mut hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 12
        || minute > 59
        || second > 60
    {
        return None;
    }
    match ampm.to_ascii_uppercase().as_str() {
        "AM" if hour == 12 => hour = 0,
        "AM" => {}
        "PM" if hour < 12 => hour += 12,
        "PM" => {}
        _ => return None,
    }
    let offset_secs = parse_offset(offset)?;
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let local = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    u64::try_from(local - offset_secs).ok()
}

fn parse_offset(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    Some(sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An Entra ID error body as one line: `invalid_client: AADSTS7000215: Invalid client
/// secret provided.` (trace and correlation ids dropped). Falls back to the status.
pub fn entra_error(status: reqwest::StatusCode, body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let code = json["error"].as_str();
    let description = json["error_description"]
        .as_str()
        .and_then(|d| d.lines().next())
        .map(|d| d.trim().to_string());
    match (code, description) {
        (Some(code), Some(description)) => format!("{code}: {description} (HTTP {status})"),
        (Some(code), None) => format!("{code} (HTTP {status})"),
        (None, Some(description)) => format!("{description} (HTTP {status})"),
        (None, None) => format!("HTTP {status}: {}", snippet(body)),
    }
}

/// The start of a response body for an error message, on one line.
pub fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else if one_line.is_empty() {
        "(empty body)".to_string()
    } else {
        one_line
    }
}

/// `Retry-After` in delta-seconds or as an HTTP date.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn expiry_shapes() {
        let n = now_secs();
        let cases = [
            (json!({"expires_in": 3599}), 3599),
            (json!({"expires_in": "3599"}), 3599),
            (json!({"expires_in": "3599", "expires_on": "1"}), 3599),
            (json!({"expires_on": (n + 600).to_string()}), 600),
            (json!({"expires_on": n + 600}), 600),
            (json!({"expires_on": "01/01/1970 00:00:00 AM +00:00"}), 0),
        ];
        for (body, want) in cases {
            let (got, _) = parse_expiry(&body).unwrap();
            assert!(got.as_secs().abs_diff(want) <= 2, "{body}: {got:?}");
        }
        let (_, refresh) = parse_expiry(&json!({"expires_in": 7200, "refresh_in": 3600})).unwrap();
        assert_eq!(refresh, Some(Duration::from_secs(3600)));
        assert!(parse_expiry(&json!({})).is_err());
        assert!(parse_expiry(&json!({"expires_on": "soon"})).is_err());
    }

    #[test]
    fn app_service_dates() {
        assert_eq!(
            parse_app_service_date("09/14/2017 00:00:00 PM +00:00"),
            Some(1_505_390_400)
        );
        assert_eq!(
            parse_app_service_date("09/14/2017 12:00:00 AM +00:00"),
            Some(1_505_347_200)
        );
        assert_eq!(
            parse_app_service_date("09/14/2017 01:30:00 PM +00:00"),
            Some(1_505_395_800)
        );
        assert_eq!(
            parse_app_service_date("09/14/2017 01:30:00 PM +02:00"),
            Some(1_505_388_600)
        );
        assert_eq!(
            parse_app_service_date("13/14/2017 01:30:00 PM +00:00"),
            None
        );
        assert_eq!(parse_app_service_date("garbage"), None);
    }

    #[test]
    fn entra_errors_become_one_line() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: abc\r\nCorrelation ID: def","error_codes":[7000215]}"#;
        let msg = entra_error(reqwest::StatusCode::UNAUTHORIZED, body);
        assert_eq!(
            msg,
            "invalid_client: AADSTS7000215: Invalid client secret provided. (HTTP 401 Unauthorized)"
        );
        let msg = entra_error(reqwest::StatusCode::BAD_GATEWAY, "<html>\n oops \n</html>");
        assert_eq!(msg, "HTTP 502 Bad Gateway: <html> oops </html>");
    }
}
