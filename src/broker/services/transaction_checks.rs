//! The check-back state of the transaction half queue, on the shard that owns it: the half
//! messages the op log says are finished (committed or rolled back) and not yet passed by the
//! check pass, and how many check-backs each open one was sent.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// What the check pass of the half queue remembers between passes.
#[derive(Debug, Default)]
pub struct TransactionChecks {
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Half-queue offsets with an op record, not yet passed.
    done: BTreeSet<i64>,
    /// Check-backs sent per open half-queue offset.
    checks: HashMap<i64, u32>,
}

/// What the check pass does with an open half message.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckTurn {
    /// Ask its producer (once more).
    Ask,
    /// Asked `max` times already: give it up.
    GiveUp,
}

impl TransactionChecks {
    /// The op log says half-queue offset `half` is finished.
    pub fn finished(&self, half: i64) {
        self.state.borrow_mut().done.insert(half);
    }

    /// Passes half-queue offset `half`: true (and forgotten) when it is finished.
    pub fn pass_finished(&self, half: i64) -> bool {
        let mut state = self.state.borrow_mut();
        let done = state.done.remove(&half);
        if done {
            state.checks.remove(&half);
        }
        done
    }

    /// Counts a check-back of the open half message at `half`, unless it had `max` already
    /// (then it is forgotten).
    pub fn next_check(&self, half: i64, max: u32) -> CheckTurn {
        let mut state = self.state.borrow_mut();
        let checks = state.checks.entry(half).or_insert(0);
        if *checks >= max {
            state.checks.remove(&half);
            return CheckTurn::GiveUp;
        }
        *checks += 1;
        CheckTurn::Ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_half_is_passed_once_and_an_open_one_is_asked_at_most_max_times() {
        let checks = TransactionChecks::default();
        assert_eq!(checks.next_check(4, 2), CheckTurn::Ask);
        assert_eq!(checks.next_check(4, 2), CheckTurn::Ask);
        assert_eq!(checks.next_check(4, 2), CheckTurn::GiveUp);
        // Given up: forgotten, so counted afresh.
        assert_eq!(checks.next_check(4, 2), CheckTurn::Ask);
        assert!(!checks.pass_finished(7));
        checks.finished(7);
        assert!(checks.pass_finished(7));
        assert!(!checks.pass_finished(7));
    }
}
