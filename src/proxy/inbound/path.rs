//! Request paths that could mean something else upstream than they mean to the router:
//! dot segments (also percent-encoded: `%2e%2e`, `%2E.`, `.%2e`), encoded slashes and
//! backslashes (`%2F`, `%5C`), raw backslashes and NUL bytes. They are refused, never
//! normalised: a client that sends them is either confused or probing.

use percent_encoding::percent_decode_str;

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
/// `%5C` through for routes whose upstream encodes ids that way.
pub fn check(path: &str, allow_encoded_slash: bool) -> Result<(), PathProblem> {
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
    for segment in path.split('/') {
        if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b == b'.' || b == b'%' || b.is_ascii_hexdigit())
        {
            continue;
        }
        let decoded = percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded == b"." || decoded == b".." {
            return Err(PathProblem::DotSegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
