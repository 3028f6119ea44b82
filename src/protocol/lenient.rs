//! Reading JSON bodies the way Java RocketMQ reads them (fastjson), for every body type, in one
//! place. [`from_slice`] quotes fastjson's bare map keys ([`fastjson::normalize`]), parses the
//! text, and deserializes the target through [`Lenient`], which coerces by the type the
//! *target* asks for, so no field needs its own annotation:
//!
//! | target | accepted |
//! |---|---|
//! | integers | numbers (an integral float such as `3.0` too), numeric strings (`"2598919"`, trimmed), `""` as 0 (fastjson's null for a primitive), `true`/`false` as 1/0 |
//! | floats | numbers, numeric strings |
//! | booleans | `true`/`false`, `"true"`/`"false"` (any case), `1`/`0`, `"1"`/`"0"` |
//! | strings | strings; numbers and booleans as their text |
//! | enums | the Java name, or the ordinal as a number or a numeric string |
//! | any field | `null` is absent: the field's default, or "missing" when it is required |
//! | structs | unknown keys are ignored |
//!
//! A number wider than its field, a fraction for an integer, or a name that is no variant is
//! refused, and the error names the field by its path:
//! `consumerDataSet[0].subscriptionDataSet[0].codeSet[0]: 4294967296 does not fit a 32-bit
//! integer`. Writing is untouched: types serialize exactly as Java writes them (golden tests).
//!
//! A body that does not read directly as its type is parsed into a `serde_json::Value` first
//! (JSON's nesting limit applies there): a struct field's null must be seen before its key is
//! handed to the struct. No body read here is on the send or pull path.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::{Map, Number, Value};

use super::fastjson;

/// A body that could not be read as its type; `Display` gives the field path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LenientError {
    /// Where, as `a.b[2].c` (empty at the top level).
    pub path: String,
    pub message: String,
}

impl fmt::Display for LenientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for LenientError {}

impl de::Error for LenientError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        LenientError {
            path: String::new(),
            message: msg.to_string(),
        }
    }
}

impl LenientError {
    fn within_key(mut self, key: &str) -> Self {
        self.path = match self.path.as_str() {
            "" => key.to_string(),
            p if p.starts_with('[') => format!("{key}{p}"),
            p => format!("{key}.{p}"),
        };
        self
    }

    fn within_index(mut self, index: usize) -> Self {
        self.path = match self.path.as_str() {
            "" => format!("[{index}]"),
            p if p.starts_with('[') => format!("[{index}]{p}"),
            p => format!("[{index}].{p}"),
        };
        self
    }
}

/// Reads a (fastjson) JSON body as `T` the way Java does (see the module doc).
///
/// A body already in the type's own JSON form (what Java writes) is read directly, about five
/// times faster; anything else (strings for numbers, ordinals, nulls, duplicate keys) fails that
/// read and goes through the value. Where the direct read succeeds the value read would give the
/// same result: it accepts a superset of the same forms.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LenientError> {
    let text = fastjson::normalize(bytes);
    if let Ok(direct) = serde_json::from_slice(&text) {
        return Ok(direct);
    }
    let value: Value = serde_json::from_slice(&text).map_err(|e| LenientError {
        path: String::new(),
        message: format!("not JSON: {e}"),
    })?;
    from_value(&value)
}

/// Reads an already parsed value as `T` the way Java does.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, LenientError> {
    T::deserialize(Lenient::from(value))
}

/// One JSON value as the deserializer sees it; map keys are strings.
#[derive(Clone, Copy)]
enum Node<'a> {
    Null,
    Bool(bool),
    Num(&'a Number),
    Str(&'a str),
    Arr(&'a [Value]),
    Obj(&'a Map<String, Value>),
}

/// The coercing deserializer over one parsed value.
#[derive(Clone, Copy)]
pub struct Lenient<'a>(Node<'a>);

impl<'a> From<&'a Value> for Lenient<'a> {
    fn from(value: &'a Value) -> Self {
        Lenient(match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Num(n),
            Value::String(s) => Node::Str(s),
            Value::Array(a) => Node::Arr(a),
            Value::Object(o) => Node::Obj(o),
        })
    }
}

