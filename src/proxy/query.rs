//! Query strings: credentials stripped from what goes upstream, secrets redacted from what
//! goes to the log. Everything else is kept byte for byte: the pairs are split on `&` and
//! rejoined untouched, never decoded and re-encoded.

use percent_encoding::percent_decode_str;

/// Query parameters a client may use to carry a credential; never forwarded.
const CLIENT_CREDENTIALS: &[&str] = &["accesstoken"];

/// Query parameter names whose values are hidden in logs.
const REDACTED: &[&str] = &[
    "accesstoken",
    "access_token",
    "token",
    "sig",
    "signature",
    "code",
    "key",
    "apikey",
    "api_key",
    "api-key",
    "subscription-key",
    "subscription_key",
    "client_secret",
    "password",
    "client_assertion",
];

/// The parameter name of one `name=value` pair, percent-decoded for comparison.
fn name_of(pair: &str) -> String {
    let raw = pair.split_once('=').map_or(pair, |(name, _)| name);
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .to_ascii_lowercase()
}

/// Removes the client's own credential parameters (`accessToken`, in any letter case).
/// Returns `None` when nothing is left.
pub fn strip_client_credentials(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !CLIENT_CREDENTIALS.contains(&name_of(pair).as_str()))
        .collect();
    if kept.is_empty() || (kept.len() == 1 && kept[0].is_empty() && !query.is_empty()) {
        return None;
    }
    Some(kept.join("&"))
}

/// Adds each `(name, value)` whose name the query does not have yet (names compared
/// without regard to case, as ARM does for `api-version`).
pub fn add_missing(query: Option<String>, defaults: &[(String, String)]) -> Option<String> {
    let mut query = query;
    for (name, value) in defaults {
        let present = query.as_deref().is_some_and(|q| {
            q.split('&')
                .any(|pair| name_of(pair).eq_ignore_ascii_case(name))
        });
        if !present {
            let encoded_name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            query = Some(append(query.as_deref(), &encoded_name, value));
        }
    }
    query
}

/// Appends `name=value`, percent-encoding the value.
pub fn append(query: Option<&str>, name: &str, value: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    match query {
        Some(q) if !q.is_empty() => format!("{q}&{name}={encoded}"),
        _ => format!("{name}={encoded}"),
    }
}

/// The path and query for a log line, with credential-like values replaced by `REDACTED`.
pub fn redact_for_log(path: &str, query: Option<&str>) -> String {
    let Some(query) = query else {
        return path.to_string();
    };
    let mut out = String::with_capacity(path.len() + 1 + query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if REDACTED.contains(&name_of(pair).as_str()) => {
                out.push_str(name);
                out.push_str("=REDACTED");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a=1&b=2", Some("a=1&b=2")),
            ("accessToken=x", None),
            ("a=1&accessToken=x&b=%2F+c", Some("a=1&b=%2F+c")),
            ("ACCESSTOKEN=x&a=1", Some("a=1")),
            ("access%54oken=x&a=1", Some("a=1")),
            ("accessTokenX=1", Some("accessTokenX=1")),
            ("a=1&&b=2", Some("a=1&&b=2")),
            ("", Some("")),
            ("accessToken", None),
            ("x=accessToken", Some("x=accessToken")),
            ("a=%zz&accessToken=1", Some("a=%zz")),
        ];
        for (query, want) in cases {
            assert_eq!(strip_client_credentials(query).as_deref(), *want, "{query}");
        }
    }

    #[test]
    fn append_encodes_the_value() {
        assert_eq!(
            append(Some("a=1"), "accessToken", "x y/+="),
            "a=1&accessToken=x+y%2F%2B%3D"
        );
        assert_eq!(append(None, "accessToken", "t"), "accessToken=t");
        assert_eq!(append(Some(""), "accessToken", "t"), "accessToken=t");
    }

    #[test]
    fn redact_table() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("/p", None, "/p"),
            ("/p", Some("a=1"), "/p?a=1"),
            (
                "/p",
                Some("accessToken=eyJ.secret&a=1"),
                "/p?accessToken=REDACTED&a=1",
            ),
            (
                "/p",
                Some("sig=abc&SIG=def"),
                "/p?sig=REDACTED&SIG=REDACTED",
            ),
            (
                "/p",
                Some("subscription-key=k"),
                "/p?subscription-key=REDACTED",
            ),
            ("/p", Some("code=c&state=s"), "/p?code=REDACTED&state=s"),
            ("/p", Some("flag"), "/p?flag"),
        ];
        for (path, query, want) in cases {
            assert_eq!(redact_for_log(path, *query), *want);
        }
    }
}
