//! A map from 128-bit key hashes to 8-byte values whose memory does not grow with the input: up
//! to [`SpillMap::cap`] entries live in a hash map; past that they move, all at once, into a
//! private temporary file, which lookups then consult after the map.
//!
//! A run remembers every external_id it has seen (for repeated ids); at 1,000,000 rows that is
//! ~50 MB in memory, at 10,000,000 it would be ten times as much. The spilled part is a list of
//! sorted runs in one unnamed temporary file (`tempfile::tempfile`: gone when closed): each
//! spill sorts the memory table's entries and appends them as fixed-size records, and keeps in
//! memory the first key of every `BLOCK` entries, so that a lookup reads one block of each run
//! with one `pread` and searches it. Written by hand because nothing else fits the job: the
//! entries are written once, in order, and never changed or deleted (a key set again later is
//! written again in a later run, which shadows the older one), so none of what a B-tree or a
//! key-value crate offers is needed, and its cost was real: these entries had gone into a
//! `WITHOUT ROWID` table of a temporary SQLite database, and writing 917,504 of them took about
//! 0.4 s of CPU (the spill thread's 0.87 s in a 1M dry run, which spills two maps), where
//! sorting and appending them takes a tenth of that.
//!
//! Most lookups after a spill are for keys that are nowhere (a new external_id, a new email), and
//! each would cost a read of every run. A Bloom filter of the spilled keys (`fastbloom`, fed the
//! key's own bits: it is a hash already) answers those from memory; only a key the filter may
//! hold is looked up on disk.
//!
//! The file is written on a thread of its own: a spill written by the run's writer had stalled
//! every other stage of the pipeline while it lasted. The moving entries stay readable in memory
//! until the file has them; new entries meanwhile go to a small table of at most an eighth of
//! the cap (~1.6 MB), which joins the big table, emptied, once the move has ended. A lookup that
//! needs the file, or a full small table, waits for the move to end (after a first spill, no
//! lookup does but a filter's rare false positive).

use anyhow::Context;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The memory table.
type Table = HashMap<Key, u64, BuildHasherDefault<Prehashed>>;

/// Entries kept in memory before spilling: 7/8 of 2^19 buckets (25 bytes each with the
/// control byte, ~13 MB), so that the table never grows past that size. Each entry is spilled
/// once whatever the cap, so a smaller cap costs more runs, not more writing; 2^20 buckets had
/// made a 1M dry run's peak 28 MiB higher for no speed (2.97, 2.99 s against 3.00, 3.03 s).
const DEFAULT_CAP: usize = (1 << 19) / 8 * 7;

/// Entries a memory table takes before it is given, at once, the size it has at the cap. Grown
/// by doubling from here, it would move every entry again at each of seven doublings and fault
/// in the pages of each short-lived table on its way (a tenth of a dry run's writer at 300k
/// rows); a run that gets this far mostly goes on, and a smaller one never pays.
const FULL_SIZE_AT: usize = 1 << 12;

/// Entries per block of a run: a lookup reads one block (6 KiB) of each run it searches, and a run
/// keeps the first key of each block in memory (16 bytes a block: ~29 KB for a full map).
const BLOCK: usize = 256;

/// Bytes of an entry on disk: the key's two halves and the value, little-endian.
const ENTRY_BYTES: usize = 24;

/// Spills the filter is sized for: twenty at the default cap, ~9.2M keys, about a 10M-row run.
const FILTER_SPILLS: usize = 20;

/// Bits of the filter of spilled keys per entry the memory table holds: 128, so that
/// [`FILTER_SPILLS`] spills still leave ~7 bits a key (a few percent of misses reach the disk)
/// and after a few almost none do. At the default cap that is 8 MiB, allocated at the first
/// spill.
const FILTER_BITS_PER_CAP: usize = 128;