impl Lenient<'_> {
    fn describe(&self) -> String {
        match self.0 {
            Node::Null => "null".into(),
            Node::Bool(b) => b.to_string(),
            Node::Num(n) => n.to_string(),
            Node::Str(s) => format!("{s:?}"),
            Node::Arr(_) => "an array".into(),
            Node::Obj(_) => "an object".into(),
        }
    }

    fn refuse(&self, what: &str) -> LenientError {
        de::Error::custom(format!("{} is not {what}", self.describe()))
    }

    /// The value as an integer of any width (range checks are the caller's).
    fn integer(&self) -> Result<i128, LenientError> {
        let not_integer = || self.refuse("an integer");
        match self.0 {
            Node::Num(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .or_else(|| {
                    // 2^63 bounds every integer field; an integral float below it is exact.
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.223_372_036_854_776e18)
                        .map(|f| f as i128)
                })
                .ok_or_else(not_integer),
            Node::Str(s) if s.trim().is_empty() => Ok(0),
            Node::Str(s) => s.trim().parse::<i128>().map_err(|_| not_integer()),
            Node::Bool(b) => Ok(i128::from(b)),
            _ => Err(not_integer()),
        }
    }

    fn float(&self) -> Result<f64, LenientError> {
        match self.0 {
            Node::Num(n) => n.as_f64().ok_or_else(|| self.refuse("a number")),
            Node::Str(s) if s.trim().is_empty() => Ok(0.0),
            Node::Str(s) => s.trim().parse().map_err(|_| self.refuse("a number")),
            _ => Err(self.refuse("a number")),
        }
    }

    fn boolean(&self) -> Result<bool, LenientError> {
        match self.0 {
            Node::Bool(b) => Ok(b),
            Node::Str(s) if s.trim().eq_ignore_ascii_case("true") || s.trim() == "1" => Ok(true),
            Node::Str(s) if s.trim().eq_ignore_ascii_case("false") || s.trim() == "0" => Ok(false),
            Node::Num(n) if n.as_u64() == Some(1) => Ok(true),
            Node::Num(n) if n.as_u64() == Some(0) => Ok(false),
            _ => Err(self.refuse("a boolean")),
        }
    }
}

