//! Keys and the files that hold them: one cluster key shared by the nodes, and named
//! client keys, each with a permission. A key file is TOML, written with mode 0600 and
//! never overwritten.

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Bytes of every key (256 bits).
pub const KEY_BYTES: usize = 32;
/// Longest client name.
const CLIENT_NAME_BYTES_MAX: usize = 64;

/// A secret key. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub(crate) [u8; KEY_BYTES]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from raw bytes (tests and key files).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Key {
        Key(bytes)
    }

    /// True if `secret` spells this key as its key file does (hex digits, either case),
    /// compared in constant time. The Redis gateway's AUTH takes a client's key this way.
    pub fn matches_hex(&self, secret: &[u8]) -> bool {
        let mut bytes = [0u8; KEY_BYTES];
        if hex::decode_to_slice(secret, &mut bytes).is_err() {
            return false;
        }
        bool::from(subtle::ConstantTimeEq::ct_eq(&bytes[..], &self.0[..]))
    }
}

/// A fresh random key from the operating system.
pub fn generate_key() -> std::io::Result<Key> {
    let mut k = [0u8; KEY_BYTES];
    getrandom::getrandom(&mut k).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(Key(k))
}

/// A random 64-bit number from the operating system: a kvcli process's incarnation (so
/// that processes sharing a client key never share a nonce space or a replay window),
/// and where a node starts counting the tickets it issues to clients.
pub fn random_u64() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u64::from_le_bytes(b))
}

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Gets and status only; writes are refused with "permission denied".
    ReadOnly,
    /// Gets, writes and status; admin operations (`Op::is_admin`) are refused.
    ReadWrite,
    /// Everything: also registering nodes, marking them draining or removed, moving
    /// replicas and leaderships, pausing the balancer. Nodes register under an admin key.
    Admin,
}

impl Permission {
    /// The spelling in key files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Permission::ReadOnly => "read-only",
            Permission::ReadWrite => "read-write",
            Permission::Admin => "admin",
        }
    }

    /// May write (put, delete, ...): read-write and admin.
    pub fn may_write(self) -> bool {
        matches!(self, Permission::ReadWrite | Permission::Admin)
    }

    /// May run admin operations: admin only.
    pub fn may_administer(self) -> bool {
        self == Permission::Admin
    }
}

/// A named client key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientKey {
    /// The client's name: sessions are bound to it.
    pub name: String,
    /// What it may do.
    pub permission: Permission,
    /// The secret.
    pub key: Key,
}

impl ClientKey {
    /// The id its datagrams carry in the header's sender field.
    pub fn id(&self) -> u64 {
        client_key_id(&self.name)
    }
}

/// The id a client key's datagrams carry: a hash of the name, so a node finds the key
/// without trying them all. Not a secret (the tag is the proof); a node refuses two
/// names with one id when it loads them.
pub fn client_key_id(name: &str) -> u64 {
    let h = blake3::Hasher::new_derive_key("raftkv 2026-12 client key id")
        .update(name.as_bytes())
        .finalize();
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The session id the node uses for the session a client named `name` declares as
/// `declared`. The node computes it from the authenticated name, so no client can reach
/// another's sessions by declaring their ids; kvcli computes it too, to match replies.
/// A 64-bit cut of BLAKE3: finding another (name, id) with the same value is a 2^64
/// second-preimage search.
pub fn session_id(name: &str, declared: crate::ClientId) -> crate::ClientId {
    // Deriving the context key costs a compression; every request needs one, so the
    // derived hasher is made once and cloned.
    static SESSION_HASHER: std::sync::OnceLock<blake3::Hasher> = std::sync::OnceLock::new();
    let h = SESSION_HASHER
        .get_or_init(|| blake3::Hasher::new_derive_key("raftkv 2026-12 session id"))
        .clone()
        .update(&(name.len() as u64).to_le_bytes())
        .update(name.as_bytes())
        .update(&declared.0.to_le_bytes())
        .finalize();
    crate::ClientId(u64::from_le_bytes(
        h.as_bytes()[..8].try_into().expect("8 bytes"),
    ))
}

/// Why a key file was refused. The message names the file.
#[derive(Debug, thiserror::Error)]
#[error("key file {}: {problem}", path.display())]
pub struct KeyFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

fn key_file_error(path: &Path, problem: impl std::fmt::Display) -> KeyFileError {
    KeyFileError {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

/// A key file as written on disk: a cluster key has only `key`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permission: Option<Permission>,
    key: String,
}

fn read_raw(path: &Path) -> Result<(RawKeyFile, Key), KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| key_file_error(path, e))?;
    let raw: RawKeyFile = toml::from_str(&text).map_err(|e| key_file_error(path, e))?;
    let mut bytes = [0u8; KEY_BYTES];
    hex::decode_to_slice(raw.key.trim(), &mut bytes)
        .map_err(|_| key_file_error(path, format!("`key` must be {} hex digits", KEY_BYTES * 2)))?;
    Ok((raw, Key(bytes)))
}

