//! The framing of one update in the log, and the scan that reads a log back.
//!
//! A record is `len: u32 LE | crc: u32 LE | payload` where the payload is the update as JSON
//! and the crc32 covers the length bytes and the payload. Covering the length means a run of
//! zeroes (what a power cut can leave in a file's last block) is never a valid record, and a
//! length of 0 is rejected outright.
//!
//! The scan reads every valid record. When it meets bytes that are not one, it looks for the
//! next offset where a valid record starts: if there is one, the damage is in the middle of the
//! log (bit rot, a bad sector) and is skipped, to be reported; if there is none, it is a torn
//! tail from an interrupted write and the valid length ends there.
//!
//! Why skip rather than stop at a damaged middle record: stopping would also drop every valid
//! update after it, and worse, would forget our own seqs written there, so the next local write
//! would reuse a seq that peers may already hold for a different update — breaking their gap
//! detection for good. Skipping loses only the damaged record; LWW does not care about order,
//! and the hole stays visible in the version vector, so anti-entropy fetches it from a peer.

use super::{Replica, Update};
use std::path::Path;

/// Bytes before the payload: the length and the crc.
pub(super) const HEADER_LEN: usize = 8;

/// The largest payload accepted. One update is a few hundred bytes; anything bigger is a
/// corrupt length, and refusing it keeps the scan from trusting garbage.
pub(super) const MAX_PAYLOAD: usize = 1 << 20;

/// How the payload of the record a compaction starts every log with begins. It carries the
/// log's generation, which the snapshot written by that compaction names too
/// ([`super::snapshot`]'s `log_generation`): a log with that header missing beside such a
/// snapshot was emptied, deleted or replaced from outside, and our own updates since the
/// snapshot are gone from this disk. The first header written, before generations existed,
/// was `{"pimesh-log":1}`: generation 0.
const LOG_HEADER_START: &[u8] = br#"{"pimesh-log":"#;

/// The header's payload, as read.
#[derive(serde::Deserialize)]
struct LogHeader {
    /// The log format; 1.
    #[serde(rename = "pimesh-log")]
    _format: u32,
    /// Which compaction started the log.
    #[serde(default)]
    generation: u64,
}

/// The header record of the log of `generation`, framed.
pub(super) fn header(generation: u64) -> Vec<u8> {
    let payload = format!(r#"{{"pimesh-log":1,"generation":{generation}}}"#);
    let mut out = Vec::new();
    frame(payload.as_bytes(), &mut out);
    out
}

/// The generation a header payload names; none when `payload` is not a header.
fn header_generation(payload: &[u8]) -> Option<u64> {
    if !payload.starts_with(LOG_HEADER_START) {
        return None;
    }
    serde_json::from_slice::<LogHeader>(payload)
        .ok()
        .map(|h| h.generation)
}

/// Appends `payload` framed as a record to `out`.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends the record for `update` to `out`. Refuses an update too large to be read back.
pub(super) fn encode(update: &Update, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let payload = serde_json::to_vec(update)?;
    match u32::try_from(payload.len()) {
        Ok(_) if payload.len() <= MAX_PAYLOAD => {}
        _ => {
            return Err(serde::ser::Error::custom(format!(
                "the update is {} bytes, more than the {MAX_PAYLOAD} a log record may hold",
                payload.len()
            )))
        }
    }
    frame(&payload, out);
    Ok(())
}

/// Whether a log with no valid record could still be a crash's work: zeroes (what a power cut
/// leaves in a file's last block), or the start of one record cut short. Anything else is
/// damage from outside and is kept for inspection rather than cut away.
pub(super) fn looks_torn(bytes: &[u8]) -> bool {
    if bytes.iter().all(|&b| b == 0) || bytes.len() < HEADER_LEN {
        return true;
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    len > 0 && len <= MAX_PAYLOAD && bytes.len() < HEADER_LEN + len
}

/// What a log holds, as found by [`scan`].
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Every update read, in file order.
    pub(super) updates: Vec<Update>,
    /// Byte ranges `(start, end)` in the middle of the log that held no valid record and were
    /// skipped.
    pub(super) damaged: Vec<(usize, usize)>,
    /// Byte ranges of records whose checksum is right but whose payload is not an update
    /// (written by a newer pimesh?), with the reason; skipped.
    pub(super) unreadable: Vec<(usize, usize, String)>,
    /// Length of the log up to the end of the last whole record; beyond it is a torn tail.
    pub(super) valid_len: usize,
    /// The generation named by the header a compaction writes, if the log holds one.
    pub(super) header: Option<u64>,
}

/// Applies the records of the log bytes `bytes` (read from `log_path`, named in errors) to
/// `replica`, reporting damaged and unreadable records; returns what the scan found.
pub(super) fn replay(replica: &mut Replica, bytes: &[u8], log_path: &Path) -> Scan {
    let scan = scan(bytes);
    for &(start, end) in &scan.damaged {
        tracing::error!(
            file = %log_path.display(),
            "damaged record at bytes {start}..{end} skipped; peers will send its update again"
        );
    }
    for (start, end, reason) in &scan.unreadable {
        tracing::error!(
            file = %log_path.display(),
            "unreadable record at bytes {start}..{end} skipped ({reason}); was it written by a newer pimesh?"
        );
    }
    let wall_ms = crate::clock::now_ms();
    for update in &scan.updates {
        replica.apply(update, wall_ms);
    }
    scan
}

/// Reads every record of `bytes`, skipping damage in the middle and stopping at a torn tail.
pub(super) fn scan(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut pos = 0;
    while pos < bytes.len() {
        match frame_at(bytes, pos) {
            Some((payload, next)) => {
                if let Some(generation) = header_generation(payload) {
                    scan.header = Some(generation);
                } else {
                    match serde_json::from_slice::<Update>(payload) {
                        Ok(update) => scan.updates.push(update),
                        Err(e) => scan.unreadable.push((pos, next, e.to_string())),
                    }
                }
                pos = next;
            }
            None => match (pos + 1..bytes.len()).find(|&at| frame_at(bytes, at).is_some()) {
                Some(next) => {
                    scan.damaged.push((pos, next));
                    pos = next;
                }
                None => break,
            },
        }
    }
    scan.valid_len = pos;
    scan
}

/// The payload of the record starting at `pos` and the offset after it, if a whole record
/// with a matching checksum starts there.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos.checked_add(HEADER_LEN)?)?;
    let len_bytes: [u8; 4] = header.get(0..4)?.try_into().ok()?;
    let crc_bytes: [u8; 4] = header.get(4..8)?.try_into().ok()?;
    let len = usize::try_from(u32::from_le_bytes(len_bytes)).ok()?;
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let start = pos + HEADER_LEN;
    let end = start.checked_add(len)?;
    let payload = bytes.get(start..end)?;
    (checksum(&len_bytes, payload) == u32::from_le_bytes(crc_bytes)).then_some((payload, end))
}

