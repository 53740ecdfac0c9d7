//! Fair turns for one lock key inside a process: jobs of this process wanting the same
//! NoDb lock line up by ticket (their enqueue time), and only the head of the line asks
//! Redis for it. So rapid sequential requests for one run are served in the order they
//! were made, and N local waiters cost Redis one poller instead of N.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    busy: bool,
    waiting: BTreeSet<(i64, u64)>,
}

/// The line for one lock key.
#[derive(Default)]
pub struct Turns {
    state: Mutex<State>,
    changed: Notify,
}

/// Holding the turn; dropping it lets the next waiter go.
pub struct Turn {
    turns: Arc<Turns>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.state.lock().expect("turns").busy = false;
        self.turns.changed.notify_waiters();
    }
}

/// A place in the line, taken synchronously so that the order of arrival is fixed before
/// any await; dropped before its turn came, it leaves the line.
pub struct Place {
    turns: Arc<Turns>,
    place: (i64, u64),
    done: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        if !self.done {
            self.turns
                .state
                .lock()
                .expect("turns")
                .waiting
                .remove(&self.place);
            self.turns.changed.notify_waiters();
        }
    }
}

impl Turns {
    /// Joins the line with `ticket`; `seq` breaks ties and must be unique per waiter.
    pub fn join(self: &Arc<Self>, ticket: i64, seq: u64) -> Place {
        let place = (ticket, seq);
        self.state.lock().expect("turns").waiting.insert(place);
        Place {
            turns: self.clone(),
            place,
            done: false,
        }
    }

    /// True when nobody holds or waits for the turn (the entry can be dropped).
    pub fn idle(&self) -> bool {
        let st = self.state.lock().expect("turns");
        !st.busy && st.waiting.is_empty()
    }
}

impl Place {
    /// Waits until no one holds the turn and this place is the lowest in line.
    pub async fn wait(mut self) -> Turn {
        let turns = self.turns.clone();
        loop {
            let notified = turns.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = turns.state.lock().expect("turns");
                if !st.busy && st.waiting.first() == Some(&self.place) {
                    st.waiting.remove(&self.place);
                    st.busy = true;
                    self.done = true;
                    return Turn {
                        turns: turns.clone(),
                    };
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn lowest_ticket_goes_first() {
        let turns = Arc::new(Turns::default());
        let first = turns.join(5, 0).wait().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for ticket in [30, 10, 20] {
            let (turns, order) = (turns.clone(), order.clone());
            handles.push(tokio::spawn(async move {
                let _turn = turns.join(ticket, ticket as u64).wait().await;
                order.lock().unwrap().push(ticket);
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![10, 20, 30]);
        assert!(turns.idle());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_line() {
        let turns = Arc::new(Turns::default());
        let held = turns.join(1, 0).wait().await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), turns.join(2, 1).wait()).await;
        assert!(gave_up.is_err());
        drop(held);
        let _next = tokio::time::timeout(Duration::from_secs(1), turns.join(3, 2).wait())
            .await
            .expect("the line moved on");
    }
}
