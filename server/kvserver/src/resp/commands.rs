//! From a Redis command's words to what the gateway must do: answer at once, run a set of
//! independent raftkv operations (which pipelining may run side by side), or run a
//! command that needs the connection or several dependent round trips. Parsing and
//! arity checks live here, once, so the connection code only executes plans.

use super::reply::Reply;
use bytes::Bytes;
use kv_shared::proto::{ClientError, Op};
use kvcli::{Error, Response};
use smallvec::{smallvec, SmallVec};

/// A command's operations: most commands have one, which then needs no allocation.
pub type Ops = SmallVec<[Op; 1]>;

/// What to do for one command.
#[derive(Debug)]
pub enum Plan {
    /// The reply is known without asking the cluster.
    Now(Reply),
    /// Independent single-key operations; `finish` turns their answers into the reply.
    Ops {
        /// One operation per key, in the command's key order.
        ops: Ops,
        /// How the answers become the reply.
        finish: Finish,
    },
    /// A command that reads or changes connection state, or needs dependent steps.
    Conn(ConnCommand),
}

/// How the answers of a [`Plan::Ops`] become the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// GET, GETSET, GETDEL, SET ... GET: the (old) value.
    Value,
    /// SET, MSET: `+OK`.
    Ok,
    /// MGET: an array of values.
    Values,
    /// DEL, EXISTS: how many keys were there.
    CountPresent,
    /// INCR family, APPEND: the integer.
    Integer,
    /// STRLEN: the value's length (0 when absent).
    Length,
    /// SETNX, CAS: 1 if written, 0 if not.
    CasFlag,
    /// SET NX: `+OK` if written, null if not.
    CasOkOrNull,
    /// SET NX GET: the old value (null when it was absent and so written).
    CasOldValue,
}

/// Commands executed with the connection at hand.
#[derive(Debug)]
pub enum ConnCommand {
    /// HELLO [protover [AUTH user pass] [SETNAME name]].
    Hello {
        /// The protocol asked for (`None`: keep the current one).
        version: Option<u8>,
        /// AUTH user password.
        auth: Option<(Bytes, Bytes)>,
        /// SETNAME name.
        name: Option<Bytes>,
    },
    /// AUTH [user] password.
    Auth {
        /// The user name (`default` when not given).
        user: Bytes,
        /// The password.
        password: Bytes,
    },
    /// CLIENT SETNAME.
    SetName(Bytes),
    /// CLIENT GETNAME.
    GetName,
    /// CLIENT ID.
    ClientId,
    /// QUIT: reply `+OK`, then close.
    Quit,
    /// READONLY / READWRITE: switch this connection's reads to stale (any replica) or back.
    StaleReads(bool),
    /// SET with XX: write only if the key exists (a compare-and-set loop).
    SetIfPresent {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Answer the old value instead of `+OK`.
        get: bool,
    },
    /// INFO [section ...].
    Info(Vec<String>),
    /// DBSIZE.
    DbSize,
}

/// Every command the gateway knows, for COMMAND COUNT and the docs.
pub const COMMAND_NAMES: &[&str] = &[
    "ping",
    "echo",
    "hello",
    "auth",
    "select",
    "client",
    "quit",
    "get",
    "set",
    "setnx",
    "getset",
    "getdel",
    "del",
    "exists",
    "mget",
    "mset",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "append",
    "strlen",
    "dbsize",
    "info",
    "config",
    "command",
    "cas",
    "readonly",
    "readwrite",
];

/// Most words in one command (MGET/MSET/DEL/EXISTS with many keys), so one command's
/// work and reply stay bounded.
pub const COMMAND_ARGS_MAX: usize = 1024;

/// Why a SET with a TTL is refused.
const NO_TTL: &str = "raftkv keys have no TTL: SET EX/PX/EXAT/PXAT/KEEPTTL are not supported";

fn arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

fn syntax() -> Reply {
    Reply::err("syntax error")
}

fn not_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

/// Redis's text for a command it does not know, with the first arguments shown.
fn unknown(name: &[u8], args: &[Bytes]) -> Reply {
    let shown: String = args
        .iter()
        .take(3)
        .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
        .collect();
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {shown}",
        String::from_utf8_lossy(name)
    ))
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// The lower-case name of a command the gateway knows, matched without regard to case and
/// without allocating (every command passes here).
pub fn command_name(word: &[u8]) -> Option<&'static str> {
    COMMAND_NAMES
        .iter()
        .find(|n| n.as_bytes().eq_ignore_ascii_case(word))
        .copied()
}

