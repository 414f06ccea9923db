//! Placeholder: the per-key linearizability checker is being written (see docs/).
