//! Hand-written recursive-descent parser: source text to an untyped syntax tree with byte spans.
//!
//! The parser knows the grammar only; names, types and literal meanings (is `10.0.0.0/8` a
//! CIDR?) are decided by the checker in `compile`, which knows the left operand's type. Nesting
//! depth, node count and source length are bounded (see [`crate::MAX_NESTING`] and friends), so
//! no input can exhaust the stack or memory.

use std::ops::Range;

use crate::error::{CompileError, MAX_EXPRESSION_BYTES, MAX_NESTING, MAX_NODES};

pub(crate) type Span = Range<usize>;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Or(Vec<Node>),
    Xor(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Compare {
        lhs: Box<Node>,
        op: CmpOp,
        op_span: Span,
        rhs: Rhs,
    },
    Ident(String),
    Call {
        name: String,
        name_span: Span,
        args: Vec<Node>,
    },
    Index {
        base: Box<Node>,
        index: Index,
        index_span: Span,
    },
    Str(StrLit),
    Int(i64),
    Bool(bool),
}

#[derive(Debug, Clone)]
pub(crate) enum Index {
    Int(i64),
    Key(StrLit),
    Star,
}

/// A string literal as written: the text between the delimiters, not yet unescaped (escaping
/// depends on where the literal is used).
#[derive(Debug, Clone)]
pub(crate) struct StrLit {
    pub body: String,
    pub raw: bool,
    /// Byte offset of `body` in the source.
    pub body_start: usize,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum Rhs {
    Str(StrLit),
    /// An unquoted literal: integer, range, IP address, CIDR, `true`/`false`.
    Word(String, Span),
    Set(Vec<Rhs>, Span),
    List(Span),
}

impl Rhs {
    pub fn span(&self) -> Span {
        match self {
            Rhs::Str(s) => s.span.clone(),
            Rhs::Word(_, s) | Rhs::Set(_, s) => s.clone(),
            Rhs::List(s) => s.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logic {
    And,
    Xor,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    Matches,
    Wildcard,
    StrictWildcard,
    In,
}

impl CmpOp {
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Contains => "contains",
            CmpOp::Matches => "matches",
            CmpOp::Wildcard => "wildcard",
            CmpOp::StrictWildcard => "strict wildcard",
            CmpOp::In => "in",
        }
    }
}

const ENGLISH_CMP: &[(&str, CmpOp)] = &[
    ("eq", CmpOp::Eq),
    ("ne", CmpOp::Ne),
    ("lt", CmpOp::Lt),
    ("le", CmpOp::Le),
    ("gt", CmpOp::Gt),
    ("ge", CmpOp::Ge),
    ("contains", CmpOp::Contains),
    ("matches", CmpOp::Matches),
    ("wildcard", CmpOp::Wildcard),
    ("in", CmpOp::In),
];

const LOGICAL: &[&str] = &["and", "or", "xor", "not"];

const KEYWORDS: &[&str] = &[
    "and", "or", "xor", "not", "eq", "ne", "lt", "le", "gt", "ge", "contains", "matches", "wildcard", "strict", "in",
];

/// Parses a whole expression.
pub(crate) fn parse(src: &str) -> Result<Node, CompileError> {
    if src.len() > MAX_EXPRESSION_BYTES {
        return Err(CompileError::new(
            src,
            MAX_EXPRESSION_BYTES..MAX_EXPRESSION_BYTES,
            format!(
                "expression too long: {} bytes, the limit is {MAX_EXPRESSION_BYTES} bytes",
                src.len()
            ),
        ));
    }
    let mut p = Parser {
        src,
        b: src.as_bytes(),
        pos: 0,
        depth: 0,
        nodes: 0,
    };
    let node = p.or()?;
    p.ws();
    if p.pos < p.b.len() {
        return Err(if p.peek() == Some(b')') {
            p.err(p.pos..p.pos + 1, "unmatched `)`")
        } else {
            p.unexpected("`and`, `or`, `xor` or the end of the expression")
        });
    }
    Ok(node)
}

struct Parser<'s> {
    src: &'s str,
    b: &'s [u8],
    pos: usize,
    depth: usize,
    nodes: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'/' | b'-' | b'_')
}

