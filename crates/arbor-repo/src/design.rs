//! On-disk layout of a repository (documentation only).
//!
//! ```text
//! REPO/
//!   config                 [core] repo_version=1, mode=archive-z2|bare|bare-user|bare-user-only
//!   .lock                  OFD record lock, as ostree takes it: shared for
//!                          writers, exclusive for prune
//!   .arbor-refs-lock       flock serialising arbor's compare-and-set ref updates
//!   .arbor-commitmeta-lock flock serialising arbor's signers (read-modify-write
//!                          of .commitmeta)
//!   .arbor-summary-lock    flock serialising arbor's summary updates
//!   summary                (a(s(taya{sv}))a{sv}), see crate::summary
//!   summary.sig            a{sv} {ostree.sign.ed25519: aay} over summary's bytes
//!   objects/XX/REST.EXT    loose objects; XX/REST = SHA-256 hex
//!     .commit .dirtree .dirmeta   GVariant, identical in every mode
//!     .commitmeta                 detached metadata a{sv}, named by the commit
//!                                 (ed25519 signatures: ostree.sign.ed25519 aay)
//!     .filez                      archive: BE32 len, 4 zero bytes, (tuuuusa(ayay)), raw deflate
//!     .file                       bare: the file (owner, mode, xattrs real)
//!                                 bare-user: the file + xattr user.ostreemeta = (uuua(ayay));
//!                                            symlinks are regular files "target\0"
//!                                 bare-user-only: the file/symlink, no ownership or xattrs
//!   refs/heads/NAME        "HEX\n"
//!   refs/remotes/R/NAME    refs pulled from remote R
//!   refs/mirrors/C/NAME    collection refs
//!   state/HEX.commitpartial   commit whose objects are not all present yet
//!   tmp/arbor-staging-BOOTID-PID-NONCE-N/  an arbor transaction (flock'd dir, XX/ fan-out);
//!                          adopted by the next one of the same boot, else removed;
//!                          ostree's tmp/staging-* are left alone
//!   tmp/arbor-summary-PID-NONCE/    a summary update's new files before their rename
//!   extensions/
//! ```
//!
//! Publishing order: staged objects → `syncfs` → rename into `objects/`
//! (commits last) → `syncfs` → atomic ref replace. See [`crate::txn`].
