//! Deterministic simulator: whole clusters of the real node core on a simulated clock, network and disk, from one seed.