/// Reads a cluster key file.
pub fn read_cluster_key(path: &Path) -> Result<Key, KeyFileError> {
    let (raw, key) = read_raw(path)?;
    if raw.name.is_some() || raw.permission.is_some() {
        return Err(key_file_error(
            path,
            "this is a client key (it has a name); the cluster key file has only `key`",
        ));
    }
    Ok(key)
}

/// Reads a client key file (name, permission, key).
pub fn read_client_key(path: &Path) -> Result<ClientKey, KeyFileError> {
    let (raw, key) = read_raw(path)?;
    let (Some(name), Some(permission)) = (raw.name, raw.permission) else {
        return Err(key_file_error(
            path,
            "a client key file needs `name` and `permission` (\"read-only\", \"read-write\" or \"admin\")",
        ));
    };
    check_client_name(&name).map_err(|p| key_file_error(path, p))?;
    Ok(ClientKey {
        name,
        permission,
        key,
    })
}

/// A client name is 1 to 64 letters, digits, `-`, `_` or `.`.
fn check_client_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > CLIENT_NAME_BYTES_MAX || !name.chars().all(ok_char) {
        return Err(format!(
            "client name {name:?} must be 1 to {CLIENT_NAME_BYTES_MAX} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Writes a new cluster key file (mode 0600). Refuses to overwrite an existing file.
pub fn write_cluster_key(path: &Path, key: &Key) -> Result<(), KeyFileError> {
    let raw = RawKeyFile {
        name: None,
        permission: None,
        key: hex::encode(key.0),
    };
    write_new(
        path,
        "# raftkv cluster key: every node of the cluster holds the same one. Keep it secret.\n",
        &raw,
    )
}

/// Writes a new client key file (mode 0600). Refuses to overwrite an existing file.
pub fn write_client_key(path: &Path, client: &ClientKey) -> Result<(), KeyFileError> {
    check_client_name(&client.name).map_err(|p| key_file_error(path, p))?;
    let raw = RawKeyFile {
        name: Some(client.name.clone()),
        permission: Some(client.permission),
        key: hex::encode(client.key.0),
    };
    write_new(
        path,
        "# raftkv client key: kvcli --key-file uses it; nodes list it in client_key_files.\n",
        &raw,
    )
}

/// Creates every key file `config` names that does not exist yet: each cluster key file,
/// and each client key file as a client named after the file: `admin.key` is client
/// "admin" with the admin permission (kvcli's node and shard commands, and the nodes'
/// own registration, need one), any other a read-write client. Existing files are left
/// alone. Returns the files created.
pub fn create_missing_key_files(
    config: &crate::config::ClusterConfig,
) -> Result<Vec<PathBuf>, KeyFileError> {
    let mut created = Vec::new();
    let fresh = |path: &Path| generate_key().map_err(|e| key_file_error(path, e));
    for path in &config.key_files {
        if !path.exists() {
            write_cluster_key(path, &fresh(path)?)?;
            created.push(path.clone());
        }
    }
    for path in &config.client_key_files {
        if !path.exists() {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| key_file_error(path, "cannot name a client after this file"))?;
            let permission = if name == "admin" {
                Permission::Admin
            } else {
                Permission::ReadWrite
            };
            let client = ClientKey {
                name: name.to_string(),
                permission,
                key: fresh(path)?,
            };
            write_client_key(path, &client)?;
            created.push(path.clone());
        }
    }
    Ok(created)
}

fn write_new(path: &Path, comment: &str, raw: &RawKeyFile) -> Result<(), KeyFileError> {
    let text = format!(
        "{comment}{}",
        toml::to_string(raw).map_err(|e| key_file_error(path, e))?
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| key_file_error(path, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            key_file_error(path, "already exists; refusing to overwrite a key")
        } else {
            key_file_error(path, e)
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| key_file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("keys/cluster.key");
        let key = generate_key().unwrap();
        write_cluster_key(&cluster, &key).unwrap();
        assert_eq!(read_cluster_key(&cluster).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&cluster).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = write_cluster_key(&cluster, &generate_key().unwrap()).unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        assert_eq!(
            read_cluster_key(&cluster).unwrap(),
            key,
            "kept the first key"
        );

        let client = ClientKey {
            name: "reader-1".into(),
            permission: Permission::ReadOnly,
            key: generate_key().unwrap(),
        };
        let path = dir.path().join("reader.key");
        write_client_key(&path, &client).unwrap();
        assert_eq!(read_client_key(&path).unwrap(), client);
        let admin = ClientKey {
            name: "ops".into(),
            permission: Permission::Admin,
            key: generate_key().unwrap(),
        };
        let admin_path = dir.path().join("ops.key");
        write_client_key(&admin_path, &admin).unwrap();
        let text = std::fs::read_to_string(&admin_path).unwrap();
        assert!(text.contains("permission = \"admin\""), "{text}");
        assert_eq!(read_client_key(&admin_path).unwrap(), admin);
        let e = read_cluster_key(&path).unwrap_err().to_string();
        assert!(e.contains("client key"), "{e}");
        let e = read_client_key(&cluster).unwrap_err().to_string();
        assert!(e.contains("needs `name`"), "{e}");
    }

    #[test]
    fn bad_key_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let e = read_cluster_key(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.key"), "{e}");
        let short = dir.path().join("short.key");
        std::fs::write(&short, "key = \"abcd\"\n").unwrap();
        let e = read_cluster_key(&short).unwrap_err().to_string();
        assert!(
            e.contains("short.key") && e.contains("64 hex digits"),
            "{e}"
        );
        let bad_name = dir.path().join("name.key");
        std::fs::write(
            &bad_name,
            format!(
                "name = \"a b\"\npermission = \"read-only\"\nkey = \"{}\"\n",
                "00".repeat(32)
            ),
        )
        .unwrap();
        let e = read_client_key(&bad_name).unwrap_err().to_string();
        assert!(e.contains("client name"), "{e}");
    }

    #[test]
    fn missing_key_files_are_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "cluster_id = 1\nshards = 1\nkey_file = \"keys/cluster.key\"\n\
             client_key_files = [\"keys/admin.key\", \"keys/app.key\"]\n\
             [[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let config = crate::config::ClusterConfig::load(&path).unwrap();
        let created = create_missing_key_files(&config).unwrap();
        assert_eq!(created.len(), 3);
        let admin = read_client_key(&dir.path().join("keys/admin.key")).unwrap();
        assert_eq!(
            (admin.name.as_str(), admin.permission),
            ("admin", Permission::Admin)
        );
        let app = read_client_key(&dir.path().join("keys/app.key")).unwrap();
        assert_eq!(
            (app.name.as_str(), app.permission),
            ("app", Permission::ReadWrite)
        );
        let cluster = read_cluster_key(&dir.path().join("keys/cluster.key")).unwrap();
        assert!(create_missing_key_files(&config).unwrap().is_empty());
        assert_eq!(
            read_cluster_key(&dir.path().join("keys/cluster.key")).unwrap(),
            cluster
        );
    }

    #[test]
    fn a_key_matches_its_hex_spelling_only() {
        let key = Key::from_bytes([0xab; KEY_BYTES]);
        let hex = "ab".repeat(KEY_BYTES);
        assert!(key.matches_hex(hex.as_bytes()));
        assert!(key.matches_hex(hex.to_uppercase().as_bytes()));
        let mut other = hex.clone().into_bytes();
        other[KEY_BYTES * 2 - 1] = b'c';
        assert!(!key.matches_hex(&other), "one digit off");
        assert!(!key.matches_hex(&hex.as_bytes()[2..]), "too short");
        assert!(!key.matches_hex(b""));
        assert!(!key.matches_hex(format!("{hex}00").as_bytes()), "too long");
    }

    #[test]
    fn session_ids_depend_on_the_name() {
        let id = crate::ClientId(42);
        assert_ne!(session_id("alice", id), session_id("bob", id));
        assert_eq!(session_id("alice", id), session_id("alice", id));
        assert_ne!(client_key_id("alice"), client_key_id("bob"));
    }
}