macro_rules! integer {
    ($($method:ident $ty:ty => $visit:ident, $what:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
            let n = self.integer()?;
            let n = <$ty>::try_from(n).map_err(|_| {
                de::Error::custom(format!("{n} does not fit {}", $what))
            })?;
            visitor.$visit(n)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Lenient<'de> {
    type Error = LenientError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(b),
            Node::Num(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (_, Some(i), _) => visitor.visit_i64(i),
                (_, _, Some(f)) => visitor.visit_f64(f),
                _ => Err(self.refuse("a number")),
            },
            Node::Str(s) => visitor.visit_borrowed_str(s),
            Node::Arr(items) => visitor.visit_seq(Items {
                items: items.iter(),
                index: 0,
            }),
            Node::Obj(map) => visitor.visit_map(Entries {
                entries: map.iter(),
                pending: None,
            }),
        }
    }

    integer! {
        deserialize_i8 i8 => visit_i8, "an 8-bit integer";
        deserialize_i16 i16 => visit_i16, "a 16-bit integer";
        deserialize_i32 i32 => visit_i32, "a 32-bit integer";
        deserialize_i64 i64 => visit_i64, "a 64-bit integer";
        deserialize_u8 u8 => visit_u8, "an unsigned 8-bit integer";
        deserialize_u16 u16 => visit_u16, "an unsigned 16-bit integer";
        deserialize_u32 u32 => visit_u32, "an unsigned 32-bit integer";
        deserialize_u64 u64 => visit_u64, "an unsigned 64-bit integer";
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        visitor.visit_f32(self.float()? as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        visitor.visit_bool(self.boolean()?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Node::Str(s) if s.chars().count() == 1 => visitor.visit_str(s),
            _ => Err(self.refuse("one character")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Node::Str(s) => visitor.visit_borrowed_str(s),
            Node::Num(n) => visitor.visit_string(n.to_string()),
            Node::Bool(b) => visitor.visit_str(if b { "true" } else { "false" }),
            _ => Err(self.refuse("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Node::Null => visitor.visit_unit(),
            _ => Err(self.refuse("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Node::Arr(items) => visitor.visit_seq(Items {
                items: items.iter(),
                index: 0,
            }),
            _ => Err(self.refuse("an array")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Node::Obj(map) => visitor.visit_map(Entries {
                entries: map.iter(),
                pending: None,
            }),
            _ => Err(self.refuse("an object")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        let variant = match self.0 {
            Node::Str(s) => match s.trim().parse::<u64>() {
                Ok(ordinal) => Variant::Ordinal(ordinal),
                Err(_) => Variant::Name(s, None),
            },
            Node::Num(n) => Variant::Ordinal(n.as_u64().ok_or_else(|| self.refuse("an ordinal"))?),
            Node::Obj(map) if map.len() == 1 => match map.iter().next() {
                Some((name, value)) => Variant::Name(name, Some(value)),
                None => return Err(self.refuse("an enum")),
            },
            _ => return Err(self.refuse("an enum name or ordinal")),
        };
        visitor.visit_enum(variant)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        visitor.visit_unit()
    }
}

/// An array's elements; an element's error is prefixed with its index.
struct Items<'a> {
    items: std::slice::Iter<'a, Value>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'de> {
    type Error = LenientError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, LenientError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Lenient::from(item))
            .map(Some)
            .map_err(|e| e.within_index(index))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An object's entries, null-valued ones skipped (absent, as fastjson treats them); a value's
/// error is prefixed with its key.
struct Entries<'a> {
    entries: serde_json::map::Iter<'a>,
    pending: Option<(&'a str, &'a Value)>,
}

impl<'de> de::MapAccess<'de> for Entries<'de> {
    type Error = LenientError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, LenientError> {
        for (key, value) in self.entries.by_ref() {
            if value.is_null() {
                continue;
            }
            self.pending = Some((key, value));
            return seed
                .deserialize(Lenient(Node::Str(key)))
                .map(Some)
                .map_err(|e| e.within_key(key));
        }
        Ok(None)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, LenientError> {
        let (key, value) = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("a value asked for before its key"))?;
        seed.deserialize(Lenient::from(value))
            .map_err(|e| e.within_key(key))
    }
}

/// An enum's variant: by name (with the value of an externally tagged variant) or by ordinal.
enum Variant<'a> {
    Name(&'a str, Option<&'a Value>),
    Ordinal(u64),
}

impl<'de> de::EnumAccess<'de> for Variant<'de> {
    type Error = LenientError;
    type Variant = Payload<'de>;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Payload<'de>), LenientError> {
        match self {
            Variant::Name(name, value) => {
                let tag = seed.deserialize(Lenient(Node::Str(name)))?;
                Ok((tag, Payload(value)))
            }
            Variant::Ordinal(ordinal) => {
                let de: de::value::U64Deserializer<LenientError> = ordinal.into_deserializer();
                Ok((seed.deserialize(de)?, Payload(None)))
            }
        }
    }
}

/// The value an externally tagged variant carries (`{"Name": value}`), if any.
struct Payload<'a>(Option<&'a Value>);

impl<'de> de::VariantAccess<'de> for Payload<'de> {
    type Error = LenientError;

    fn unit_variant(self) -> Result<(), LenientError> {
        match self.0 {
            None | Some(Value::Null) => Ok(()),
            Some(_) => Err(de::Error::custom("a unit variant carries no value")),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, LenientError> {
        match self.0 {
            Some(value) => seed.deserialize(Lenient::from(value)),
            None => Err(de::Error::custom("the variant needs a value")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        match self.0 {
            Some(value) => de::Deserializer::deserialize_seq(Lenient::from(value), visitor),
            None => Err(de::Error::custom("the variant needs an array")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        match self.0 {
            Some(value) => de::Deserializer::deserialize_map(Lenient::from(value), visitor),
            None => Err(de::Error::custom("the variant needs an object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    enum Model {
        #[serde(rename = "BROADCASTING")]
        Broadcasting,
        #[serde(rename = "CLUSTERING")]
        Clustering,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        queue_id: i32,
        #[serde(default)]
        order: bool,
        #[serde(default = "six")]
        perm: i32,
        #[serde(default)]
        code_set: BTreeSet<i64>,
        #[serde(default)]
        name: String,
        #[serde(default)]
        tps: f64,
        #[serde(default)]
        model: Option<Model>,
        #[serde(default)]
        addrs: BTreeMap<i64, String>,
    }

    fn six() -> i32 {
        6
    }

    fn read(text: &str) -> Result<Sample, LenientError> {
        from_slice(text.as_bytes())
    }

    #[test]
    fn numbers_booleans_and_enums_in_either_form_read_alike() {
        let plain = read(
            r#"{"queueId":3,"order":true,"codeSet":[2598919],"name":"n","tps":1.5,
            "model":"CLUSTERING","addrs":{0:"a"}}"#,
        )
        .unwrap();
        let strings = read(
            r#"{"queueId":"3","order":"TRUE","codeSet":["2598919"],"name":"n","tps":"1.5",
            "model":1,"addrs":{"0":"a"},"unknown":[{"x":1}]}"#,
        )
        .unwrap();
        assert_eq!(plain, strings);
        assert_eq!(plain.model, Some(Model::Clustering));
        assert_eq!(
            read(r#"{"queueId":3,"model":"0"}"#).unwrap().model,
            Some(Model::Broadcasting)
        );
        assert_eq!(read(r#"{"queueId":3,"name":12}"#).unwrap().name, "12");
        assert!(read(r#"{"queueId":3.0,"order":1}"#).unwrap().order);
    }

    #[test]
    fn null_is_absent() {
        let s =
            read(r#"{"queueId":1,"perm":null,"name":null,"model":null,"codeSet":null}"#).unwrap();
        assert_eq!((s.perm, s.name.as_str(), s.model), (6, "", None));
        let missing = read(r#"{"queueId":null}"#).unwrap_err();
        assert_eq!(missing.to_string(), "missing field `queueId`");
    }

    #[test]
    fn refusals_name_the_field() {
        let wide = read(r#"{"queueId":4294967296}"#).unwrap_err();
        assert_eq!(
            wide.to_string(),
            "queueId: 4294967296 does not fit a 32-bit integer"
        );
        let code = read(r#"{"queueId":1,"codeSet":[1,"x"]}"#).unwrap_err();
        assert_eq!(code.to_string(), r#"codeSet[1]: "x" is not an integer"#);
        let too_big = read(r#"{"queueId":1,"codeSet":["99999999999999999999"]}"#).unwrap_err();
        assert_eq!(
            too_big.to_string(),
            "codeSet[0]: 99999999999999999999 does not fit a 64-bit integer"
        );
        let fraction = read(r#"{"queueId":1.5}"#).unwrap_err();
        assert_eq!(fraction.to_string(), "queueId: 1.5 is not an integer");
        let model = read(r#"{"queueId":1,"model":9}"#).unwrap_err();
        assert!(
            model.to_string().starts_with("model: invalid value"),
            "{model}"
        );
        let name = read(r#"{"queueId":1,"model":"SOMETIMES"}"#).unwrap_err();
        assert!(
            name.to_string().starts_with("model: unknown variant"),
            "{name}"
        );
        let flag = read(r#"{"queueId":1,"order":"yes"}"#).unwrap_err();
        assert_eq!(flag.to_string(), r#"order: "yes" is not a boolean"#);
        assert!(read("{").unwrap_err().to_string().starts_with("not JSON"));
    }
}