/// Plans one command. `stale` is the connection's read mode. A command with a key or
/// value over its limit is refused whole, before any of its operations runs: MSET's
/// other pairs (or DEL's other keys) would otherwise be written while the reply says
/// the command failed.
pub fn plan(words: &[Bytes], stale: bool) -> Plan {
    let plan = plan_words(words, stale);
    if let Plan::Ops { ops, .. } = &plan {
        if let Some(e) = ops.iter().find_map(|op| op.check_limits().err()) {
            return Plan::Now(Reply::err(e));
        }
    }
    plan
}

/// [`plan`] before the limits are checked.
fn plan_words(words: &[Bytes], stale: bool) -> Plan {
    let Some((name_bytes, args)) = words.split_first() else {
        return Plan::Now(Reply::err("empty command"));
    };
    if words.len() > COMMAND_ARGS_MAX {
        return Plan::Now(Reply::err(format!(
            "a command has at most COMMAND_ARGS_MAX = {COMMAND_ARGS_MAX} words; this one has {}",
            words.len()
        )));
    }
    // An unknown name matches none of the arms below but the last.
    let name = command_name(name_bytes).unwrap_or("");
    let get = |key: &Bytes| Op::Get {
        key: key.clone(),
        stale,
    };
    let ops = |ops: Ops, finish| Plan::Ops { ops, finish };
    let now = Plan::Now;
    let incr = |key: &Bytes, delta| {
        ops(
            smallvec![Op::Incr {
                key: key.clone(),
                delta,
            }],
            Finish::Integer,
        )
    };
    match (name, args) {
        ("ping", []) => now(Reply::Simple("PONG")),
        ("ping", [msg]) => now(Reply::bulk(msg.clone())),
        ("echo", [msg]) => now(Reply::bulk(msg.clone())),
        ("hello", _) => plan_hello(args),
        ("auth", [password]) => Plan::Conn(ConnCommand::Auth {
            user: Bytes::from_static(b"default"),
            password: password.clone(),
        }),
        ("auth", [user, password]) => Plan::Conn(ConnCommand::Auth {
            user: user.clone(),
            password: password.clone(),
        }),
        ("select", [db]) => match parse_i64(db) {
            Some(0) => now(Reply::OK),
            Some(_) => now(Reply::err("DB index is out of range")),
            None => now(not_integer()),
        },
        ("client", [sub, rest @ ..]) => plan_client(&lower(sub), rest),
        ("quit", _) => Plan::Conn(ConnCommand::Quit),
        ("readonly", []) => Plan::Conn(ConnCommand::StaleReads(true)),
        ("readwrite", []) => Plan::Conn(ConnCommand::StaleReads(false)),
        ("get", [key]) => ops(smallvec![get(key)], Finish::Value),
        ("set", [key, value, opts @ ..]) => plan_set(key, value, opts),
        ("setnx", [key, value]) => ops(
            smallvec![Op::Cas {
                key: key.clone(),
                expected: None,
                new: value.clone(),
            }],
            Finish::CasFlag,
        ),
        ("getset", [key, value]) => ops(
            smallvec![Op::Swap {
                key: key.clone(),
                new: Some(value.clone()),
            }],
            Finish::Value,
        ),
        ("getdel", [key]) => ops(
            smallvec![Op::Swap {
                key: key.clone(),
                new: None,
            }],
            Finish::Value,
        ),
        ("del", keys) if !keys.is_empty() => ops(
            keys.iter()
                .map(|k| Op::Swap {
                    key: k.clone(),
                    new: None,
                })
                .collect(),
            Finish::CountPresent,
        ),
        ("exists", keys) if !keys.is_empty() => {
            ops(keys.iter().map(get).collect(), Finish::CountPresent)
        }
        ("mget", keys) if !keys.is_empty() => ops(keys.iter().map(get).collect(), Finish::Values),
        ("mset", pairs) if !pairs.is_empty() && pairs.len() % 2 == 0 => ops(
            pairs
                .chunks(2)
                .map(|p| Op::Put {
                    key: p[0].clone(),
                    value: p[1].clone(),
                })
                .collect(),
            Finish::Ok,
        ),
        ("incr", [key]) => incr(key, 1),
        ("decr", [key]) => incr(key, -1),
        ("incrby", [key, by]) => match parse_i64(by) {
            Some(d) => incr(key, d),
            None => now(not_integer()),
        },
        // DECRBY k -9223372036854775808 names a valid integer whose negation is not one.
        ("decrby", [key, by]) => match parse_i64(by).map(i64::checked_neg) {
            Some(Some(d)) => incr(key, d),
            Some(None) => now(Reply::err("decrement would overflow")),
            None => now(not_integer()),
        },
        ("append", [key, value]) => ops(
            smallvec![Op::Append {
                key: key.clone(),
                value: value.clone(),
            }],
            Finish::Integer,
        ),
        ("strlen", [key]) => ops(smallvec![get(key)], Finish::Length),
        ("dbsize", []) => Plan::Conn(ConnCommand::DbSize),
        ("info", sections) => Plan::Conn(ConnCommand::Info(
            sections.iter().map(|s| lower(s)).collect(),
        )),
        ("config", [sub, patterns @ ..]) => plan_config(&lower(sub), patterns),
        ("command", rest) => plan_command(rest),
        ("cas", [key, expected, new]) => ops(
            smallvec![Op::Cas {
                key: key.clone(),
                expected: Some(expected.clone()),
                new: new.clone(),
            }],
            Finish::CasFlag,
        ),
        (
            "ping" | "echo" | "auth" | "select" | "client" | "readonly" | "readwrite" | "get"
            | "set" | "setnx" | "getset" | "getdel" | "del" | "exists" | "mget" | "mset" | "incr"
            | "decr" | "incrby" | "decrby" | "append" | "strlen" | "dbsize" | "config" | "cas",
            _,
        ) => now(arity(name)),
        _ => now(unknown(name_bytes, args)),
    }
}

