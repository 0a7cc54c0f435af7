//! CDR (de)serialisation with the 4-byte encapsulation header ROS 2 puts in front of every
//! message; the body is `cdr-encoding`'s work.

use byteorder::{BigEndian, LittleEndian};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CdrError {
    #[error("message is shorter than its 4-byte CDR header")]
    NoHeader,
    #[error("unsupported CDR representation {0:#06x} (expected plain CDR, 0x0000 or 0x0001)")]
    Representation(u16),
    #[error("{0}")]
    Body(String),
}

const CDR_LE: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

/// Little-endian CDR with its encapsulation header, as ROS 2 publishes.
pub fn encode<M: Serialize>(msg: &M) -> Result<Vec<u8>, CdrError> {
    let body = cdr_encoding::to_vec::<M, LittleEndian>(msg).map_err(|e| CdrError::Body(e.to_string()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&CDR_LE);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads a message in either byte order; lengths inside are checked against the bytes present.
pub fn decode<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, CdrError> {
    let (header, body) = bytes.split_at_checked(4).ok_or(CdrError::NoHeader)?;
    let body_err = |e: cdr_encoding::Error| CdrError::Body(e.to_string());
    match u16::from_be_bytes([header[0], header[1]]) {
        0x0000 => cdr_encoding::from_bytes::<M, BigEndian>(body).map(|(m, _)| m).map_err(body_err),
        0x0001 => cdr_encoding::from_bytes::<M, LittleEndian>(body).map(|(m, _)| m).map_err(body_err),
        other => Err(CdrError::Representation(other)),
    }
}
