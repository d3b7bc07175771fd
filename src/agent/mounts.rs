//! The node agent's work on the node's file system: checking a bind against the rules, bind
//! mounts onto slots (read-only where asked), and finding and removing what is mounted.
//!
//! A read-only bind is made in a private staging directory, made read-only there, and then
//! moved onto the slot: a mount made on a shared slot is copied into the sandbox's mount
//! namespace at once, with the flags it has at that moment, and a later remount would not
//! reach the copy.

use std::{
    io,
    path::{Path, PathBuf},
};

use rustix::mount::{
    mount_bind, mount_change, mount_move, mount_remount, unmount, MountFlags,
    MountPropagationFlags, UnmountFlags,
};

use crate::spec::warm_pool::Bind;

/// Why a bind was refused or failed; the text is what the Pod's condition says.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{path}: {source_dir:?} {rule}")]
    Refused {
        path: String,
        source_dir: String,
        rule: String,
    },
    #[error("{path}: the Pod has no slot for it")]
    NoSlot { path: String },
    #[error("{path}: mounting {source_dir} failed: {cause}")]
    Mount {
        path: String,
        source_dir: String,
        cause: io::Error,
    },
}

/// Checks a bind's source as a cold create's host path is checked: an absolute path free of
/// `.` and `..` parts inside one of the allowed base directories, and (once it exists) still
/// inside it after symbolic links are resolved. Returns the base it lies in.
pub fn check_source<'a>(bind: &Bind, bases: &'a [PathBuf]) -> Result<&'a Path, BindError> {
    let refuse = |rule: &str| BindError::Refused {
        path: bind.path.clone(),
        source_dir: bind.source.clone(),
        rule: rule.into(),
    };
    let source = Path::new(&bind.source);
    // Checked on the text: `Path::components` drops inner `.` parts silently.
    let plain = bind.source.starts_with('/')
        && bind.source[1..]
            .split('/')
            .all(|part| !matches!(part, "" | "." | ".."));
    if !plain {
        return Err(refuse("must be an absolute path without '.', '..' or '//'"));
    }
    bases
        .iter()
        .find(|base| source.starts_with(base) && source != base.as_path())
        .map(PathBuf::as_path)
        .ok_or_else(|| refuse("lies outside every directory the node agent may bind from"))
}

