//! Key files at the edge: `kvserver keygen` writes private files and never overwrites
//! one; a node whose key file is missing or malformed, or a kvcli without a key, stops at
//! once with exit status 2 and a line naming the file; a kvcli whose key the nodes do
//! not accept is told to check the key, not only the cluster id.

use kv_e2e::bin;
use std::path::Path;
use std::process::{Command, Output};

fn kvserver(args: &[&str]) -> Output {
    Command::new(bin::kvserver())
        .args(args)
        .output()
        .expect("run kvserver")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_config(dir: &Path, key_file: &str) -> String {
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        format!(
            "cluster_id = 5\nshards = 1\ndata_dir = \"{}\"\nkey_file = \"{key_file}\"\n\
             client_key_files = [\"keys/admin.key\"]\n\
             [[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n",
            dir.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn keygen_writes_private_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k/cluster.key");
    let out_s = out.to_str().unwrap();
    let o = kvserver(&["keygen", "--out", out_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = std::fs::read_to_string(&out).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let o = kvserver(&["keygen", "--out", out_s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refusing to overwrite") && stderr(&o).contains(out_s),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);

    let reader = dir.path().join("reader.key");
    let o = kvserver(&[
        "keygen",
        "--out",
        reader.to_str().unwrap(),
        "--client",
        "reader",
        "--read-only",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let key = kv_shared::auth::read_client_key(&reader).unwrap();
    assert_eq!(key.permission, kv_shared::auth::Permission::ReadOnly);

    // --config creates what is missing and keeps what exists.
    let config = write_config(dir.path(), "k/cluster.key");
    let o = kvserver(&["keygen", "--config", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    assert!(dir.path().join("keys/admin.key").is_file());
}

#[test]
fn a_missing_or_malformed_key_file_stops_the_node_with_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "keys/nowhere.key");
    let o = kvserver(&["--config", &config, "--node", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nowhere.key"), "{}", stderr(&o));

    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/nowhere.key"), "key = \"not hex\"\n").unwrap();
    let o = kvserver(&["--config", &config, "--node", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nowhere.key") && stderr(&o).contains("hex digits"),
        "{}",
        stderr(&o)
    );

    let o = Command::new(bin::kvcli())
        .args(["--nodes", "127.0.0.1:9", "get", "k"])
        .current_dir(dir.path())
        .output()
        .expect("run kvcli");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--key-file"), "{}", stderr(&o));
}

/// The nodes answer nothing sealed under a key they do not accept, so kvcli sees the
/// same silence as from a stopped cluster: its error must name the key as a suspect,
/// or a user with the wrong key file is sent to check --cluster-id.
#[test]
fn a_client_key_the_nodes_do_not_accept_is_named_as_a_suspect() {
    use kv_e2e::cluster::{Cluster, Spec};
    let c = Cluster::start(Spec {
        nodes: 1,
        shards: 1,
        ..Spec::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("admin.key");
    let o = kvserver(&[
        "keygen",
        "--out",
        foreign.to_str().unwrap(),
        "--client",
        "admin",
        "--admin",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = Command::new(bin::kvcli())
        .arg("--cluster")
        .arg(c.config_path())
        .arg("--key-file")
        .arg(&foreign)
        .args(["--unavailable-after", "1s", "get", "k"])
        .output()
        .expect("run kvcli");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: no node answered") && err.contains("client_key_files"),
        "{err}"
    );
}
