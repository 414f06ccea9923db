//! Timing and traffic settings of course mode, kept here rather than in the node core:
//! the course scores messages and latency, so this mode wants long heartbeats, a leader
//! lease for reads, and lazy followers, none of which suit kvserver's defaults.
//!
//! The arithmetic behind the defaults (5 replicas, ~40 s runs) is in docs/COURSE_MODE.md:
//! heartbeats cost 2 x (N-1) messages per interval, so 1 s costs ~320 per run; a put
//! costs 4 messages when only a quorum of followers is sent to at once.

use std::time::Duration;

/// Settings of one course-mode replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Length of one Raft tick.
    pub tick: Duration,
    /// A leader heartbeats every this many ticks.
    pub heartbeat_ticks: u32,
    /// Election timeout, drawn from `election_ticks_min..election_ticks_max`.
    pub election_ticks_min: u32,
    /// Exclusive upper bound of the election timeout.
    pub election_ticks_max: u32,
    /// A request pending in the node core this long is answered (as a redirect).
    pub request_timeout_ticks: u32,
    /// No peer traffic leaves before this much time after start: a peer datagram that
    /// reaches a replica before its own hello reached the harness kills that replica.
    pub quiet: Duration,
    /// kv-raft's leader lease (`lease_reads`) lasts `election_ticks_min` minus this many
    /// ticks from the send of a heartbeat a quorum echoed (see [`Settings::check`]).
    pub lease_margin_ticks: u32,
    /// A leader sends appends at once only to a quorum of followers and holds the rest
    /// for the next heartbeat (or until a commit stalls).
    pub lazy_followers: bool,
    /// A commit that has not advanced for this long releases held messages.
    pub stall: Duration,
    /// Under light loss (see `stall_defer_rate_max_percent`), the first release of a
    /// stalled commit waits this long instead of [`Settings::stall`]: the next put's
    /// appends carry the stalled entry (and its acknowledgements cover it) at no extra
    /// datagram. Only until this replica sees the leader change (`StallTimer`'s
    /// `leader_changed`). Zero turns deferral off.
    pub stall_defer: Duration,
    /// Until the drop rate is estimated, deferral applies only while the leader's running
    /// stall rate (the fraction of commits that stalled) is below this many percent (see
    /// `stall::DEFER_RATE_WEIGHT`); once there is an estimate, narrow sending decides.
    pub stall_defer_rate_max_percent: u32,
    /// kv-raft's strict heartbeat suppression: a leader skips the heartbeat to a
    /// follower that was sent an append since the previous one and acknowledged
    /// everything (not while sending wide).
    pub suppress_heartbeats: bool,
    /// A client that comes back within this long after we redirected it to the leader we
    /// still believe in could not use that leader: its requests are held until a leader
    /// is heard from again (instead of redirecting it into a spin).
    pub bounce_window: Duration,
    /// A leader whose commit index has gone this long without a datagram carrying it
    /// tells one follower in a datagram of its own (`handoff::CommitNotice`): longer
    /// than the gap between puts under load (60-75 ms in the course's busiest
    /// scenarios), shorter than the quiet before a kill in its kill scenarios (a kill
    /// lands 100 ms after the last request at 300 requests per 30 s).
    pub commit_notice_idle: Duration,
    /// The same wait while commits come further apart than `commit_notice_idle` (then
    /// every commit pays a notice anyway, so it may as well go at once): short, so that
    /// a kill or partition 50-80 ms after the last put (advanced-1, advanced-3) finds
    /// the followers told.
    pub commit_notice_idle_sparse: Duration,
    /// The longest a follower holds such a request before redirecting anyway.
    pub park_max: Duration,
    /// The longest a new leader holds the answers to a previous leader's puts until it
    /// knows whether that leader sent them (`doubt.rs`): longer than a partition's
    /// election, so that the old leader is heard once the partition heals. Zero: answer
    /// at once.
    pub doubt_max: Duration,
    /// When a hold runs out, the answer is deferred (sent only before a get of its key
    /// would show its value) instead of sent (`doubt.rs`).
    pub defer_doubts: bool,
    /// Write a line to stderr for every client request, reply, applied entry and role
    /// change (`KV_COURSE_TRACE=1`; for diagnosing harness runs, off by default).
    pub trace: bool,
    /// Run seed for the election jitter.
    pub seed: u64,
}

/// The smallest lease margin: kv-raft's own floor (tick rounding at both ends).
pub const LEASE_MARGIN_TICKS_MIN: u32 = 2;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            tick: Duration::from_millis(10),
            heartbeat_ticks: 100,
            election_ticks_min: 200,
            election_ticks_max: 350,
            request_timeout_ticks: 500,
            quiet: Duration::from_millis(500),
            lease_margin_ticks: 30,
            lazy_followers: true,
            stall: Duration::from_millis(1),
            // Stops at the first leader change (docs/COURSE_MODE.md, "Deferred release").
            stall_defer: Duration::from_millis(150),
            stall_defer_rate_max_percent: 42,
            suppress_heartbeats: true,
            bounce_window: Duration::from_millis(500),
            commit_notice_idle: Duration::from_millis(80),
            commit_notice_idle_sparse: Duration::from_millis(10),
            trace: false,
            park_max: Duration::from_millis(3000),
            doubt_max: Duration::from_millis(4000),
            defer_doubts: true,
            seed: 0,
        }
    }
}

