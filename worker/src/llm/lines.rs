//! Incremental framing of streamed response bodies: bytes arrive in chunks cut anywhere (inside
//! a line, inside a UTF-8 sequence, between `\r` and `\n`), and both wire formats are
//! line-based (Ollama's NDJSON, OpenAI's server-sent events). Pure: no I/O, tested with
//! adversarial chunking.

/// Why a stream could not be cut into lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// A line grew past the limit without a newline.
    TooLong { max: usize },
    /// A complete line is not UTF-8.
    NotUtf8 { line: usize },
}

/// Splits a byte stream into lines (without `\n` or `\r\n`), keeping the unfinished tail.
#[derive(Debug)]
pub(crate) struct Lines {
    buf: Vec<u8>,
    max: usize,
    /// Complete lines returned so far (for error messages).
    count: usize,
}

impl Lines {
    /// A splitter that refuses lines longer than `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Lines { buf: Vec::new(), max, count: 0 }
    }

    /// Feeds one chunk; returns the lines it completed, in order.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, LineError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            out.push(self.take()?);
        }
        self.buf.extend_from_slice(rest);
        if self.buf.len() > self.max {
            return Err(LineError::TooLong { max: self.max });
        }
        Ok(out)
    }

    /// The last line when the stream ended without a final newline.
    pub(crate) fn finish(&mut self) -> Result<Option<String>, LineError> {
        if self.buf.is_empty() { Ok(None) } else { self.take().map(Some) }
    }

    fn take(&mut self) -> Result<String, LineError> {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.len() > self.max {
            return Err(LineError::TooLong { max: self.max });
        }
        self.count += 1;
        String::from_utf8(std::mem::take(&mut self.buf)).map_err(|_| LineError::NotUtf8 { line: self.count })
    }
}

/// One field of a server-sent event stream, per line (the WHATWG grammar, reduced to what
/// OpenAI-compatible servers send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseEvent {
    /// The `data` of a complete event (several `data:` lines joined with `\n`).
    Data(String),
    /// An `error:` line, which llama.cpp has used for errors after the stream began.
    Error(String),
}

/// Collects `data:` lines into events; a blank line ends an event.
#[derive(Debug, Default)]
pub(crate) struct Sse {
    data: Option<String>,
}

impl Sse {
    /// Feeds one line; returns the event it completed, if any.
    pub(crate) fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.data.take().map(SseEvent::Data);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
                None
            }
            "error" => Some(SseEvent::Error(value.to_owned())),
            // comments (`: keep-alive`), `event:`, `id:`, `retry:` and unknown fields
            _ => None,
        }
    }

    /// The pending event when the stream ended without a blank line.
    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        self.data.take().map(SseEvent::Data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8], cuts: &[usize]) -> Result<Vec<String>, LineError> {
        let mut lines = Lines::new(1 << 20);
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            out.extend(lines.push(&input[from..cut])?);
            from = cut;
        }
        out.extend(lines.finish()?);
        Ok(out)
    }

    #[test]
    fn lines_survive_every_two_way_cut() {
        let input = "{\"response\":\"héllo ✓\"}\r\n\n{\"done\":true}\nlast".as_bytes();
        let whole = split_all(input, &[]).unwrap();
        assert_eq!(whole, ["{\"response\":\"héllo ✓\"}", "", "{\"done\":true}", "last"]);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                assert_eq!(split_all(input, &[i, j]).unwrap(), whole, "cuts at {i}, {j}");
            }
        }
    }

    #[test]
    fn lines_survive_one_byte_chunks() {
        let input = "data: {\"a\":\"ü\"}\r\n\r\ndata: [DONE]\r\n\r\n".as_bytes();
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(split_all(input, &cuts).unwrap(), ["data: {\"a\":\"ü\"}", "", "data: [DONE]", ""]);
    }

    #[test]
    fn many_lines_in_one_chunk_come_out_in_order() {
        let input: String = (0..100).map(|i| format!("{i}\n")).collect();
        let got = split_all(input.as_bytes(), &[]).unwrap();
        assert_eq!(got, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_before_it_ends() {
        let mut lines = Lines::new(8);
        assert_eq!(lines.push(b"12345").unwrap(), Vec::<String>::new());
        assert_eq!(lines.push(b"6789"), Err(LineError::TooLong { max: 8 }));
        let mut lines = Lines::new(8);
        assert_eq!(lines.push(b"12345678\n").unwrap(), ["12345678"]);
        assert_eq!(lines.push(b"123456789\n"), Err(LineError::TooLong { max: 8 }));
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let mut lines = Lines::new(64);
        assert_eq!(lines.push(b"ok\n\xff\xfe\n"), Err(LineError::NotUtf8 { line: 2 }));
    }

    #[test]
    fn sse_joins_data_lines_and_ignores_comments_and_other_fields() {
        let mut sse = Sse::default();
        let lines = [": keep-alive", "event: message", "id: 7", "data: {\"a\":", "data:1}", "", "", "data: [DONE]"];
        let events: Vec<SseEvent> = lines.iter().filter_map(|l| sse.line(l)).collect();
        assert_eq!(events, [SseEvent::Data("{\"a\":\n1}".into())]);
        assert_eq!(sse.finish(), Some(SseEvent::Data("[DONE]".into())));
        assert_eq!(sse.finish(), None);
    }

    #[test]
    fn sse_error_field_is_an_event() {
        let mut sse = Sse::default();
        assert_eq!(sse.line("error: {\"message\":\"boom\"}"), Some(SseEvent::Error("{\"message\":\"boom\"}".into())));
    }
}
