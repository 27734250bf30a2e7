//! A session's history in the memory store: the newest messages within
//! the session's cap, the oldest dropped from the front as new ones come,
//! and the bytes of their content counted as they come and go, so that a
//! commit costs what it adds, not what the history holds (as the SQLite
//! store keeps its `history_bytes`).

use std::collections::VecDeque;

use crate::store::types::{HistoryCap, Message};

#[derive(Debug, Default)]
pub(super) struct History {
    messages: VecDeque<Message>,
    /// The bytes of content of `messages`.
    bytes: u64,
}

impl History {
    /// A history holding `messages`.
    pub(super) fn new(messages: &[Message]) -> History {
        let mut history = History::default();
        history.append(messages);
        history
    }

    /// Drops the newest `dropped` messages, appends `messages`, and drops
    /// the oldest beyond `cap`, which keeps what [`HistoryCap::kept`] keeps.
    pub(super) fn commit(&mut self, dropped: usize, messages: &[Message], cap: HistoryCap) {
        let kept = self.messages.len().saturating_sub(dropped);
        for message in self.messages.drain(kept..) {
            self.bytes -= message.content.len() as u64;
        }
        self.append(messages);
        while !cap.holds(self.messages.len() as u64, self.bytes) {
            let oldest = self.messages.pop_front().expect("more than one message");
            self.bytes -= oldest.content.len() as u64;
        }
    }

    /// The newest `count` messages, oldest first.
    pub(super) fn last(&self, count: usize) -> Vec<Message> {
        let skipped = self.messages.len().saturating_sub(count);
        self.messages.range(skipped..).cloned().collect()
    }

    fn append(&mut self, messages: &[Message]) {
        self.bytes += messages
            .iter()
            .map(|message| message.content.len() as u64)
            .sum::<u64>();
        self.messages.extend(messages.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::Role;

    fn message(content: &str) -> Message {
        Message {
            role: Role::User,
            content: content.to_owned(),
            interrupted: false,
        }
    }

    fn contents(history: &History) -> Vec<String> {
        history
            .last(usize::MAX)
            .into_iter()
            .map(|message| message.content)
            .collect()
    }

    #[test]
    fn a_commit_keeps_what_the_cap_keeps_of_the_whole_history() {
        let caps = [(3, u64::MAX), (u64::MAX, 10), (4, 7), (0, 0), (1, u64::MAX)];
        for (messages, bytes) in caps {
            let cap = HistoryCap { messages, bytes };
            let mut history = History::default();
            let mut whole: Vec<String> = Vec::new();
            for turn in 0..12 {
                let said = [
                    message(&"a".repeat(turn % 5)),
                    message(&"b".repeat(turn % 3)),
                ];
                // Every third turn takes back the newest message first.
                let dropped = usize::from(turn % 3 == 2);
                history.commit(dropped, &said, cap);
                whole.truncate(whole.len().saturating_sub(dropped));
                whole.extend(said.iter().map(|message| message.content.clone()));
                let kept = cap.kept(whole.iter().rev().map(|text| text.len() as u64));
                whole.drain(..whole.len() - kept as usize);
                assert_eq!(contents(&history), whole, "cap {cap:?}, turn {turn}");
                let bytes: usize = whole.iter().map(String::len).sum();
                assert_eq!(history.bytes, bytes as u64, "cap {cap:?}, turn {turn}");
            }
        }
    }

    #[test]
    fn the_newest_messages_are_read_oldest_first() {
        let history = History::new(&[message("one"), message("two"), message("three")]);
        let last: Vec<String> = history
            .last(2)
            .into_iter()
            .map(|message| message.content)
            .collect();
        assert_eq!(last, ["two", "three"]);
        assert_eq!(history.last(10).len(), 3);
    }
}
