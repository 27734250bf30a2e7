//! A session's event log in memory (see [`crate::store::timeline`]).

use std::collections::BTreeMap;

use crate::store::timeline::{LogEntry, LoggedEvent};

/// The events of one session, in order, and its line.
#[derive(Debug, Default)]
pub(super) struct Log {
    events: Vec<Kept>,
    /// The event on the line for each turn: turn → index in `events`.
    line: BTreeMap<u64, usize>,
}

#[derive(Debug)]
struct Kept {
    event: LoggedEvent,
    snapshot: bool,
    rewind: bool,
}

impl Log {
    /// Appends `entry` as event number `seq`: on the line, or for a rewind,
    /// taking the events of later turns off it.
    pub(super) fn append(&mut self, seq: u64, entry: &LogEntry) {
        if entry.rewind {
            for index in self.line.split_off(&(entry.turn + 1)).into_values() {
                self.events[index].event.rewound = true;
            }
        } else {
            self.line.insert(entry.turn, self.events.len());
        }
        self.events.push(Kept {
            event: LoggedEvent {
                seq,
                turn: entry.turn,
                rewound: false,
                body: entry.body.clone(),
            },
            snapshot: entry.snapshot,
            rewind: entry.rewind,
        });
    }

    /// Up to `limit` events numbered after `after`.
    pub(super) fn page(&self, after: u64, limit: usize, max_bytes: usize) -> Vec<LoggedEvent> {
        let start = self.events.partition_point(|kept| kept.event.seq <= after);
        let mut bytes = 0;
        self.events[start..]
            .iter()
            .take(limit)
            .take_while(|kept| {
                let room = bytes < max_bytes;
                bytes += kept.event.body.len();
                room
            })
            .map(|kept| kept.event.clone())
            .collect()
    }

    /// The line from its latest snapshot at or before `turn` through `turn`.
    pub(super) fn line(&self, turn: u64) -> Vec<LoggedEvent> {
        let Some(from) = self
            .line
            .range(..=turn)
            .rev()
            .find(|(_, index)| self.events[**index].snapshot)
            .map(|(from, _)| *from)
        else {
            return Vec::new();
        };
        self.line
            .range(from..=turn)
            .map(|(_, index)| self.events[*index].event.clone())
            .collect()
    }

    /// The events on the line for the `count` turns before `turn` when
    /// event `seq` was appended: per turn, the latest event numbered below
    /// `seq` that is not a rewind.
    pub(super) fn line_before(&self, seq: u64, turn: u64, count: u64) -> Vec<LoggedEvent> {
        let below = self.events.partition_point(|kept| kept.event.seq < seq);
        let first = turn.saturating_sub(count);
        let mut found: Vec<LoggedEvent> = Vec::new();
        let mut wanted = turn.checked_sub(1).filter(|wanted| *wanted >= first);
        for kept in self.events[..below].iter().rev() {
            let Some(turn) = wanted else { break };
            if kept.event.turn == turn && !kept.rewind {
                found.push(kept.event.clone());
                wanted = turn.checked_sub(1).filter(|wanted| *wanted >= first);
            }
        }
        found.reverse();
        found
    }
}
