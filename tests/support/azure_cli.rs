//! A fake Azure CLI: an `az` shell script in a temp dir that becomes the Env's PATH,
//! recording its arguments and environment and printing canned output.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A temp dir holding an `az` script.
pub struct FakeAz {
    pub dir: tempfile::TempDir,
}

impl FakeAz {
    /// `body` runs after the script has recorded its arguments to `args` and its
    /// environment to `env` in the same dir; `{dir}` in it names that dir.
    pub fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let body = body.replace("{dir}", &d.to_string());
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{d}/args'\n\
             printf 'PATH=%s\\nAZURE_CORE_NO_COLOR=%s\\n' \"$PATH\" \"$AZURE_CORE_NO_COLOR\" > '{d}/env'\n\
             {body}\n"
        );
        write_executable(&dir.path().join("az"), &script);
        Self { dir }
    }

    /// A script printing `json` on stdout.
    pub fn printing(json: &serde_json::Value) -> Self {
        Self::new(&format!("printf '%s\\n' '{json}'"))
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn args(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("args"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn env(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("env")).unwrap()
    }
}

/// Written by a child process: a write handle held in this process could leak into
/// another test's fork and make exec of the script fail with "Text file busy".
pub fn write_executable(path: &Path, text: &str) {
    let mut writer = Command::new("/bin/sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writer
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(writer.wait().unwrap().success());
}
