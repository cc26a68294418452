//! The subscription cache: which LicenseSpring license belongs to which Stripe subscription, kept
//! in `CACHE_PATH` as the tutorial's JSON array (oldest first), so a tutorial's `cache.json` is read
//! as it is and this server's file reads back in the tutorial.
//!
//! - Reads are answered from memory: a `HashMap` lookup that never waits for a write.
//! - Every change is on disk before it is acknowledged: the whole file is written to a temporary
//!   file beside it, fsynced, renamed over the old one, and the directory fsynced, so a crash at any
//!   moment leaves either the old file or the new one. Memory changes only after the write succeeded.
//! - Group commit: one writer thread takes every change queued while it was writing, applies them
//!   in arrival order, writes and fsyncs once, then answers each caller.
//! - A file that exists but is not this format is refused and never touched.
//!
//! The billing flows use it through [`crate::store::Store`], as they use PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::metrics;
use crate::model::{IntervalUnit, LicenseId, LicenseKey, SubscriptionId};

/// One cached subscription, in the tutorial's shape; keys this server does not know are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub sub_id: SubscriptionId,
    pub license_key: LicenseKey,
    /// The tutorial stores the price's interval unit (`"month"`), without its count. It is kept as
    /// written, as a string, so any tutorial file loads; [`CacheEntry::interval_unit`] reads it.
    pub interval: String,
    pub license_id: LicenseId,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CacheEntry {
    pub fn new(
        sub_id: SubscriptionId,
        license_key: LicenseKey,
        interval: IntervalUnit,
        license_id: LicenseId,
    ) -> Self {
        CacheEntry {
            sub_id,
            license_key,
            interval: interval.as_str().to_owned(),
            license_id,
            extra: Map::new(),
        }
    }

    /// The interval unit, if `interval` names one (`day`, `week`, `month`, `year`; any case).
    pub fn interval_unit(&self) -> Option<IntervalUnit> {
        IntervalUnit::parse(&self.interval.trim().to_ascii_lowercase())
    }
}

/// Why the cache could not be opened or changed. Every message names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// The file exists but is not a cache file; it has been left exactly as it was.
    #[error("the cache file {} is not usable: {fault}. It was left unchanged: fix it, or move it away to start empty", path.display())]
    Corrupt { path: PathBuf, fault: String },
    #[error("cannot {action} the cache file {}: {error}", path.display())]
    Io { path: PathBuf, action: &'static str, error: Arc<io::Error> },
    /// The writer thread is gone (it panicked); no change can be made durable any more.
    #[error("the cache file {} can no longer be written: its writer stopped", path.display())]
    WriterStopped { path: PathBuf },
}

/// The file-backed store. Cheap to clone; every clone shares the same entries and writer.
#[derive(Clone)]
pub struct SubscriptionCache {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// What is on disk. Locked only for O(1) reads and to apply a committed batch.
    entries: Arc<RwLock<Entries>>,
    changes: mpsc::Sender<Job>,
    /// The writer thread, to tell whether it still runs ([`SubscriptionCache::check`]).
    writer: std::thread::JoinHandle<()>,
    /// How many times the file was written: lets the tests see group commit at work.
    #[cfg(test)]
    writes: Arc<AtomicU64>,
}

impl std::fmt::Debug for SubscriptionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionCache").field("path", &self.shared.path).finish_non_exhaustive()
    }
}

