//! RocketMQ's SQL92 message selector (`MessageSelector.bySql`): the grammar of its
//! `SelectorParser.jj` (ActiveMQ's JMS selector without arithmetic, LIKE, hex and octal) and
//! the evaluation rules of its `filter` module, learnt from apache/rocketmq and written anew.
//!
//! Grammar, loosest first: `OR`; `AND`; `=`, `<>`, `IS [NOT] NULL`; `>`, `>=`, `<`, `<=`,
//! `[NOT] BETWEEN x AND y`, `property [NOT] IN ('a', …)`,
//! `[NOT] CONTAINS|STARTSWITH|ENDSWITH 's'` (RocketMQ 5's additions); unary `+`, `-`, `NOT`;
//! literals (`'it''s'`, `12`, `12L`, `1.5E3`, `TRUE`, `FALSE`, `NULL`), properties
//! (`[a-zA-Z_$][a-zA-Z0-9_$]*`) and parentheses.
//! Keywords are case-insensitive; `--` line and `/* */` block comments are skipped. Like
//! Java's generated parser, whatever follows a complete expression is not read.
//!
//! Values: every property is a string (or absent: NULL); integer literals are `Int` when they
//! fit 32 bits, else `Long`; decimals are `Double`. A comparison converts a string to the other
//! side's type (`Integer.valueOf`, `Long.valueOf`, `Double.valueOf`, `Boolean.valueOf`); two
//! strings are ordered as doubles. A conversion that fails is an evaluation error, and an
//! evaluation error anywhere means the message does not match (as on Java's broker). NULL
//! propagates: a comparison with an absent property is unknown, `AND`/`OR` follow three-valued
//! logic, and only a TRUE result matches.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqlError {}

fn error<T>(message: impl Into<String>) -> Result<T, SqlError> {
    Err(SqlError {
        message: message.into(),
    })
}

/// A compiled selector.
#[derive(Debug, Clone)]
pub struct Selector {
    root: Node,
}

impl Selector {
    /// Compiles `text`; the error says what is wrong and where.
    pub fn compile(text: &str) -> Result<Selector, SqlError> {
        let tokens = lex(text)?;
        let mut parser = Parser { tokens, at: 0 };
        // Like Java's generated parser, whatever follows a complete expression is not read.
        let root = parser.or_expr()?;
        Ok(Selector {
            root: as_boolean(root)?,
        })
    }

    /// Whether a message with these properties (the stored record's `name\u{1}value\u{2}…`
    /// string) matches: only a TRUE result does.
    pub fn matches(&self, raw_properties: &str) -> bool {
        let props = RawProperties(raw_properties);
        matches!(self.root.eval(&props), Ok(Value::Bool(true)))
    }
}

thread_local! {
    /// Compiled selectors of this shard by expression text (errors too), so that each
    /// subscription's expression is compiled once, not per pull.
    static CACHE: RefCell<HashMap<String, Result<Rc<Selector>, SqlError>>> =
        RefCell::new(HashMap::new());
}

/// Expressions kept compiled per thread (shard); the cache starts over when full.
const CACHE_ENTRIES_MAX: usize = 1024;

/// [`Selector::compile`], once per expression text on this thread.
pub fn compile_cached(text: &str) -> Result<Rc<Selector>, SqlError> {
    CACHE.with(|cache| {
        if let Some(found) = cache.borrow().get(text) {
            return found.clone();
        }
        let compiled = Selector::compile(text).map(Rc::new);
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(text.to_string(), compiled.clone());
        compiled
    })
}

/// Property lookup in a stored record's properties string (the last of repeated names wins,
/// as in Java's map).
struct RawProperties<'a>(&'a str);

impl<'a> RawProperties<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .split('\u{2}')
            .filter_map(|pair| pair.split_once('\u{1}'))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .next_back()
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Not,
    And,
    Or,
    Between,
    In,
    True,
    False,
    Null,
    Is,
    Text(TextOp),
    Decimal(String),
    Float(String),
    Str(String),
    Id(String),
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
}

