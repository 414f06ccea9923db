//! The anti-replay window of one sender (RFC 6479's bitmap of blocks, as IPsec and
//! WireGuard use): a datagram is accepted once, reordering within the window is fine,
//! anything older than the window or from an older incarnation of the sender is refused.
//! Update it only after the datagram's tag verified, so forgeries cannot move it.

/// Bits per bitmap block.
const BLOCK_BITS: u64 = 64;
/// Blocks in the ring. One block is always being retired, so the usable window is one
/// block less than the ring (RFC 6479, section 2).
const BLOCKS: usize = 32;
/// How far behind the newest counter a datagram may arrive and still be accepted.
pub const REPLAY_WINDOW_COUNTERS: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// Why a stamp was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// From an incarnation older than the newest one seen (a replay from before a restart).
    #[error("incarnation {got} is older than the sender's current {current}")]
    OldIncarnation {
        /// The datagram's incarnation.
        got: u64,
        /// The newest seen.
        current: u64,
    },
    /// Further behind the newest counter than the window reaches.
    #[error("counter {got} is older than the window (newest {newest})")]
    TooOld {
        /// The datagram's counter.
        got: u64,
        /// The newest counter seen.
        newest: u64,
    },
    /// Seen before.
    #[error("counter {0} was already received")]
    Duplicate(u64),
    /// Meant for another incarnation of this receiver: sent before it restarted, or (echo
    /// 0) before the sender heard from it.
    #[error("meant for incarnation {echo} of this receiver, which is at {current}")]
    WrongIncarnation {
        /// The receiver's incarnation the datagram echoes.
        echo: u64,
        /// The receiver's current incarnation.
        current: u64,
    },
}

/// Checks that a verified peer datagram whose stamp echoes `echo` is meant for the
/// receiver's `current` incarnation. Echo 0 ("not heard from you yet") is refused too:
/// the receiver answers with a datagram that tells the sender its incarnation. (Client
/// requests echo a ticket instead, which the node checks against the client's window.)
pub fn check_echo(echo: u64, current: u64) -> Result<(), ReplayError> {
    if echo == current {
        Ok(())
    } else {
        Err(ReplayError::WrongIncarnation { echo, current })
    }
}

/// One sender's window.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    incarnation: u64,
    /// Newest counter accepted in this incarnation; `None` before the first.
    newest: Option<u64>,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            incarnation: 0,
            newest: None,
            bitmap: [0; BLOCKS],
        }
    }
}