impl SubscriptionCache {
    /// Loads `path`, creating it as `[]` when missing. At most `capacity` entries are kept (at least
    /// one); a file holding more keeps them until the next insert drops the oldest.
    pub fn open(path: impl Into<PathBuf>, capacity: usize) -> Result<SubscriptionCache, CacheError> {
        let path = path.into();
        let entries = match fs::read(&path) {
            Ok(bytes) => Entries::parse(&bytes, capacity.max(1))
                .map_err(|fault| CacheError::Corrupt { path: path.clone(), fault })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let empty = Entries::new(capacity.max(1));
                let mut bytes = Vec::new();
                empty.write_json(&mut bytes);
                write_durably(&path, &bytes).map_err(|e| io_error(&path, "create", e))?;
                empty
            }
            Err(error) => return Err(io_error(&path, "read", error)),
        };
        let entries = Arc::new(RwLock::new(entries));
        let (changes, queue) = mpsc::channel();
        #[cfg(test)]
        let writes = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path: path.clone(),
            published: entries.clone(),
            queue,
            #[cfg(test)]
            writes: writes.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("cache-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| io_error(&path, "start the writer for", e))?;
        Ok(SubscriptionCache {
            shared: Arc::new(Shared {
                path,
                entries,
                changes,
                writer,
                #[cfg(test)]
                writes,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// O(1), from memory; never waits for a write in progress.
    pub fn get(&self, sub_id: &SubscriptionId) -> Option<CacheEntry> {
        self.read().get(sub_id).cloned()
    }

    /// Every entry, oldest first.
    pub fn list(&self) -> Vec<CacheEntry> {
        self.read().iter().cloned().collect()
    }

    /// The newest `limit` entries, newest first, and how many there are in all (without copying
    /// the others).
    pub fn newest(&self, limit: usize) -> (Vec<CacheEntry>, usize) {
        let entries = self.read();
        (entries.iter().rev().take(limit).cloned().collect(), entries.by_sub.len())
    }

    pub fn len(&self) -> usize {
        self.read().by_sub.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `entry` (replacing one with the same `sub_id` where it stands, else appending it and
    /// dropping the oldest beyond capacity). Answers once the change is on disk.
    pub async fn insert(&self, entry: CacheEntry) -> Result<(), CacheError> {
        metrics::timed_store_write(STORE, "insert", self.change(Change::Insert(entry))).await.map(drop)
    }

    /// Removes the subscription's entry and answers it. Answers once the change is on disk.
    pub async fn remove(&self, sub_id: &SubscriptionId) -> Result<Option<CacheEntry>, CacheError> {
        metrics::timed_store_write(STORE, "remove", self.change(Change::Remove(sub_id.clone()))).await
    }

    /// What start-up says of this store: the file (as an absolute path) and how full it is.
    pub fn description(&self) -> String {
        let path = std::path::absolute(self.path()).unwrap_or_else(|_| self.path().to_owned());
        let entries = self.read();
        format!(
            "cache file {} ({} of at most {} subscriptions)",
            path.display(),
            entries.by_sub.len(),
            entries.capacity
        )
    }

    /// Whether a change can still be made durable (what `GET /readyz` asks): the writer thread
    /// runs, the path is a file (or missing: the next write creates it), and its directory takes
    /// a new file, as every write needs.
    pub async fn check(&self) -> Result<(), CacheError> {
        if self.shared.writer.is_finished() {
            return Err(CacheError::WriterStopped { path: self.shared.path.clone() });
        }
        let path = self.shared.path.clone();
        match tokio::task::spawn_blocking(move || probe(&path)).await {
            Ok(result) => result,
            Err(error) => Err(io_error(&self.shared.path, "check", io::Error::other(error.to_string()))),
        }
    }

    /// Queues a change for the writer and waits for it to be durable. If the caller stops waiting,
    /// the change is still made.
    async fn change(&self, change: Change) -> Result<Option<CacheEntry>, CacheError> {
        let stopped = || CacheError::WriterStopped { path: self.shared.path.clone() };
        let (done, answer) = oneshot::channel();
        self.shared.changes.send(Job { change, done }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // Only the writer changes the entries, with plain map operations; a poisoned lock still
        // guards usable data.
        self.shared.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every entry of the cache file at `path`, oldest first (for `migrate-cache`): a missing or
/// corrupt file is an error, and the file is only read.
pub fn read_entries(path: &Path) -> Result<Vec<CacheEntry>, CacheError> {
    let bytes = fs::read(path).map_err(|e| io_error(path, "read", e))?;
    let entries = Entries::parse(&bytes, usize::MAX)
        .map_err(|fault| CacheError::Corrupt { path: path.to_owned(), fault })?;
    Ok(entries.iter().cloned().collect())
}

/// The cache file as it was read, for the commands (`reconcile`, `replay`) that run beside a server
/// owning the file: lookups read it, changes are kept in memory only and never written, so the
/// server's writes are never overwritten. A subscription whose entry a command would have written
/// is found by the server through its license key, and recorded at its next webhook.
pub struct CacheSnapshot {
    entries: RwLock<HashMap<SubscriptionId, CacheEntry>>,
}

impl CacheSnapshot {
    /// Reads `path` (a missing file is an empty cache); a corrupt one is refused, as at start.
    pub fn read(path: &Path) -> Result<CacheSnapshot, CacheError> {
        let entries = match fs::read(path) {
            Ok(bytes) => Entries::parse(&bytes, usize::MAX)
                .map_err(|fault| CacheError::Corrupt { path: path.to_owned(), fault })?
                .by_sub
                .into_iter()
                .map(|(sub, (_, entry))| (sub, entry))
                .collect(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => return Err(io_error(path, "read", error)),
        };
        Ok(CacheSnapshot { entries: RwLock::new(entries) })
    }
}

impl CacheSnapshot {
    pub fn get(&self, sub_id: &SubscriptionId) -> Option<CacheEntry> {
        self.entries.read().expect("snapshot poisoned").get(sub_id).cloned()
    }

    pub fn insert(&self, entry: CacheEntry) {
        self.entries.write().expect("snapshot poisoned").insert(entry.sub_id.clone(), entry);
    }

    pub fn remove(&self, sub_id: &SubscriptionId) -> Option<CacheEntry> {
        self.entries.write().expect("snapshot poisoned").remove(sub_id)
    }

    pub fn list(&self) -> Vec<CacheEntry> {
        self.entries.read().expect("snapshot poisoned").values().cloned().collect()
    }
}

enum Change {
    Insert(CacheEntry),
    Remove(SubscriptionId),
}

struct Job {
    change: Change,
    done: oneshot::Sender<Result<Option<CacheEntry>, CacheError>>,
}

/// The entries in insertion order with an O(1) index: each entry has a sequence number; `order`
/// maps sequence numbers to ids (oldest first) and to the entry as the file holds it, `by_sub`
/// maps ids to their entry. Each entry is rendered once, when it changes, so writing the whole
/// file is a concatenation rather than a serialization of every entry (ten times less CPU for a
/// large cache; see `benches/cache.rs`).
#[derive(Clone)]
struct Entries {
    by_sub: HashMap<SubscriptionId, (u64, CacheEntry)>,
    order: BTreeMap<u64, (SubscriptionId, Box<[u8]>)>,
    next_seq: u64,
    capacity: usize,
}

impl Entries {
    fn new(capacity: usize) -> Entries {
        Entries { by_sub: HashMap::new(), order: BTreeMap::new(), next_seq: 0, capacity }
    }

    /// Reads a cache file, or says what is wrong with it.
    fn parse(bytes: &[u8], capacity: usize) -> Result<Entries, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
        let Value::Array(items) = value else {
            return Err(format!("expected a JSON array of entries, found {}", json_kind(&value)));
        };
        let mut entries = Entries::new(capacity);
        for (index, item) in items.into_iter().enumerate() {
            let entry: CacheEntry = serde_json::from_value(item).map_err(|e| {
                format!("entry {index}: {e} (expected {{\"sub_id\", \"license_key\", \"interval\", \"license_id\"}})")
            })?;
            // While loading, an entry's sequence number is its index in the file.
            if let Some((first, _)) = entries.by_sub.get(&entry.sub_id) {
                return Err(format!("entry {index} repeats the sub_id {} of entry {first}", entry.sub_id));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn get(&self, sub_id: &SubscriptionId) -> Option<&CacheEntry> {
        self.by_sub.get(sub_id).map(|(_, entry)| entry)
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = &CacheEntry> {
        self.order.values().filter_map(|(sub_id, _)| self.get(sub_id))
    }

    fn push(&mut self, entry: CacheEntry) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, (entry.sub_id.clone(), render(&entry)));
        self.by_sub.insert(entry.sub_id.clone(), (seq, entry));
    }

    /// Applies one change; answers whether anything changed, and the removed entry for a removal.
    /// Deterministic, so the writer's copy and the published copy stay identical.
    fn apply(&mut self, change: &Change) -> (bool, Option<CacheEntry>) {
        match change {
            Change::Insert(entry) => match self.by_sub.get_mut(&entry.sub_id) {
                Some((_, stored)) if stored == entry => (false, None),
                Some((seq, stored)) => {
                    *stored = entry.clone();
                    if let Some((_, json)) = self.order.get_mut(seq) {
                        *json = render(entry);
                    }
                    (true, None)
                }
                None => {
                    self.push(entry.clone());
                    while self.by_sub.len() > self.capacity {
                        let Some((_, (oldest, _))) = self.order.pop_first() else { break };
                        self.by_sub.remove(&oldest);
                    }
                    (true, None)
                }
            },
            Change::Remove(sub_id) => match self.by_sub.remove(sub_id) {
                Some((seq, entry)) => {
                    self.order.remove(&seq);
                    (true, Some(entry))
                }
                None => (false, None),
            },
        }
    }

    /// Replaces `bytes` with the file's bytes, formatted as Python's `json.dump` writes them (the
    /// tutorial's format). The caller keeps the buffer, so a large cache is not reallocated per write.
    fn write_json(&self, bytes: &mut Vec<u8>) {
        bytes.clear();
        bytes.push(b'[');
        for (index, (_, json)) in self.order.values().enumerate() {
            if index > 0 {
                bytes.extend_from_slice(b", ");
            }
            bytes.extend_from_slice(json);
        }
        bytes.push(b']');
    }
}

/// The single writer: takes every queued change, applies them to its own copy of the entries,
/// writes once, and only then publishes the batch and answers the callers.
struct Writer {
    path: PathBuf,
    published: Arc<RwLock<Entries>>,
    queue: mpsc::Receiver<Job>,
    #[cfg(test)]
    writes: Arc<AtomicU64>,
}

impl Writer {
    fn run(self) {
        // The entries as on disk; batches are applied here first and published after the write.
        let mut on_disk = self.published.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut file_bytes = Vec::new();
        // Ends when every `SubscriptionCache` clone has been dropped.
        while let Ok(first) = self.queue.recv() {
            let mut batch = vec![first];
            batch.extend(self.queue.try_iter());

            let mut changed = false;
            let answers: Vec<Option<CacheEntry>> = batch
                .iter()
                .map(|job| {
                    let (did_change, removed) = on_disk.apply(&job.change);
                    changed |= did_change;
                    removed
                })
                .collect();
            let written = if changed {
                on_disk.write_json(&mut file_bytes);
                write_durably(&self.path, &file_bytes).map_err(|e| io_error(&self.path, "write", e))
            } else {
                Ok(())
            };

            match written {
                Ok(()) => {
                    #[cfg(test)]
                    self.writes.fetch_add(u64::from(changed), Ordering::Relaxed);
                    if changed {
                        // Publishing replays the batch: O(changes), so readers barely wait.
                        let mut published = self.published.write().unwrap_or_else(|p| p.into_inner());
                        for job in &batch {
                            published.apply(&job.change);
                        }
                    }
                    for (job, answer) in batch.into_iter().zip(answers) {
                        let _ = job.done.send(Ok(answer));
                    }
                }
                Err(error) => {
                    // Nothing of this batch is on disk: forget it (O(n), on this rare path only).
                    on_disk = self.published.read().unwrap_or_else(|p| p.into_inner()).clone();
                    tracing::error!(%error, changes = batch.len(), "the cache file could not be written");
                    for job in batch {
                        let _ = job.done.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

/// One entry as the file holds it: Python `json.dump`'s format.
fn render(entry: &CacheEntry) -> Box<[u8]> {
    let mut json = Vec::with_capacity(128);
    // Only a map with non-string keys could fail, and an entry's keys are all strings.
    entry
        .serialize(&mut serde_json::Serializer::with_formatter(&mut json, PythonFormatter))
        .expect("a cache entry always serializes");
    json.into_boxed_slice()
}

/// Python `json.dump`'s default output: `", "` and `": "` separators, non-ASCII as `\uXXXX`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        // Ids and keys are ASCII: one vectorised check instead of a walk over the characters.
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut ascii_from = 0;
        for (at, c) in fragment.char_indices().filter(|(_, c)| !c.is_ascii()) {
            writer.write_all(&fragment.as_bytes()[ascii_from..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            ascii_from = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[ascii_from..])
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The store's name in the metrics.
const STORE: &str = "cache_file";

/// [`SubscriptionCache::check`]'s look at the disk: `path` is a file or missing, and a small file
/// can be created beside it (then removed; nothing is fsynced).
fn probe(path: &Path) -> Result<(), CacheError> {
    match fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => {
            return Err(io_error(path, "use", io::Error::other("it is not a regular file")));
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(path, "look at", error)),
    }
    let probe = temp_beside(path);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut file| file.write_all(b"[]"));
    let _ = fs::remove_file(&probe);
    written.map_err(|error| io_error(path, "create a file beside", error))
}

fn io_error(path: &Path, action: &'static str, error: io::Error) -> CacheError {
    CacheError::Io { path: path.to_owned(), action, error: Arc::new(error) }
}

/// Replaces `path` with `bytes` so that a crash at any moment leaves the old file or the new one:
/// a uniquely named temporary file in the same directory, fsynced, renamed over `path`, then the
/// directory fsynced so the rename itself survives a power loss. (If only that last fsync fails,
/// the new file may stay although the caller is told the change failed; the next write, made from
/// memory, brings the file back in line.)
/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A new name for a temporary file in `path`'s directory (`.cache.json.<pid>.<n>.tmp`): the
/// rename of a write stays on one file system, and no two writers or probes share one.
fn temp_beside(path: &Path) -> PathBuf {
    static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    directory_of(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let directory = directory_of(path);
    let temp = temp_beside(path);
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        // Keep the old file's permissions (best effort: a new file keeps the default ones).
        if let Ok(metadata) = fs::metadata(path) {
            let _ = file.set_permissions(metadata.permissions());
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        sync_directory(directory)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(unix)]
fn sync_directory(directory: &Path) -> io::Result<()> {
    fs::File::open(directory)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_directory: &Path) -> io::Result<()> {
    // Directories cannot be opened for fsync here; the rename is as durable as the OS makes it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUTORIAL: &str = include_str!("../tests/fixtures/cache/tutorial-cache.json");

    fn entry(n: u32) -> CacheEntry {
        CacheEntry::new(
            SubscriptionId(format!("sub_{n}")),
            LicenseKey(format!("KEY-{n:04}")),
            IntervalUnit::Month,
            LicenseId(1_764_000_000_000_000 + i64::from(n)),
        )
    }

    fn ids(entries: &[CacheEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.sub_id.as_str()).collect()
    }

    fn file_ids(path: &Path) -> Vec<String> {
        let entries: Vec<CacheEntry> =
            serde_json::from_slice(&fs::read(path).expect("cache file")).expect("cache JSON");
        entries.into_iter().map(|e| e.sub_id.0).collect()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn writes(cache: &SubscriptionCache) -> u64 {
        cache.shared.writes.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_missing_file_is_created_empty() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        let cache = SubscriptionCache::open(&path, 10).expect("opens");
        assert!(cache.is_empty());
        assert_eq!(fs::read_to_string(&path).expect("created"), "[]");
    }

    #[tokio::test]
    async fn the_tutorial_file_loads_and_is_written_back_in_its_own_format() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        fs::write(&path, TUTORIAL).expect("write");
        let cache = SubscriptionCache::open(&path, 100).expect("the tutorial's file loads");

        let listed = cache.list();
        assert_eq!(listed.len(), 5);
        assert_eq!(listed[0].sub_id.as_str(), "sub_1wLiIwKq3ZtR7pLmwm6vyRbG");
        assert_eq!(listed[0].license_key.as_str(), "2SKL-DVK6-ZSPC-VQSM");
        assert_eq!(listed[0].interval_unit(), Some(IntervalUnit::Month));
        assert_eq!(listed[2].interval_unit(), Some(IntervalUnit::Week));
        assert_eq!(listed[4].license_id, LicenseId(1764662120922975));
        let found = cache.get(&SubscriptionId("sub_1ZFqIfKq3ZtR7pLm4sAKxWeV".into())).expect("found");
        assert_eq!(found.license_id, LicenseId(1763904788439159));

        // Storing what is already there changes nothing, so nothing is written.
        cache.insert(listed[1].clone()).await.expect("same entry");
        assert_eq!(writes(&cache), 0);
        assert_eq!(fs::read_to_string(&path).expect("file"), TUTORIAL);

        // Appending writes the tutorial's bytes plus the new entry, formatted the same way.
        cache.insert(entry(6)).await.expect("insert");
        let expected = format!(
            "{}, {{\"sub_id\": \"sub_6\", \"license_key\": \"KEY-0006\", \"interval\": \"month\", \"license_id\": 1764000000000006}}]",
            TUTORIAL.strip_suffix(']').expect("an array")
        );
        assert_eq!(fs::read_to_string(&path).expect("file"), expected);
    }

    #[tokio::test]
    async fn extra_keys_are_kept_in_order_and_written_as_python_would() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        let original = r#"[{"sub_id": "sub_a", "license_key": "K-A", "interval": "Month", "license_id": 1, "note": "caf\u00e9 \ud83d\ude00", "seen": [1, {"b": null}], "ok": true}]"#;
        fs::write(&path, original).expect("write");
        let cache = SubscriptionCache::open(&path, 10).expect("opens");
        let a = cache.get(&SubscriptionId("sub_a".into())).expect("sub_a");
        assert_eq!(a.extra["note"], "café 😀");
        assert_eq!(a.interval_unit(), Some(IntervalUnit::Month), "read leniently");

        cache.insert(entry(2)).await.expect("insert");
        cache.remove(&SubscriptionId("sub_2".into())).await.expect("remove");
        assert_eq!(fs::read_to_string(&path).expect("file"), original, "round trip, byte for byte");
    }

    #[tokio::test]
    async fn the_oldest_entries_are_dropped_beyond_capacity_and_a_reinsert_stays_in_place() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        let cache = SubscriptionCache::open(&path, 3).expect("opens");
        for n in 1..=4 {
            cache.insert(entry(n)).await.expect("insert");
        }
        assert_eq!(ids(&cache.list()), ["sub_2", "sub_3", "sub_4"]);
        assert!(cache.get(&SubscriptionId("sub_1".into())).is_none());

        let mut renewed = entry(2);
        renewed.license_id = LicenseId(99);
        cache.insert(renewed).await.expect("re-insert");
        assert_eq!(ids(&cache.list()), ["sub_2", "sub_3", "sub_4"], "replaced where it stood");
        assert_eq!(cache.get(&SubscriptionId("sub_2".into())).map(|e| e.license_id), Some(LicenseId(99)));

        cache.insert(entry(5)).await.expect("insert");
        assert_eq!(ids(&cache.list()), ["sub_3", "sub_4", "sub_5"], "sub_2 is still the oldest");
        assert_eq!(file_ids(&path), ["sub_3", "sub_4", "sub_5"]);

        let removed = cache.remove(&SubscriptionId("sub_4".into())).await.expect("remove");
        assert_eq!(removed, Some(entry(4)));
        assert_eq!(cache.remove(&SubscriptionId("sub_4".into())).await.expect("again"), None);
        assert_eq!(file_ids(&path), ["sub_3", "sub_5"]);
    }

    #[tokio::test]
    async fn a_replaced_entry_is_written_with_its_new_values() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        let cache = SubscriptionCache::open(&path, 10).expect("opens");
        cache.insert(entry(1)).await.expect("insert");
        cache.insert(entry(2)).await.expect("insert");
        let mut replaced = entry(1);
        replaced.license_key = LicenseKey("NEW-KEY".into());
        cache.insert(replaced.clone()).await.expect("replace");

        let on_disk: Vec<CacheEntry> =
            serde_json::from_slice(&fs::read(&path).expect("cache file")).expect("cache JSON");
        assert_eq!(on_disk, [replaced, entry(2)]);
    }

    #[tokio::test]
    async fn a_reopened_cache_holds_the_same_entries() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        let before = {
            let cache = SubscriptionCache::open(&path, 10).expect("opens");
            for n in [3, 1, 2] {
                cache.insert(entry(n)).await.expect("insert");
            }
            cache.remove(&SubscriptionId("sub_1".into())).await.expect("remove");
            cache.list()
        };
        let reopened = SubscriptionCache::open(&path, 10).expect("reopens");
        assert_eq!(reopened.list(), before);
        assert_eq!(ids(&before), ["sub_3", "sub_2"]);
    }

    #[tokio::test]
    async fn files_that_are_not_a_cache_are_refused_and_left_unchanged() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not JSON"),
            (b"[{\"sub_id\": \"sub_a\", \"license_key\"", "not JSON"),
            (b"\xff\xfe[]", "not JSON"),
            (br#"{"sub_id": "sub_a", "license_key": "K", "interval": "month", "license_id": 1}"#, "expected a JSON array of entries, found an object"),
            (br#"["sub_a"]"#, "entry 0: invalid type: string"),
            (br#"[{"sub_id": "sub_a", "license_key": "K", "interval": "month"}]"#, "entry 0: missing field `license_id`"),
            (br#"[{"sub_id": "sub_a", "license_key": "K", "interval": "month", "license_id": "1"}]"#, "entry 0: invalid type: string \"1\", expected i64"),
            (br#"[{"sub_id": "sub_a", "license_key": "K", "interval": "month", "license_id": 1}, {"sub_id": "sub_a", "license_key": "L", "interval": "year", "license_id": 2}]"#, "entry 1 repeats the sub_id sub_a of entry 0"),
        ];
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        for (bytes, fault) in cases {
            fs::write(&path, bytes).expect("write");
            let error = SubscriptionCache::open(&path, 10).expect_err("refused");
            let message = error.to_string();
            assert!(matches!(error, CacheError::Corrupt { .. }), "{message}");
            assert!(message.contains(&path.display().to_string()), "names the file: {message}");
            assert!(message.contains(fault), "{message:?} should say {fault:?}");
            assert_eq!(fs::read(&path).expect("still there"), *bytes, "left byte for byte");
        }
        assert_eq!(names_in(dir.path()), ["cache.json"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_all_land_in_few_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.json");
        let cache = SubscriptionCache::open(&path, 2000).expect("opens");
        let tasks: Vec<_> = (0..1000)
            .map(|n| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.insert(entry(n)).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("insert");
        }
        assert_eq!(cache.len(), 1000);
        let mut on_disk = file_ids(&path);
        on_disk.sort();
        let mut expected: Vec<String> = (0..1000).map(|n| format!("sub_{n}")).collect();
        expected.sort();
        assert_eq!(on_disk, expected, "every insert is in the file");
        assert!(writes(&cache) < 1000, "group commit shares writes: {} writes", writes(&cache));
        assert_eq!(names_in(dir.path()), ["cache.json"], "no temporary file left behind");
        assert_eq!(SubscriptionCache::open(&path, 2000).expect("reopens").len(), 1000);
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing_in_memory() {
        let dir = tempfile::tempdir().expect("dir");
        let folder = dir.path().join("data");
        fs::create_dir(&folder).expect("mkdir");
        let path = folder.join("cache.json");
        let cache = SubscriptionCache::open(&path, 10).expect("opens");
        cache.insert(entry(1)).await.expect("insert");

        fs::remove_dir_all(&folder).expect("rm");
        let error = cache.insert(entry(2)).await.expect_err("cannot write");
        assert!(matches!(error, CacheError::Io { .. }), "{error}");
        assert!(error.to_string().contains(&path.display().to_string()), "{error}");
        let error = cache.remove(&SubscriptionId("sub_1".into())).await.expect_err("cannot write");
        assert!(matches!(error, CacheError::Io { .. }), "{error}");
        assert_eq!(ids(&cache.list()), ["sub_1"], "neither change is claimed");
        assert!(cache.get(&SubscriptionId("sub_2".into())).is_none());

        // Once the disk is back, the next change is written on top of what was durable.
        fs::create_dir(&folder).expect("mkdir again");
        cache.insert(entry(3)).await.expect("insert");
        assert_eq!(file_ids(&path), ["sub_1", "sub_3"]);
        assert_eq!(names_in(&folder), ["cache.json"]);
    }
}
