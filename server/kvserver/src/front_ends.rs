//! Starts the node's TCP front ends next to its UDP event loop: the Redis-protocol
//! gateway and the HTTP endpoint for metrics and health. Both bind before the node
//! reports itself started, so a taken port stops the node with a message naming it.

use crate::metrics::Metrics;
use crate::server::{ServerError, ServerOptions};
use crate::{http, resp};
use kv_shared::auth::{read_client_key, ClientKey};
use kv_shared::config::ClusterConfig;
use kvcli::{Client, ClientOptions};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The front ends' tasks; dropping this stops them.
#[derive(Debug, Default)]
pub struct Tasks(Vec<JoinHandle<()>>);

/// What the event loop keeps of its front ends: their tasks, and the inbox of the reads
/// and writes the Redis gateway hands straight to the node core.
#[derive(Debug)]
pub struct FrontEnds {
    /// The TCP front ends' tasks (they stop when this is dropped).
    pub tasks: Tasks,
    /// The gateway's requests for the core ([`resp::local`]).
    pub local_requests: resp::local::LocalInbox,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// The client key the Redis gateway speaks to the cluster under for itself (the node
/// status that INFO and DBSIZE show), and the node registers itself and runs the balancer
/// under (admin operations: the key needs the admin permission, docs/SECURITY.md): the
/// cluster file's `client_key_file`, else its first admin key in `client_key_files`, else
/// its first read-write one. Connections act as the client they AUTH
/// as, or as `redis_default_client` (`resp::users`, docs/SECURITY.md).
pub(crate) fn gateway_key(cluster: &ClusterConfig) -> Result<Option<ClientKey>, ServerError> {
    let read = |path: &std::path::Path| read_client_key(path).map_err(ServerError::GatewayKey);
    if let Some(path) = &cluster.client_key_file {
        return read(path).map(Some);
    }
    let mut keys = Vec::new();
    for path in &cluster.client_key_files {
        keys.push(read(path)?);
    }
    let admin = keys.iter().position(|k| k.permission.may_administer());
    let writer = keys.iter().position(|k| k.permission.may_write());
    Ok(admin.or(writer).map(|i| keys.swap_remove(i)))
}

/// Binds the addresses `opts` names and starts serving them.
pub async fn start(opts: &ServerOptions, metrics: Metrics) -> Result<FrontEnds, ServerError> {
    let mut tasks = Tasks::default();
    let (local, local_requests) = resp::local::channel();
    if let Some(addr) = opts.http_addr {
        let listener = bind("HTTP (metrics)", addr).await?;
        // The bound address: with port 0 the kernel picked the port, and this line is
        // how the operator learns it.
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!(node = opts.node.0, %addr, "serving /metrics and /health");
        tasks
            .0
            .push(tokio::spawn(http::serve(listener, metrics.clone())));
    }
    if let Some(addr) = opts.redis_addr {
        let listener = bind("Redis protocol", addr).await?;
        let addr = listener.local_addr().unwrap_or(addr);
        let Some(key) = gateway_key(&opts.cluster)? else {
            tracing::error!(
                "the Redis gateway is off: the cluster file names no client key for it \
                 (client_key_file, or a read-write key in client_key_files)"
            );
            return Ok(FrontEnds {
                tasks,
                local_requests,
            });
        };
        let users = resp::users::Users::load(&opts.cluster).map_err(ServerError::RespUsers)?;
        tracing::info!(node = opts.node.0, %addr, "serving the Redis protocol");
        let client_options = ClientOptions::from_config(&opts.cluster, key);
        let node = opts.node;
        let cluster = &opts.cluster;
        let placement = kv_node::placement::initial_placement(
            &cluster.node_ids(),
            cluster.shards,
            cluster.replication as usize,
        );
        let bootstrap_shards = (0..cluster.shards)
            .map(kv_shared::ShardId)
            .filter(|s| placement[s.0 as usize].replicas.contains(&node))
            .collect();
        tasks.0.push(tokio::spawn(async move {
            // The node's own event loop must run to answer the client's discovery, so
            // the client connects from this task, after `start` has returned.
            let client = match Client::connect(client_options).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("the Redis gateway cannot reach the cluster: {e}");
                    return;
                }
            };
            let gateway = resp::Gateway::new(
                client,
                users,
                node,
                local,
                bootstrap_shards,
                metrics,
                addr.to_string(),
            );
            resp::serve(listener, gateway).await;
        }));
    }
    Ok(FrontEnds {
        tasks,
        local_requests,
    })
}
