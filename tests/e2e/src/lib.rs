//! End-to-end tests that start real kvserver and kvcli processes on loopback.