fn plan_set(key: &Bytes, value: &Bytes, opts: &[Bytes]) -> Plan {
    let (mut nx, mut xx, mut get) = (false, false, false);
    for o in opts {
        match lower(o).as_str() {
            "nx" => nx = true,
            "xx" => xx = true,
            "get" => get = true,
            "ex" | "px" | "exat" | "pxat" | "keepttl" => return Plan::Now(Reply::err(NO_TTL)),
            _ => return Plan::Now(syntax()),
        }
    }
    let (key, value) = (key.clone(), value.clone());
    match (nx, xx) {
        (true, true) => Plan::Now(syntax()),
        (true, false) => Plan::Ops {
            ops: smallvec![Op::Cas {
                key,
                expected: None,
                new: value,
            }],
            finish: if get {
                Finish::CasOldValue
            } else {
                Finish::CasOkOrNull
            },
        },
        (false, true) => Plan::Conn(ConnCommand::SetIfPresent { key, value, get }),
        (false, false) if get => Plan::Ops {
            ops: smallvec![Op::Swap {
                key,
                new: Some(value),
            }],
            finish: Finish::Value,
        },
        (false, false) => Plan::Ops {
            ops: smallvec![Op::Put { key, value }],
            finish: Finish::Ok,
        },
    }
}

fn plan_hello(args: &[Bytes]) -> Plan {
    let Some((first, mut rest)) = args.split_first() else {
        return Plan::Conn(ConnCommand::Hello {
            version: None,
            auth: None,
            name: None,
        });
    };
    let version = match parse_i64(first) {
        Some(v @ 2..=3) => v as u8,
        Some(_) => return Plan::Now(Reply::Error("NOPROTO unsupported protocol version".into())),
        None => {
            return Plan::Now(Reply::err(
                "Protocol version is not an integer or out of range",
            ))
        }
    };
    let (mut auth, mut name) = (None, None);
    while let Some((opt, tail)) = rest.split_first() {
        match (lower(opt).as_str(), tail) {
            ("auth", [user, pass, more @ ..]) => {
                auth = Some((user.clone(), pass.clone()));
                rest = more;
            }
            ("setname", [n, more @ ..]) => {
                name = Some(n.clone());
                rest = more;
            }
            _ => return Plan::Now(syntax()),
        }
    }
    Plan::Conn(ConnCommand::Hello {
        version: Some(version),
        auth,
        name,
    })
}

