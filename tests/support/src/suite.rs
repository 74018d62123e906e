//! The one-binary test layout's guard: every file of a crate's `tests/` is a
//! module declared in its `tests/main.rs`.

use std::path::Path;

/// Panics naming each `.rs` file beside `tests/main.rs` of the crate at
/// `manifest_dir` that `main.rs` does not declare (`mod NAME;`): such a file
/// would silently never compile or run.
pub fn assert_every_test_file_is_declared(manifest_dir: &str) {
    let dir = Path::new(manifest_dir).join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("tests/main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/") {
        let name = entry
            .expect("tests/ entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(stem) = name.strip_suffix(".rs").filter(|s| *s != "main") {
            if !main.lines().any(|l| l.trim() == format!("mod {stem};")) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not declared in {}: {missing:?}",
        dir.join("main.rs").display()
    );
}
