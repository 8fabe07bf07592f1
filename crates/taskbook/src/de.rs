//! serde deserialization from the positioned YAML tree.
//!
//! Errors take the position of the innermost node that failed and the field path from
//! the document root, so `#[derive(Deserialize)]` types get file:line:col errors for free.
//! In lenient mode (validation before a run) a templated string stands in for any
//! scalar type, since it only gets its real value once rendered.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;

use crate::error::{unknown_name_hint, Error, PathSegment, Span};
use crate::yaml::{Node, NodeValue, ScalarValue};

/// Deserializes a typed value from a node; errors carry positions but no file yet.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Error> {
    T::deserialize(NodeDeserializer::new(node, false)).map_err(Into::into)
}

/// Like [`from_node`], but templated strings satisfy any scalar type. For validating
/// arguments before their templates can be rendered; the value returned is a placeholder.
pub fn check_node<T: DeserializeOwned>(node: &Node) -> Result<(), Error> {
    T::deserialize(NodeDeserializer::new(node, true))
        .map(drop)
        .map_err(Into::into)
}

/// serde's error type for this deserializer; converts into [`Error`].
#[derive(Debug)]
pub struct DeError(Error);

impl From<DeError> for Error {
    fn from(error: DeError) -> Self {
        error.0
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DeError {}

/// Marks a message raised through serde's generic `Error::custom` with a position:
/// only this crate's `DeError` reads it back (see [`error_at`]).
const POSITION_MARK: char = '\u{1}';

/// An error at a known position from code that only sees serde's generic error type
/// (a `Visitor`), so that the position survives to the user.
pub(crate) fn error_at<E: de::Error>(span: Span, message: impl fmt::Display) -> E {
    E::custom(format_args!(
        "{POSITION_MARK}{}:{}{POSITION_MARK}{message}",
        span.line, span.col
    ))
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let text = msg.to_string();
        let mut parts = text.splitn(3, POSITION_MARK);
        if let (Some(""), Some(position), Some(message)) =
            (parts.next(), parts.next(), parts.next())
        {
            if let Some((line, col)) = position.split_once(':') {
                let span = Span {
                    line: line.parse().unwrap_or(1),
                    col: col.parse().unwrap_or(1),
                };
                return DeError(Error::new(message).at(span));
            }
        }
        DeError(Error::new(text))
    }

    fn invalid_type(unexpected: de::Unexpected, expected: &dyn de::Expected) -> Self {
        let found = match unexpected {
            de::Unexpected::Str(s) => format!("the string \"{s}\""),
            de::Unexpected::Unsigned(n) => format!("the integer {n}"),
            de::Unexpected::Signed(n) => format!("the integer {n}"),
            de::Unexpected::Bool(b) => format!("the boolean {b}"),
            de::Unexpected::Seq => "a list".to_string(),
            de::Unexpected::Map => "a mapping".to_string(),
            de::Unexpected::Unit => "nothing (null)".to_string(),
            other => other.to_string(),
        };
        DeError(Error::new(format!(
            "expected {}, found {found}",
            plain_expectation(&expected.to_string())
        )))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError(
            Error::new(format!("unknown key `{field}`"))
                .with_hint(unknown_name_hint(field, expected)),
        )
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError(
            Error::new(format!("unknown value `{variant}`"))
                .with_hint(unknown_name_hint(variant, expected)),
        )
    }

    fn missing_field(field: &'static str) -> Self {
        DeError(Error::new(format!("missing required key `{field}`")))
    }
}

/// serde's words for types, in the words of the people who write YAML.
fn plain_expectation(expected: &str) -> &str {
    match expected {
        "a sequence" => "a list",
        "a map" => "a mapping",
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        other => other,
    }
}

/// The magic struct name through which [`Spanned`] asks for a node's position.
const SPANNED_NAME: &str = "$weft::Spanned";
const SPANNED_FIELDS: &[&str] = &["$line", "$col", "$value"];

/// A value with the position it was read from, for errors found after parsing
/// (a Tera error in a `when`, say). Serializes as `{"$line", "$col", "$value"}` so it
/// round-trips through JSON too.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Spanned<T> {
    #[serde(rename = "$line")]
    pub line: usize,
    #[serde(rename = "$col")]
    pub col: usize,
    #[serde(rename = "$value")]
    pub value: T,
}

