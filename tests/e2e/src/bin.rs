//! Where the `kvserver` and `kvcli` binaries are. Cargo builds no binaries of other
//! packages for a test, so the support builds them itself, once per test process, into the
//! same target directory and profile as the running test (a no-op when up to date). Both
//! land in one `<target>/<profile>/`, which is where `kvcli --local` looks for `kvserver`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set to any value to use existing `kvserver` and `kvcli` binaries as they are, without
/// running cargo.
pub const NO_BUILD_ENV: &str = "KV_E2E_NO_BUILD";

/// The path of an up-to-date `kvserver` binary. Panics (with cargo's output) if it
/// cannot be built.
pub fn kvserver() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("kv-server", "kvserver"))
}

/// The path of an up-to-date `kvcli` binary, beside [`kvserver`]. Panics (with cargo's
/// output) if it cannot be built.
pub fn kvcli() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("kvcli", "kvcli"))
}

/// Builds `package`'s binary `name` (unless [`NO_BUILD_ENV`] says not to and it exists)
/// and returns its path.
fn built(package: &str, name: &str) -> PathBuf {
    // The test runs as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join(name);
    if std::env::var_os(NO_BUILD_ENV).is_none() || !bin.exists() {
        build(profile_dir, package, name);
    }
    assert!(
        bin.exists(),
        "{} does not exist after building",
        bin.display()
    );
    bin
}

fn build(profile_dir: &Path, package: &str, name: &str) {
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
            package,
            "--bin",
            name,
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(&workspace_manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap_or_else(|e| panic!("run cargo build for {name}: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p {package} --bin {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
