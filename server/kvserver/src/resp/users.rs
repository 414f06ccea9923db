//! Who a Redis-protocol connection acts as: RESP users are raftkv's client keys
//! (docs/SECURITY.md). `AUTH <name> <key>` takes the 64 hex digits of the client's key
//! file as the password; the connection then reaches the cluster through a client sealed
//! under that key, so the nodes bind its sessions to that name and enforce its
//! permission, exactly as for kvcli with the same key file.

use kv_shared::auth::{read_client_key, ClientKey, Permission};
use kv_shared::config::ClusterConfig;
use kvcli::{Client, ClientOptions};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The user name `AUTH <password>` (one argument) stands for, as in Redis.
pub const DEFAULT_USER: &[u8] = b"default";

/// An authenticated RESP user: a client key and the cluster client sealing under it.
pub struct User {
    /// The client's name (from its key file).
    pub name: String,
    /// What it may do.
    pub permission: Permission,
    /// The cluster client under its key, shared by every connection of this user.
    pub client: Client,
}

/// Why a user could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// A client key file could not be read.
    #[error(transparent)]
    KeyFile(#[from] kv_shared::auth::KeyFileError),
    /// `redis_default_client` names no client key listed in `client_key_files`.
    #[error("redis_default_client = {0:?} is not the name of any key in client_key_files ({1})")]
    UnknownDefault(String, String),
}

/// The client keys the gateway accepts and the clients connected for them so far.
pub struct Users {
    keys: Vec<ClientKey>,
    cluster: ClusterConfig,
    /// Index in `keys` of the client unauthenticated connections act as.
    default: Option<usize>,
    connected: Mutex<HashMap<String, Arc<User>>>,
}

impl Users {
    /// Reads every client key file `cluster` lists and checks `redis_default_client`.
    pub fn load(cluster: &ClusterConfig) -> Result<Users, UsersError> {
        let keys = cluster
            .client_key_files
            .iter()
            .map(|path| read_client_key(path).map_err(UsersError::KeyFile))
            .collect::<Result<Vec<_>, _>>()?;
        Users::new(keys, cluster.clone())
    }

    fn new(keys: Vec<ClientKey>, cluster: ClusterConfig) -> Result<Users, UsersError> {
        let default = match &cluster.redis_default_client {
            None => None,
            Some(name) => Some(keys.iter().position(|k| &k.name == name).ok_or_else(|| {
                let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
                UsersError::UnknownDefault(name.clone(), names.join(", "))
            })?),
        };
        Ok(Users {
            keys,
            cluster,
            default,
            connected: Mutex::new(HashMap::new()),
        })
    }

    /// The key `user` authenticates as with `secret`, if they match: the client of that
    /// name whose key `secret` spells; for the `default` user (AUTH with one argument)
    /// when no client has that name, whichever client's key `secret` spells.
    pub fn check(&self, user: &[u8], secret: &[u8]) -> Option<&ClientKey> {
        if let Some(k) = self.keys.iter().find(|k| k.name.as_bytes() == user) {
            return k.key.matches_hex(secret).then_some(k);
        }
        if user != DEFAULT_USER {
            return None;
        }
        // Every key is compared, so the time taken does not tell which one matched.
        self.keys
            .iter()
            .fold(None, |found, k| match k.key.matches_hex(secret) {
                true => Some(k),
                false => found,
            })
    }

    /// The key unauthenticated connections act as, if the operator named one.
    pub fn default_key(&self) -> Option<&ClientKey> {
        self.default.map(|i| &self.keys[i])
    }

    /// The user of `key`, connecting its cluster client on first use.
    pub async fn user(&self, key: &ClientKey) -> Result<Arc<User>, kvcli::Error> {
        let mut connected = self.connected.lock().await;
        if let Some(u) = connected.get(&key.name) {
            return Ok(u.clone());
        }
        let client =
            Client::connect(ClientOptions::from_config(&self.cluster, key.clone())).await?;
        let user = Arc::new(User {
            name: key.name.clone(),
            permission: key.permission,
            client,
        });
        connected.insert(key.name.clone(), user.clone());
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_shared::auth::{Key, KEY_BYTES};

    fn key(name: &str, byte: u8, permission: Permission) -> ClientKey {
        ClientKey {
            name: name.into(),
            permission,
            key: Key::from_bytes([byte; KEY_BYTES]),
        }
    }

    fn users(default: Option<&str>) -> Result<Users, UsersError> {
        let mut cluster = ClusterConfig::local_3();
        cluster.redis_default_client = default.map(String::from);
        Users::new(
            vec![
                key("admin", 1, Permission::ReadWrite),
                key("reader", 2, Permission::ReadOnly),
            ],
            cluster,
        )
    }

    #[test]
    fn auth_takes_the_key_files_hex_under_the_right_name_only() {
        let u = users(None).unwrap();
        let admin = "01".repeat(KEY_BYTES);
        let reader = "02".repeat(KEY_BYTES);
        assert_eq!(u.check(b"admin", admin.as_bytes()).unwrap().name, "admin");
        assert_eq!(
            u.check(b"reader", reader.as_bytes()).unwrap().name,
            "reader"
        );
        assert!(
            u.check(b"admin", reader.as_bytes()).is_none(),
            "another's key"
        );
        assert!(
            u.check(b"nobody", admin.as_bytes()).is_none(),
            "unknown name"
        );
        assert!(u.check(b"admin", b"01").is_none(), "a short secret");
        // AUTH <password>: the key alone names its client.
        assert_eq!(
            u.check(DEFAULT_USER, reader.as_bytes()).unwrap().name,
            "reader"
        );
        assert!(u.check(DEFAULT_USER, b"nope").is_none());
        assert!(u.default_key().is_none());
    }

    #[test]
    fn the_default_client_must_be_a_listed_key() {
        assert_eq!(
            users(Some("reader")).unwrap().default_key().unwrap().name,
            "reader"
        );
        let e = users(Some("ghost")).err().expect("ghost is no client");
        assert!(e.to_string().contains("\"ghost\""), "{e}");
        assert!(e.to_string().contains("admin, reader"), "{e}");
    }
}