impl<T> Spanned<T> {
    pub fn span(&self) -> Span {
        Span {
            line: self.line,
            col: self.col,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw<T> {
            #[serde(rename = "$line")]
            line: usize,
            #[serde(rename = "$col")]
            col: usize,
            #[serde(rename = "$value")]
            value: T,
        }
        let raw: Raw<T> = Raw::deserialize(SpannedRequest(deserializer))?;
        Ok(Spanned {
            line: raw.line,
            col: raw.col,
            value: raw.value,
        })
    }
}

/// Routes `Raw`'s struct request through the magic name.
struct SpannedRequest<D>(D);

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for SpannedRequest<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The magic newtype name through which a raw [`Node`] is handed over whole.
const NODE_NAME: &str = "$weft::Node";

thread_local! {
    /// The node being handed to `Node::deserialize`; set and taken within one call.
    static HANDED_NODE: std::cell::RefCell<Option<Node>> = const { std::cell::RefCell::new(None) };
}

/// The raw node itself, for types that interpret a subtree later (module arguments).
/// Only this crate's deserializer can hand one over: positions and raw text survive.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value read by weft")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                HANDED_NODE
                    .with(|slot| slot.borrow_mut().take())
                    .ok_or_else(|| E::custom("a raw YAML value can only be read from YAML"))
            }
        }
        deserializer.deserialize_newtype_struct(NODE_NAME, NodeVisitor)
    }
}

#[derive(Clone, Copy)]
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    lenient: bool,
}

impl<'a> NodeDeserializer<'a> {
    pub fn new(node: &'a Node, lenient: bool) -> Self {
        NodeDeserializer { node, lenient }
    }

    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|DeError(e)| DeError(e.at(self.node.span)))
    }

    fn placeholder(&self) -> bool {
        self.lenient && self.node.is_template()
    }

    fn invalid(&self, expected: &dyn de::Expected) -> DeError {
        let found = match self.node.resolve_scalar() {
            Some(ScalarValue::Str(s)) => de::Unexpected::Str(s),
            Some(ScalarValue::Bool(b)) => de::Unexpected::Bool(b),
            Some(ScalarValue::Int(i)) => de::Unexpected::Signed(i),
            Some(ScalarValue::Float(f)) => de::Unexpected::Float(f),
            Some(ScalarValue::Null) => de::Unexpected::Unit,
            None => match self.node.value {
                NodeValue::Sequence(_) => de::Unexpected::Seq,
                _ => de::Unexpected::Map,
            },
        };
        DeError(
            <DeError as de::Error>::invalid_type(found, expected)
                .0
                .at(self.node.span),
        )
    }

    fn visit_integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.placeholder() {
            return visitor.visit_u64(0);
        }
        let text = self.node.scalar().map(str::trim);
        match self.node.resolve_scalar() {
            Some(ScalarValue::Int(i)) => visitor.visit_i64(i),
            // A quoted number is still a number where one is expected ("8080" for a port).
            _ => match text.and_then(|t| t.parse::<i64>().ok()) {
                Some(i) => visitor.visit_i64(i),
                None => Err(self.invalid(&visitor)),
            },
        }
    }
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Sequence(items) => visitor.visit_seq(SeqReader::new(items, self.lenient)),
            NodeValue::Mapping(entries) => visitor.visit_map(MapReader::new(entries, self.lenient)),
            NodeValue::Scalar { .. } => match self.node.resolve_scalar() {
                Some(ScalarValue::Null) => visitor.visit_unit(),
                Some(ScalarValue::Bool(b)) => visitor.visit_bool(b),
                Some(ScalarValue::Int(i)) => visitor.visit_i64(i),
                Some(ScalarValue::Float(f)) => visitor.visit_f64(f),
                Some(ScalarValue::Str(s)) => visitor.visit_str(s),
                None => unreachable!("a scalar always resolves"),
            },
        };
        self.locate(result)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.placeholder() {
            return visitor.visit_bool(false);
        }
        // YAML 1.1's words, which Ansible users type, where a boolean is expected.
        let result = match self.node.scalar().map(str::to_ascii_lowercase).as_deref() {
            Some("true" | "yes" | "on") => visitor.visit_bool(true),
            Some("false" | "no" | "off") => visitor.visit_bool(false),
            _ => Err(self.invalid(&visitor)),
        };
        self.locate(result)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let result = self.visit_integer(v);
        self.locate(result)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.placeholder() {
            return visitor.visit_f64(0.0);
        }
        let result = match self.node.resolve_scalar() {
            Some(ScalarValue::Int(i)) => visitor.visit_f64(i as f64),
            Some(ScalarValue::Float(f)) => visitor.visit_f64(f),
            _ => match self
                .node
                .scalar()
                .and_then(|t| t.trim().parse::<f64>().ok())
            {
                Some(f) => visitor.visit_f64(f),
                None => Err(self.invalid(&visitor)),
            },
        };
        self.locate(result)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Any non-null scalar reads as its source text where a string is wanted.
        let result = match (&self.node.value, self.node.resolve_scalar()) {
            (_, Some(ScalarValue::Null)) | (_, None) => Err(self.invalid(&visitor)),
            (NodeValue::Scalar { text, .. }, _) => visitor.visit_str(text),
            _ => Err(self.invalid(&visitor)),
        };
        self.locate(result)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.node.resolve_scalar() {
            Some(ScalarValue::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        };
        self.locate(result)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.node.resolve_scalar() {
            Some(ScalarValue::Null) => visitor.visit_unit(),
            _ => Err(self.invalid(&visitor)),
        };
        self.locate(result)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == NODE_NAME {
            HANDED_NODE.with(|slot| *slot.borrow_mut() = Some(self.node.clone()));
            return visitor.visit_unit();
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Sequence(items) => visitor.visit_seq(SeqReader::new(items, self.lenient)),
            _ if self.placeholder() => visitor.visit_seq(SeqReader::new(&[], true)),
            _ => Err(self.invalid(&visitor)),
        };
        self.locate(result)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Mapping(entries) => visitor.visit_map(MapReader::new(entries, self.lenient)),
            _ => Err(self.invalid(&visitor)),
        };
        self.locate(result)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED_NAME {
            return visitor.visit_map(SpannedReader {
                node: self,
                field: 0,
            });
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Scalar { .. } if self.placeholder() && !variants.is_empty() => {
                visitor.visit_enum(variants[0].into_deserializer())
            }
            NodeValue::Scalar { text, .. } => visitor.visit_enum(EnumReader {
                variant: text,
                content: None,
                lenient: self.lenient,
            }),
            NodeValue::Mapping(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                match key.scalar() {
                    Some(variant) => visitor
                        .visit_enum(EnumReader {
                            variant,
                            content: Some(value),
                            lenient: self.lenient,
                        })
                        .map_err(|DeError(e)| DeError(e.under(PathSegment::Key(variant.into())))),
                    None => Err(self.invalid(&visitor)),
                }
            }
            _ => Err(self.invalid(&visitor)),
        };
        self.locate(result)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqReader<'a> {
    items: &'a [Node],
    index: usize,
    lenient: bool,
}

