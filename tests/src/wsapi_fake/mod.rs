//! A FAKE HPE 3PAR WSAPI 1.x server for tests: no 3PAR array can exist here.
//!
//! Written from the public API reference only (HPE 3PAR Web Services API
//! Developer Guide; the request shapes python-3parclient and the OpenStack
//! Cinder driver send), covering just what recman's `3par` provider uses:
//!
//! - `POST /api/v1/credentials {"user","password"}` → 201 `{"key"}`; wrong
//!   user or password → 403 `{"code":5,"desc":…}` (INV_USER_PASS).
//!   `DELETE /api/v1/credentials/<key>` logs out.
//! - Every other call needs `X-HP3PAR-WSAPI-SessionKey`: missing → 401,
//!   unknown or expired → 403, both with code 6 and "invalid session key"
//!   (the number is our reading of the guide; a client re-logs in on either
//!   status whatever the code).
//! - `GET /volumes[?query="copyOf EQ <base>"]`, `GET /volumes/<name>`,
//!   `DELETE /volumes/<name>` (404 code 23 NON_EXISTENT_VOL, 409 code 32
//!   HAS_CHILD when another volume is a copy of it).
//! - `POST /volumes/<base>` and `POST /volumesets/<set>` with
//!   `{"action":"createSnapshot","parameters":{"name","readOnly","comment",
//!   "expirationHours","retentionHours"}}` → 201. Names over 31 characters →
//!   400 code 57; an existing name → 409 code 22 EXISTENT_VOL; an unknown base
//!   → 404 code 23; an unknown set → 404 code 77 NON_EXISTENT_SET; hours
//!   outside 1..=43800 → 400 code 12 INV_INPUT. For a set the name is a
//!   pattern whose `@count@` becomes 0, 1, … in member order; all member
//!   copies are created or none. Virtual copies have `copyType` 3.
//! - `GET /volumesets/<set>` → `{"name","setmembers"}`.
//! - `GET /cpgs/<name>` → `{"name","SDUsage":{"usedMiB"},"SDGrowth":{"limitMiB","warningMiB"}}`
//!   (an unknown CPG → 404 code 15 NON_EXISTENT_CPG); a volume shows its `snapCPG`.
//!
//! Recovery (HP 3PAR Web Service API 1.3.1 Developer's Guide: "Promoting a
//! Virtual Copy", "Creating a VLUN", "Removing a VLUN", "Querying VLUNs",
//! the task and error-code tables; python-3parclient's `promoteVirtualCopy`,
//! `createVLUN`, `deleteVLUN`, `getTask` and its mock server for the numbers):
//!
//! - `PUT /volumes/<copy> {"action":4,"online":bool,"priority":1..3}`
//!   (PROMOTE_VIRTUAL_COPY) → 200 `{"taskid":n,"links":[…]}`: the copy's
//!   data goes back onto its base volume (the root of its `copyOf` chain).
//!   Refused: a base volume (409 INV_OPERATION_VV_BASE_VOLUME), `priority`
//!   with `online` (409 INV_OPERATION_PARAM_CONFLICT: "does not apply to
//!   online promote"), a priority outside 1..3 (400 code 46
//!   INV_INPUT_BAD_ENUM_VALUE), an offline promote while the base is
//!   exported (403 INV_OPERATION_VV_EXPORTED). The reference gives no
//!   numbers for the INV_OPERATION_* codes: the fake answers them with
//!   `code` 0 and the symbolic name at the start of `desc`. Not modelled:
//!   promote in progress, busy or stale volumes, remote copy, sizes.
//! - `PUT /volumes/<name> {"comment"}` ("Modifying a Volume"; only the
//!   comment, at most 511 characters, is modelled) → 200.
//! - `GET /tasks/<id>` → `{"id","type":4,"name","status",…}`, status 1 done,
//!   2 active, 3 cancelled, 4 failed; an unknown id → 404 code 145
//!   NON_EXISTENT_TASK, not a number → 400 code 39 INV_INPUT_WRONG_TYPE. A
//!   task reports active for [`FakeWsapi::set_task_polls`] reads, then done
//!   (the promote's data is in place when the PUT answers).
//! - `POST /volumes/<snap>` createSnapshot of a snapshot (a copy of a copy,
//!   `copyOf` the snapshot): a read-only copy of a read-only volume → 403
//!   INV_OPERATION_VV_READONLY_TO_READONLY_SNAP (code 0, as above).
//!   `DELETE /volumes/<name>` of an exported volume → 409 code 26 EXPORTED_VLUN.
//! - `POST /vluns {"volumeName","hostname","lun","autoLun","maxAutoLun",
//!   "noVcn","overrideLowerPriority"}` → 201, `Location:
//!   /api/v1/vluns/<volume>,<lun>,<host>`, no body. Missing volumeName or
//!   hostname → 400 code 40 INV_INPUT_MISSING_REQUIRED, missing lun without
//!   autoLun → 400 code 12 INV_INPUT, lun over 16384 → 400 code 28
//!   TOO_LARGE, unknown volume → 404 code 23, unknown host → 404 code 17
//!   NON_EXISTENT_HOST, a LUN already used on that host → 409 code 18
//!   EXISTENT_LUN; `autoLun` takes the lowest free LUN from `lun` (up to
//!   `maxAutoLun`, 0 = no limit), none free → 409 AUTO_LUN_ID_UNAVAILABLE
//!   (code 0). Exporting the same volume to the same host again with
//!   `autoLun` makes a second VLUN, as the array does. `portPos` (port and
//!   matched-set VLUNs) and host sets are not modelled (400 code 12).
//! - `GET /vluns[?query="volumeName EQ <v>"]` → `{"total","members":[{"volumeName",
//!   "lun","hostname","active":true,"type":3}]}`.
//! - `DELETE /vluns/<volume>,<lun>,<host>` → 200; no such VLUN → 404 code
//!   19 NON_EXISTENT_VLUN, an unknown host → 404 code 17.
//! - Hosts exist only as names ([`FakeWsapi::add_host`]); a volume's data is a
//!   test marker ([`FakeWsapi::set_content`]), not a WSAPI field: a copy
//!   starts with its parent's, a promote puts the copy's on the base.
//!
//! Test knobs: injected 503s, latency per request, session expiry, a log of
//! every request. Serves plain HTTP or HTTPS (rustls, ring provider) on
//! 127.0.0.1 with a free port.

