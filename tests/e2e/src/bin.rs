//! Where the `kvserver` binary is. Cargo builds no binaries of other packages for a
//! test, so the support builds it itself, once per test process, into the same target
//! directory and profile as the running test (a no-op when it is up to date).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set to any value to use an existing `kvserver` as is, without running cargo.
pub const NO_BUILD_ENV: &str = "KV_E2E_NO_BUILD";

/// The path of an up-to-date `kvserver` binary. Panics (with cargo's output) if it
/// cannot be built.
pub fn kvserver() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The test runs as <target>/<profile>/deps/<test>-<hash>.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in <target>/<profile>/deps");
        let bin = profile_dir.join("kvserver");
        if std::env::var_os(NO_BUILD_ENV).is_none() || !bin.exists() {
            build(profile_dir);
        }
        assert!(
            bin.exists(),
            "{} does not exist after building",
            bin.display()
        );
        bin
    })
}

fn build(profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let workspace_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "kv-server",
            "--bin",
            "kvserver",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(&workspace_manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("run cargo build for kvserver");
    assert!(
        out.status.success(),
        "cargo build -p kv-server --bin kvserver failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
