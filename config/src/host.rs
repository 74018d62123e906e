//! Host checks of a config: the `exec` programs it names (each must exist and
//! be executable on the host that runs it, [`Config::check_programs`]), no
//! log or state directory on a filesystem a target freezes, compared by
//! device ([`Config::check_not_frozen`]), and paths compared by where they
//! really are ([`resolve`]: `..` and symlinks resolved), so a copy `dest`
//! written as `src/../src/x` is seen inside `src`.

use std::path::{Component, Path, PathBuf};

use recman_events::{PoolName, TargetId};
use toml::de::DeTable;

use crate::{field, join, Config, ConfigError, Cx};

/// One `exec` program of the config (the first element of an argv).
#[derive(Clone, Debug, PartialEq)]
pub struct HookProgram {
    pub target: TargetId,
    /// The pool whose workers run it (writer hooks: `pool`; provider hooks:
    /// `provider_pool`).
    pub pool: PoolName,
    /// Dotted key, e.g. `target[0].writer.freeze`.
    pub key: String,
    pub program: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Cx<'_> {
    /// Records the programs of the argv keys `keys` of table `t`.
    pub(crate) fn note_hooks(
        &self,
        t: &DeTable<'_>,
        path: &str,
        keys: &[&str],
        target: &TargetId,
        pool: &PoolName,
    ) {
        for key in keys {
            let Some(v) = field(t, key) else { continue };
            let toml::de::DeValue::Array(items) = v.get_ref() else {
                continue;
            };
            let Some(first) = items.first() else { continue };
            let toml::de::DeValue::String(program) = first.get_ref() else {
                continue;
            };
            if program.contains('{') {
                continue; // a placeholder: known only when it runs
            }
            let (line, column) = self.line_column(first.span().start);
            self.hooks.borrow_mut().push(HookProgram {
                target: target.clone(),
                pool: pool.clone(),
                key: join(path, key),
                program: program.to_string(),
                file: self.file.clone(),
                line,
                column,
            });
        }
    }
}

impl Config {
    /// Checks that every `exec` program run by one of `pools` (all of them
    /// with `None`) exists and is executable here: a program with a `/` as
    /// that path, a bare name on `PATH`, as the worker runs it. The error
    /// names file, line and key. Run by `validate-config` and by every
    /// command that runs workers, for the pools it serves; not by an engine
    /// alone, whose host does not run the hooks.
    pub fn check_programs(&self, pools: Option<&[PoolName]>) -> Result<(), ConfigError> {
        for h in &self.hooks {
            if pools.is_some_and(|p| !p.contains(&h.pool)) {
                continue;
            }
            if let Err(why) = executable(&h.program) {
                return Err(ConfigError::Invalid {
                    file: h.file.clone(),
                    line: h.line,
                    column: h.column,
                    key: h.key.clone(),
                    message: format!(
                        "{why} (target {} runs it in pool {}; fix the path or install it)",
                        h.target, h.pool
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Config {
    /// Refuses any of `dirs` (what, path), and the freeze-marker `state_dir`
    /// of every `fsfreeze` writer of `pools` (all with `None`), that lies on
    /// a filesystem one of those writers freezes: an append or a marker
    /// written there would block until the thaw, and the thaw waits on it.
    /// Devices are compared (`st_dev`), not paths, so bind mounts and
    /// symlinks cannot hide it. A directory that does not exist yet is
    /// judged by its nearest existing parent; a mountpoint that does not
    /// exist on this host is skipped (it is frozen elsewhere).
    pub fn check_not_frozen(&self, dirs: &[(&str, &Path)], pools: Option<&[PoolName]>) -> Result<(), String> {
        let mut frozen = Vec::new();
        let mut all_dirs: Vec<(String, PathBuf)> = dirs
            .iter()
            .map(|(w, p)| (w.to_string(), p.to_path_buf()))
            .collect();
        for t in &self.targets {
            if pools.is_some_and(|p| !p.contains(&t.pool)) {
                continue;
            }
            let fz = match &t.writer {
                crate::WriterConfig::FsFreeze(f) => Some(f),
                crate::WriterConfig::Postgres(p) => p.fsfreeze.as_ref(),
                _ => None,
            };
            if let Some(f) = fz {
                if let Some(dev) = device_of(&f.mountpoint, false) {
                    frozen.push((t.id.clone(), f.mountpoint.clone(), dev));
                }
                all_dirs.push((
                    format!("the freeze markers of target {} (state_dir)", t.id),
                    f.state_dir.clone(),
                ));
            }
        }
        for (what, dir) in &all_dirs {
            let Some(dev) = device_of(dir, true) else { continue };
            if let Some((id, mp, _)) = frozen.iter().find(|(_, _, d)| *d == dev) {
                return Err(format!(
                    "{what} {} is on the filesystem that target {id} freezes ({} is on the same device): \
                     writing there would block while it is frozen, and the thaw would wait on it; \
                     put it on another filesystem",
                    dir.display(),
                    mp.display()
                ));
            }
        }
        Ok(())
    }
}

/// The device (`st_dev`) of `p`, or with `parent` of its nearest existing
/// ancestor; `None` when nothing of it exists.
fn device_of(p: &Path, parent: bool) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut at = Some(p);
    while let Some(q) = at {
        if let Ok(m) = std::fs::metadata(q) {
            return Some(m.dev());
        }
        if !parent {
            return None;
        }
        at = q.parent().filter(|x| !x.as_os_str().is_empty());
    }
    None
}

/// Why `program` cannot be run here, if it cannot.
fn executable(program: &str) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|d| d.join(program)).collect()
    };
    let mut seen = None;
    for c in &candidates {
        match std::fs::metadata(c) {
            Ok(m) if m.is_file() && is_exec(&m) => return Ok(c.clone()),
            Ok(m) if m.is_file() => seen = Some(format!("{} is not executable (chmod +x?)", c.display())),
            Ok(_) => seen = Some(format!("{} is not a file", c.display())),
            Err(_) => {}
        }
    }
    Err(seen.unwrap_or_else(|| {
        if program.contains('/') {
            format!("program {program} does not exist")
        } else {
            format!("program \"{program}\" is not on PATH")
        }
    }))
}

#[cfg(unix)]
fn is_exec(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_exec(_: &std::fs::Metadata) -> bool {
    true
}

/// Where `p` really is: its longest existing ancestor canonicalized (symlinks
/// resolved), the rest with `.` and `..` applied by hand.
pub fn resolve(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest: Vec<Component<'_>> = Vec::new();
    let comps: Vec<Component<'_>> = p.components().collect();
    let mut n = comps.len();
    let base = loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            break c;
        }
        if n == 0 {
            break PathBuf::new();
        }
        n -= 1;
        rest.insert(0, comps[n]);
        existing = comps[..n].iter().collect();
        if existing.as_os_str().is_empty() {
            break PathBuf::new();
        }
    };
    let mut out = base;
    for c in rest {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_applies_dotdot_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        assert_eq!(resolve(&root.join("src/../src/new/x")), root.join("src/new/x"));
        assert_eq!(resolve(&root.join("a/./b/../c")), root.join("a/c"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("src"), root.join("link")).unwrap();
            assert_eq!(resolve(&root.join("link/snaps")), root.join("src/snaps"));
        }
    }
}