mod server;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use server::{FakeWsapi, TlsFiles};

/// Longest volume name the array accepts.
pub const MAX_NAME: usize = 31;
/// `copyType` of a base volume, a physical copy and a virtual copy (snapshot).
pub const BASE_VOLUME: u8 = 1;
pub const VIRTUAL_COPY: u8 = 3;

/// One volume as the fake stores it (and as tests inspect it).
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub id: u64,
    pub name: String,
    pub copy_of: Option<String>,
    pub copy_type: u8,
    pub read_only: bool,
    pub comment: Option<String>,
    pub expiration_hours: Option<u64>,
    pub retention_hours: Option<u64>,
    pub creation_time_sec: u64,
    /// The CPG its virtual copies go to (`snapCPG`), when set.
    pub snap_cpg: Option<String>,
    /// The data, as a test marker (not a WSAPI field).
    pub content: Option<String>,
}

/// One VLUN (an export of a volume to a host at a LUN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vlun {
    pub volume_name: String,
    pub lun: u32,
    pub hostname: String,
}

/// One task of the array (promotes only).
#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub name: String,
    /// Reads still to answer "active" (2) before "done" (1).
    pub polls_left: u32,
}

/// One CPG's snapshot space (`SDUsage.usedMiB`, `SDGrowth.limitMiB`/`warningMiB`; 0 = none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cpg {
    pub used_mib: i64,
    pub limit_mib: i64,
    pub warning_mib: i64,
}

/// One request as received (for assertions on what a client sent).
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query, e.g. `/api/v1/volumes/db01`.
    pub uri: String,
    pub session_key: Option<String>,
    pub body: String,
    /// HTTP status the fake answered.
    pub status: u16,
}

#[derive(Default)]
pub(crate) struct State {
    pub user: String,
    pub password: String,
    pub volumes: BTreeMap<String, Volume>,
    pub sets: BTreeMap<String, Vec<String>>,
    pub cpgs: BTreeMap<String, Cpg>,
    pub sessions: HashSet<String>,
    pub hosts: BTreeSet<String>,
    pub vluns: Vec<Vlun>,
    pub tasks: BTreeMap<u64, Task>,
    pub next_task: u64,
    pub task_polls: u32,
    pub next_id: u64,
    pub logins: u64,
    pub logouts: u64,
    pub inject_503: u32,
    pub latency: Duration,
    pub log: Vec<Logged>,
}

/// Shared handle to the fake's state (cheap to clone).
#[derive(Clone, Default)]
pub(crate) struct Shared(pub Arc<Mutex<State>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    pub fn add_volume(&mut self, name: &str, copy_of: Option<&str>, copy_type: u8) -> &mut Volume {
        self.next_id += 1;
        let v = Volume {
            id: self.next_id,
            name: name.to_string(),
            copy_of: copy_of.map(str::to_string),
            copy_type,
            read_only: false,
            comment: None,
            expiration_hours: None,
            retention_hours: None,
            creation_time_sec: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            snap_cpg: None,
            content: None,
        };
        self.volumes.insert(name.to_string(), v);
        self.volumes.get_mut(name).expect("just inserted")
    }
}