impl<'a> SeqReader<'a> {
    fn new(items: &'a [Node], lenient: bool) -> Self {
        SeqReader {
            items,
            index: 0,
            lenient,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqReader<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.index) else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDeserializer::new(item, self.lenient))
            .map(Some)
            .map_err(|DeError(e)| DeError(e.under(PathSegment::Index(index))))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.index)
    }
}

struct MapReader<'a> {
    entries: &'a [(Node, Node)],
    index: usize,
    lenient: bool,
}

impl<'a> MapReader<'a> {
    fn new(entries: &'a [(Node, Node)], lenient: bool) -> Self {
        MapReader {
            entries,
            index: 0,
            lenient,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapReader<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, _)) = self.entries.get(self.index) else {
            return Ok(None);
        };
        // Keys are read strictly: a templated key is never meant.
        seed.deserialize(NodeDeserializer::new(key, false))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = &self.entries[self.index];
        self.index += 1;
        let name = key.scalar().unwrap_or("?").to_string();
        seed.deserialize(NodeDeserializer::new(value, self.lenient))
            .map_err(|DeError(e)| DeError(e.under(PathSegment::Key(name))))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.index)
    }
}

/// Presents a node as `{"$line": .., "$col": .., "$value": node}`.
struct SpannedReader<'a> {
    node: NodeDeserializer<'a>,
    field: usize,
}

impl<'de> de::MapAccess<'de> for SpannedReader<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match SPANNED_FIELDS.get(self.field) {
            Some(field) => seed.deserialize(field.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let span = self.node.node.span;
        self.field += 1;
        match self.field {
            1 => seed.deserialize((span.line as u64).into_deserializer()),
            2 => seed.deserialize((span.col as u64).into_deserializer()),
            _ => seed.deserialize(self.node),
        }
    }
}

