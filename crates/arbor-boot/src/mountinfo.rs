//! `/proc/self/mountinfo`, the fields prepare-root and its tests need.

/// One mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The directory of the filesystem mounted here (fourth field; `/` for
    /// a whole filesystem, a subdirectory for a bind mount).
    pub root: String,
    /// Where it is mounted (fifth field).
    pub mount_point: String,
    /// Per-mount options (sixth field), e.g. `ro,relatime`.
    pub options: String,
}

impl MountInfo {
    /// Whether the mount itself is read-only.
    pub fn is_readonly(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// The mounts of a `/proc/self/mountinfo` text, in order (a later mount
/// on the same point hides an earlier one), with `\NNN` octal escapes
/// decoded. Malformed lines are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = MountInfo> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        Some(MountInfo {
            root: unescape_octal(f.get(3)?),
            mount_point: unescape_octal(f.get(4)?),
            options: f.get(5)?.to_string(),
        })
    })
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (c, oct) {
            (b'\\', Some(d)) => {
                out.push(
                    d.iter()
                        .fold(0u8, |a, c| a.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt\\040a rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 36 98:0 / /usr ro,relatime shared:2 - ext4 /dev/x rw\n";
        let m: Vec<_> = parse(text).collect();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].root.as_str(), m[0].mount_point.as_str()),
            ("/mnt1", "/mnt a")
        );
        assert!(!m[0].is_readonly());
        assert!(m[1].is_readonly());
    }
}