/// Hashes keys that are xxh3 hashes already by taking their low 64 bits.
#[derive(Default, Clone, Copy)]
pub struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here; any other input is folded in byte by byte.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A key of the memory table: the two halves of the 128-bit hash. A `u128` is 16-byte aligned,
/// which pads an entry with its 8-byte value to 32 bytes; two `u64`s make it 24, a quarter less
/// memory for the same number of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    hi: u64,
    lo: u64,
}

impl Key {
    fn of(key: u128) -> Key {
        Key {
            hi: (key >> 64) as u64,
            lo: key as u64,
        }
    }
}

impl std::hash::Hash for Key {
    /// The low half is a hash already (see [`Prehashed`]).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo);
    }
}

/// See the module documentation.
pub struct SpillMap {
    memory: Table,
    cap: usize,
    /// The temporary file of spilled entries, when no move to it is under way.
    disk: Option<Disk>,
    /// Entries being written to the temporary database, on a thread that has it meanwhile;
    /// `memory` is then the small table of new entries.
    moving: Option<Moving>,
    /// May a key be on disk (or moving there)? Never "no" for a spilled key.
    filter: Option<fastbloom::BloomFilter>,
}

/// A spill under way: the entries it writes (still read from here), and the thread that writes
/// them and then hands the database back.
struct Moving {
    entries: Arc<Table>,
    thread: std::thread::JoinHandle<anyhow::Result<Disk>>,
}

impl Drop for SpillMap {
    fn drop(&mut self) {
        // The thread's file is deleted when it is closed; its outcome matters no more.
        if let Some(moving) = self.moving.take() {
            moving.thread.join().ok();
        }
    }
}

impl Default for SpillMap {
    fn default() -> Self {
        SpillMap::with_cap(DEFAULT_CAP)
    }
}

impl SpillMap {
    /// A map that spills past `cap` entries.
    pub fn with_cap(cap: usize) -> Self {
        SpillMap {
            memory: HashMap::default(),
            cap: cap.max(1),
            disk: None,
            moving: None,
            filter: None,
        }
    }

    /// Entries kept in memory before spilling.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether entries have moved to disk.
    pub fn spilled(&self) -> bool {
        self.filter.is_some()
    }

    /// The value of `key`.
    pub fn get(&mut self, key: u128) -> anyhow::Result<Option<u64>> {
        let key_of = Key::of(key);
        if let Some(v) = self.memory.get(&key_of) {
            return Ok(Some(*v));
        }
        if let Some(v) = moving_value(&self.moving, key_of) {
            return Ok(Some(v));
        }
        if !may_be_spilled(&self.filter, key) {
            return Ok(None);
        }
        self.settle()?;
        match &mut self.disk {
            Some(disk) => disk.get(key_of),
            None => Ok(None),
        }
    }

    /// The value of `key` if it has one; otherwise sets it to `value` and gives `None`. One
    /// probe of the memory table for a new key instead of two (a lookup, then an insert): each
    /// is a likely cache miss in a table of tens of megabytes.
    pub fn insert_new(&mut self, key: u128, value: u64) -> anyhow::Result<Option<u64>> {
        self.size_up();
        // Never `entry` on a full table: it makes room for one more first, which doubles the
        // table (tens of megabytes) just before the spill would empty it.
        let room = match self.moving {
            Some(_) => self.moving_cap(),
            None => self.cap,
        };
        if self.memory.len() < room {
            let key_of = Key::of(key);
            match self.memory.entry(key_of) {
                Entry::Occupied(e) => return Ok(Some(*e.get())),
                Entry::Vacant(e) => {
                    if let Some(v) = moving_value(&self.moving, key_of) {
                        return Ok(Some(v));
                    }
                    // After a spill most keys are new ones the filter rules out: they go in
                    // through this probe, not through `get` and `insert` (two more probes of
                    // a table of megabytes, half a million times in a 1M-row run).
                    if !may_be_spilled(&self.filter, key) {
                        e.insert(value);
                        return Ok(None);
                    }
                }
            }
        }
        if let Some(v) = self.get(key)? {
            return Ok(Some(v));
        }
        self.insert(key, value)?;
        Ok(None)
    }