struct EnumReader<'a> {
    variant: &'a str,
    content: Option<&'a Node>,
    lenient: bool,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumReader<'a> {
    type Error = DeError;
    type Variant = VariantReader<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantReader<'a>), DeError> {
        let variant: de::value::StrDeserializer<DeError> = self.variant.into_deserializer();
        let value = seed.deserialize(variant)?;
        Ok((
            value,
            VariantReader {
                content: self.content,
                lenient: self.lenient,
            },
        ))
    }
}

struct VariantReader<'a> {
    content: Option<&'a Node>,
    lenient: bool,
}

impl<'de> de::VariantAccess<'de> for VariantReader<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.content {
            None => Ok(()),
            Some(node) if node.resolve_scalar() == Some(ScalarValue::Null) => Ok(()),
            Some(node) => Err(DeError(
                Error::new(format!("expected no value, found {}", node.kind_name())).at(node.span),
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.content {
            Some(node) => seed.deserialize(NodeDeserializer::new(node, self.lenient)),
            None => Err(DeError(Error::new("expected a value for this choice"))),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        match self.content {
            Some(node) => de::Deserializer::deserialize_seq(
                NodeDeserializer::new(node, self.lenient),
                visitor,
            ),
            None => Err(DeError(Error::new("expected a list for this choice"))),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.content {
            Some(node) => de::Deserializer::deserialize_map(
                NodeDeserializer::new(node, self.lenient),
                visitor,
            ),
            None => Err(DeError(Error::new("expected a mapping for this choice"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;
    use std::path::Path;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        enabled: bool,
        #[serde(default)]
        items: Vec<Inner>,
        mode: Option<String>,
        when: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        state: State,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum State {
        Present,
        Absent,
    }

    fn node(source: &str) -> Node {
        parse_documents(source, Path::new("t.yml")).unwrap()[0]
            .root
            .clone()
    }

    #[test]
    fn reads_typed_values_and_spans() {
        let sample: Sample = from_node(&node(
            "name: x\ncount: '3'\nenabled: yes\nmode: 0644\nitems: [{state: absent}]\nwhen: a == b\n",
        ))
        .unwrap();
        assert_eq!(sample.count, 3);
        assert!(sample.enabled);
        assert_eq!(sample.mode.as_deref(), Some("0644"));
        assert_eq!(
            sample.items,
            vec![Inner {
                state: State::Absent
            }]
        );
        let when = sample.when.unwrap();
        assert_eq!((when.line, when.col, when.value.as_str()), (6, 7, "a == b"));
    }

    #[test]
    fn unknown_key_names_path_position_and_typo() {
        let err = from_node::<Sample>(&node("name: x\nitems:\n  - {stat: present}\n")).unwrap_err();
        assert_eq!(err.span, Some(Span { line: 3, col: 6 }));
        assert_eq!(err.field_path(), "items[0]");
        assert_eq!(err.message, "unknown key `stat`");
        assert_eq!(err.hint.as_deref(), Some("did you mean `state`?"));
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let err = from_node::<Sample>(&node("name: x\ncount: [1]\n")).unwrap_err();
        assert_eq!(err.span, Some(Span { line: 2, col: 8 }));
        assert_eq!(err.field_path(), "count");
        assert_eq!(
            err.message,
            "expected a whole number, 0 or more, found a list"
        );
    }

    #[test]
    fn unknown_enum_value_suggests() {
        let err = from_node::<Sample>(&node("name: x\nitems: [{state: presnt}]\n")).unwrap_err();
        assert_eq!(err.message, "unknown value `presnt`");
        assert_eq!(err.hint.as_deref(), Some("did you mean `present`?"));
        assert_eq!(err.field_path(), "items[0].state");
    }

    #[test]
    fn lenient_mode_accepts_templates_for_any_scalar() {
        let n = node("name: x\ncount: '{{ n }}'\nitems: [{state: '{{ s }}'}]\n");
        assert!(from_node::<Sample>(&n).is_err());
        check_node::<Sample>(&n).unwrap();
    }

    #[test]
    fn raw_nodes_keep_positions() {
        #[derive(Deserialize)]
        struct Holder {
            args: Node,
        }
        let holder: Holder = from_node(&node("args:\n  path: /tmp\n  mode: 0644\n")).unwrap();
        assert_eq!(
            holder.args.get("path").unwrap().span,
            Span { line: 2, col: 9 }
        );
        assert_eq!(holder.args.get("mode").unwrap().scalar(), Some("0644"));
    }
}
