//! What an event keeps of a large text: its first bytes, with the size and
//! digest of the whole. The history keeps each message whole under its own
//! caps; the log keeps every turn for the session's life, so what one event
//! holds (and with it a page, a follower's buffer, a replay) stays bounded
//! whatever a caller sent or a plugin said.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hex::sha256_hex;

/// A text of an event cut to its first bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clip {
    /// Where in the event: `/input/text`, `/input/arguments`, `/result`
    /// (a value, kept as the start of its JSON text) or `/said` (what was
    /// said, its entries joined by newlines as the history has it).
    pub at: String,
    /// The size of the whole, in bytes.
    pub bytes: u64,
    /// Hex sha256 of the whole.
    pub sha256: String,
}

impl Clip {
    fn of(at: &str, whole: &str) -> Clip {
        Clip {
            at: at.to_owned(),
            bytes: whole.len() as u64,
            sha256: sha256_hex(whole.as_bytes()),
        }
    }
}

/// Cuts `text` past `keep` bytes to its first `keep`, on a character,
/// recording the cut at `at` in `clipped`.
pub(crate) fn clip_text(text: &mut String, at: &str, keep: usize, clipped: &mut Vec<Clip>) {
    if text.len() > keep {
        clipped.push(Clip::of(at, text));
        text.truncate(text.floor_char_boundary(keep));
    }
}

/// A value whose JSON text is past `keep` bytes becomes a string of the
/// text's first `keep`.
pub(crate) fn clip_value(value: &mut Value, at: &str, keep: usize, clipped: &mut Vec<Clip>) {
    let mut counted = Counted(0);
    serde_json::to_writer(&mut counted, value).expect("counting JSON never fails");
    if counted.0 > keep {
        let mut text = value.to_string();
        clip_text(&mut text, at, keep, clipped);
        *value = Value::String(text);
    }
}

/// What was said, past `keep` bytes in all (a byte more for each entry),
/// cut to its first `keep`.
pub(crate) fn clip_said(said: &mut Vec<String>, keep: usize, clipped: &mut Vec<Clip>) {
    let bytes: usize = said.iter().map(|entry| entry.len() + 1).sum();
    if bytes <= keep {
        return;
    }
    clipped.push(Clip::of("/said", &said.join("\n")));
    let (mut room, mut kept) = (keep, 0);
    for entry in said.iter_mut() {
        if entry.len() < room {
            room -= entry.len() + 1;
            kept += 1;
            continue;
        }
        entry.truncate(entry.floor_char_boundary(room.saturating_sub(1)));
        kept += usize::from(!entry.is_empty());
        break;
    }
    said.truncate(kept);
}

/// A writer that only counts what it is given.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_past_the_bound_keeps_its_start_on_a_character_and_records_the_whole() {
        let mut text = "é".repeat(10);
        let mut clipped = Vec::new();
        clip_text(&mut text, "/input/text", 5, &mut clipped);
        assert_eq!(text, "éé");
        let whole = "é".repeat(10);
        assert_eq!(clipped, [Clip::of("/input/text", &whole)]);
        assert_eq!(clipped[0].bytes, 20);

        let mut short = "short".to_owned();
        clip_text(&mut short, "/input/text", 5, &mut clipped);
        assert_eq!((short.as_str(), clipped.len()), ("short", 1));
    }

    #[test]
    fn a_large_value_becomes_the_start_of_its_json_text() {
        let mut value = serde_json::json!({ "items": ["a", "b", "c"] });
        let mut clipped = Vec::new();
        clip_value(&mut value, "/result", 100, &mut clipped);
        assert!(clipped.is_empty(), "a value within the bound stays a value");
        clip_value(&mut value, "/result", 10, &mut clipped);
        assert_eq!(value, Value::String("{\"items\":[".into()));
        assert_eq!(clipped[0].bytes, 23);
    }

    #[test]
    fn what_was_said_is_bounded_in_all_and_by_its_count() {
        let mut said = vec!["abcd".to_owned(), "efgh".to_owned(), "ijkl".to_owned()];
        let mut clipped = Vec::new();
        clip_said(&mut said, 8, &mut clipped);
        assert_eq!(said, ["abcd", "ef"]);
        assert_eq!(clipped, [Clip::of("/said", "abcd\nefgh\nijkl")]);

        // Empty entries cost a byte each, so their number is bounded too.
        let mut said = vec![String::new(); 100];
        clip_said(&mut said, 10, &mut clipped);
        assert_eq!(said.len(), 10);
    }
}