    /// Sets the value of `key` (the memory entry shadows a spilled one).
    pub fn insert(&mut self, key: u128, value: u64) -> anyhow::Result<()> {
        let key = Key::of(key);
        if self.moving.is_some()
            && self.memory.len() >= self.moving_cap()
            && !self.memory.contains_key(&key)
        {
            self.settle()?;
        }
        if self.memory.len() >= self.cap && !self.memory.contains_key(&key) {
            self.spill()?;
        }
        self.size_up();
        self.memory.insert(key, value);
        Ok(())
    }

    /// Gives the big memory table its full size once it holds [`FULL_SIZE_AT`] entries.
    fn size_up(&mut self) {
        if self.memory.len() == FULL_SIZE_AT && self.moving.is_none() {
            self.memory.reserve(self.cap.saturating_sub(FULL_SIZE_AT));
        }
    }

    /// Entries the small table takes while a spill is under way.
    fn moving_cap(&self) -> usize {
        (self.cap / 8).max(1)
    }

    /// Waits for the spill under way, if any, and takes the file back.
    fn settle(&mut self) -> anyhow::Result<()> {
        if let Some(Moving { entries, thread }) = self.moving.take() {
            let disk = thread
                .join()
                .map_err(|_| anyhow::anyhow!("internal error: the spill thread panicked"))??;
            self.disk = Some(disk);
            // The thread has dropped its share: the big table comes back, emptied, and takes
            // the entries that came meanwhile.
            let mut table = Arc::try_unwrap(entries).unwrap_or_default();
            table.clear();
            table.extend(self.memory.drain());
            self.memory = table;
        }
        Ok(())
    }

    /// Moves every memory entry to the temporary file, on a thread of its own; new entries go to
    /// a small table meanwhile.
    fn spill(&mut self) -> anyhow::Result<()> {
        self.settle()?;
        let disk = match self.disk.take() {
            Some(disk) => disk,
            None => Disk::new()?,
        };
        let cap = self.cap;
        let filter = self.filter.get_or_insert_with(|| {
            let bits = cap.next_power_of_two() * FILTER_BITS_PER_CAP;
            fastbloom::BloomFilter::with_num_bits(bits).expected_items(cap * FILTER_SPILLS)
        });
        for key in self.memory.keys() {
            filter.insert_hash(key.lo);
        }
        let small = HashMap::with_capacity_and_hasher(self.moving_cap(), Default::default());
        let entries = Arc::new(std::mem::replace(&mut self.memory, small));
        let moved = Arc::clone(&entries);
        let thread = std::thread::Builder::new()
            .name("custload-spill".into())
            .spawn(move || {
                let mut disk = disk;
                disk.append_run(&moved)?;
                Ok(disk)
            })
            .context("cannot start a thread to write the run's spill file")?;
        self.moving = Some(Moving { entries, thread });
        Ok(())
    }
}

/// The value of `key` among the entries of a spill under way, if any. (A function of the field,
/// not a method, so that it can be called while an entry of the memory table is borrowed.)
fn moving_value(moving: &Option<Moving>, key: Key) -> Option<u64> {
    moving.as_ref().and_then(|m| m.entries.get(&key)).copied()
}

/// Whether the filter of spilled keys may hold `key` (never "no" for a spilled one).
fn may_be_spilled(filter: &Option<fastbloom::BloomFilter>, key: u128) -> bool {
    filter.as_ref().is_some_and(|f| f.contains_hash(key as u64))
}

/// The spilled entries: sorted runs, oldest first, in one temporary file.
struct Disk {
    file: std::fs::File,
    /// Bytes written so far: where the next run starts.
    end: u64,
    runs: Vec<Run>,
    /// A block as read from the file, kept between lookups.
    block: Vec<u8>,
}

/// One spill's entries, sorted by key, each key once.
struct Run {
    /// Byte offset of the first entry.
    offset: u64,
    /// Entries in the run.
    len: usize,
    /// The first key of each block of [`BLOCK`] entries.
    firsts: Vec<Key>,
}

