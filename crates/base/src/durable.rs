//! Crash-safe file operations: every write that must survive a power cut goes temp file →
//! fsync → rename → directory fsync, and a symlink is swapped by creating a new link and
//! renaming it over the old one. Used by the slot controller (state file, slots, `current`)
//! and by the agent's staging of an update.
//!
//! Each durable step passes through `fault::step`, so the crash-point tests can kill the
//! process after any one of them (compiled in only with the `fault-injection` feature).
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fault;

/// Writes `bytes` to `path` atomically and durably with the given mode.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = sibling(path, ".tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
    file.write_all(bytes)?;
    fault::step("write");
    // The umask may have narrowed the mode asked for at creation.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    fault::step("fsync");
    drop(file);
    rename(&tmp, path)
}

/// Renames and makes the rename durable (fsync of the parent directory).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    fault::step("rename");
    sync_parent(to)
}

/// Points the symlink `link` at `target` (relative), atomically and durably.
pub fn swap_symlink(link: &Path, target: &Path) -> io::Result<()> {
    let new = sibling(link, ".new");
    let _ = fs::remove_file(&new);
    std::os::unix::fs::symlink(target, &new)?;
    fault::step("symlink");
    rename(&new, link)
}

/// fsyncs the directory that holds `path`, making a rename or creation in it durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(dir)
}

/// fsyncs a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    fault::step("dir-fsync");
    Ok(())
}

/// Reads a regular file of at most `max` bytes without following a symlink at its path:
/// the privileged slot controller reads files an unprivileged user could have planted.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_regular(OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?, max)
}

/// Reads a regular file of at most `max` bytes, following symlinks (configuration an
/// operator may link into place); a larger file is an error, never a large allocation.
pub fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_regular(std::fs::File::open(path)?, max)
}

/// Reads [`read_limited`]'s file as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_limited(path, max)?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn read_regular(file: std::fs::File, max: u64) -> io::Result<Vec<u8>> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} bytes, more than the {max} allowed", meta.len())));
    }
    // The file may have grown since its size was looked at.
    read_to_end_limited(file, max)
}

/// Reads `r` (a pipe, a file) to its end, refusing more than `max` bytes: never a large
/// allocation, whatever the other side sends.
pub fn read_to_end_limited(r: impl io::Read, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("more than the {max} bytes allowed")));
    }
    Ok(out)
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// `path` with `suffix` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_swap_are_atomic_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        write_file(&f, b"one", 0o644).unwrap();
        write_file(&f, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        assert!(!sibling(&f, ".tmp").exists());
        let link = dir.path().join("current");
        swap_symlink(&link, Path::new("slots/a")).unwrap();
        swap_symlink(&link, Path::new("slots/b")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("slots/b"));
    }

    #[test]
    fn read_bounded_refuses_symlinks_and_oversize() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"12345").unwrap();
        assert!(read_bounded(&f, 4).is_err());
        assert_eq!(read_bounded(&f, 5).unwrap(), b"12345");
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(read_bounded(&l, 100).is_err());
        assert_eq!(read_limited(&l, 5).unwrap(), b"12345", "configuration may be linked into place");
        assert!(read_limited(&l, 4).unwrap_err().to_string().contains("5 bytes, more than the 4 allowed"));
        assert!(read_limited(dir.path(), 4).unwrap_err().to_string().contains("not a regular file"));
        fs::write(&f, b"\xff\xfe").unwrap();
        assert!(read_text(&f, 5).unwrap_err().to_string().contains("not UTF-8"));
    }
}