/// The mount points of this mount namespace (from `/proc/self/mountinfo`), unescaped.
pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The mount points of a mountinfo text (the fifth field, with `\040`-style escapes undone).
pub fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape(escaped)))
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes `root` a shared mount of its own (a bind onto itself), so that what is mounted on a
/// slot below it propagates into the containers that mount the slot with `HostToContainer`
/// (the kubelet refuses such a Pod when the slot is on a private mount).
pub fn share(root: &Path) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    if !mount_points()?.iter().any(|m| m == root) {
        mount_bind(root, root)?;
    }
    mount_change(
        root,
        MountPropagationFlags::SHARED | MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// Makes `dir` a private mount of its own: moves out of it do not propagate anywhere.
pub fn make_private(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !mount_points()?.iter().any(|m| m == dir) {
        mount_bind(dir, dir)?;
    }
    mount_change(dir, MountPropagationFlags::PRIVATE)?;
    Ok(())
}

/// Binds `bind.source` onto `slot` (whatever was mounted there is replaced), read-only when
/// asked, creating a writable source that does not exist (as a cold create's
/// `DirectoryOrCreate` does). `staging` is a private directory of the agent's.
pub fn bind_onto(bind: &Bind, base: &Path, slot: &Path, staging: &Path) -> Result<(), BindError> {
    let failed = |cause: io::Error| BindError::Mount {
        path: bind.path.clone(),
        source_dir: bind.source.clone(),
        cause,
    };
    let source = Path::new(&bind.source);
    if !slot.is_dir() {
        return Err(BindError::NoSlot {
            path: bind.path.clone(),
        });
    }
    if !source.exists() {
        if bind.read_only {
            return Err(BindError::Refused {
                path: bind.path.clone(),
                source_dir: bind.source.clone(),
                rule: "does not exist (a read-only directory is never created)".into(),
            });
        }
        std::fs::create_dir_all(source).map_err(failed)?;
    }
    // A link inside the base must not lead out of it.
    let (real, real_base) = (
        source.canonicalize().map_err(failed)?,
        base.canonicalize().map_err(failed)?,
    );
    if !real.starts_with(&real_base) || !real.is_dir() {
        return Err(BindError::Refused {
            path: bind.path.clone(),
            source_dir: bind.source.clone(),
            rule: "is not a directory inside its base once links are resolved".into(),
        });
    }
    unmount_all(slot).map_err(failed)?;
    if !bind.read_only {
        hand_over(slot, &real).map_err(failed)?;
        return mount_bind(&real, slot).map_err(|e| failed(e.into()));
    }
    let staged = staging.join(slot.file_name().unwrap_or_default());
    std::fs::create_dir_all(&staged).map_err(failed)?;
    let made = (|| {
        mount_bind(&real, &staged)?;
        mount_remount(&staged, MountFlags::BIND | MountFlags::RDONLY, "")?;
        mount_move(&staged, slot)
    })();
    if made.is_err() {
        let _ = unmount(&staged, UnmountFlags::DETACH);
    }
    let _ = std::fs::remove_dir(&staged);
    made.map_err(|e| failed(e.into()))
}

/// Gives a root-owned writable directory the owner the sandbox gave its slot. Images that run
/// their commands as a user hand the directories a kubelet made (root's) to that user when
/// they start; a warm Pod started long before its data was bound, so the agent repeats that
/// step for the directory that now appears there.
fn hand_over(slot: &Path, source: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (slot_owner, source_owner) = (std::fs::metadata(slot)?, std::fs::metadata(source)?);
    if source_owner.uid() == 0 && slot_owner.uid() != 0 {
        std::os::unix::fs::chown(source, Some(slot_owner.uid()), Some(slot_owner.gid()))?;
    }
    Ok(())
}

/// Unmounts everything mounted at or below `dir`, deepest first. The unmounts propagate to the
/// sandbox's copy.
pub fn unmount_all(dir: &Path) -> io::Result<()> {
    let mut below: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    below.dedup();
    for mount in below {
        // A stacked mount needs one unmount per layer.
        while mount_points()?.contains(&mount) {
            unmount(&mount, UnmountFlags::DETACH)?;
        }
    }
    Ok(())
}

/// Removes a Pod's slot directory after unmounting everything in it. Nothing is removed
/// through a mount: if a mount remains, the directory stays and the error says so.
pub fn remove_slots(pod_dir: &Path) -> io::Result<()> {
    unmount_all(pod_dir)?;
    if mount_points()?.iter().any(|m| m.starts_with(pod_dir)) {
        return Err(io::Error::other(format!(
            "{} still has mounts; it is left in place",
            pod_dir.display()
        )));
    }
    std::fs::remove_dir_all(pod_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str) -> Bind {
        Bind {
            path: "/mnt/user-data".into(),
            source: source.into(),
            read_only: false,
        }
    }

    #[test]
    fn sources_must_lie_plainly_inside_a_base() {
        let bases = [PathBuf::from("/data/threads"), PathBuf::from("/base")];
        assert_eq!(
            check_source(&bind("/data/threads/t1/user-data"), &bases).unwrap(),
            Path::new("/data/threads")
        );
        assert!(check_source(&bind("/base/users/u/skills"), &bases).is_ok());
        for bad in [
            "/data/threads/../etc",
            "/data/threads/./t",
            "data/threads/t",
            "/data/threads//t",
            "/etc/passwd",
            "/data/threadsX/t",
            "/data/threads",
        ] {
            let e = check_source(&bind(bad), &bases).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn mountinfo_gives_unescaped_mount_points() {
        let text = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            40 22 0:33 / /var/lib/a\\040b rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(text),
            [PathBuf::from("/"), PathBuf::from("/var/lib/a b")]
        );
    }
}
