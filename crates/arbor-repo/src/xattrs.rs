//! Reading and writing extended attributes the way ostree does: names
//! listed, sorted bytewise, and zero-length values skipped.

use std::os::fd::AsFd;
use std::path::Path;

use arbor_format::Xattr;
use rustix::fs::XattrFlags;
use rustix::io::Errno;

fn split_names(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|b| *b == 0).filter(|n| !n.is_empty())
}

fn grow_read<F: FnMut(&mut Vec<u8>) -> rustix::io::Result<usize>>(
    mut f: F,
) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < (1 << 24) => {
                let n = buf.len() * 4;
                buf.resize(n, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// All xattrs of an open file, sorted, skipping empty values.
pub fn read_fd(fd: impl AsFd) -> rustix::io::Result<Vec<Xattr>> {
    let fd = fd.as_fd();
    let list = match grow_read(|b| rustix::fs::flistxattr(fd, &mut b[..])) {
        Ok(l) => l,
        Err(e) if unsupported(e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in split_names(&list) {
        let cname = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
        let value = match grow_read(|b| rustix::fs::fgetxattr(fd, cname.as_c_str(), &mut b[..])) {
            Ok(v) => v,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e),
        };
        if !value.is_empty() {
            out.push(Xattr {
                name: name.to_vec(),
                value,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// All xattrs of a path without following a final symlink.
pub fn read_path(path: &Path) -> rustix::io::Result<Vec<Xattr>> {
    let list = match grow_read(|b| rustix::fs::llistxattr(path, &mut b[..])) {
        Ok(l) => l,
        Err(e) if unsupported(e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in split_names(&list) {
        let cname = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
        let value = match grow_read(|b| rustix::fs::lgetxattr(path, cname.as_c_str(), &mut b[..])) {
            Ok(v) => v,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e),
        };
        if !value.is_empty() {
            out.push(Xattr {
                name: name.to_vec(),
                value,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one xattr of an open file, `None` when absent.
pub(crate) fn get_fd(fd: impl AsFd, name: &str) -> rustix::io::Result<Option<Vec<u8>>> {
    let fd = fd.as_fd();
    match grow_read(|b| rustix::fs::fgetxattr(fd, name, &mut b[..])) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets every xattr on an open file.
pub fn set_fd(fd: impl AsFd, xattrs: &[Xattr]) -> rustix::io::Result<()> {
    let fd = fd.as_fd();
    for x in xattrs {
        let cname = std::ffi::CString::new(x.name.clone()).map_err(|_| Errno::INVAL)?;
        rustix::fs::fsetxattr(fd, cname.as_c_str(), &x.value, XattrFlags::empty())?;
    }
    Ok(())
}

/// Sets every xattr on a path, not following a final symlink.
pub fn set_path(path: &Path, xattrs: &[Xattr]) -> rustix::io::Result<()> {
    for x in xattrs {
        let cname = std::ffi::CString::new(x.name.clone()).map_err(|_| Errno::INVAL)?;
        rustix::fs::lsetxattr(path, cname.as_c_str(), &x.value, XattrFlags::empty())?;
    }
    Ok(())
}

/// Reads one xattr of a path (not following a final symlink), `None` when
/// the attribute is absent.
pub(crate) fn get_path(path: &Path, name: &str) -> rustix::io::Result<Option<Vec<u8>>> {
    match grow_read(|b| rustix::fs::lgetxattr(path, name, &mut b[..])) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e),
    }
}