impl Tok {
    fn describe(&self) -> String {
        let text = match self {
            Tok::Decimal(s) | Tok::Float(s) => return format!("number {s}"),
            Tok::Str(s) => return format!("string '{s}'"),
            Tok::Id(s) => return format!("name {s}"),
            Tok::Text(op) => op.keyword(),
            Tok::Not => "NOT",
            Tok::And => "AND",
            Tok::Or => "OR",
            Tok::Between => "BETWEEN",
            Tok::In => "IN",
            Tok::True => "TRUE",
            Tok::False => "FALSE",
            Tok::Null => "NULL",
            Tok::Is => "IS",
            Tok::Eq => "=",
            Tok::Ne => "<>",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Plus => "+",
            Tok::Minus => "-",
        };
        text.to_string()
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    column: usize,
}

fn keyword(word: &str) -> Option<Tok> {
    Some(match word.to_ascii_uppercase().as_str() {
        "NOT" => Tok::Not,
        "AND" => Tok::And,
        "OR" => Tok::Or,
        "BETWEEN" => Tok::Between,
        "IN" => Tok::In,
        "TRUE" => Tok::True,
        "FALSE" => Tok::False,
        "NULL" => Tok::Null,
        "IS" => Tok::Is,
        "CONTAINS" => Tok::Text(TextOp::Contains),
        "STARTSWITH" => Tok::Text(TextOp::StartsWith),
        "ENDSWITH" => Tok::Text(TextOp::EndsWith),
        _ => return None,
    })
}

fn lex(text: &str) -> Result<Vec<Token>, SqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let column = i + 1;
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (kind, len) = match c {
            ' ' | '\t' | '\n' | '\r' | '\x0c' => {
                i += 1;
                continue;
            }
            '-' if next == Some('-') => {
                let end = (i..chars.len()).find(|&j| chars[j] == '\n' || chars[j] == '\r');
                let Some(end) = end else {
                    return error(format!("comment at column {column} does not end a line"));
                };
                i = end + 1;
                continue;
            }
            '/' if next == Some('*') => {
                let end = (i + 2..chars.len())
                    .find(|&j| chars[j] == '*' && chars.get(j + 1) == Some(&'/'));
                let Some(end) = end else {
                    return error(format!("comment at column {column} is not closed"));
                };
                i = end + 2;
                continue;
            }
            '\'' => lex_string(&chars, i)?,
            '0'..='9' => lex_number(&chars, i)?,
            '.' if next.is_some_and(|n| n.is_ascii_digit()) => lex_number(&chars, i)?,
            'a'..='z' | 'A'..='Z' | '_' | '$' => {
                let len = chars[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == '$')
                    .count();
                let word: String = chars[i..i + len].iter().collect();
                (keyword(&word).unwrap_or(Tok::Id(word)), len)
            }
            '<' if next == Some('>') => (Tok::Ne, 2),
            '<' if next == Some('=') => (Tok::Le, 2),
            '>' if next == Some('=') => (Tok::Ge, 2),
            '<' => (Tok::Lt, 1),
            '>' => (Tok::Gt, 1),
            '=' => (Tok::Eq, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            other => return error(format!("unexpected character {other:?} at column {column}")),
        };
        out.push(Token { kind, column });
        i += len;
    }
    Ok(out)
}

/// A `'…'` literal (`''` is a quote) starting at `start`: the token and its length.
fn lex_string(chars: &[char], start: usize) -> Result<(Tok, usize), SqlError> {
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return error(format!("string at column {} is not closed", start + 1)),
            Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                value.push('\'');
                i += 2;
            }
            Some('\'') => return Ok((Tok::Str(value), i + 1 - start)),
            Some(c) => {
                value.push(*c);
                i += 1;
            }
        }
    }
}

/// A number starting at `start`: `0`, `[1-9][0-9]*[lL]?`, or a decimal (`5.`, `5.5`, `.5`,
/// with an optional `E[+-]digits` exponent, or `5E10`).
fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), SqlError> {
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let int_len = digits(start);
    let mut i = start + int_len;
    let mut float = false;
    if chars.get(i) == Some(&'.') {
        float = true;
        i += 1 + digits(i + 1);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
        let exp = digits(i + 1 + sign);
        if exp > 0 {
            float = true;
            i += 1 + sign + exp;
        }
    }
    let text: String = chars[start..i].iter().collect();
    if float {
        return Ok((Tok::Float(text), i - start));
    }
    if text.len() > 1 && text.starts_with('0') {
        return error(format!(
            "number {text} at column {} has a leading zero",
            start + 1
        ));
    }
    if text != "0" && matches!(chars.get(i), Some('l' | 'L')) {
        return Ok((Tok::Decimal(text), i + 1 - start));
    }
    Ok((Tok::Decimal(text), i - start))
}

// ---------------------------------------------------------------------------------------------
// Expressions

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