fn plan_client(sub: &str, rest: &[Bytes]) -> Plan {
    match (sub, rest) {
        ("setname", [name]) => Plan::Conn(ConnCommand::SetName(name.clone())),
        ("getname", []) => Plan::Conn(ConnCommand::GetName),
        ("id", []) => Plan::Conn(ConnCommand::ClientId),
        // Client libraries announce themselves on connect; there is nothing to keep.
        ("setinfo", [_, _]) => Plan::Now(Reply::OK),
        ("setname" | "getname" | "id" | "setinfo", _) => Plan::Now(Reply::err(format!(
            "wrong number of arguments for 'client|{sub}' command"
        ))),
        _ => Plan::Now(Reply::err(format!(
            "unknown subcommand '{sub}'. Try CLIENT HELP."
        ))),
    }
}

/// CONFIG GET answers the parameters benchmark tools and client libraries ask about.
fn plan_config(sub: &str, patterns: &[Bytes]) -> Plan {
    if sub != "get" {
        return Plan::Now(Reply::err(format!(
            "unknown subcommand '{sub}'. Try CONFIG HELP."
        )));
    }
    if patterns.is_empty() {
        return Plan::Now(arity("config|get"));
    }
    let known: [(&str, &str); 4] = [
        ("save", ""),
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("databases", "1"),
    ];
    let mut pairs = Vec::new();
    for p in patterns {
        let p = lower(p);
        for (k, v) in known {
            if (p == "*" || p == k)
                && !pairs
                    .iter()
                    .any(|(n, _): &(Reply, Reply)| *n == Reply::text(k))
            {
                pairs.push((Reply::text(k), Reply::text(v)));
            }
        }
    }
    Plan::Now(Reply::Map(pairs))
}

fn plan_command(rest: &[Bytes]) -> Plan {
    match rest.split_first().map(|(s, r)| (lower(s), r)) {
        None => Plan::Now(Reply::Array(Vec::new())),
        Some((sub, [])) if sub == "count" => Plan::Now(Reply::Integer(COMMAND_NAMES.len() as i64)),
        Some((sub, _)) if sub == "docs" => Plan::Now(Reply::Map(Vec::new())),
        Some((sub, _)) => Plan::Now(Reply::err(format!(
            "unknown subcommand '{sub}'. Try COMMAND HELP."
        ))),
    }
}

/// The reply for a failed operation. Limits and integer errors use Redis's own wording
/// where Redis has one; the rest say what raftkv said (shard, node, limit).
pub fn error_reply(e: &Error) -> Reply {
    let client_error = match e {
        Error::Limit(ce) | Error::Refused { error: ce, .. } => Some(ce),
        _ => None,
    };
    match client_error {
        Some(ClientError::NotAnInteger) => not_integer(),
        Some(ClientError::Overflow) => Reply::err("increment or decrement would overflow"),
        Some(ce) => Reply::err(ce),
        None => Reply::err(e),
    }
}

