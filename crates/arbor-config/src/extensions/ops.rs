//! `extension add`, `remove`, `list`, and the layering (H3).
