//! rosbag2's MCAP storage (`.mcap`): read with the `mcap` crate from a memory map, chunk CRCs
//! checked, a missing end magic tolerated (a recording cut short).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use mcap::read::Options;

use super::{full_type_name, RawMessage, ReadReport, StoredDefinition};
use crate::bag::BagError;

/// Reads one MCAP file into `visit`, adding its messages and any damage to `report`.
pub fn read(path: &Path, report: &mut ReadReport, visit: &mut dyn FnMut(&RawMessage<'_>)) -> Result<(), BagError> {
    let file = File::open(path).map_err(|source| BagError::Io { path: path.to_path_buf(), source })?;
    // SAFETY: the map is read-only; a bag rewritten while it is read gives wrong messages or a
    // decode error, which the reader reports, not undefined behaviour in safe code that only
    // copies out of the slice.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| BagError::Io { path: path.to_path_buf(), source })?;
    if !map.starts_with(mcap::MAGIC) {
        report.damage.push(format!("{}: not an MCAP file (no MCAP magic at its start)", path.display()));
        return Ok(());
    }
    let stream = match mcap::MessageStream::new_with_options(&map, Options::IgnoreEndMagic | Options::ValidateChunkCrcs) {
        Ok(stream) => stream,
        Err(e) => {
            report.damage.push(format!("{}: not an MCAP file ({e})", path.display()));
            return Ok(());
        }
    };
    // Per channel: the full type name and the schema as a definition.
    let mut types: BTreeMap<u16, (String, Option<StoredDefinition>)> = BTreeMap::new();
    let mut in_file = 0u64;
    let mut last_time = None;
    for message in stream {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                let at = last_time.map_or(String::new(), |t| format!(", last log time {t} ns"));
                report.damage.push(format!("{}: stopped after {in_file} messages{at}: {e}", path.display()));
                break;
            }
        };
        let channel = &message.channel;
        let (type_name, definition) = types.entry(channel.id).or_insert_with(|| match &channel.schema {
            Some(schema) => {
                // Empty data is a real definition only as ros2msg (a type without fields, like
                // test_msgs/Empty); rosbag2 writes it empty with another encoding when it had none.
                let definition = (!schema.data.is_empty() || schema.encoding == "ros2msg").then(|| StoredDefinition {
                    encoding: schema.encoding.clone(),
                    text: String::from_utf8_lossy(&schema.data).into_owned(),
                });
                (full_type_name(&schema.name), definition)
            }
            None => (String::new(), None),
        });
        visit(&RawMessage {
            topic: &channel.topic,
            type_name,
            encoding: &channel.message_encoding,
            log_time: message.log_time,
            data: &message.data,
            definition: definition.as_ref(),
        });
        in_file += 1;
        last_time = Some(message.log_time);
    }
    report.messages += in_file;
    Ok(())
}