impl Disk {
    fn new() -> anyhow::Result<Disk> {
        Ok(Disk {
            file: tempfile::tempfile().context("cannot open a temporary file")?,
            end: 0,
            runs: Vec::new(),
            block: vec![0; BLOCK * ENTRY_BYTES],
        })
    }

    /// Appends `entries` as a new run, which shadows the older ones.
    fn append_run(&mut self, entries: &Table) -> anyhow::Result<()> {
        let context = "writing the run's spill file";
        let mut run = Run {
            offset: self.end,
            len: 0,
            firsts: Vec::with_capacity(entries.len().div_ceil(BLOCK)),
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 18, &self.file);
        // A sixteenth of the entries at a time (by the top four bits of the key, which order the
        // parts as the keys), so that the sorting buffer holds a sixteenth of the map rather than
        // a copy of it.
        let mut part: Vec<(Key, u64)> = Vec::new();
        for top in 0..16u64 {
            part.clear();
            part.extend(
                entries
                    .iter()
                    .filter(|(k, _)| k.hi >> 60 == top)
                    .map(|(k, v)| (*k, *v)),
            );
            part.sort_unstable_by_key(|(k, _)| *k);
            for (key, value) in &part {
                if run.len.is_multiple_of(BLOCK) {
                    run.firsts.push(*key);
                }
                let mut entry = [0u8; ENTRY_BYTES];
                entry[..8].copy_from_slice(&key.hi.to_le_bytes());
                entry[8..16].copy_from_slice(&key.lo.to_le_bytes());
                entry[16..].copy_from_slice(&value.to_le_bytes());
                out.write_all(&entry).context(context)?;
                run.len += 1;
            }
        }
        out.flush().context(context)?;
        drop(out);
        self.end += (run.len * ENTRY_BYTES) as u64;
        self.runs.push(run);
        Ok(())
    }

