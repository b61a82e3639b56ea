//! Helpers for walks that keep their state on the heap (see
//! [`arbor_fs::walk`] for walking directories of any depth).

/// Drops a chain of parent links without recursing: `Drop` of a value that
/// owns the last reference to its parent would otherwise run once per
/// level, on the stack. `next` takes the parent link out of an unwrapped
/// node.
pub(crate) fn drop_chain<T>(
    mut link: Option<std::sync::Arc<T>>,
    mut next: impl FnMut(&mut T) -> Option<std::sync::Arc<T>>,
) {
    while let Some(p) = link {
        link = match std::sync::Arc::try_unwrap(p) {
            Ok(mut node) => next(&mut node),
            Err(_) => None,
        };
    }
}
