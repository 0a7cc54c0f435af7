//! `ros2msg` definitions, as rosbag2 and mcap-ros2-support store them: the type's own `.msg`
//! text, then each dependency after a line of `=` and a `MSG: pkg/Type` line. Parsed into a
//! table of message types whose fields refer to each other by index.

use std::collections::HashMap;

/// Why a definition gives no decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("{type_name}, line {line}: cannot read `{text}`: {reason}")]
    Line { type_name: String, line: usize, text: String, reason: &'static str },
    #[error("{type_name}: field {field} has type {missing}, whose definition the bag does not carry")]
    Missing { type_name: String, field: String, missing: String },
    #[error("{type_name}: field {field} uses wstring, which moe_vla does not decode")]
    WideString { type_name: String, field: String },
    #[error("the definition is circular: {0}")]
    Cycle(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    Bool,
    /// `byte` and `char` are one unsigned octet in ROS 2, like `uint8`.
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Primitive {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "bool" => Self::Bool,
            "byte" | "char" | "uint8" => Self::U8,
            "int8" => Self::I8,
            "int16" => Self::I16,
            "uint16" => Self::U16,
            "int32" => Self::I32,
            "uint32" => Self::U32,
            "int64" => Self::I64,
            "uint64" => Self::U64,
            "float32" => Self::F32,
            "float64" => Self::F64,
            _ => return None,
        })
    }

    /// Encoded size in bytes, which is also its CDR alignment.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 => 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    Primitive(Primitive),
    /// Bounds of bounded strings are not checked when reading: the bytes say how long it is.
    String,
    /// Index into [`Definition::types`].
    Message(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Single,
    /// `T[N]`: N elements, no length prefix.
    Fixed(usize),
    /// `T[]` and `T[<=N]`: a uint32 length, then the elements.
    Sequence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub element: ElementType,
    pub arity: Arity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageType {
    /// `pkg/msg/Type`.
    pub name: String,
    pub fields: Vec<Field>,
    /// Fewest bytes one value can take, ignoring padding: bounds how many elements a sequence
    /// can claim in the bytes that are left.
    pub min_size: usize,
}

/// Every message type a definition reaches from its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub types: Vec<MessageType>,
    /// Index of the defined type in `types`.
    pub root: usize,
}

/// `pkg/Type` or `pkg/msg/Type` -> `pkg/msg/Type`; a bare `Type` is in `package`, except that
/// `Header` is `std_msgs/msg/Header`.
fn full_name(name: &str, package: &str) -> String {
    match name.split('/').collect::<Vec<_>>().as_slice() {
        [pkg, ty] => format!("{pkg}/msg/{ty}"),
        ["Header"] => "std_msgs/msg/Header".to_owned(),
        [ty] => format!("{package}/msg/{ty}"),
        _ => name.to_owned(),
    }
}

fn package_of(full: &str) -> &str {
    full.split('/').next().unwrap_or_default()
}

/// A field as written, its type not resolved yet.
struct FieldLine<'a> {
    name: &'a str,
    base: &'a str,
    arity: Arity,
}

/// One line of a `.msg` text: `None` for blank lines, comments and constants.
fn parse_line(line: &str) -> Result<Option<FieldLine<'_>>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (type_text, rest) = line.split_once(char::is_whitespace).ok_or("a field needs a type and a name")?;
    let rest = rest.trim_start();
    let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    let (name, after_name) = rest.split_at(name_len);
    if name.is_empty() {
        return Err("a field needs a type and a name");
    }
    // `int32 FOO=1` is a constant: no bytes on the wire. Whatever else follows a name is a
    // default value or a comment, neither of which changes the encoding.
    if after_name.trim_start().starts_with('=') {
        return Ok(None);
    }
    let (base, arity) = match type_text.split_once('[') {
        None => (type_text, Arity::Single),
        Some((base, bracket)) => {
            let inner = bracket.strip_suffix(']').ok_or("an array type ends with `]`")?;
            let arity = if inner.is_empty() || inner.starts_with("<=") {
                Arity::Sequence
            } else {
                Arity::Fixed(inner.parse().map_err(|_| "an array size is a number")?)
            };
            (base, arity)
        }
    };
    // `string<=N` is a string on the wire.
    let base = base.split_once("<=").map_or(base, |(b, _)| b);
    Ok(Some(FieldLine { name, base, arity }))
}