impl FakeWsapi {
    /// Adds (or replaces) a CPG with its snapshot space.
    pub fn add_cpg(&self, name: &str, cpg: Cpg) {
        self.shared().lock().cpgs.insert(name.to_string(), cpg);
    }

    /// Sets the `snapCPG` of volume `vol`.
    pub fn set_snap_cpg(&self, vol: &str, cpg: &str) {
        if let Some(v) = self.shared().lock().volumes.get_mut(vol) {
            v.snap_cpg = Some(cpg.to_string());
        }
    }

    /// Adds a base volume.
    pub fn add_volume(&self, name: &str) {
        self.shared().lock().add_volume(name, None, BASE_VOLUME);
    }

    /// Adds a volume set of existing (or new) base volumes.
    pub fn add_volume_set(&self, name: &str, members: &[&str]) {
        let mut st = self.shared().lock();
        for m in members {
            if !st.volumes.contains_key(*m) {
                st.add_volume(m, None, BASE_VOLUME);
            }
        }
        st.sets
            .insert(name.to_string(), members.iter().map(|m| m.to_string()).collect());
    }

    /// A writable virtual copy `child` of `parent` (makes `parent` HAS_CHILD).
    pub fn add_child(&self, parent: &str, child: &str) {
        self.shared().lock().add_volume(child, Some(parent), VIRTUAL_COPY);
    }

    /// The array removes `name` by itself, as its `expiration_hours` does
    /// (or an administrator, by hand): recman is not asked. True if it was there.
    pub fn expire(&self, name: &str) -> bool {
        self.shared().lock().volumes.remove(name).is_some()
    }

    /// Adds a host (by name: paths and personas are not modelled).
    pub fn add_host(&self, name: &str) {
        self.shared().lock().hosts.insert(name.to_string());
    }

    /// Sets the data marker of volume `vol` (what a host would have written).
    pub fn set_content(&self, vol: &str, content: &str) {
        if let Some(v) = self.shared().lock().volumes.get_mut(vol) {
            v.content = Some(content.to_string());
        }
    }

    /// The data marker of volume `vol`.
    pub fn content(&self, vol: &str) -> Option<String> {
        self.shared()
            .lock()
            .volumes
            .get(vol)
            .and_then(|v| v.content.clone())
    }

    /// Exports `vol` to `host` at `lun` (as production is exported), adding
    /// the host if needed.
    pub fn add_vlun(&self, vol: &str, lun: u32, host: &str) {
        let mut st = self.shared().lock();
        st.hosts.insert(host.to_string());
        st.vluns.push(Vlun {
            volume_name: vol.to_string(),
            lun,
            hostname: host.to_string(),
        });
    }

    /// Every VLUN, in creation order.
    pub fn vluns(&self) -> Vec<Vlun> {
        self.shared().lock().vluns.clone()
    }

    /// Tasks report "active" for this many reads before "done".
    pub fn set_task_polls(&self, n: u32) {
        self.shared().lock().task_polls = n;
    }

    /// A copy of every volume.
    pub fn volumes(&self) -> Vec<Volume> {
        self.shared().lock().volumes.values().cloned().collect()
    }

    pub fn volume(&self, name: &str) -> Option<Volume> {
        self.shared().lock().volumes.get(name).cloned()
    }

    /// Names of the virtual copies of `base`, sorted.
    pub fn snapshots_of(&self, base: &str) -> Vec<String> {
        self.shared()
            .lock()
            .volumes
            .values()
            .filter(|v| v.copy_of.as_deref() == Some(base) && v.copy_type == VIRTUAL_COPY)
            .map(|v| v.name.clone())
            .collect()
    }

    /// The next `n` requests (any path) are answered 503.
    pub fn inject_503(&self, n: u32) {
        self.shared().lock().inject_503 = n;
    }

    /// Every request waits this long before it is handled.
    pub fn set_latency(&self, d: Duration) {
        self.shared().lock().latency = d;
    }

    /// Forgets every session key, as the array does after 15 idle minutes.
    pub fn expire_sessions(&self) {
        self.shared().lock().sessions.clear();
    }

    /// Session keys currently valid.
    pub fn live_sessions(&self) -> usize {
        self.shared().lock().sessions.len()
    }

    /// Successful logins and logouts so far.
    pub fn logins(&self) -> u64 {
        self.shared().lock().logins
    }

    pub fn logouts(&self) -> u64 {
        self.shared().lock().logouts
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared().lock().log.clone()
    }
}
