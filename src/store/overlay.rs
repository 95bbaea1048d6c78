//! A dry run that writes nothing: what the rows before a row would have changed, kept beside the
//! database instead of written into a transaction that is then rolled back.
//!
//! A `--verify-only` run must decide every row as the real run would. The real run's rows see
//! what the rows before them wrote; for a run that rejects repeated external_ids and gives no
//! explicit customer_id, that is only who holds which email: the emails new customers take, and
//! the ones updated customers give up or take. [`DryOverlay`] keeps exactly that (email key
//! hash -> the external_id that took it, or "given up"), so the SQLite writer can decide rows
//! against the untouched database plus the overlay. Writing and rolling back every row cost a
//! million-row dry run as much as the real load; the overlay costs a hash lookup a row.
//!
//! Runs the overlay cannot describe (repeated external_ids under `last_wins`, explicit
//! customer_ids, relations) keep the dry run that writes and rolls back.
//!
//! Memory stays flat: the map is a [`SpillMap`], and the external_ids it names are appended to a
//! temporary file and read back only to word a rejection.

use super::spill::SpillMap;
use anyhow::Context;
use std::io::{Seek, SeekFrom, Write};
use xxhash_rust::xxh3::xxh3_128;

/// The map value of an email given up by its stored customer.
const RELEASED: u64 = u64::MAX;

/// Bits of the packed value that hold the length of an external_id (the rest is its offset).
const LEN_BITS: u32 = 16;

/// Who holds an email according to the rows before, when they changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A row of this run took it.
    By(String),
    /// Its stored customer gave it up in this run.
    Released,
}

/// See the module documentation.
pub struct DryOverlay {
    emails: SpillMap,
    names: std::io::BufWriter<std::fs::File>,
    written: u64,
}

impl DryOverlay {
    /// An empty overlay.
    pub fn new() -> anyhow::Result<DryOverlay> {
        let file =
            tempfile::tempfile().context("cannot create a temporary file for the dry run")?;
        Ok(DryOverlay {
            emails: SpillMap::default(),
            names: std::io::BufWriter::new(file),
            written: 0,
        })
    }

    /// What the rows before changed about `email_key`, if anything.
    pub fn holder(&mut self, email_key: &str) -> anyhow::Result<Option<Held>> {
        let Some(value) = self.emails.get(key(email_key))? else {
            return Ok(None);
        };
        if value == RELEASED {
            return Ok(Some(Held::Released));
        }
        let (offset, len) = (value >> LEN_BITS, (value & ((1 << LEN_BITS) - 1)) as usize);
        self.names
            .flush()
            .context("cannot read the dry run's temporary file")?;
        let file = self.names.get_mut();
        file.seek(SeekFrom::Start(offset))
            .context("cannot read the dry run's temporary file")?;
        let mut bytes = vec![0; len];
        std::io::Read::read_exact(file, &mut bytes)
            .context("cannot read the dry run's temporary file")?;
        file.seek(SeekFrom::Start(self.written))
            .context("cannot read the dry run's temporary file")?;
        Ok(Some(Held::By(String::from_utf8_lossy(&bytes).into_owned())))
    }

    /// A row of the run takes `email_key`.
    pub fn take(&mut self, email_key: &str, external_id: &str) -> anyhow::Result<()> {
        // External ids are short; a longer one (over 64 KiB) is kept cut, for the message only.
        let bytes = &external_id.as_bytes()[..external_id.len().min((1 << LEN_BITS) - 1)];
        self.names
            .write_all(bytes)
            .context("cannot write the dry run's temporary file")?;
        let packed = (self.written << LEN_BITS) | bytes.len() as u64;
        self.written += bytes.len() as u64;
        self.emails.insert(key(email_key), packed)
    }

    /// The stored customer of `email_key` gives it up.
    pub fn release(&mut self, email_key: &str) -> anyhow::Result<()> {
        self.emails.insert(key(email_key), RELEASED)
    }
}

fn key(email_key: &str) -> u128 {
    xxh3_128(email_key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_taken_and_given_up_are_remembered() {
        let mut overlay = DryOverlay::new().unwrap();
        assert_eq!(overlay.holder("a@x.com").unwrap(), None);
        overlay.take("a@x.com", "C-1").unwrap();
        overlay.take("b@x.com", "C-22").unwrap();
        overlay.release("c@x.com").unwrap();
        assert_eq!(
            overlay.holder("a@x.com").unwrap(),
            Some(Held::By("C-1".into()))
        );
        assert_eq!(
            overlay.holder("b@x.com").unwrap(),
            Some(Held::By("C-22".into()))
        );
        assert_eq!(overlay.holder("c@x.com").unwrap(), Some(Held::Released));
        // Given up, then taken by another row; and more names after a read.
        overlay.take("c@x.com", "C-3").unwrap();
        overlay.take("d@x.com", "C-4").unwrap();
        assert_eq!(
            overlay.holder("c@x.com").unwrap(),
            Some(Held::By("C-3".into()))
        );
        assert_eq!(
            overlay.holder("d@x.com").unwrap(),
            Some(Held::By("C-4".into()))
        );
    }
}
