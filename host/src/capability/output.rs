//! The `output` capability: what the agent says while its turn runs.

use std::sync::Arc;

use crate::limits::Tripped;

/// Receives what a plugin says, while its turn runs.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// A turn's `output`: passes each `say` to the caller's sink and keeps it for
/// the history, up to the output limit.
pub(crate) struct OutputCtx {
    sink: Option<Sink>,
    said: Vec<String>,
    bytes: usize,
    limit: usize,
}

impl OutputCtx {
    /// Output going to `sink` (or nowhere), at most `limit` bytes per turn.
    pub(crate) fn new(sink: Option<Sink>, limit: usize) -> Self {
        OutputCtx {
            sink,
            said: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Says `text`, unless the turn has said as much as it may.
    pub(crate) fn say(&mut self, text: String) -> Result<(), Tripped> {
        self.bytes += text.len();
        if self.bytes > self.limit {
            return Err(Tripped::Output(self.limit));
        }
        if let Some(sink) = &self.sink {
            sink(&text);
        }
        self.said.push(text);
        Ok(())
    }

    /// Everything said during the turn, one entry per `say`.
    pub(crate) fn into_said(self) -> Vec<String> {
        self.said
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn what_is_said_goes_to_the_sink_as_it_is_said_up_to_the_limit() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink: Sink = {
            let heard = heard.clone();
            Arc::new(move |text| heard.lock().unwrap().push(text.to_owned()))
        };
        let mut output = OutputCtx::new(Some(sink), 10);
        output.say("hello".into()).unwrap();
        output.say("there".into()).unwrap();
        assert_eq!(output.say("!".into()), Err(Tripped::Output(10)));
        assert_eq!(*heard.lock().unwrap(), ["hello", "there"]);
        assert_eq!(output.into_said(), ["hello", "there"]);
    }
}