/// crc32 of the length bytes followed by the payload.
fn checksum(len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;
    use crate::model::ObjectId;
    use uuid::Uuid;

    fn update(seq: u64) -> Update {
        Update {
            object: ObjectId::new("lamp").unwrap(),
            prop: "state".into(),
            value: "ON".into(),
            stamp: Stamp {
                wall_ms: 1_000 + seq,
                counter: 0,
                origin: Uuid::from_bytes([1; 16]),
            },
            seq,
            sig: None,
        }
    }

    fn log_of(seqs: &[u64]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for &seq in seqs {
            encode(&update(seq), &mut bytes).unwrap();
        }
        bytes
    }

    #[test]
    fn records_read_back_in_order() {
        let scan = scan(&log_of(&[1, 2, 3]));
        assert_eq!(scan.updates, vec![update(1), update(2), update(3)]);
        assert!(scan.damaged.is_empty());
    }

    #[test]
    fn every_truncation_is_a_torn_tail_that_keeps_the_whole_records() {
        let bytes = log_of(&[1, 2]);
        let first_len = log_of(&[1]).len();
        for cut in first_len..bytes.len() {
            let scan = scan(&bytes[..cut]);
            assert_eq!(scan.updates, vec![update(1)], "cut at {cut}");
            assert_eq!(scan.valid_len, first_len);
            assert!(scan.damaged.is_empty());
        }
    }

    #[test]
    fn zeroes_after_the_last_record_are_a_torn_tail() {
        let mut bytes = log_of(&[1]);
        let valid = bytes.len();
        bytes.extend_from_slice(&[0; 4096]);
        let scan = scan(&bytes);
        assert_eq!(scan.updates.len(), 1);
        assert_eq!(scan.valid_len, valid);
    }

    #[test]
    fn a_damaged_middle_record_is_skipped_and_the_rest_read() {
        let mut bytes = log_of(&[1, 2, 3]);
        let first_len = log_of(&[1]).len();
        let second_end = log_of(&[1, 2]).len();
        bytes[first_len + HEADER_LEN + 5] ^= 0x55;
        let scan = scan(&bytes);
        assert_eq!(scan.updates, vec![update(1), update(3)]);
        assert_eq!(scan.damaged, vec![(first_len, second_end)]);
        assert_eq!(scan.valid_len, bytes.len());
    }

    #[test]
    fn a_damaged_length_is_skipped_too() {
        let mut bytes = log_of(&[1, 2, 3]);
        let first_len = log_of(&[1]).len();
        bytes[first_len + 2] = 0xff;
        let scan = scan(&bytes);
        assert_eq!(scan.updates, vec![update(1), update(3)]);
    }

    #[test]
    fn a_checksummed_record_that_is_not_an_update_is_reported_not_truncated() {
        let mut bytes = log_of(&[1]);
        let payload = b"{\"from\":\"the future\"}";
        let len = (payload.len() as u32).to_le_bytes();
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&checksum(&len, payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        let scan = scan(&bytes);
        assert_eq!(scan.updates, vec![update(1)]);
        assert_eq!(scan.unreadable.len(), 1);
        assert_eq!(scan.valid_len, bytes.len());
    }

    #[test]
    fn an_update_too_large_to_read_back_is_refused() {
        let mut u = update(1);
        u.value = "x".repeat(MAX_PAYLOAD).into();
        let mut bytes = Vec::new();
        assert!(encode(&u, &mut bytes).is_err());
        assert!(bytes.is_empty());
    }

    #[test]
    fn numbers_read_back_bit_for_bit() {
        // Needs serde_json's `float_roundtrip`: without it these come back one ulp off, and a
        // restarted replica would hold a different value than its peers under the same stamp.
        let awkward = [
            0.1 + 0.2,
            1993.6000000000001,
            1.810687201425094e-8,
            -0.0,
            5e-324,
        ];
        let mut bytes = Vec::new();
        let mut written = Vec::new();
        for (i, n) in awkward.into_iter().enumerate() {
            let mut u = update(i as u64 + 1);
            u.value = n.into();
            encode(&u, &mut bytes).unwrap();
            written.push(u);
        }
        let read = scan(&bytes).updates;
        assert_eq!(read, written);
        for (r, w) in read.iter().zip(&written) {
            let bits = |u: &Update| u.value.as_number().map(f64::to_bits);
            assert_eq!(bits(r), bits(w));
        }
    }
}
