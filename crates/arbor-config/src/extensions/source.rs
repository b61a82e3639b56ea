//! Naming extensions and importing directories and tar streams (H3).
