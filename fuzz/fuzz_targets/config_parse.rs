//! The config parser never panics on any input, and a refused config always explains
//! itself with at least one problem.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    match azgate::config::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent"), &env) {
        Ok(config) => {
            assert!(!config.file.is_empty());
        }
        Err(err) => {
            assert!(!err.problems.is_empty(), "an error without a problem");
            let _ = err.to_string();
        }
    }
});
