//! Messages of any type as JSON, decoded from the definitions the bag carries (MCAP `ros2msg`
//! schemas, rosbag2's `message_definitions` table) or, for bags that carry none, from the
//! definitions of moe_vla's own types.

mod decode;
mod definition;

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

pub use decode::{decode, DecodeError, Problem, COMPACT_BYTES_OVER};
pub use definition::{Definition, DefinitionError};

use super::msgs::known_definition;
use super::RawMessage;

/// Why a message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("serialization format `{0}` is not cdr")]
    NotCdr(String),
    #[error("the bag carries no definition of the type and moe_vla does not know it")]
    NoDefinition,
    #[error("its definition is `{0}`, not ros2msg, and moe_vla does not know the type")]
    DefinitionEncoding(String),
    #[error("definition: {0}")]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl MessageError {
    /// Nothing to decode by (no usable definition, or not CDR), as opposed to a definition or
    /// message that is broken.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::NotCdr(_) | Self::NoDefinition | Self::DefinitionEncoding(_))
    }
}

/// Decodes messages of any type, parsing each type's definition once.
#[derive(Default)]
pub struct MessageDecoder {
    /// Per type name: the definition text parsed, and what it gave.
    parsed: HashMap<String, (String, Result<Definition, DefinitionError>)>,
}

impl MessageDecoder {
    pub fn decode(&mut self, message: &RawMessage<'_>) -> Result<Value, MessageError> {
        if message.encoding != "cdr" {
            return Err(MessageError::NotCdr(message.encoding.to_owned()));
        }
        let text: Cow<'_, str> = match message.definition {
            Some(stored) if stored.encoding == "ros2msg" => Cow::Borrowed(&stored.text),
            stored => Cow::Owned(known_definition(message.type_name).ok_or_else(|| match stored {
                Some(stored) => MessageError::DefinitionEncoding(stored.encoding.clone()),
                None => MessageError::NoDefinition,
            })?),
        };
        let stale = self.parsed.get(message.type_name).is_none_or(|(parsed_text, _)| *parsed_text != *text);
        if stale {
            let definition = match service_event_definition(message.type_name, &text) {
                Some(event) => Definition::parse(message.type_name, &event),
                None => Definition::parse(message.type_name, &text),
            };
            self.parsed.insert(message.type_name.to_owned(), (text.into_owned(), definition));
        }
        let (_, definition) = &self.parsed[message.type_name];
        let definition = definition.as_ref().map_err(|e| MessageError::Definition(e.clone()))?;
        Ok(decode(definition, message.data)?)
    }
}

/// The separator rosbag2 and mcap-ros2-support put between a definition and its dependencies.
const SECTION: &str = "================================================================================";

/// A service-event type (`pkg/srv/Name_Event`, what rosbag2 records on `.../_service_event`
/// topics) whose stored definition is the service's own text (request `---` response): the event
/// message rosidl generates around them.
fn service_event_definition(type_name: &str, text: &str) -> Option<String> {
    let service = type_name.strip_suffix("_Event").filter(|s| s.contains("/srv/"))?;
    let (own, dependencies) = match text.find(SECTION) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    // A leading newline lets a service with an empty request (`---` on the first line) split too.
    let own = format!("\n{own}");
    let mut parts = own.split("\n---");
    let (request, response) = (parts.next()?, parts.next()?.trim_start_matches('-'));
    Some(format!(
        "service_msgs/msg/ServiceEventInfo info\n{service}_Request[<=1] request\n{service}_Response[<=1] response\n\
         {SECTION}\nMSG: service_msgs/msg/ServiceEventInfo\nuint8 event_type\nbuiltin_interfaces/Time stamp\n\
         char[16] client_gid\nint64 sequence_number\n\
         {SECTION}\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n\
         {SECTION}\nMSG: {service}_Request\n{request}\n\
         {SECTION}\nMSG: {service}_Response\n{response}\n{dependencies}"
    ))
}

#[cfg(test)]
mod tests;
