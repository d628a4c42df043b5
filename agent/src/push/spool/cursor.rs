//! The `acked` cursor: where the first batch neither acknowledged nor dropped starts,
//! persisted before the segments behind it are deleted.

use std::fs;

use super::segment::write_replace;
use super::{Spool, SpoolError, io};

pub(super) const CURSOR: &str = "acked";

/// A place in the spool: a segment, a byte offset in it, and the ordinal of the batch
/// that starts there (counted from the cursor at opening; good lines only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    pub(super) index: u64,
}

impl Spool {
    /// Moves the cursor to `end` (from [`Spool::read_pending`]) once the collector has
    /// stored everything before it, and deletes the segments left behind.
    pub fn ack(&mut self, end: Position) -> Result<(), SpoolError> {
        if end.index < self.cursor.index
            || (end.segment, end.offset) <= (self.cursor.segment, self.cursor.offset)
        {
            // Already behind the cursor (dropped meanwhile).
            return Ok(());
        }
        self.cursor = end;
        self.normalize()?;
        self.refresh_oldest()
    }

    /// Persists the cursor, then deletes segments wholly behind it.
    pub(super) fn normalize(&mut self) -> Result<(), SpoolError> {
        // A cursor at the end of a segment that is not the last moves to the next one.
        while let [first, second, ..] = self.segments[..] {
            if first.number < self.cursor.segment
                || (first.number == self.cursor.segment && self.cursor.offset >= first.len)
            {
                if first.number == self.cursor.segment {
                    self.cursor.segment = second.number;
                    self.cursor.offset = 0;
                }
                self.persist_cursor()?;
                let path = self.segment_path(first.number);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(&path)(e));
                    }
                    _ => {}
                }
                self.segments.remove(0);
            } else {
                break;
            }
        }
        self.persist_cursor()
    }

    pub(super) fn persist_cursor(&self) -> Result<(), SpoolError> {
        let text = format!("{} {}\n", self.cursor.segment, self.cursor.offset);
        let path = self.dir.join(CURSOR);
        if fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        write_replace(&path, text.as_bytes(), false)
    }
}

pub(super) fn parse_cursor(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((segment, offset))
}