impl ReplayWindow {
    /// The sender's newest incarnation accepted (0 before the first datagram): what a
    /// reply to it echoes.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Accepts `(incarnation, counter)` if it is new, recording it; else says why not.
    /// A newer incarnation starts a fresh window (the sender restarted).
    pub fn accept(&mut self, incarnation: u64, counter: u64) -> Result<(), ReplayError> {
        if incarnation < self.incarnation {
            return Err(ReplayError::OldIncarnation {
                got: incarnation,
                current: self.incarnation,
            });
        }
        if incarnation > self.incarnation {
            *self = ReplayWindow {
                incarnation,
                ..ReplayWindow::default()
            };
        }
        let block_of = |c: u64| (c / BLOCK_BITS) as usize % BLOCKS;
        let bit = 1u64 << (counter % BLOCK_BITS);
        match self.newest {
            Some(newest) if counter <= newest => {
                if newest - counter > REPLAY_WINDOW_COUNTERS {
                    return Err(ReplayError::TooOld {
                        got: counter,
                        newest,
                    });
                }
                let block = &mut self.bitmap[block_of(counter)];
                if *block & bit != 0 {
                    return Err(ReplayError::Duplicate(counter));
                }
                *block |= bit;
            }
            newest => {
                // Clear the blocks the window slides over (all of them after a long jump).
                let first_new = newest.map_or(0, |n| n / BLOCK_BITS + 1);
                let last_new = counter / BLOCK_BITS;
                let fresh = (last_new + 1).saturating_sub(first_new);
                if newest.is_none() || fresh >= BLOCKS as u64 {
                    self.bitmap = [0; BLOCKS];
                } else {
                    for b in first_new..=last_new {
                        self.bitmap[b as usize % BLOCKS] = 0;
                    }
                }
                self.bitmap[block_of(counter)] |= bit;
                self.newest = Some(counter);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_then_duplicates_are_refused() {
        let mut w = ReplayWindow::default();
        for c in 0..1000 {
            assert_eq!(w.accept(1, c), Ok(()));
        }
        for c in [0, 1, 500, 999] {
            assert_eq!(w.accept(1, c), Err(ReplayError::Duplicate(c)), "{c}");
        }
    }

    #[test]
    fn out_of_order_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(1, 5000), Ok(()));
        // Everything the window reaches is accepted once, in any order.
        for c in (5000 - REPLAY_WINDOW_COUNTERS..5000).rev().step_by(7) {
            assert_eq!(w.accept(1, c), Ok(()), "{c}");
            assert_eq!(w.accept(1, c), Err(ReplayError::Duplicate(c)));
        }
        // Gaps left behind stay acceptable as the window slides forward a little.
        assert_eq!(w.accept(1, 5010), Ok(()));
        assert_eq!(w.accept(1, 5003), Ok(()));
        assert_eq!(w.accept(1, 5003), Err(ReplayError::Duplicate(5003)));
    }

    #[test]
    fn older_than_the_window_is_refused() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(1, 10_000), Ok(()));
        let edge = 10_000 - REPLAY_WINDOW_COUNTERS;
        assert_eq!(
            w.accept(1, edge - 1),
            Err(ReplayError::TooOld {
                got: edge - 1,
                newest: 10_000
            })
        );
        assert_eq!(w.accept(1, edge), Ok(()));
    }

    #[test]
    fn sliding_far_forward_forgets_old_bits_but_not_new_ones() {
        let mut w = ReplayWindow::default();
        for c in 0..64 {
            assert_eq!(w.accept(1, c), Ok(()));
        }
        // One block further per step: each slide clears exactly the block it enters.
        let mut c = 64;
        while c < 64 * 100 {
            assert_eq!(w.accept(1, c), Ok(()), "{c}");
            assert_eq!(w.accept(1, c + 1), Ok(()), "{c}");
            assert_eq!(w.accept(1, c), Err(ReplayError::Duplicate(c)));
            c += 64;
        }
        // A jump past the whole ring must not leave stale bits that look like duplicates.
        let far = 1_000_000;
        assert_eq!(w.accept(1, far), Ok(()));
        for back in 1..REPLAY_WINDOW_COUNTERS {
            assert_eq!(w.accept(1, far - back), Ok(()), "{back}");
        }
    }

    #[test]
    fn incarnation_up_resets_and_down_is_refused() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(7, 100), Ok(()));
        assert_eq!(w.incarnation(), 7);
        // A restarted sender counts from 0 again under a newer incarnation.
        assert_eq!(w.accept(8, 0), Ok(()));
        assert_eq!(w.incarnation(), 8);
        assert_eq!(w.accept(8, 100), Ok(()));
        assert_eq!(w.accept(8, 0), Err(ReplayError::Duplicate(0)));
        // Replays of the previous incarnation's traffic are refused, whatever their counter.
        for c in [0, 100, 101, u64::MAX] {
            assert_eq!(
                w.accept(7, c),
                Err(ReplayError::OldIncarnation { got: 7, current: 8 })
            );
        }
    }

    #[test]
    fn echoes_of_another_incarnation_are_refused() {
        // A datagram recorded before the receiver restarted echoes its old incarnation.
        assert_eq!(check_echo(5, 5), Ok(()));
        assert_eq!(
            check_echo(4, 5),
            Err(ReplayError::WrongIncarnation {
                echo: 4,
                current: 5
            })
        );
        assert!(check_echo(6, 5).is_err());
        // Echo 0: "I have not heard from you". The receiver answers it, processes nothing.
        assert_eq!(
            check_echo(0, 5),
            Err(ReplayError::WrongIncarnation {
                echo: 0,
                current: 5
            })
        );
    }

    #[test]
    fn counter_zero_and_max_are_ordinary() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(1, 0), Ok(()));
        assert_eq!(w.accept(1, 0), Err(ReplayError::Duplicate(0)));
        assert_eq!(w.accept(1, u64::MAX), Ok(()));
        assert_eq!(w.accept(1, u64::MAX), Err(ReplayError::Duplicate(u64::MAX)));
        assert!(matches!(w.accept(1, 0), Err(ReplayError::TooOld { .. })));
    }
}
