//! `kvcli --local`: the quick start's own cluster. Starts one `kvserver` process per node of
//! the embedded 3-node config (found next to the kvcli executable), keeps their data and
//! logs under one directory, and stops them when dropped, so the REPL's exit ends them.
//! The keys the config names are created there on first use (`DIR/keys`).

use anyhow::{bail, Context as _};
use kv_shared::config::{ClusterConfig, LOCAL_3_TOML};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running local cluster; dropping it kills the nodes.
pub struct LocalCluster {
    /// The cluster it runs (the embedded config, key paths resolved under `dir`).
    pub config: ClusterConfig,
    /// Where data, logs and the written config live.
    pub dir: PathBuf,
    children: Vec<(u64, Child)>,
}

/// The `kvserver` binary beside the running kvcli (cargo puts both in one target dir).
pub fn kvserver_beside_me() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find the kvcli executable's path")?;
    let dir = me
        .parent()
        .context("the kvcli executable has no parent directory")?;
    let path = dir.join(format!("kvserver{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "--local needs the kvserver binary next to kvcli, at {}; build both with `cargo build --release --bin kvserver --bin kvcli` (or use `cargo run --release --bin kvcli -- --local`, after building kvserver)",
            path.display()
        );
    }
    Ok(path)
}

impl LocalCluster {
    /// Starts every node of the embedded config with `kvserver`, data under `dir`
    /// (`dir/node-N`), logs in `dir/node-N.log`. Fails with a clear line if a port is taken.
    pub fn start(kvserver: &Path, dir: &Path) -> anyhow::Result<LocalCluster> {
        for n in &ClusterConfig::local_3().nodes {
            if let Err(e) = std::net::UdpSocket::bind(n.addr) {
                bail!(
                    "cannot start node {} on {}: {e}; is another cluster running? Stop it, or connect to it with plain `kvcli`",
                    n.id,
                    n.addr
                );
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let config_path = dir.join("local-3.toml");
        std::fs::write(&config_path, LOCAL_3_TOML)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let config = ClusterConfig::load(&config_path)?;
        for created in kv_shared::auth::create_missing_key_files(&config)? {
            crate::note!("created key file {}", created.display());
        }
        let mut cluster = LocalCluster {
            config: config.clone(),
            dir: dir.to_path_buf(),
            children: Vec::new(),
        };
        for n in &config.nodes {
            let data = dir.join(format!("node-{}", n.id));
            let log_path = dir.join(format!("node-{}.log", n.id));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("cannot create {}", log_path.display()))?;
            let child = Command::new(kvserver)
                .arg("--config")
                .arg(&config_path)
                .arg("--node")
                .arg(n.id.to_string())
                .arg("--data-dir")
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", kvserver.display()))?;
            cluster.children.push((n.id, child));
        }
        Ok(cluster)
    }

    /// Fails if a node has exited, quoting the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (id, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let log_path = self.dir.join(format!("node-{id}.log"));
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "node {id} exited ({status}); the end of {}:\n{}",
                    log_path.display(),
                    tail.join("\n")
                );
            }
        }
        Ok(())
    }

    /// Kills the nodes and waits for them.
    pub fn stop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
