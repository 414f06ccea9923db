//! Durable storage for a raftkv node: one write-ahead log shared by all groups, snapshot files, and a simulated disk with crash faults for tests.