/// A separator line between the sections of a full definition.
fn is_separator(line: &str) -> bool {
    let line = line.trim();
    line.len() >= 3 && line.bytes().all(|b| b == b'=')
}

/// The sections of a full definition: the root's text under `root`, each dependency's under its
/// full name.
fn sections<'a>(root: &str, text: &'a str) -> HashMap<String, Vec<&'a str>> {
    let mut sections: HashMap<String, Vec<&str>> = HashMap::new();
    let mut current = root.to_owned();
    let mut lines = Vec::new();
    for line in text.lines() {
        if is_separator(line) {
            sections.entry(std::mem::take(&mut current)).or_insert(std::mem::take(&mut lines));
        } else if let Some(name) = line.trim().strip_prefix("MSG:").filter(|_| lines.iter().all(|l| l.trim().is_empty())) {
            current = full_name(name.trim(), "");
            lines.clear();
        } else {
            lines.push(line);
        }
    }
    sections.entry(current).or_insert(lines);
    sections
}

impl Definition {
    /// Parses the full definition `text` of `type_name` (`pkg/msg/Type` or `pkg/Type`).
    pub fn parse(type_name: &str, text: &str) -> Result<Self, DefinitionError> {
        let root = full_name(type_name, "");
        let mut builder = Builder { sections: sections(&root, text), types: Vec::new(), index: HashMap::new(), path: Vec::new() };
        let root = builder.build(&root, None)?;
        Ok(Self { types: builder.types, root })
    }
}

struct Builder<'a> {
    sections: HashMap<String, Vec<&'a str>>,
    types: Vec<MessageType>,
    index: HashMap<String, usize>,
    /// The types being built, outermost first: a name met again here is a cycle.
    path: Vec<String>,
}

impl Builder<'_> {
    /// Builds `name` and everything it reaches; returns its index. `used_by` is the type and
    /// field that need it, for the error when it is missing.
    fn build(&mut self, name: &str, used_by: Option<(&str, &str)>) -> Result<usize, DefinitionError> {
        if let Some(&done) = self.index.get(name) {
            return Ok(done);
        }
        if let Some(start) = self.path.iter().position(|p| p == name) {
            let mut cycle = self.path[start..].to_vec();
            cycle.push(name.to_owned());
            return Err(DefinitionError::Cycle(cycle.join(" -> ")));
        }
        let Some(lines) = self.sections.get(name).cloned() else {
            let (type_name, field) = used_by.unwrap_or((name, ""));
            return Err(DefinitionError::Missing {
                type_name: type_name.to_owned(),
                field: field.to_owned(),
                missing: name.to_owned(),
            });
        };
        self.path.push(name.to_owned());
        let package = package_of(name).to_owned();
        let mut fields = Vec::new();
        for (number, line) in lines.iter().enumerate() {
            let parsed = parse_line(line).map_err(|reason| DefinitionError::Line {
                type_name: name.to_owned(),
                line: number + 1,
                text: line.trim().to_owned(),
                reason,
            })?;
            let Some(FieldLine { name: field, base, arity }) = parsed else { continue };
            let element = match base {
                "string" => ElementType::String,
                "wstring" => return Err(DefinitionError::WideString { type_name: name.to_owned(), field: field.to_owned() }),
                _ => match Primitive::from_name(base) {
                    Some(p) => ElementType::Primitive(p),
                    None => ElementType::Message(self.build(&full_name(base, &package), Some((name, field)))?),
                },
            };
            fields.push(Field { name: field.to_owned(), element, arity });
        }
        self.path.pop();
        let min_size = if fields.is_empty() {
            // rosidl gives a message without fields one uint8 on the wire.
            1
        } else {
            fields.iter().map(|f| self.min_size(f)).fold(0usize, usize::saturating_add)
        };
        self.types.push(MessageType { name: name.to_owned(), fields, min_size });
        let index = self.types.len() - 1;
        self.index.insert(name.to_owned(), index);
        Ok(index)
    }

    fn min_size(&self, field: &Field) -> usize {
        let element = match field.element {
            ElementType::Primitive(p) => p.size(),
            // The uint32 length; even an empty string has it.
            ElementType::String => 4,
            ElementType::Message(i) => self.types[i].min_size,
        };
        match field.arity {
            Arity::Single => element,
            Arity::Fixed(n) => element.saturating_mul(n),
            Arity::Sequence => 4,
        }
    }
}
