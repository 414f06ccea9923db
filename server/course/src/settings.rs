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
    /// datagram. Only until this replica sees the leader change (`SendPolicy`'s
    /// `leader_changed`). Zero turns deferral off.
    pub stall_defer: Duration,
    /// Until the drop rate is measured, deferral applies only while the leader's running
    /// stall rate (the fraction of commits that stalled) is below this many percent (see
    /// `policy::DEFER_RATE_WEIGHT`); once it is measured, narrow sending decides.
    pub stall_defer_rate_max_percent: u32,
    /// A leader skips a heartbeat to a follower that acknowledged an append within the
    /// last heartbeat interval.
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

    /// Applies `KV_COURSE_*` overrides from the environment, for tuning runs only
    /// (values in milliseconds or ticks; `0`/`1` for switches). Unknown or unparsable
    /// values are errors, so a typo does not silently tune nothing.
    pub fn with_env(
        mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Settings, String> {
        for (k, v) in vars {
            let Some(name) = k.strip_prefix("KV_COURSE_") else {
                continue;
            };
            let n: u64 = v
                .parse()
                .map_err(|_| format!("{k}={v:?} is not a number"))?;
            let ms = Duration::from_millis(n);
            let ticks = u32::try_from(n).map_err(|_| format!("{k}={v} is too large"))?;
            match name {
                "TICK_MS" => self.tick = ms,
                "HEARTBEAT_TICKS" => self.heartbeat_ticks = ticks,
                "ELECTION_TICKS_MIN" => self.election_ticks_min = ticks,
                "ELECTION_TICKS_MAX" => self.election_ticks_max = ticks,
                "LEASE_MARGIN_TICKS" => self.lease_margin_ticks = ticks,
                "STALL_US" => self.stall = Duration::from_micros(n),
                "STALL_DEFER_MS" => self.stall_defer = ms,
                "STALL_DEFER_RATE_MAX_PERCENT" => self.stall_defer_rate_max_percent = ticks,
                "LAZY_FOLLOWERS" => self.lazy_followers = n != 0,
                "SUPPRESS_HEARTBEATS" => self.suppress_heartbeats = n != 0,
                "BOUNCE_WINDOW_MS" => self.bounce_window = ms,
                "COMMIT_NOTICE_MS" => self.commit_notice_idle = ms,
                "COMMIT_NOTICE_SPARSE_MS" => self.commit_notice_idle_sparse = ms,
                "TRACE" => self.trace = n != 0,
                _ => return Err(format!("unknown setting {k}")),
            }
        }
        self.check()?;
        Ok(self)
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

    #[test]
    fn env_overrides_apply_and_typos_fail() {
        let vars = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let s = Settings::default()
            .with_env(vars(&[
                ("KV_COURSE_HEARTBEAT_TICKS", "50"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!(s.heartbeat_ticks, 50);
        assert!(Settings::default()
            .with_env(vars(&[("KV_COURSE_HEARTBEAT", "50")]))
            .is_err());
        assert!(Settings::default()
            .with_env(vars(&[("KV_COURSE_LEASE_MARGIN_TICKS", "1")]))
            .is_err());
    }
}
