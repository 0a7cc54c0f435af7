//! CDR as ROS 2 publishes it (XCDR1: a 4-byte encapsulation header, then each primitive aligned
//! to its size from the end of that header) into JSON, driven by a parsed definition. Lengths are
//! checked against the bytes left before anything is allocated for them.

use serde_json::{json, Map, Value};

use super::definition::{Arity, Definition, ElementType, Field, Primitive};

/// uint8/byte/char arrays longer than this decode as `{"len", "crc32"}`: an image or a point
/// cloud as numbers would flood the output, and the checksum still tells payloads apart.
pub const COMPACT_BYTES_OVER: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is shorter than its 4-byte CDR header")]
    NoHeader,
    #[error("unsupported CDR representation {0:#06x} (expected plain CDR, 0x0000 or 0x0001)")]
    Representation(u16),
    /// `field` is the path to the value, e.g. `status[2].values[0].key`.
    #[error("{field}: {problem}")]
    Field { field: String, problem: Problem },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the message ends at byte {len} of its body, {needed} bytes short")]
    Truncated { len: usize, needed: usize },
    #[error("{count} elements claimed with only {left} bytes left")]
    TooLong { count: u64, left: usize },
    #[error("string is not UTF-8")]
    NotUtf8,
}

impl Problem {
    fn at(self, field: &str) -> DecodeError {
        DecodeError::Field { field: field.to_owned(), problem: self }
    }
}

impl DecodeError {
    /// The error as seen from the message that holds `field`.
    fn within(self, field: &str) -> Self {
        match self {
            Self::Field { field: inner, problem } => {
                let path = match inner.chars().next() {
                    None => field.to_owned(),
                    Some('[') => format!("{field}{inner}"),
                    Some(_) => format!("{field}.{inner}"),
                };
                Self::Field { field: path, problem }
            }
            other => other,
        }
    }
}

/// Decodes `cdr` (header included) as the root type of `definition`.
pub fn decode(definition: &Definition, cdr: &[u8]) -> Result<Value, DecodeError> {
    let (header, body) = cdr.split_at_checked(4).ok_or(DecodeError::NoHeader)?;
    let big_endian = match u16::from_be_bytes([header[0], header[1]]) {
        0x0000 => true,
        0x0001 => false,
        other => return Err(DecodeError::Representation(other)),
    };
    Reader { definition, body, pos: 0, big_endian }.message(definition.root)
}

struct Reader<'a> {
    definition: &'a Definition,
    body: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Problem> {
        let end = self.pos.saturating_add(n);
        let len = self.body.len();
        let bytes = self.body.get(self.pos..end).ok_or_else(|| Problem::Truncated { len, needed: end - len })?;
        self.pos = end;
        Ok(bytes)
    }

    /// `N` bytes aligned to `N`, in little-endian order.
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Problem> {
        self.pos = self.pos.next_multiple_of(N);
        let mut bytes: [u8; N] = self.take(N)?.try_into().expect("took N bytes");
        if self.big_endian {
            bytes.reverse();
        }
        Ok(bytes)
    }

    /// An element count (a sequence's or a string's uint32 prefix, or a fixed array's size),
    /// refused when the bytes left cannot hold that many elements of `min_size` bytes.
    fn count(&mut self, arity: Arity, min_size: usize) -> Result<usize, Problem> {
        let count = match arity {
            Arity::Fixed(n) => n as u64,
            _ => u32::from_le_bytes(self.bytes()?).into(),
        };
        let left = self.body.len().saturating_sub(self.pos);
        match usize::try_from(count) {
            Ok(n) if n.saturating_mul(min_size.max(1)) <= left => Ok(n),
            _ => Err(Problem::TooLong { count, left }),
        }
    }

    fn primitive(&mut self, primitive: Primitive) -> Result<Value, Problem> {
        Ok(match primitive {
            Primitive::Bool => Value::Bool(self.bytes::<1>()?[0] != 0),
            Primitive::U8 => self.bytes::<1>()?[0].into(),
            Primitive::I8 => i8::from_le_bytes(self.bytes()?).into(),
            Primitive::I16 => i16::from_le_bytes(self.bytes()?).into(),
            Primitive::U16 => u16::from_le_bytes(self.bytes()?).into(),
            Primitive::I32 => i32::from_le_bytes(self.bytes()?).into(),
            Primitive::U32 => u32::from_le_bytes(self.bytes()?).into(),
            Primitive::I64 => i64::from_le_bytes(self.bytes()?).into(),
            Primitive::U64 => u64::from_le_bytes(self.bytes()?).into(),
            // As serde_json writes an f32: widened to f64; NaN and infinities become null.
            Primitive::F32 => f64::from(f32::from_le_bytes(self.bytes()?)).into(),
            Primitive::F64 => f64::from_le_bytes(self.bytes()?).into(),
        })
    }

    /// A uint32 length that counts the terminating NUL, then the bytes.
    fn string(&mut self) -> Result<Value, Problem> {
        let len = self.count(Arity::Sequence, 1)?;
        let bytes = self.take(len)?;
        let text = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        std::str::from_utf8(text).map(|s| Value::String(s.to_owned())).map_err(|_| Problem::NotUtf8)
    }

    fn message(&mut self, index: usize) -> Result<Value, DecodeError> {
        let message = &self.definition.types[index];
        if message.fields.is_empty() {
            self.bytes::<1>().map_err(|p| p.at("structure_needs_at_least_one_member"))?;
            return Ok(Value::Object(Map::new()));
        }
        let mut out = Map::new();
        for field in &message.fields {
            let value = self.field(field).map_err(|e| e.within(&field.name))?;
            out.insert(field.name.clone(), value);
        }
        Ok(Value::Object(out))
    }

    fn element(&mut self, element: ElementType) -> Result<Value, DecodeError> {
        match element {
            ElementType::Primitive(p) => self.primitive(p).map_err(|p| p.at("")),
            ElementType::String => self.string().map_err(|p| p.at("")),
            ElementType::Message(index) => self.message(index),
        }
    }

    fn field(&mut self, field: &Field) -> Result<Value, DecodeError> {
        if field.arity == Arity::Single {
            return self.element(field.element);
        }
        let min_size = match field.element {
            ElementType::Primitive(p) => p.size(),
            ElementType::String => 4,
            ElementType::Message(index) => self.definition.types[index].min_size,
        };
        let count = self.count(field.arity, min_size).map_err(|p| p.at(""))?;
        if field.element == ElementType::Primitive(Primitive::U8) {
            let bytes = self.take(count).map_err(|p| p.at(""))?;
            return Ok(if count > COMPACT_BYTES_OVER {
                json!({ "len": count, "crc32": crc32fast::hash(bytes) })
            } else {
                bytes.iter().map(|&b| Value::from(b)).collect()
            });
        }
        let mut items = Vec::with_capacity(count);
        for i in 0..count {
            items.push(self.element(field.element).map_err(|e| e.within(&format!("[{i}]")))?);
        }
        Ok(Value::Array(items))
    }
}
