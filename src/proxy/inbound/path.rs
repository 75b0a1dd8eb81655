//! Request paths that could mean something else upstream than they mean to the router:
//! dot segments (also percent-encoded: `%2e%2e`, `%2E.`, `.%2e`), encoded slashes and
//! backslashes (`%2F`, `%5C`), raw backslashes and NUL bytes. They are refused, never
//! normalised: a client that sends them is either confused or probing.

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    NotOrigin,
    DotSegment,
    EncodedSlash,
    Backslash,
    Nul,
    BadEncoding,
}

impl PathProblem {
    pub fn message(self) -> &'static str {
        match self {
            PathProblem::NotOrigin => "the request path must start with '/'",
            PathProblem::DotSegment => {
                "the path has a '.' or '..' segment (also when percent-encoded)"
            }
            PathProblem::EncodedSlash => {
                "the path has an encoded slash or backslash (%2F, %5C); the route does not allow them"
            }
            PathProblem::Backslash => "the path has a backslash",
            PathProblem::Nul => "the path has a NUL byte",
            PathProblem::BadEncoding => "the path has a malformed percent-escape",
        }
    }
}

/// Checks a raw (still percent-encoded) request path. `allow_encoded_slash` lets `%2F` and
/// `%5C` through for routes whose upstream encodes ids that way. One pass over the bytes,
/// segment by segment: it runs for every request.
pub fn check(path: &str, allow_encoded_slash: bool) -> Result<(), PathProblem> {
    if !path.starts_with('/') {
        return Err(PathProblem::NotOrigin);
    }
    let bytes = path.as_bytes();
    let (mut segment_start, mut dot_segment) = (1, false);
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => {
                // Reported after the byte problems, which take precedence.
                dot_segment |= is_dot_segment(&bytes[segment_start..i]);
                segment_start = i + 1;
            }
            b'\\' => return Err(PathProblem::Backslash),
            0 => return Err(PathProblem::Nul),
            b'%' => {
                let value = match bytes.get(i + 1..i + 3) {
                    Some(&[high, low]) => hex(high)
                        .zip(hex(low))
                        .map(|(high, low)| high << 4 | low)
                        .ok_or(PathProblem::BadEncoding)?,
                    _ => return Err(PathProblem::BadEncoding),
                };
                match value {
                    0 => return Err(PathProblem::Nul),
                    b'/' | b'\\' if !allow_encoded_slash => return Err(PathProblem::EncodedSlash),
                    _ => {}
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if dot_segment || is_dot_segment(&bytes[segment_start..]) {
        return Err(PathProblem::DotSegment);
    }
    Ok(())
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// Whether a raw segment (its escapes already checked) decodes to `.` or `..`.
fn is_dot_segment(segment: &[u8]) -> bool {
    let (mut dots, mut i) = (0, 0);
    while i < segment.len() {
        if segment[i] == b'.' {
            i += 1;
        } else if segment
            .get(i..i + 3)
            .is_some_and(|escape| escape.eq_ignore_ascii_case(b"%2e"))
        {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check as first written (a byte pass, then each segment split off and decoded):
    /// slower, plainly right; the one-pass check must agree with it.
    fn reference(path: &str, allow_encoded_slash: bool) -> Result<(), PathProblem> {
        if !path.starts_with('/') {
            return Err(PathProblem::NotOrigin);
        }
        let bytes = path.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => return Err(PathProblem::Backslash),
                0 => return Err(PathProblem::Nul),
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).ok_or(PathProblem::BadEncoding)?;
                    let value = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or(PathProblem::BadEncoding)?;
                    match value {
                        0 => return Err(PathProblem::Nul),
                        b'/' | b'\\' if !allow_encoded_slash => {
                            return Err(PathProblem::EncodedSlash);
                        }
                        _ => {}
                    }
                    i += 3;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        for segment in path.split('/') {
            let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
            if decoded == b"." || decoded == b".." {
                return Err(PathProblem::DotSegment);
            }
        }
        Ok(())
    }

    #[test]
    fn agrees_with_the_reference_on_every_short_path() {
        // Every path of up to 6 symbols after the leading '/', from the symbols that
        // matter: 8^6 + ... ≈ 300k paths, both settings.
        const SYMBOLS: [&str; 8] = ["/", ".", "%2e", "%2E", "%2f", "%5C", "%", "a"];
        let mut paths = vec![String::from("/")];
        let mut start = 0;
        for _ in 0..6 {
            let end = paths.len();
            for i in start..end {
                for symbol in SYMBOLS {
                    paths.push(format!("{}{symbol}", paths[i]));
                }
            }
            start = end;
        }
        for path in &paths {
            for allow in [false, true] {
                assert_eq!(
                    check(path, allow),
                    reference(path, allow),
                    "{path:?} {allow}"
                );
            }
        }
    }

    #[test]
    fn table() {
        use PathProblem::*;
        let cases: &[(&str, bool, Result<(), PathProblem>)] = &[
            ("/vi/trial/Accounts", false, Ok(())),
            ("/", false, Ok(())),
            ("/a//b", false, Ok(())),
            ("/a/..b/c", false, Ok(())),
            ("/a/b..", false, Ok(())),
            ("/a/.well-known/x", false, Ok(())),
            ("/name%20with%20space", false, Ok(())),
            ("/caf%C3%A9", false, Ok(())),
            ("/vi/../arm", false, Err(DotSegment)),
            ("/vi/..", false, Err(DotSegment)),
            ("/./x", false, Err(DotSegment)),
            ("/x/.", false, Err(DotSegment)),
            ("/vi/%2e%2e/arm", false, Err(DotSegment)),
            ("/vi/%2E%2E/arm", false, Err(DotSegment)),
            ("/vi/%2E./arm", false, Err(DotSegment)),
            ("/vi/.%2e/arm", false, Err(DotSegment)),
            ("/vi/%2e/arm", false, Err(DotSegment)),
            ("/vi/%2e%2e", true, Err(DotSegment)),
            ("/vi/.%2E", false, Err(DotSegment)),
            ("/a/...", false, Ok(())),
            ("/a/%2e%2e%2e/b", false, Ok(())),
            ("/a/%2e%2f", true, Ok(())),
            ("/a/%2e%2f", false, Err(EncodedSlash)),
            ("/a/%2e2/b", false, Ok(())),
            ("/a/%2", false, Err(BadEncoding)),
            ("/a/.%2", false, Err(BadEncoding)),
            ("/a/b/", false, Ok(())),
            ("/..", false, Err(DotSegment)),
            ("/%2e", false, Err(DotSegment)),
            ("/vi%2f..%2farm", false, Err(EncodedSlash)),
            ("/a%2Fb", false, Err(EncodedSlash)),
            ("/a%5cb", false, Err(EncodedSlash)),
            ("/a%2Fb", true, Ok(())),
            ("/a%5Cb", true, Ok(())),
            ("/a\\b", true, Err(Backslash)),
            ("/a%00b", true, Err(Nul)),
            ("/a%zzb", false, Err(BadEncoding)),
            ("/a%2", false, Err(BadEncoding)),
            ("/a%", false, Err(BadEncoding)),
            ("*", false, Err(NotOrigin)),
            ("", false, Err(NotOrigin)),
        ];
        for (path, allow, want) in cases {
            assert_eq!(
                check(path, *allow),
                *want,
                "{path:?} allow_encoded_slash={allow}"
            );
        }
    }
}
