//! rosbag2's sqlite3 storage (`.db3`): tables `topics(id, name, type, serialization_format,
//! offered_qos_profiles[, type_description_hash])`, `messages(id, topic_id, timestamp, data)`
//! and, from Jazzy on, `message_definitions(topic_type, encoding, encoded_message_definition,
//! ...)`. Opened read-only with the SQLite bundled into the binary.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{full_type_name, RawMessage, ReadReport, StoredDefinition};
use crate::bag::BagError;

struct Topic {
    name: String,
    type_name: String,
    encoding: String,
    definition: Option<StoredDefinition>,
}

/// Reads one `.db3` file into `visit` in timestamp order (ties in insertion order), adding its
/// messages and any damage to `report`. Never an error: a file SQLite cannot open is damage.
pub fn read(path: &Path, report: &mut ReadReport, visit: &mut dyn FnMut(&RawMessage<'_>)) -> Result<(), BagError> {
    let damage = |what: String| format!("{}: {what}", path.display());
    let opened = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX);
    let (connection, topics) = match opened.and_then(|c| topics(&c).map(|t| (c, t))) {
        Ok(read) => read,
        Err(e) => {
            report.damage.push(damage(format!("not a rosbag2 sqlite3 file ({e})")));
            return Ok(());
        }
    };
    let mut in_file = 0u64;
    let mut last_time = None;
    let mut without_topic = 0u64;
    let stopped = (|| -> rusqlite::Result<()> {
        let mut statement = connection.prepare("SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp, id")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let (topic_id, timestamp): (i64, i64) = (row.get(0)?, row.get(1)?);
            let data = row.get_ref(2)?.as_blob()?;
            let Some(topic) = topics.get(&topic_id) else {
                without_topic += 1;
                continue;
            };
            // Times before the epoch are not ROS times; they read as the epoch.
            let log_time = u64::try_from(timestamp).unwrap_or(0);
            visit(&RawMessage {
                topic: &topic.name,
                type_name: &topic.type_name,
                encoding: &topic.encoding,
                log_time,
                data,
                definition: topic.definition.as_ref(),
            });
            in_file += 1;
            last_time = Some(log_time);
        }
        Ok(())
    })();
    if let Err(e) = stopped {
        let at = last_time.map_or(String::new(), |t| format!(", last log time {t} ns"));
        report.damage.push(damage(format!("stopped after {in_file} messages{at}: {e}")));
    }
    if without_topic > 0 {
        report.damage.push(damage(format!("skipped {without_topic} messages whose topic id is not in the topics table")));
    }
    report.messages += in_file;
    Ok(())
}

/// Topics by id, each with its type's definition when the file carries one.
fn topics(connection: &Connection) -> rusqlite::Result<HashMap<i64, Topic>> {
    let definitions = definitions(connection)?;
    let mut statement = connection.prepare("SELECT id, name, type, serialization_format FROM topics")?;
    let rows = statement.query_map([], |row| {
        let type_name = full_type_name(&row.get::<_, String>(2)?);
        let topic =
            Topic { name: row.get(1)?, definition: definitions.get(&type_name).cloned(), type_name, encoding: row.get(3)? };
        Ok((row.get(0)?, topic))
    })?;
    rows.collect()
}

/// The `message_definitions` table (Jazzy on) by full type name; empty before Jazzy. rosbag2
/// stores an empty text under another encoding when it found no definition: such rows are left
/// out (an empty ros2msg text is a type without fields). A service's row also serves its
/// `_Event` type, the type of its service-event topic.
fn definitions(connection: &Connection) -> rusqlite::Result<HashMap<String, StoredDefinition>> {
    let has_table: bool = connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'message_definitions'",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(HashMap::new());
    }
    let mut statement = connection.prepare("SELECT topic_type, encoding, encoded_message_definition FROM message_definitions")?;
    let rows = statement.query_map([], |row| {
        Ok((full_type_name(&row.get::<_, String>(0)?), StoredDefinition { encoding: row.get(1)?, text: row.get(2)? }))
    })?;
    let mut found = HashMap::new();
    for row in rows {
        let (type_name, definition) = row?;
        if definition.text.trim().is_empty() && definition.encoding != "ros2msg" {
            continue;
        }
        if type_name.contains("/srv/") && !type_name.ends_with("_Event") {
            found.insert(format!("{type_name}_Event"), definition.clone());
        }
        found.insert(type_name, definition);
    }
    Ok(found)
}