impl TextOp {
    fn keyword(self) -> &'static str {
        match self {
            TextOp::Contains => "CONTAINS",
            TextOp::StartsWith => "STARTSWITH",
            TextOp::EndsWith => "ENDSWITH",
        }
    }

    fn test(self, value: &str, search: &str) -> bool {
        match self {
            TextOp::Contains => value.contains(search),
            TextOp::StartsWith => value.starts_with(search),
            TextOp::EndsWith => value.ends_with(search),
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Lit(Lit),
    Prop(String),
    Neg(Box<Node>),
    Not(Box<Node>),
    /// A property used where a boolean is expected.
    BoolCast(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    IsNull(Box<Node>),
    In {
        prop: String,
        list: Vec<String>,
        negated: bool,
    },
    Text {
        op: TextOp,
        negated: bool,
        left: Box<Node>,
        search: String,
    },
}

/// What the parser's type checks need to know of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TRUE, FALSE, NULL.
    BoolConst,
    /// A string or number literal.
    Const,
    Property,
    /// Yields TRUE, FALSE or NULL.
    Boolean,
    /// A negation.
    Other,
}

impl Node {
    fn kind(&self) -> Kind {
        match self {
            Node::Lit(Lit::Null | Lit::Bool(_)) => Kind::BoolConst,
            Node::Lit(_) => Kind::Const,
            Node::Prop(_) => Kind::Property,
            Node::Neg(_) => Kind::Other,
            _ => Kind::Boolean,
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, Node::Lit(Lit::Int(_) | Lit::Long(_) | Lit::Double(_)))
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Lit(Lit::Null) => f.write_str("NULL"),
            Node::Lit(Lit::Bool(b)) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Node::Lit(Lit::Int(v)) => write!(f, "{v}"),
            Node::Lit(Lit::Long(v)) => write!(f, "{v}"),
            Node::Lit(Lit::Double(v)) => write!(f, "{v:?}"),
            Node::Lit(Lit::Str(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Node::Prop(name) => f.write_str(name),
            Node::Neg(inner) => write!(f, "-{inner}"),
            _ => f.write_str("a condition"),
        }
    }
}

fn as_boolean(node: Node) -> Result<Node, SqlError> {
    match node.kind() {
        Kind::BoolConst | Kind::Boolean => Ok(node),
        Kind::Property => Ok(Node::BoolCast(Box::new(node))),
        Kind::Const | Kind::Other => error(format!("{node} is not a condition")),
    }
}

/// Operands of `>`, `>=`, `<`, `<=` (and BETWEEN): no string, boolean or NULL literal, and
/// no condition.
fn check_ordered_operand(node: &Node) -> Result<(), SqlError> {
    match node.kind() {
        Kind::Const | Kind::BoolConst if !node.is_number() => error(format!(
            "{node} cannot be compared with >, >=, < or <= (only numbers)"
        )),
        Kind::Boolean => error("a condition cannot be compared with >, >=, < or <="),
        _ => Ok(()),
    }
}

/// Operands of `=` and `<>`: not NULL (use IS NULL), and TRUE/FALSE only with a condition.
fn check_equal_operands(left: &Node, right: &Node) -> Result<(), SqlError> {
    for side in [left, right] {
        if matches!(side, Node::Lit(Lit::Null)) {
            return error("NULL cannot be compared with = or <> (use IS NULL)");
        }
    }
    let both_literals = matches!(left, Node::Lit(_)) && matches!(right, Node::Lit(_));
    if both_literals && left.kind() == Kind::BoolConst && right.kind() != Kind::BoolConst {
        return error(format!("{left} cannot be compared with {right}"));
    }
    Ok(())
}

fn cmp(op: CmpOp, left: Node, right: Node) -> Result<Node, SqlError> {
    if op == CmpOp::Eq {
        check_equal_operands(&left, &right)?;
    } else {
        check_ordered_operand(&left)?;
        check_ordered_operand(&right)?;
    }
    Ok(Node::Cmp(op, Box::new(left), Box::new(right)))
}

fn between(value: Node, low: Node, high: Node, negated: bool) -> Result<Node, SqlError> {
    if !negated {
        if let (Node::Lit(lo), Node::Lit(hi)) = (&low, &high) {
            if *lo == Lit::Null || *hi == Lit::Null {
                return error("BETWEEN bounds cannot be NULL");
            }
            let (lo_v, hi_v) = (lit_value(lo), lit_value(hi));
            if compare(&hi_v, &lo_v).is_ok_and(|c| c < 0) {
                return error(format!(
                    "BETWEEN {low} AND {high}: the lower bound must not exceed the upper"
                ));
            }
        }
    }
    let (first, second) = match negated {
        false => (
            cmp(CmpOp::Ge, value.clone(), low)?,
            cmp(CmpOp::Le, value, high)?,
        ),
        true => (
            cmp(CmpOp::Lt, value.clone(), low)?,
            cmp(CmpOp::Gt, value, high)?,
        ),
    };
    let (a, b) = (Box::new(first), Box::new(second));
    Ok(if negated {
        Node::Or(a, b)
    } else {
        Node::And(a, b)
    })
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_kind(&self, ahead: usize) -> Option<&Tok> {
        self.tokens.get(self.at + ahead).map(|t| &t.kind)
    }

    fn eat(&mut self, kind: &Tok) -> bool {
        if self.peek_kind(0) == Some(kind) {
            self.at += 1;
            return true;
        }
        false
    }

    fn unexpected<T>(&self, wanted: &str) -> Result<T, SqlError> {
        match self.peek() {
            Some(t) => error(format!(
                "expected {wanted} at column {}, found {}",
                t.column,
                t.kind.describe()
            )),
            None => error(format!(
                "expected {wanted}, found the end of the expression"
            )),
        }
    }

    fn expect(&mut self, kind: Tok, wanted: &str) -> Result<(), SqlError> {
        match self.eat(&kind) {
            true => Ok(()),
            false => self.unexpected(wanted),
        }
    }

    fn string(&mut self) -> Result<String, SqlError> {
        if let Some(Tok::Str(s)) = self.peek_kind(0) {
            let s = s.clone();
            self.at += 1;
            return Ok(s);
        }
        self.unexpected("a string literal")
    }

    fn or_expr(&mut self) -> Result<Node, SqlError> {
        let mut left = self.and_expr()?;
        while self.eat(&Tok::Or) {
            let right = self.and_expr()?;
            left = Node::Or(Box::new(as_boolean(left)?), Box::new(as_boolean(right)?));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Node, SqlError> {
        let mut left = self.equality()?;
        while self.eat(&Tok::And) {
            let right = self.equality()?;
            left = Node::And(Box::new(as_boolean(left)?), Box::new(as_boolean(right)?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Node, SqlError> {
        let mut left = self.comparison()?;
        loop {
            left = match self.peek_kind(0) {
                Some(Tok::Eq) => {
                    self.at += 1;
                    cmp(CmpOp::Eq, left, self.comparison()?)?
                }
                Some(Tok::Ne) => {
                    self.at += 1;
                    Node::Not(Box::new(cmp(CmpOp::Eq, left, self.comparison()?)?))
                }
                Some(Tok::Is) => {
                    self.at += 1;
                    let negated = self.eat(&Tok::Not);
                    self.expect(Tok::Null, "NULL after IS")?;
                    let is_null = Node::IsNull(Box::new(left));
                    match negated {
                        true => Node::Not(Box::new(is_null)),
                        false => is_null,
                    }
                }
                _ => return Ok(left),
            };
        }
    }

    fn comparison(&mut self) -> Result<Node, SqlError> {
        let mut left = self.unary()?;
        loop {
            let negated = self.peek_kind(0) == Some(&Tok::Not)
                && matches!(
                    self.peek_kind(1),
                    Some(Tok::Between | Tok::In | Tok::Text(_))
                );
            let op = self.peek_kind(usize::from(negated)).cloned();
            let ordered = match op {
                Some(Tok::Gt) => Some(CmpOp::Gt),
                Some(Tok::Ge) => Some(CmpOp::Ge),
                Some(Tok::Lt) => Some(CmpOp::Lt),
                Some(Tok::Le) => Some(CmpOp::Le),
                _ => None,
            };
            if let Some(op) = ordered.filter(|_| !negated) {
                self.at += 1;
                left = cmp(op, left, self.unary()?)?;
                continue;
            }
            match op {
                Some(Tok::Between) => {
                    self.at += 1 + usize::from(negated);
                    let low = self.unary()?;
                    self.expect(Tok::And, "AND in BETWEEN")?;
                    let high = self.unary()?;
                    left = between(left, low, high, negated)?;
                }
                Some(Tok::In) => {
                    self.at += 1 + usize::from(negated);
                    left = self.in_list(left, negated)?;
                }
                Some(Tok::Text(op)) => {
                    self.at += 1 + usize::from(negated);
                    let search = self.string()?;
                    let left_box = Box::new(left);
                    left = Node::Text {
                        op,
                        negated,
                        left: left_box,
                        search,
                    };
                }
                _ => return Ok(left),
            }
        }
    }

    fn in_list(&mut self, left: Node, negated: bool) -> Result<Node, SqlError> {
        let Node::Prop(prop) = left else {
            return error(format!("IN needs a property on its left, not {left}"));
        };
        self.expect(Tok::LParen, "( after IN")?;
        let mut list = vec![self.string()?];
        while self.eat(&Tok::Comma) {
            list.push(self.string()?);
        }
        self.expect(Tok::RParen, ") closing the IN list")?;
        Ok(Node::In {
            prop,
            list,
            negated,
        })
    }

    fn unary(&mut self) -> Result<Node, SqlError> {
        if self.eat(&Tok::Plus) {
            return self.unary();
        }
        if self.eat(&Tok::Minus) {
            return Ok(Node::Neg(Box::new(self.unary()?)));
        }
        if self.eat(&Tok::Not) {
            return Ok(Node::Not(Box::new(as_boolean(self.unary()?)?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, SqlError> {
        let Some(token) = self.peek().cloned() else {
            return self.unexpected("a value");
        };
        let node = match token.kind {
            Tok::Str(s) => Node::Lit(Lit::Str(s)),
            Tok::Decimal(text) => Node::Lit(decimal(&text)?),
            Tok::Float(text) => Node::Lit(float(&text)?),
            Tok::True => Node::Lit(Lit::Bool(true)),
            Tok::False => Node::Lit(Lit::Bool(false)),
            Tok::Null => Node::Lit(Lit::Null),
            Tok::Id(name) => Node::Prop(name),
            Tok::LParen => {
                self.at += 1;
                let inner = self.or_expr()?;
                self.expect(Tok::RParen, ")")?;
                return Ok(inner);
            }
            _ => return self.unexpected("a value"),
        };
        self.at += 1;
        Ok(node)
    }
}

/// An integer literal: `Int` when it fits 32 bits, else `Long` (Java's `createFromDecimal`).
fn decimal(text: &str) -> Result<Lit, SqlError> {
    let Ok(v) = text.parse::<i64>() else {
        return error(format!("{text} does not fit a 64-bit integer"));
    };
    Ok(match i32::try_from(v) {
        Ok(small) => Lit::Int(small),
        Err(_) => Lit::Long(v),
    })
}

/// A decimal literal: finite and at least the smallest positive double (Java's
/// `createFloat`, which refuses 0.0: write 0 instead).
fn float(text: &str) -> Result<Lit, SqlError> {
    let Ok(v) = text.parse::<f64>() else {
        return error(format!("{text} is not a number"));
    };
    if v > f64::MAX {
        return error(format!("{text} is greater than {:e}", f64::MAX));
    }
    if v < 4.9e-324 {
        return error(format!("{text} is less than 4.9E-324"));
    }
    Ok(Lit::Double(v))
}

// ---------------------------------------------------------------------------------------------
// Evaluation

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(&'a str),
}

/// The evaluation failed (a string that is not a number, a type that cannot be compared):
/// the message does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EvalError;

type Eval<'a> = Result<Value<'a>, EvalError>;

fn lit_value(lit: &Lit) -> Value<'_> {
    match lit {
        Lit::Null => Value::Null,
        Lit::Bool(b) => Value::Bool(*b),
        Lit::Int(v) => Value::Int(*v),
        Lit::Long(v) => Value::Long(*v),
        Lit::Double(v) => Value::Double(*v),
        Lit::Str(s) => Value::Str(s),
    }
}

/// A condition's value: TRUE/FALSE, or `None` for NULL.
fn truth(v: Value<'_>) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        _ => Err(EvalError),
    }
}

impl Node {
    fn eval<'a>(&'a self, props: &RawProperties<'a>) -> Eval<'a> {
        match self {
            Node::Lit(lit) => Ok(lit_value(lit)),
            Node::Prop(name) => Ok(props.get(name).map_or(Value::Null, Value::Str)),
            Node::Neg(inner) => Ok(negate(inner.eval(props)?)),
            Node::Not(inner) => Ok(match truth(inner.eval(props)?)? {
                None => Value::Null,
                Some(b) => Value::Bool(!b),
            }),
            Node::BoolCast(inner) => Ok(match inner.eval(props)? {
                Value::Null => Value::Null,
                Value::Bool(b) => Value::Bool(b),
                _ => Value::Bool(false),
            }),
            Node::And(l, r) => logic(l, r, props, false),
            Node::Or(l, r) => logic(l, r, props, true),
            Node::Cmp(op, l, r) => compare_nodes(*op, l, r, props),
            Node::IsNull(inner) => Ok(Value::Bool(inner.eval(props)? == Value::Null)),
            Node::In {
                prop,
                list,
                negated,
            } => Ok(match props.get(prop) {
                None => Value::Null,
                Some(v) => Value::Bool(list.iter().any(|s| s.as_str() == v) ^ negated),
            }),
            Node::Text {
                op,
                negated,
                left,
                search,
            } => Ok(Value::Bool(match left.eval(props)? {
                Value::Str(v) if !search.is_empty() => op.test(v, search) ^ negated,
                _ => false,
            })),
        }
    }
}

fn negate(v: Value<'_>) -> Value<'_> {
    match v {
        Value::Int(i) => Value::Int(i.wrapping_neg()),
        Value::Long(l) => Value::Long(l.wrapping_neg()),
        Value::Double(d) => Value::Double(-d),
        _ => Value::Null,
    }
}

/// AND (`or` false) and OR (`or` true) in three-valued logic: a deciding side wins, then
/// NULL, then the other answer.
fn logic<'a>(l: &'a Node, r: &'a Node, props: &RawProperties<'a>, or: bool) -> Eval<'a> {
    let lv = truth(l.eval(props)?)?;
    if lv == Some(or) {
        return Ok(Value::Bool(or));
    }
    let rv = truth(r.eval(props)?)?;
    if rv == Some(or) {
        return Ok(Value::Bool(or));
    }
    match (lv, rv) {
        (Some(_), Some(_)) => Ok(Value::Bool(!or)),
        _ => Ok(Value::Null),
    }
}

fn compare_nodes<'a>(op: CmpOp, l: &'a Node, r: &'a Node, props: &RawProperties<'a>) -> Eval<'a> {
    let lv = l.eval(props)?;
    if op == CmpOp::Eq {
        let rv = r.eval(props)?;
        return Ok(match (lv, rv) {
            (Value::Null, Value::Null) => Value::Bool(true),
            (Value::Null, _) => Value::Null,
            (_, Value::Null) => Value::Bool(false),
            _ if java_equals(lv, rv) => Value::Bool(true),
            _ => Value::Bool(compare(&lv, &rv)? == 0),
        });
    }
    if lv == Value::Null {
        return Ok(Value::Null);
    }
    let rv = r.eval(props)?;
    let order = match (lv, rv) {
        (_, Value::Null) => return Ok(Value::Null),
        // Two strings are ordered as numbers, or not at all.
        (Value::Str(a), Value::Str(b)) => java_double_cmp(java_double(a)?, java_double(b)?),
        _ => compare(&lv, &rv)?,
    };
    Ok(Value::Bool(match op {
        CmpOp::Gt => order > 0,
        CmpOp::Ge => order >= 0,
        CmpOp::Lt => order < 0,
        CmpOp::Le => order <= 0,
        CmpOp::Eq => order == 0,
    }))
}

/// Java's `equals` between two values (same type and value; doubles by their bits).
fn java_equals(a: Value<'_>, b: Value<'_>) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => java_double_cmp(x, y) == 0,
        _ => a == b,
    }
}

/// Java's `__compare` with string conversion: the right side is converted to the left's
/// type where Java does; types that do not meet compare as "less" (-1); a conversion that
/// fails is an error.
fn compare(l: &Value<'_>, r: &Value<'_>) -> Result<i32, EvalError> {
    use Value::*;
    let ord = |o: std::cmp::Ordering| o as i32;
    Ok(match (*l, *r) {
        (Bool(a), Bool(b)) => ord(a.cmp(&b)),
        (Int(a), Int(b)) => ord(a.cmp(&b)),
        (Long(a), Long(b)) => ord(a.cmp(&b)),
        (Double(a), Double(b)) => java_double_cmp(a, b),
        (Str(a), Str(b)) => ord(a.cmp(b)),
        (Int(a), Long(b)) => ord(i64::from(a).cmp(&b)),
        (Long(a), Int(b)) => ord(a.cmp(&i64::from(b))),
        (Int(a), Double(b)) => java_double_cmp(f64::from(a), b),
        (Long(a), Double(b)) => java_double_cmp(a as f64, b),
        (Double(a), Int(b)) => java_double_cmp(a, f64::from(b)),
        (Double(a), Long(b)) => java_double_cmp(a, b as f64),
        (Int(a), Str(b)) => ord(a.cmp(&java_int(b)?)),
        (Long(a), Str(b)) => ord(a.cmp(&java_long(b)?)),
        (Double(a), Str(b)) => java_double_cmp(a, java_double(b)?),
        (Str(a), Bool(b)) => ord(a.eq_ignore_ascii_case("true").cmp(&b)),
        (Str(a), Int(b)) => ord(java_int(a)?.cmp(&b)),
        (Str(a), Long(b)) => ord(java_long(a)?.cmp(&b)),
        (Str(a), Double(b)) => java_double_cmp(java_double(a)?, b),
        // Java casts the boolean to a string here and fails.
        (Bool(_), Str(_)) => return Err(EvalError),
        _ => -1,
    })
}

/// `Double.compareTo`: -0.0 below 0.0, NaN above everything and equal to itself.
fn java_double_cmp(a: f64, b: f64) -> i32 {
    if a < b {
        return -1;
    }
    if a > b {
        return 1;
    }
    let bits = |v: f64| if v.is_nan() { f64::NAN.to_bits() } else { v.to_bits() } as i64;
    bits(a).cmp(&bits(b)) as i32
}

/// `Integer.valueOf`: an optional sign and ASCII digits, in range.
fn java_int(s: &str) -> Result<i32, EvalError> {
    java_long(s).and_then(|v| i32::try_from(v).map_err(|_| EvalError))
}

/// `Long.valueOf`: an optional sign and ASCII digits, in range.
fn java_long(s: &str) -> Result<i64, EvalError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EvalError);
    }
    s.parse().map_err(|_| EvalError)
}

/// `Double.valueOf` for decimal text: surrounding whitespace, a sign, `NaN`, `Infinity`,
/// digits with an optional fraction and exponent, an optional `f`/`d` suffix.
fn java_double(s: &str) -> Result<f64, EvalError> {
    let t = s.trim_matches(|c: char| c <= ' ');
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let sign = if negative { -1.0 } else { 1.0 };
    match body {
        "NaN" => return Ok(f64::NAN),
        "Infinity" => return Ok(sign * f64::INFINITY),
        _ => {}
    }
    let body = body.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(body);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let exp_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) || !exp_ok {
        return Err(EvalError);
    }
    body.parse::<f64>().map(|v| sign * v).map_err(|_| EvalError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}\u{1}{v}"))
            .collect::<Vec<_>>()
            .join("\u{2}")
    }

    fn matches(sql: &str, pairs: &[(&str, &str)]) -> bool {
        let selector = Selector::compile(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        selector.matches(&props(pairs))
    }

    fn refused(sql: &str) -> String {
        match Selector::compile(sql) {
            Ok(s) => panic!("{sql} compiled: {s:?}"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn numbers_compare_with_property_strings() {
        let a = [("a", "5")];
        assert!(matches("a > 3", &a));
        assert!(matches("a >= 5 AND a <= 5", &a));
        assert!(!matches("a < 5", &a));
        assert!(matches("a = 5", &a));
        assert!(matches("a <> 6", &a));
        assert!(matches("a > 4.5", &a));
        assert!(matches("a = 5.0", &a));
        assert!(matches("a > -1", &a));
        assert!(matches("a < 5000000000", &a));
        assert!(matches("a BETWEEN 1 AND 5", &a));
        assert!(!matches("a NOT BETWEEN 1 AND 5", &a));
        assert!(matches("a NOT BETWEEN 6 AND 9", &a));
        // A property compared with an integer must parse as one (Integer.valueOf).
        assert!(!matches("a > 3", &[("a", "5.5")]));
        assert!(matches("a > 3.0", &[("a", "5.5")]));
        assert!(!matches("a > 3", &[("a", " 5")]));
        assert!(matches("a > 3.0", &[("a", " 5 ")]));
    }

    #[test]
    fn strings_compare_only_for_equality_unless_both_are_numbers() {
        let p = [("s", "abc"), ("n", "10"), ("m", "9")];
        assert!(matches("s = 'abc'", &p));
        assert!(!matches("s = 'ABC'", &p));
        assert!(matches("s <> 'x'", &p));
        assert!(matches("n > m", &p), "two number strings order as numbers");
        assert!(
            !matches("s > m", &p),
            "a string that is no number: no match"
        );
        assert!(refused("s > 'a'").contains("cannot be compared"));
        assert!(matches("'abc' = s", &p));
    }

    #[test]
    fn a_failed_conversion_fails_the_whole_expression() {
        let p = [("a", "abc"), ("b", "x")];
        assert!(!matches("a > 5 OR b = 'x'", &p));
        assert!(!matches("a = 5 OR b = 'x'", &p));
        assert!(
            matches("b = 'x' OR a > 5", &p),
            "OR decided before the bad side"
        );
        assert!(!matches("a = 'abc' AND a > 5", &p));
    }

    #[test]
    fn null_and_three_valued_logic() {
        let p = [("a", "1")];
        assert!(matches("missing IS NULL", &p));
        assert!(!matches("a IS NULL", &p));
        assert!(matches("a IS NOT NULL", &p));
        assert!(!matches("missing = 1", &p));
        assert!(!matches("missing <> 1", &p), "NOT of unknown is unknown");
        assert!(!matches("NOT (missing = 1)", &p));
        assert!(
            !matches("1 = missing", &p),
            "a NULL on the right side is FALSE"
        );
        assert!(matches("NOT (1 = missing)", &p));
        assert!(matches("missing = 1 OR a = 1", &p));
        assert!(!matches("missing = 1 AND a = 1", &p));
        assert!(!matches("missing > 1 OR a = 2", &p));
        assert!(!matches("missing IN ('x')", &p));
        assert!(!matches("missing NOT IN ('x')", &p));
        assert!(!matches("NULL", &p));
        assert!(matches("TRUE", &p));
        assert!(!matches("FALSE", &p));
        assert!(matches("NOT FALSE", &p));
    }

    #[test]
    fn in_lists_and_text_operators() {
        let p = [("region", "hangzhou"), ("tag", "TagA")];
        assert!(matches("region IN ('beijing', 'hangzhou')", &p));
        assert!(!matches("region NOT IN ('beijing', 'hangzhou')", &p));
        assert!(matches("region NOT IN ('beijing')", &p));
        assert!(matches("region CONTAINS 'zho'", &p));
        assert!(matches(
            "region STARTSWITH 'hang' AND region ENDSWITH 'zhou'",
            &p
        ));
        assert!(matches("region NOT CONTAINS 'x'", &p));
        assert!(!matches("missing NOT CONTAINS 'x'", &p));
        assert!(!matches("region CONTAINS ''", &p));
        assert!(matches(
            "tag = 'TagA' AND (region = 'x' OR region = 'hangzhou')",
            &p
        ));
        assert!(refused("1 IN ('a')").contains("IN needs a property"));
        assert!(refused("region IN (1, 2)").contains("string literal"));
    }

    #[test]
    fn booleans_follow_javas_conversions() {
        let p = [("flag", "TRUE"), ("other", "yes")];
        assert!(matches("flag = TRUE", &p), "Boolean.valueOf ignores case");
        assert!(matches("other = FALSE", &p));
        assert!(
            !matches("TRUE = flag", &p),
            "Java fails casting the boolean"
        );
        assert!(
            !matches("flag", &p),
            "a property as a condition is a string: FALSE"
        );
        assert!(matches("NOT flag", &p));
        assert!(!matches("5 = TRUE", &p));
        assert!(matches("(flag = TRUE) = TRUE", &p));
    }

    #[test]
    fn literals_and_types() {
        assert!(matches("a = 7L", &[("a", "7")]));
        assert!(matches("a = 2147483648", &[("a", "2147483648")]));
        assert!(
            !matches("a = 7", &[("a", "2147483648")]),
            "out of Integer range"
        );
        assert!(matches("a = -2147483648", &[("a", "-2147483648")]));
        assert!(matches("a > 1.5E3", &[("a", "1501")]));
        assert!(matches("a < .5", &[("a", "0.25")]));
        assert!(matches("a = 'it''s'", &[("a", "it's")]));
        assert!(matches("a > 1e2", &[("a", "101")]));
        assert!(matches("a = NaN", &[("a", "NaN"), ("NaN", "NaN")]));
    }

    #[test]
    fn keywords_ignore_case_and_comments_are_skipped() {
        let p = [("a", "1"), ("b", "2")];
        assert!(matches("a = 1 and b = 2", &p));
        assert!(matches(
            "a = 1 /* note */ aNd b between 1 AND 3 -- end\n",
            &p
        ));
        assert!(matches("$x IS NULL AND _y is null", &p));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        assert!(refused("").contains("expected a value"));
        assert!(refused("a >").contains("expected a value"));
        assert!(refused("a > 1 AND").contains("expected a value"));
        // Java's parser stops after a complete expression: what follows is not read.
        assert!(matches("a = 1) ignored", &[("a", "1")]));
        assert!(refused("(a = 1").contains("expected )"));
        assert!(refused("a == 1").contains("column 4"));
        assert!(refused("a != 1").contains("'!'"));
        assert!(refused("a = 'x").contains("not closed"));
        assert!(refused("a = NULL").contains("IS NULL"));
        assert!(refused("TRUE = 5").contains("cannot be compared"));
        assert!(refused("5").contains("not a condition"));
        assert!(refused("a > 1 AND 5").contains("not a condition"));
        assert!(refused("(a > 1) > 2").contains("condition cannot be compared"));
        assert!(refused("a BETWEEN 5 AND 1").contains("lower bound"));
        assert!(refused("a > 0.0").contains("less than"));
        assert!(refused("a > 1e999").contains("greater than"));
        assert!(refused("a > 99999999999999999999").contains("64-bit"));
        assert!(refused("a = 007").contains("leading zero"));
        assert!(refused("a.b = 1").contains("'.'"));
        assert!(refused("a = 1 -- no line end").contains("does not end a line"));
        assert!(refused("*").contains("'*'"));
        assert!(refused("a IN 'x'").contains("expected ( after IN at column 6, found string"));
    }

    #[test]
    fn compiled_selectors_are_cached_per_text() {
        let a = compile_cached("a > 1").unwrap();
        let b = compile_cached("a > 1").unwrap();
        assert!(Rc::ptr_eq(&a, &b));
        let first = compile_cached("a >").unwrap_err();
        assert_eq!(compile_cached("a >").unwrap_err(), first);
    }

    #[test]
    fn java_number_parsing_rules() {
        assert_eq!(java_int("+12"), Ok(12));
        assert_eq!(java_int("-0"), Ok(0));
        assert!(java_int("1_000").is_err());
        assert!(java_int("").is_err());
        assert!(java_int("2147483648").is_err());
        assert_eq!(java_double(" 1.5 "), Ok(1.5));
        assert_eq!(java_double("2d"), Ok(2.0));
        assert_eq!(java_double("-Infinity"), Ok(f64::NEG_INFINITY));
        assert!(java_double("inf").is_err());
        assert!(java_double("1e").is_err());
        assert!(java_double(".").is_err());
        assert_eq!(java_double("5."), Ok(5.0));
        assert_eq!(java_double_cmp(-0.0, 0.0), -1);
        assert_eq!(java_double_cmp(f64::NAN, f64::NAN), 0);
        assert_eq!(java_double_cmp(f64::NAN, 1.0), 1);
    }
}
