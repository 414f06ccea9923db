//! The node core's configuration in course mode: one group, every replica a voter, and
//! kv-raft's timing and send policy taken from this mode's [`Settings`].

use crate::ids::Roster;
use crate::settings::Settings;
use crate::stall;
use kv_node::NodeConfig;
use std::time::Duration;

/// kv-raft resends an unechoed heartbeat after this many ticks, then 2 and 4 times as
/// many (a harness round trip is ~0.5 ms, a tick 10 ms), while
/// [`stall::wants_heartbeat_resends`] says so.
pub(crate) const HEARTBEAT_RESEND_TICKS: u32 = 1;

/// Builds the node core's settings for course mode: one group, every replica a voter,
/// timing from `settings`, no snapshots within a run, no leader spreading, kv-raft's
/// leader lease for gets.
pub fn node_config(settings: &Settings, roster: &Roster) -> NodeConfig {
    NodeConfig {
        node: roster.me_node(),
        members: roster.members(),
        // Course replicas find each other through the harness, not by address.
        addrs: Vec::new(),
        shard_count: 1,
        replication: roster.members().len(),
        // Course mode is one group under the harness: no metadata group.
        metadata_voters: Vec::new(),
        request_timeout_ticks: settings.request_timeout_ticks,
        // A run is ~45 s and a few thousand entries: never worth a snapshot.
        snapshot_threshold_entries: 1_000_000,
        spread_leaders: false,
        leaders: kv_shared::config::LeaderPolicy::Spread,
        seed: settings.seed,
        raft: kv_raft::Config {
            heartbeat_ticks: settings.heartbeat_ticks,
            election_ticks_min: settings.election_ticks_min,
            election_ticks_max: settings.election_ticks_max,
            lease_reads: true,
            lease_margin_ticks: settings.lease_margin_ticks,
            // Lazy followers hold entries back: a held entry is not contact, so only
            // followers that acknowledged everything skip a heartbeat (else a lazy
            // follower would miss the heartbeat that carries its entries). Off while
            // sending wide (`Runtime::flush`).
            heartbeat_suppression: settings.suppress_heartbeats,
            heartbeat_suppression_strict: true,
            broadcast_commit: false,
            // Fast retransmission is the stall release (`Raft::release_stalled`, timed
            // by `StallTimer` with back-off); kv-raft's own resends ride on heartbeats.
            retransmit_ticks: None,
            // Loss is unknown at start: resend (`Runtime::flush` switches it with the
            // loss estimate).
            heartbeat_resend_ticks: Some(HEARTBEAT_RESEND_TICKS),
            silent_follower_ticks: Some(silent_follower_ticks(settings)),
            lazy_followers: settings.lazy_followers,
            lazy_grace_ticks: ticks_of(stall::LEADER_GRACE, settings),
            ..kv_raft::Config::new(roster.me_node(), 0)
        },
        quiesce: false,
    }
}

/// [`stall::SILENT_AFTER`] in ticks of `settings` (at least one).
fn silent_follower_ticks(settings: &Settings) -> u32 {
    ticks_of(stall::SILENT_AFTER, settings).max(1)
}

/// `span` in whole ticks of `settings`.
fn ticks_of(span: Duration, settings: &Settings) -> u32 {
    let ticks = span.as_nanos() / settings.tick.as_nanos().max(1);
    u32::try_from(ticks).unwrap_or(u32::MAX)
}
