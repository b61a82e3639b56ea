//! A GUID partition table (UEFI spec 2.10, §5.3) with its protective MBR,
//! written by hand: 512-byte sectors, 128 entries of 128 bytes, primary
//! header at LBA 1 with its entries at LBA 2, backup entries and header at
//! the end of the disk.

use crate::uuid::to_guid_bytes;

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// Entries in each partition array.
const ENTRIES: usize = 128;
/// Bytes per entry.
const ENTRY_SIZE: usize = 128;
/// Sectors of one partition array.
const ARRAY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;
/// Bytes of the header that its CRC covers.
const HEADER_SIZE: usize = 92;

/// One partition.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Type GUID (RFC 4122 byte order).
    pub type_guid: [u8; 16],
    /// Unique GUID (RFC 4122 byte order).
    pub guid: [u8; 16],
    /// First sector.
    pub first_lba: u64,
    /// Sectors.
    pub sectors: u64,
    /// Name (ASCII; at most 36 UTF-16 units).
    pub name: String,
}

/// A whole-disk layout.
#[derive(Debug, Clone)]
pub struct Gpt {
    /// Disk GUID (RFC 4122 byte order).
    pub disk_guid: [u8; 16],
    /// Total sectors of the disk.
    pub disk_sectors: u64,
    /// Partitions, in table order.
    pub partitions: Vec<Partition>,
}

/// The bytes to write at `offset` (bytes) of the disk.
#[derive(Debug)]
pub struct Chunk {
    /// Byte offset on the disk.
    pub offset: u64,
    /// Contents.
    pub data: Vec<u8>,
}

/// IEEE CRC-32 (the one GPT uses), bitwise: the tables are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl Gpt {
    /// The first usable sector (after the primary array).
    pub fn first_usable(&self) -> u64 {
        2 + ARRAY_SECTORS
    }

    /// The last usable sector (before the backup array).
    pub fn last_usable(&self) -> u64 {
        self.disk_sectors - 2 - ARRAY_SECTORS
    }

    fn entries(&self) -> Vec<u8> {
        let mut a = vec![0u8; ENTRIES * ENTRY_SIZE];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut a[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
            e[0..16].copy_from_slice(&to_guid_bytes(&p.type_guid));
            e[16..32].copy_from_slice(&to_guid_bytes(&p.guid));
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&(p.first_lba + p.sectors - 1).to_le_bytes());
            for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        a
    }

    fn header(&self, my_lba: u64, alt_lba: u64, array_lba: u64, array_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&to_guid_bytes(&self.disk_guid));
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The protective MBR: one partition of type 0xEE over the whole disk
    /// (clamped to 2^32-1 sectors), no boot code (GRUB's goes in first).
    pub fn protective_mbr(&self) -> [u8; 512] {
        let mut m = [0u8; 512];
        let p = &mut m[0x1be..0x1ce];
        p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        p[4] = 0xee;
        p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.disk_sectors - 1).unwrap_or(u32::MAX);
        p[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xaa;
        m
    }

    /// Everything to write: the protective MBR, the primary header and
    /// array, the backup array and header.
    pub fn chunks(&self) -> Vec<Chunk> {
        let array = self.entries();
        let crc = crc32(&array);
        let last = self.disk_sectors - 1;
        let backup_array = last - ARRAY_SECTORS;
        vec![
            Chunk {
                offset: 0,
                data: self.protective_mbr().to_vec(),
            },
            Chunk {
                offset: SECTOR,
                data: self.header(1, last, 2, crc),
            },
            Chunk {
                offset: 2 * SECTOR,
                data: array.clone(),
            },
            Chunk {
                offset: backup_array * SECTOR,
                data: array,
            },
            Chunk {
                offset: last * SECTOR,
                data: self.header(last, 1, backup_array, crc),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn headers_carry_their_crcs() {
        let g = Gpt {
            disk_guid: [7; 16],
            disk_sectors: 8192,
            partitions: vec![Partition {
                type_guid: [1; 16],
                guid: [2; 16],
                first_lba: 2048,
                sectors: 2048,
                name: "bios".into(),
            }],
        };
        let c = g.chunks();
        assert_eq!(c.len(), 5);
        for h in [&c[1].data, &c[4].data] {
            let mut z = h[..HEADER_SIZE].to_vec();
            z[16..20].fill(0);
            assert_eq!(crc32(&z).to_le_bytes(), h[16..20]);
            assert_eq!(h[88..92], crc32(&c[2].data).to_le_bytes());
        }
        assert_eq!(c[4].offset, 8191 * 512);
        assert_eq!(c[3].offset, (8191 - 32) * 512);
        assert_eq!(g.last_usable(), 8192 - 34);
        // The entry: first/last LBA and the name in UTF-16LE.
        let e = &c[2].data[..ENTRY_SIZE];
        assert_eq!(e[32..40], 2048u64.to_le_bytes());
        assert_eq!(e[40..48], 4095u64.to_le_bytes());
        assert_eq!(&e[56..64], b"b\0i\0o\0s\0");
        assert_eq!(c[0].data[0x1c2], 0xee);
        assert_eq!(c[0].data[510..], [0x55, 0xaa]);
    }
}