impl Settings {
    /// One heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        self.tick * self.heartbeat_ticks
    }

    /// Checks the settings that safety depends on.
    ///
    /// The lease (kv-raft's `lease_reads`): with CheckQuorum on, a follower ignores votes
    /// for `election_ticks_min` ticks after it last heard the leader, and its ticks never
    /// run faster than wall time (a late turn only delays them). A follower that echoed a
    /// heartbeat sent at leader tick t heard the leader after t, so no other leader can be
    /// elected before t + `election_ticks_min` ticks; the lease ends `lease_margin_ticks`
    /// earlier. All replicas run on one machine's clock here, and the runtime never skips
    /// a due tick (a leader whose clock lagged would overstate its lease).
    pub fn check(&self) -> Result<(), String> {
        if self.tick.is_zero() {
            return Err("tick must be positive".into());
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks_min {
            return Err("heartbeats must come more often than elections".into());
        }
        if self.election_ticks_min >= self.election_ticks_max {
            return Err("election_ticks_min must be below election_ticks_max".into());
        }
        if self.lease_margin_ticks < LEASE_MARGIN_TICKS_MIN
            || self.lease_margin_ticks >= self.election_ticks_min
        {
            return Err(format!(
                "lease margin {} ticks must be in {LEASE_MARGIN_TICKS_MIN}..{}",
                self.lease_margin_ticks, self.election_ticks_min
            ));
        }
        if self.quiet >= self.tick * self.election_ticks_min {
            return Err("the quiet period would swallow the first election".into());
        }
        Ok(())
    }
}

/// Overrides of the [`Settings`] for tuning runs, each an option of `3700kvstore` and an
/// environment variable `KV_COURSE_<NAME>` (values in milliseconds, microseconds or ticks
/// as the name says; `0`/`1` for switches). The harness passes neither; defaults rule.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Length of one Raft tick, in ms.
    #[arg(long, env = "KV_COURSE_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// A leader heartbeats every this many ticks.
    #[arg(long, env = "KV_COURSE_HEARTBEAT_TICKS")]
    pub heartbeat_ticks: Option<u32>,
    /// Lower bound of the election timeout, in ticks.
    #[arg(long, env = "KV_COURSE_ELECTION_TICKS_MIN")]
    pub election_ticks_min: Option<u32>,
    /// Exclusive upper bound of the election timeout, in ticks.
    #[arg(long, env = "KV_COURSE_ELECTION_TICKS_MAX")]
    pub election_ticks_max: Option<u32>,
    /// The leader lease ends this many ticks before the election timeout.
    #[arg(long, env = "KV_COURSE_LEASE_MARGIN_TICKS")]
    pub lease_margin_ticks: Option<u32>,
    /// A commit that has not advanced for this long releases held messages, in µs.
    #[arg(long, env = "KV_COURSE_STALL_US")]
    pub stall_us: Option<u64>,
    /// The deferred first release of a stall, in ms (0: no deferral).
    #[arg(long, env = "KV_COURSE_STALL_DEFER_MS")]
    pub stall_defer_ms: Option<u64>,
    /// Deferral applies only below this running stall rate, in percent.
    #[arg(long, env = "KV_COURSE_STALL_DEFER_RATE_MAX_PERCENT")]
    pub stall_defer_rate_max_percent: Option<u32>,
    /// Lazy followers on (1) or off (0).
    #[arg(long, env = "KV_COURSE_LAZY_FOLLOWERS")]
    pub lazy_followers: Option<u64>,
    /// Heartbeat suppression on (1) or off (0).
    #[arg(long, env = "KV_COURSE_SUPPRESS_HEARTBEATS")]
    pub suppress_heartbeats: Option<u64>,
    /// How soon a redirected client's return makes its leader suspect, in ms.
    #[arg(long, env = "KV_COURSE_BOUNCE_WINDOW_MS")]
    pub bounce_window_ms: Option<u64>,
    /// The commit notice's wait under load, in ms.
    #[arg(long, env = "KV_COURSE_COMMIT_NOTICE_MS")]
    pub commit_notice_ms: Option<u64>,
    /// The commit notice's wait while commits are sparse, in ms.
    #[arg(long, env = "KV_COURSE_COMMIT_NOTICE_SPARSE_MS")]
    pub commit_notice_sparse_ms: Option<u64>,
    /// How long a new leader may hold a previous leader's answers, in ms (0: not at all).
    #[arg(long, env = "KV_COURSE_DOUBT_MS")]
    pub doubt_ms: Option<u64>,
    /// A hold that runs out defers the answer (1) or sends it (0).
    #[arg(long, env = "KV_COURSE_DEFER_DOUBTS")]
    pub defer_doubts: Option<u64>,
    /// A stderr line per request, reply, applied entry and role change: on (1) or off (0).
    #[arg(long, env = "KV_COURSE_TRACE")]
    pub trace: Option<u64>,
}

