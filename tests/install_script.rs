//! `install.sh`, run with `--dry-run` (it prints every action without doing
//! any): what it installs, and the hardening of the unit it writes.

use std::path::Path;
use std::process::Command;

/// Runs a copy of install.sh with `args` in a directory holding an executable
/// file named `lanchat`; returns (success, stdout + stderr).
fn dry_run(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("install.sh");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"),
        &script,
    )
    .expect("copy install.sh");
    let stray = dir.path().join("lanchat");
    std::fs::write(&stray, "#!/bin/sh\necho not lanchat\n").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let output = Command::new("bash")
        .arg(&script)
        .arg("--dry-run")
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn a_file_named_lanchat_is_installed_only_when_named() {
    let (ok, text) = dry_run(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("no lanchat binary found"), "{text}");
    let (ok, text) = dry_run(&["./lanchat"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("/lanchat /usr/local/bin/lanchat.new"),
        "{text}"
    );
}

#[test]
fn the_unit_is_hardened_and_bounded() {
    let (ok, text) = dry_run(&["./lanchat"]);
    assert!(ok, "{text}");
    for line in [
        "TasksMax=",
        "MemoryMax=",
        "ProtectProc=invisible",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.contains(line), "the unit lacks {line}:\n{text}");
    }
}

#[test]
fn nothing_is_chowned_recursively_as_root() {
    let script = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"))
        .expect("read install.sh");
    let code: Vec<&str> = script
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect();
    assert!(
        !code
            .iter()
            .any(|line| line.contains("chown -R") || line.contains("chown --recursive")),
        "install.sh chowns recursively"
    );
}
