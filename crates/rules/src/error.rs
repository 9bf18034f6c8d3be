//! Compile errors with source positions, and their caret rendering.

use std::fmt::Write as _;
use std::ops::Range;

/// Longest expression accepted, in bytes. Cloudflare's own limit is a few KiB; this bound keeps
/// compile time and memory small whatever is pasted.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;

/// Deepest nesting of parentheses, `not`, function calls and sets accepted. Parsing, checking and
/// evaluation recurse on nesting, so this bounds their stack use.
pub const MAX_NESTING: usize = 64;

/// Most syntax nodes (fields, literals, operators, set elements) in one expression.
pub const MAX_NODES: usize = 4096;

/// Why an expression did not compile, with where.
///
/// `Display` gives the one-line form, e.g.
/// `unknown field "http.hots" at 1:2; did you mean "http.host"?`;
/// [`CompileError::render`] gives the multi-line form with the source line and a caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at {line}:{column}{}", hint_suffix(.hint.as_deref()))]
pub struct CompileError {
    message: String,
    hint: Option<String>,
    span: Range<usize>,
    line: usize,
    column: usize,
}

fn hint_suffix(hint: Option<&str>) -> String {
    hint.map(|h| format!("; {h}")).unwrap_or_default()
}

impl CompileError {
    pub(crate) fn new(src: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = floor_char_boundary(src, span.start.min(src.len()));
        let end = floor_char_boundary(src, span.end.clamp(start, src.len()));
        let before = &src[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = src[line_start..start].chars().count() + 1;
        CompileError {
            message: message.into(),
            hint: None,
            span: start..end,
            line,
            column,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// What is wrong, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A suggestion, e.g. `did you mean "http.host"?`.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Byte range in the source the error points at (empty at the end of input).
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// 1-based line.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column, in characters.
    pub fn column(&self) -> usize {
        self.column
    }

    /// Multi-line diagnostic: the message, the source line and a caret under the span.
    ///
    /// ```text
    /// error: unknown field "http.hots"
    ///  --> 1:2
    ///   |
    /// 1 | (http.hots eq "x")
    ///   |  ^^^^^^^^^
    ///   = help: did you mean "http.host"?
    /// ```
    pub fn render(&self, src: &str) -> String {
        let line_text = src.lines().nth(self.line - 1).unwrap_or("");
        let gutter = self.line.to_string();
        let pad = " ".repeat(gutter.len());
        // Keep tabs so the caret lines up under tab-indented source.
        let lead: String = line_text
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let span_text = src.get(self.span.clone()).unwrap_or("");
        let on_line = span_text.split('\n').next().unwrap_or("");
        let width = on_line.chars().count().max(1);
        let mut out = String::new();
        let _ = writeln!(out, "error: {}", self.message);
        let _ = writeln!(out, "{pad}--> {}:{}", self.line, self.column);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{gutter} | {line_text}");
        let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(width));
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{pad} = help: {hint}");
        }
        out
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