/// Builds the reply of a [`Plan::Ops`] from its answers (one per op, same order). The
/// values are moved out of `answers` (left `None`), not cloned: a value the core
/// copied out of its map is owned by one reply, and cloning it would cost an allocation
/// per GET for `Bytes` to share it.
pub fn finish(finish: Finish, answers: &mut [Result<Response, Error>]) -> Reply {
    if let Some(Err(e)) = answers.iter().find(|a| a.is_err()) {
        return error_reply(e);
    }
    // Every answer is Ok from here on.
    let value = |r: &mut Result<Response, Error>| match r {
        Ok(Response::Value(v)) => v.take(),
        _ => None,
    };
    let first = answers.first_mut();
    match finish {
        Finish::Value => Reply::Bulk(first.and_then(value)),
        Finish::Ok => Reply::OK,
        Finish::Values => Reply::Array(answers.iter_mut().map(|r| Reply::Bulk(value(r))).collect()),
        Finish::CountPresent => {
            let present = answers
                .iter()
                .filter(|r| matches!(r, Ok(Response::Value(Some(_)))));
            Reply::Integer(present.count() as i64)
        }
        Finish::Integer => match first {
            Some(Ok(Response::Integer(n))) => Reply::Integer(*n),
            other => Reply::err(format!(
                "unexpected answer {:?}",
                other.and_then(|r| r.as_ref().ok())
            )),
        },
        Finish::Length => Reply::Integer(first.and_then(value).map_or(0, |v| v.len() as i64)),
        Finish::CasFlag => Reply::Integer(i64::from(matches!(first, Some(Ok(Response::CasOk))))),
        Finish::CasOkOrNull => match first {
            Some(Ok(Response::CasOk)) => Reply::OK,
            _ => Reply::null(),
        },
        Finish::CasOldValue => match first {
            Some(Ok(Response::CasMismatch { current })) => Reply::Bulk(current.take()),
            _ => Reply::null(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn now(line: &str) -> Reply {
        match plan(&words(line), false) {
            Plan::Now(r) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn errors_use_redis_texts() {
        assert_eq!(
            now("FLUSHALL x"),
            Reply::err("unknown command 'FLUSHALL', with args beginning with: 'x' ")
        );
        assert_eq!(
            now("get"),
            Reply::err("wrong number of arguments for 'get' command")
        );
        assert_eq!(now("set k v nx xx"), Reply::err("syntax error"));
        assert_eq!(now("set k v EX 10"), Reply::err(NO_TTL));
        assert_eq!(now("incrby k x"), not_integer());
        assert_eq!(now("select 1"), Reply::err("DB index is out of range"));
        assert_eq!(
            now("hello 4"),
            Reply::Error("NOPROTO unsupported protocol version".into())
        );
    }

    /// One pair over a limit refuses the whole MSET (no pair is written), and likewise
    /// a DEL or MGET naming one key over the limit.
    #[test]
    fn a_multi_key_command_over_a_limit_is_refused_whole() {
        let long_key = "k".repeat(kv_shared::limits::KEY_BYTES_MAX + 1);
        let key_error = Reply::err(format!(
            "key is {} bytes; the limit KEY_BYTES_MAX is {}",
            kv_shared::limits::KEY_BYTES_MAX + 1,
            kv_shared::limits::KEY_BYTES_MAX
        ));
        assert_eq!(now(&format!("mset a 1 b 2 {long_key} 3")), key_error);
        assert_eq!(now(&format!("del a {long_key}")), key_error);
        assert_eq!(now(&format!("mget a {long_key}")), key_error);
        let long_value = "v".repeat(kv_shared::limits::VALUE_BYTES_MAX + 1);
        assert_eq!(
            now(&format!("mset a 1 b {long_value}")),
            Reply::err(format!(
                "value is {} bytes; the limit VALUE_BYTES_MAX is {}",
                kv_shared::limits::VALUE_BYTES_MAX + 1,
                kv_shared::limits::VALUE_BYTES_MAX
            ))
        );
        let at_limit = "v".repeat(kv_shared::limits::VALUE_BYTES_MAX);
        assert!(matches!(
            plan(&words(&format!("mset a 1 b {at_limit}")), false),
            Plan::Ops { .. }
        ));
    }

    #[test]
    fn plans_pick_atomic_operations() {
        let Plan::Ops { ops, finish } = plan(&words("getdel k"), false) else {
            panic!()
        };
        assert_eq!(
            ops.to_vec(),
            vec![Op::Swap {
                key: Bytes::from_static(b"k"),
                new: None
            }]
        );
        assert_eq!(finish, Finish::Value);
        let Plan::Ops { ops, .. } = plan(&words("decrby k 5"), false) else {
            panic!()
        };
        assert_eq!(
            ops.to_vec(),
            vec![Op::Incr {
                key: Bytes::from_static(b"k"),
                delta: -5
            }]
        );
        assert_eq!(
            now("decrby k -9223372036854775808"),
            Reply::err("decrement would overflow")
        );
        let Plan::Ops { ops, .. } = plan(&words("mget a b"), true) else {
            panic!()
        };
        assert!(ops.iter().all(|o| matches!(o, Op::Get { stale: true, .. })));
    }

    #[test]
    // The closure builds the client's own Result type; its size is the client's choice.
    #[allow(clippy::result_large_err)]
    fn finish_counts_and_flags() {
        let v = |s: Option<&'static str>| {
            Ok(Response::Value(s.map(|s| Bytes::from_static(s.as_bytes()))))
        };
        assert_eq!(
            finish(
                Finish::CountPresent,
                &mut [v(Some("a")), v(None), v(Some("b"))]
            ),
            Reply::Integer(2)
        );
        assert_eq!(
            finish(Finish::Length, &mut [v(Some("abc"))]),
            Reply::Integer(3)
        );
        assert_eq!(
            finish(
                Finish::CasOldValue,
                &mut [Ok(Response::CasMismatch {
                    current: Some(Bytes::from_static(b"x"))
                })]
            ),
            Reply::text("x")
        );
        assert_eq!(
            finish(
                Finish::Integer,
                &mut [Err(Error::Limit(ClientError::NotAnInteger))]
            ),
            not_integer()
        );
    }
}