    /// The value of `key` in the newest run that has it.
    fn get(&mut self, key: Key) -> anyhow::Result<Option<u64>> {
        for run in self.runs.iter().rev() {
            // The block whose first key is the last one not above `key`.
            let Some(block) = run
                .firsts
                .partition_point(|first| *first <= key)
                .checked_sub(1)
            else {
                continue;
            };
            let start = block * BLOCK;
            let n = BLOCK.min(run.len - start);
            let bytes = &mut self.block[..n * ENTRY_BYTES];
            self.file
                .read_exact_at(bytes, run.offset + (start * ENTRY_BYTES) as u64)
                .context("reading the run's spill file")?;
            let key_at = |i: usize| {
                let e = &bytes[i * ENTRY_BYTES..];
                Key {
                    hi: u64::from_le_bytes(e[..8].try_into().expect("8 bytes")),
                    lo: u64::from_le_bytes(e[8..16].try_into().expect("8 bytes")),
                }
            };
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match key_at(mid).cmp(&key) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => {
                        let e = &bytes[mid * ENTRY_BYTES + 16..(mid + 1) * ENTRY_BYTES];
                        return Ok(Some(u64::from_le_bytes(e.try_into().expect("8 bytes"))));
                    }
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_past_the_cap_move_to_disk_and_stay_readable() {
        let mut map = SpillMap::with_cap(4);
        for k in 0..10u128 {
            map.insert(k << 70 | k, k as u64 * 10).unwrap();
        }
        assert!(map.spilled());
        for k in 0..10u128 {
            assert_eq!(map.get(k << 70 | k).unwrap(), Some(k as u64 * 10), "{k}");
        }
        assert_eq!(map.get(99).unwrap(), None);
        // A spilled key updated later: the newer value wins, also after the next spill.
        map.insert(1 << 70 | 1, 7).unwrap();
        assert_eq!(map.get(1 << 70 | 1).unwrap(), Some(7));
        for k in 20..30u128 {
            map.insert(k, 0).unwrap();
        }
        assert_eq!(map.get(1 << 70 | 1).unwrap(), Some(7));
        // Keys that share their low or high half are different keys.
        map.insert(u128::MAX, 1).unwrap();
        assert_eq!(map.get(u128::MAX >> 64).unwrap(), None);
        assert_eq!(map.get(u128::MAX << 64).unwrap(), None);
    }

    /// Keys from every part of the key space (both signs of each half), spilled twice.
    #[test]
    fn keys_of_every_sign_survive_the_spills() {
        let keys: Vec<u128> = (0..200u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .collect();
        let mut map = SpillMap::with_cap(70);
        for (i, k) in keys.iter().enumerate() {
            map.insert(*k, i as u64).unwrap();
        }
        assert!(map.spilled());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.get(*k).unwrap(), Some(i as u64), "{k:x}");
        }
    }

    /// The first value of a key wins, wherever it lives: memory, or disk after a spill.
    #[test]
    fn insert_new_keeps_the_first_value_in_memory_and_on_disk() {
        let mut map = SpillMap::with_cap(3);
        assert_eq!(map.insert_new(1, 10).unwrap(), None);
        assert_eq!(map.insert_new(1, 11).unwrap(), Some(10));
        assert_eq!(map.insert_new(2, 20).unwrap(), None);
        assert_eq!(map.insert_new(3, 30).unwrap(), None);
        assert!(!map.spilled());
        let room = map.memory.capacity();
        // The fourth key makes the map spill; the first three are on their way to disk.
        assert_eq!(map.insert_new(4, 40).unwrap(), None);
        assert!(map.spilled());
        assert_eq!(
            map.moving.as_ref().map(|m| m.entries.capacity()),
            Some(room),
            "the table did not grow to spill"
        );
        assert_eq!(map.insert_new(2, 21).unwrap(), Some(20));
        assert_eq!(map.insert_new(4, 41).unwrap(), Some(40));
        assert_eq!(map.insert_new(5, 50).unwrap(), None);
        for (k, v) in [(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)] {
            assert_eq!(map.get(k).unwrap(), Some(v), "{k}");
        }
    }

    /// After a spill, a key that was never spilled is answered by the filter, without the file.
    #[test]
    fn keys_never_spilled_are_answered_from_memory() {
        let spread = |i: u128| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let mut map = SpillMap::with_cap(4);
        for i in 0..5 {
            map.insert(spread(i), 1).unwrap();
        }
        assert!(map.spilled());
        // Without its entries, the file can only answer with an error.
        map.settle().unwrap();
        map.disk.as_ref().unwrap().file.set_len(0).unwrap();
        for i in 100..1100 {
            assert_eq!(map.get(spread(i)).unwrap(), None, "{i}");
        }
        // The entry still in memory needs no file; the spilled ones do.
        assert_eq!(map.get(spread(4)).unwrap(), Some(1));
        for i in 0..4 {
            assert!(map.get(spread(i)).is_err(), "{i}");
        }
    }

    /// While a spill is under way, new entries go to a small table; once it is full, the map
    /// waits for the move and takes the big table back, and every entry stays readable.
    #[test]
    fn entries_that_come_during_a_spill_join_the_big_table_after_it() {
        let mut map = SpillMap::with_cap(16);
        for k in 0..16u128 {
            map.insert(k << 64 | k, 1).unwrap();
        }
        let room = map.memory.capacity();
        map.insert(100, 2).unwrap();
        assert!(map.moving.is_some(), "the 17th entry starts the move");
        assert!(
            map.memory.capacity() < room,
            "new entries go to a small table"
        );
        assert_eq!(map.get(5 << 64 | 5).unwrap(), Some(1), "a moving entry");
        map.insert(101, 2).unwrap();
        // The small table holds two (16 / 8): the third new entry waits for the move.
        map.insert(102, 2).unwrap();
        assert!(map.moving.is_none());
        assert_eq!(map.memory.capacity(), room, "the big table is back");
        assert_eq!(map.memory.len(), 3);
        for k in 0..16u128 {
            assert_eq!(map.get(k << 64 | k).unwrap(), Some(1), "{k}");
        }
        for k in 100..103u128 {
            assert_eq!(map.insert_new(k, 9).unwrap(), Some(2), "{k}");
        }
    }

    /// Several spills of several blocks each, keys set again after their spill, and keys that are
    /// nowhere but sort before, between and after the spilled ones: every lookup agrees with a
    /// plain map.
    #[test]
    fn lookups_across_runs_and_blocks_agree_with_a_plain_map() {
        let spread = |i: u128| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let mut map = SpillMap::with_cap(3 * BLOCK + 7);
        let mut plain = HashMap::new();
        for i in 0..6000u128 {
            // Every seventh step sets an earlier key again (often a spilled one).
            let key = if i % 7 == 6 { spread(i / 3) } else { spread(i) };
            map.insert(key, i as u64).unwrap();
            plain.insert(key, i as u64);
        }
        map.settle().unwrap();
        assert!(map.disk.as_ref().unwrap().runs.len() >= 5);
        for i in 0..6000u128 {
            assert_eq!(
                map.get(spread(i)).unwrap(),
                plain.get(&spread(i)).copied(),
                "{i}"
            );
        }
        for key in [0, 1, u128::MAX, u128::MAX - 1, 1 << 64, (1 << 64) - 1] {
            assert_eq!(map.get(key).unwrap(), plain.get(&key).copied(), "{key:x}");
        }
        for i in 6000..9000u128 {
            assert_eq!(map.get(spread(i)).unwrap(), None, "{i}");
        }
    }

    /// `insert_new` over several spills, with keys met again in memory, while moving and on
    /// disk: the first value of each key wins, as in a plain map's `entry().or_insert()`.
    #[test]
    fn insert_new_across_spills_agrees_with_a_plain_map() {
        let spread = |i: u128| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let mut map = SpillMap::with_cap(2 * BLOCK + 3);
        let mut plain = HashMap::new();
        for i in 0..5000u128 {
            // Every fifth step offers an earlier key again, recent or long spilled.
            let key = match i % 5 {
                4 => spread(i / 2),
                3 => spread(i - 2),
                _ => spread(i),
            };
            let first = plain.get(&key).copied();
            plain.entry(key).or_insert(i as u64);
            assert_eq!(map.insert_new(key, i as u64).unwrap(), first, "{i}");
        }
        map.settle().unwrap();
        assert!(map.disk.as_ref().unwrap().runs.len() >= 5);
        for (key, value) in &plain {
            assert_eq!(map.get(*key).unwrap(), Some(*value), "{key:x}");
        }
    }

    /// A table past a few thousand entries takes its size at the cap at once and keeps it to the
    /// spill; a smaller map stays small.
    #[test]
    fn the_memory_table_takes_its_full_size_once_and_only_past_a_few_thousand() {
        let mut map = SpillMap::with_cap(100_000);
        for k in 0..FULL_SIZE_AT as u128 {
            map.insert_new(k, 1).unwrap();
        }
        assert!(
            map.memory.capacity() < 4 * FULL_SIZE_AT,
            "a small map stays small"
        );
        map.insert(u128::MAX, 1).unwrap();
        let full = map.memory.capacity();
        assert!(full >= 100_000, "{full}");
        for k in FULL_SIZE_AT as u128..99_999 {
            map.insert_new(k << 64 | k, 1).unwrap();
        }
        assert_eq!(
            map.memory.capacity(),
            full,
            "no growth on the way to the cap"
        );
        assert!(!map.spilled());
    }

    #[test]
    fn an_entry_of_the_memory_table_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<(Key, u64)>(), 24);
        assert_eq!(Key::of(1 << 64 | 2), Key { hi: 1, lo: 2 });
    }

    #[test]
    fn a_map_under_its_cap_never_touches_disk() {
        let mut map = SpillMap::with_cap(100);
        for k in 0..100u128 {
            map.insert(k, 1).unwrap();
        }
        map.insert(5, 2).unwrap();
        assert!(!map.spilled());
        assert_eq!(map.cap(), 100);
    }
}