/// The prefix of every environment variable that overrides a setting.
pub const ENV_PREFIX: &str = "KV_COURSE_";

impl Overrides {
    /// The settings with these overrides applied, checked (see [`Settings::check`]).
    pub fn apply(&self, mut s: Settings) -> Result<Settings, String> {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        let on = |v: Option<u64>| v.map(|n| n != 0);
        set(&mut s.tick, ms(self.tick_ms));
        set(&mut s.heartbeat_ticks, self.heartbeat_ticks);
        set(&mut s.election_ticks_min, self.election_ticks_min);
        set(&mut s.election_ticks_max, self.election_ticks_max);
        set(&mut s.lease_margin_ticks, self.lease_margin_ticks);
        set(&mut s.stall, self.stall_us.map(Duration::from_micros));
        set(&mut s.stall_defer, ms(self.stall_defer_ms));
        set(
            &mut s.stall_defer_rate_max_percent,
            self.stall_defer_rate_max_percent,
        );
        set(&mut s.lazy_followers, on(self.lazy_followers));
        set(&mut s.suppress_heartbeats, on(self.suppress_heartbeats));
        set(&mut s.bounce_window, ms(self.bounce_window_ms));
        set(&mut s.commit_notice_idle, ms(self.commit_notice_ms));
        set(
            &mut s.commit_notice_idle_sparse,
            ms(self.commit_notice_sparse_ms),
        );
        set(&mut s.doubt_max, ms(self.doubt_ms));
        set(&mut s.defer_doubts, on(self.defer_doubts));
        set(&mut s.trace, on(self.trace));
        s.check()?;
        Ok(s)
    }

    /// Refuses a `KV_COURSE_` variable that names no override, or is set but empty (clap
    /// would take it for unset), so that a typo does not silently tune nothing.
    pub fn check_env_names(vars: impl Iterator<Item = (String, String)>) -> Result<(), String> {
        let command = <Overrides as clap::Args>::augment_args(clap::Command::new("overrides"));
        let known: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for (name, value) in vars {
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            if !known.contains(&name) {
                return Err(format!("unknown setting {name}"));
            }
            if value.is_empty() {
                return Err(format!("{name} is set but empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        Settings::default().check().unwrap();
    }

    #[test]
    fn a_lease_margin_outside_the_election_timeout_is_refused() {
        for lease_margin_ticks in [0, 1, 200, 300] {
            let s = Settings {
                lease_margin_ticks,
                ..Settings::default()
            };
            assert!(s.check().unwrap_err().contains("lease"));
        }
    }

    fn parse(args: &[&str]) -> Result<Overrides, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            overrides: Overrides,
        }
        let argv = std::iter::once("3700kvstore").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.overrides)
    }

    #[test]
    fn overrides_apply_and_unsafe_ones_fail() {
        let s = parse(&[
            "--heartbeat-ticks",
            "50",
            "--stall-us",
            "2500",
            "--lazy-followers",
            "0",
        ])
        .unwrap()
        .apply(Settings::default())
        .unwrap();
        assert_eq!(s.heartbeat_ticks, 50);
        assert_eq!(s.stall, Duration::from_micros(2500));
        assert!(!s.lazy_followers);
        assert_eq!(
            Overrides::default().apply(Settings::default()).unwrap(),
            Settings::default()
        );
        let unsafe_margin = parse(&["--lease-margin-ticks", "1"]).unwrap();
        assert!(unsafe_margin.apply(Settings::default()).is_err());
        assert!(parse(&["--heartbeat-ticks", "many"]).is_err());
        assert!(parse(&["--heartbeat-ticks", "4294967296"]).is_err());
    }

    #[test]
    fn every_override_has_its_variable_and_typos_fail() {
        let command = <Overrides as clap::Args>::augment_args(clap::Command::new("t"));
        for arg in command.get_arguments() {
            let long = arg.get_long().expect("every override is an option");
            let env = arg.get_env().expect("every override has a variable");
            let expected = format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env.to_str(), Some(expected.as_str()));
        }
        let vars = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let known = vars(&[("KV_COURSE_HEARTBEAT_TICKS", "50"), ("PATH", "/bin")]);
        Overrides::check_env_names(known).unwrap();
        let typo = Overrides::check_env_names(vars(&[("KV_COURSE_HEARTBEAT", "50")]));
        assert!(typo.unwrap_err().contains("KV_COURSE_HEARTBEAT"));
        assert!(Overrides::check_env_names(vars(&[("KV_COURSE_TRACE", "")])).is_err());
    }
}