impl<'s> Parser<'s> {
    fn err(&self, span: Span, msg: impl Into<String>) -> CompileError {
        CompileError::new(self.src, span, msg)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn peek_at(&self, off: usize) -> Option<u8> {
        self.b.get(self.pos + off).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn node(&mut self, kind: NodeKind, span: Span) -> Result<Node, CompileError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.err(
                span,
                format!("expression too large: more than {MAX_NODES} fields, values and operators"),
            ));
        }
        Ok(Node { kind, span })
    }

    fn enter(&mut self, at: Span) -> Result<(), CompileError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(
                at,
                format!("expression nested too deeply: more than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// The identifier-like word at the cursor, without consuming it.
    fn peek_word(&self) -> &'s str {
        let start = self.pos;
        let mut end = start;
        while self.b.get(end).is_some_and(|c| is_ident_char(*c)) {
            end += 1;
        }
        &self.src[start..end]
    }

    /// Consumes `kw` if it is the next whole word.
    fn eat_word(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(is_ident_start) && self.peek_word() == kw {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if self
            .b
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(sym.as_bytes()))
        {
            self.pos += sym.len();
            true
        } else {
            false
        }
    }

    /// Describes what is at the cursor, for messages.
    fn found(&self) -> (String, Span) {
        match self.peek() {
            None => ("the end of the expression".to_owned(), self.pos..self.pos),
            Some(c) if is_ident_start(c) => {
                let w = self.peek_word();
                (format!("`{w}`"), self.pos..self.pos + w.len())
            }
            Some(_) => {
                let ch = self.src.get(self.pos..).and_then(|s| s.chars().next()).unwrap_or('?');
                (format!("`{ch}`"), self.pos..self.pos + ch.len_utf8())
            }
        }
    }

    fn unexpected(&self, expected: &str) -> CompileError {
        let (found, span) = self.found();
        let err = self.err(span, format!("expected {expected}, found {found}"));
        if self.peek().is_some_and(is_ident_start) {
            let w = self.peek_word();
            let lower = w.to_ascii_lowercase();
            if lower != w && (LOGICAL.contains(&lower.as_str()) || KEYWORDS.contains(&lower.as_str())) {
                return err.with_hint(format!("operators must be lowercase: `{lower}`"));
            }
            if matches!(w, "starts_with" | "ends_with") {
                return err.with_hint(format!("{w} is a function: {w}(field, \"value\")"));
            }
            if KEYWORDS.contains(&w) {
                return err;
            }
            if let Some(s) = crate::suggest(w, KEYWORDS.iter().copied()) {
                return err.with_hint(format!("did you mean `{s}`?"));
            }
        }
        err
    }

    /// `and`, `xor` and `or` chains are read in one loop and grouped by precedence afterwards,
    /// so a level of parentheses costs few stack frames.
    fn or(&mut self) -> Result<Node, CompileError> {
        let mut operands = vec![self.unary()?];
        let mut ops = Vec::new();
        loop {
            self.ws();
            let op = if self.eat_word("and") || self.eat_sym("&&") {
                Logic::And
            } else if self.eat_word("xor") || self.eat_sym("^^") {
                Logic::Xor
            } else if self.eat_word("or") || self.eat_sym("||") {
                Logic::Or
            } else {
                break;
            };
            ops.push(op);
            operands.push(self.unary()?);
        }
        if ops.is_empty() {
            return Ok(operands.pop().expect("one operand was pushed before the loop"));
        }
        self.group(operands, &ops)
    }

    /// Builds `or` of `xor` of `and` groups: not > and > xor > or.
    #[inline(never)]
    fn group(&mut self, operands: Vec<Node>, ops: &[Logic]) -> Result<Node, CompileError> {
        let mut ors = Vec::new();
        let mut xors = Vec::new();
        let mut ands = Vec::new();
        let mut operands = operands.into_iter();
        ands.extend(operands.next());
        for (op, operand) in ops.iter().zip(operands) {
            if *op != Logic::And {
                xors.push(self.close(std::mem::take(&mut ands), NodeKind::And)?);
                if *op == Logic::Or {
                    ors.push(self.close(std::mem::take(&mut xors), NodeKind::Xor)?);
                }
            }
            ands.push(operand);
        }
        xors.push(self.close(ands, NodeKind::And)?);
        ors.push(self.close(xors, NodeKind::Xor)?);
        self.close(ors, NodeKind::Or)
    }

    fn close(&mut self, mut items: Vec<Node>, make: fn(Vec<Node>) -> NodeKind) -> Result<Node, CompileError> {
        if items.len() == 1 {
            return Ok(items.pop().expect("length checked"));
        }
        let start = items.first().map_or(0, |n| n.span.start);
        let end = items.last().map_or(start, |n| n.span.end);
        self.node(make(items), start..end)
    }

    fn unary(&mut self) -> Result<Node, CompileError> {
        self.ws();
        let start = self.pos;
        let is_not =
            self.eat_word("not") || (self.peek() == Some(b'!') && self.peek_at(1) != Some(b'=') && self.eat_sym("!"));
        if is_not {
            self.enter(start..self.pos)?;
            let inner = self.unary()?;
            self.leave();
            let end = inner.span.end;
            return self.node(NodeKind::Not(Box::new(inner)), start..end);
        }
        self.compare()
    }

    #[inline(never)]
    fn cmp_op(&mut self) -> Result<Option<CmpOp>, CompileError> {
        let op = if self.eat_sym("==") {
            Some(CmpOp::Eq)
        } else if self.eat_sym("!=") {
            Some(CmpOp::Ne)
        } else if self.eat_sym("<=") {
            Some(CmpOp::Le)
        } else if self.eat_sym(">=") {
            Some(CmpOp::Ge)
        } else if self.eat_sym("<") {
            Some(CmpOp::Lt)
        } else if self.eat_sym(">") {
            Some(CmpOp::Gt)
        } else if self.eat_sym("~") {
            Some(CmpOp::Matches)
        } else if self.peek().is_some_and(is_ident_start) {
            let w = self.peek_word();
            if let Some((_, op)) = ENGLISH_CMP.iter().find(|(name, _)| *name == w) {
                self.pos += w.len();
                Some(*op)
            } else if w == "strict" {
                self.pos += w.len();
                self.ws();
                if !self.eat_word("wildcard") {
                    return Err(self.unexpected("`wildcard` after `strict`"));
                }
                Some(CmpOp::StrictWildcard)
            } else if LOGICAL.contains(&w) {
                None
            } else {
                return Err(self.unexpected("a comparison operator, `and`, `or`, `xor` or the end of the expression"));
            }
        } else {
            None
        };
        Ok(op)
    }

    fn compare(&mut self) -> Result<Node, CompileError> {
        let lhs = self.postfix()?;
        self.ws();
        let op_start = self.pos;
        let op = self.cmp_op()?;
        let Some(op) = op else { return Ok(lhs) };
        let op_span = op_start..self.pos;
        let rhs = self.rhs(op)?;
        let span = lhs.span.start..rhs.span().end;
        self.node(
            NodeKind::Compare {
                lhs: Box::new(lhs),
                op,
                op_span,
                rhs,
            },
            span,
        )
    }

    fn rhs(&mut self, op: CmpOp) -> Result<Rhs, CompileError> {
        self.ws();
        let start = self.pos;
        if op == CmpOp::In {
            if self.peek() == Some(b'$') {
                self.pos += 1;
                let name = self.peek_word();
                self.pos += name.len();
                return Ok(Rhs::List(start..self.pos));
            }
            if self.peek() != Some(b'{') {
                // Cloudflare's operator docs also write `ip.src in 203.0.113.0/24`: a set of one.
                if self.peek().is_some_and(|c| c == b'"' || is_word_char(c)) {
                    let item = self.rhs_value("`{` to start a set of values after `in`")?;
                    let span = item.span();
                    return Ok(Rhs::Set(vec![item], span));
                }
                return Err(self.unexpected("`{` to start a set of values after `in`"));
            }
            self.pos += 1;
            self.enter(start..self.pos)?;
            let mut items = Vec::new();
            loop {
                self.ws();
                match self.peek() {
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    None => {
                        return Err(self.err(start..start + 1, "unterminated set: expected `}` to close this `{`"));
                    }
                    _ => {
                        let item = self.rhs_value("a value or `}` in the set")?;
                        self.node(NodeKind::Bool(false), item.span())?;
                        items.push(item);
                    }
                }
            }
            self.leave();
            return Ok(Rhs::Set(items, start..self.pos));
        }
        self.rhs_value(&format!("a value after `{}`", op.name()))
    }

    fn rhs_value(&mut self, expected: &str) -> Result<Rhs, CompileError> {
        match self.peek() {
            Some(b'"') => Ok(Rhs::Str(self.string()?)),
            Some(b'r') if matches!(self.peek_at(1), Some(b'"' | b'#')) => Ok(Rhs::Str(self.string()?)),
            Some(c) if is_word_char(c) => {
                let start = self.pos;
                while self.peek().is_some_and(is_word_char) {
                    self.pos += 1;
                }
                Ok(Rhs::Word(self.src[start..self.pos].to_owned(), start..self.pos))
            }
            Some(b'$') => Err(self
                .err(self.pos..self.pos + 1, "a list (`$name`) can only follow `in`")
                .with_hint("ip.src in $name")),
            _ => Err(self.unexpected(expected)),
        }
    }

    fn postfix(&mut self) -> Result<Node, CompileError> {
        let node = self.atom()?;
        self.indexes(node)
    }

    #[inline(never)]
    fn indexes(&mut self, mut node: Node) -> Result<Node, CompileError> {
        let mut chain = 0;
        loop {
            self.ws();
            if self.peek() != Some(b'[') {
                return Ok(node);
            }
            let start = self.pos;
            self.pos += 1;
            chain += 1;
            if self.depth + chain > MAX_NESTING {
                return Err(self.err(
                    start..start + 1,
                    format!("expression nested too deeply: more than {MAX_NESTING} levels"),
                ));
            }
            self.ws();
            let index = match self.peek() {
                Some(b'*') => {
                    self.pos += 1;
                    Index::Star
                }
                Some(b'"') => Index::Key(self.string()?),
                Some(b'r') if matches!(self.peek_at(1), Some(b'"' | b'#')) => Index::Key(self.string()?),
                Some(c) if c.is_ascii_digit() || c == b'-' => {
                    let (n, _) = self.integer()?;
                    Index::Int(n)
                }
                _ => return Err(self.unexpected("an array index, `*` or a map key in `[...]`")),
            };
            self.ws();
            if !self.eat_sym("]") {
                return Err(self.unexpected("`]`"));
            }
            let span = node.span.start..self.pos;
            node = self.node(
                NodeKind::Index {
                    base: Box::new(node),
                    index,
                    index_span: start..self.pos,
                },
                span,
            )?;
        }
    }

    fn atom(&mut self) -> Result<Node, CompileError> {
        self.ws();
        let start = self.pos;
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                self.enter(start..start + 1)?;
                let mut inner = self.or()?;
                self.ws();
                if !self.eat_sym(")") {
                    return Err(self.unclosed(start, "(", ")"));
                }
                self.leave();
                inner.span = start..self.pos;
                Ok(inner)
            }
            Some(c) if is_ident_start(c) && !(c == b'r' && matches!(self.peek_at(1), Some(b'"' | b'#'))) => {
                let word = self.peek_word();
                let span = start..start + word.len();
                if KEYWORDS.contains(&word) {
                    return Err(self.unexpected("a field, function or value"));
                }
                self.pos += word.len();
                self.ws();
                if self.peek() == Some(b'(') && word != "true" && word != "false" {
                    self.call(word, span)
                } else {
                    self.word_atom(word, span)
                }
            }
            _ => self.literal_atom(),
        }
    }

    #[inline(never)]
    #[cold]
    fn unclosed(&self, open_at: usize, open: &str, close: &str) -> CompileError {
        let (found, span) = self.found();
        let at = CompileError::new(self.src, open_at..open_at + 1, "");
        self.err(
            span,
            format!(
                "expected `{close}` to close the `{open}` at {}:{}, found {found}",
                at.line(),
                at.column()
            ),
        )
    }

    #[inline(never)]
    fn word_atom(&mut self, word: &str, span: Span) -> Result<Node, CompileError> {
        match word {
            "true" => self.node(NodeKind::Bool(true), span),
            "false" => self.node(NodeKind::Bool(false), span),
            _ => self.node(NodeKind::Ident(word.to_owned()), span),
        }
    }

    #[inline(never)]
    fn literal_atom(&mut self) -> Result<Node, CompileError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"' | b'r') => {
                let s = self.string()?;
                let span = s.span.clone();
                self.node(NodeKind::Str(s), span)
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let (n, span) = self.integer()?;
                self.node(NodeKind::Int(n), span)
            }
            Some(b'$') => Err(self
                .err(start..start + 1, "a list (`$name`) can only follow `in`")
                .with_hint("ip.src in $name")),
            _ => Err(self.unexpected("a field, function or value")),
        }
    }

    fn call(&mut self, name: &str, name_span: Span) -> Result<Node, CompileError> {
        let open = self.pos;
        self.pos += 1;
        self.enter(open..open + 1)?;
        let mut args = Vec::new();
        self.ws();
        if !self.eat_sym(")") {
            loop {
                args.push(self.or()?);
                self.ws();
                if self.eat_sym(")") {
                    break;
                }
                if !self.eat_sym(",") {
                    return Err(self.bad_argument_list(name));
                }
            }
        }
        self.leave();
        self.node(
            NodeKind::Call {
                name: name.to_owned(),
                name_span: name_span.clone(),
                args,
            },
            name_span.start..self.pos,
        )
    }

    #[inline(never)]
    #[cold]
    fn bad_argument_list(&self, name: &str) -> CompileError {
        self.unexpected(&format!("`,` or `)` in the arguments of {name}()"))
    }

    fn integer(&mut self) -> Result<(i64, Span), CompileError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if digits == self.pos {
            return Err(self.unexpected("digits after `-`"));
        }
        let text = &self.src[start..self.pos];
        let n = text
            .parse::<i64>()
            .map_err(|_| self.err(start..self.pos, format!("integer {text} is out of range")))?;
        Ok((n, start..self.pos))
    }

    /// A quoted (`"…"`) or raw (`r"…"`, `r#"…"#`) string.
    fn string(&mut self) -> Result<StrLit, CompileError> {
        let start = self.pos;
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let body_start = self.pos;
            loop {
                match self.peek() {
                    None => {
                        return Err(self.err(start..start + 1, "unterminated string: expected a closing `\"`"));
                    }
                    Some(b'\\') => self.pos += 2,
                    Some(b'"') => break,
                    Some(_) => self.pos += 1,
                }
            }
            // An escape at the very end can step past the input.
            let body_end = self.pos.min(self.b.len());
            if body_end != self.pos {
                return Err(self.err(start..start + 1, "unterminated string: expected a closing `\"`"));
            }
            self.pos += 1;
            return Ok(StrLit {
                body: self.src[body_start..body_end].to_owned(),
                raw: false,
                body_start,
                span: start..self.pos,
            });
        }
        // Raw string: r, up to 255 '#', a quote; ends at a quote followed by as many '#'.
        self.pos += 1;
        let mut hashes = 0;
        while self.peek() == Some(b'#') {
            hashes += 1;
            self.pos += 1;
        }
        if hashes > 255 {
            return Err(self.err(start..self.pos, "raw string delimiter has more than 255 `#`"));
        }
        if self.peek() != Some(b'"') {
            return Err(self.unexpected("`\"` to start the raw string"));
        }
        self.pos += 1;
        let body_start = self.pos;
        let mut close = String::from("\"");
        close.push_str(&"#".repeat(hashes));
        match self.src[body_start..].find(&close) {
            Some(i) => {
                self.pos = body_start + i + close.len();
                Ok(StrLit {
                    body: self.src[body_start..body_start + i].to_owned(),
                    raw: true,
                    body_start,
                    span: start..self.pos,
                })
            }
            None => Err(self.err(
                start..body_start,
                format!("unterminated raw string: expected a closing `{close}`"),
            )),
        }
    }
}
