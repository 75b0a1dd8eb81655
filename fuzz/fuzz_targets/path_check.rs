//! The path normaliser never panics, and whatever it accepts has no dot segment, no
//! backslash and no NUL once percent-decoded, and no encoded slash unless allowed.
#![no_main]

use azgate::proxy::inbound::path::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for allow_encoded_slash in [false, true] {
        if check(path, allow_encoded_slash).is_ok() {
            assert!(path.starts_with('/'));
            assert!(!path.contains('\\'));
            let lower = path.to_ascii_lowercase();
            assert!(!lower.contains("%00"));
            if !allow_encoded_slash {
                assert!(!lower.contains("%2f") && !lower.contains("%5c"));
            }
            for segment in path.split('/') {
                let decoded = percent_decode(segment);
                assert!(decoded != b"." && decoded != b"..", "{path:?} passed with a dot segment");
            }
        }
    }
});

/// An independent decoder, so the check is not compared with itself.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}
